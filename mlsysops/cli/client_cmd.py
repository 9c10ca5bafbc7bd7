"""kubectl-like commands that talk to the northbound API: apply, get, describe, delete, events, ping, policy.

Tables by default, `-o json|yaml|wide` for scripts, `--watch` on get; errors on stderr and a non-zero exit
code. The API URL and token come from flags, env or the config file (`client_config`).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mlsysops.cli.formatting import human_age, node_status

ApiOpt = Annotated[str | None, typer.Option("--api", help="API URL (default: env MLSYSOPS_API or config)")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Bearer token (default: env or config)")]
CtxOpt = Annotated[str | None, typer.Option("--context", help="Context from ~/.mlsysops/config.yaml")]


class Output(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


OutOpt = Annotated[Output, typer.Option("-o", "--output", help="table | wide | json | yaml")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class Client:
    def __init__(self, api: str | None, token: str | None, context: str | None) -> None:
        from mlsysops.cli.client_config import resolve

        target = resolve(api, token, context)
        if target is None:
            raise _fail("no API configured: start a slice with `mlsysops up`, or pass --api / set MLSYSOPS_API")
        self.target = target

    def call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        headers = kw.pop("headers", {})
        timeout = kw.pop("timeout", 15)
        if self.target.token:
            headers["Authorization"] = f"Bearer {self.target.token}"
        try:
            resp = httpx.request(method, f"{self.target.api}{path}", headers=headers, timeout=timeout, **kw)
        except httpx.HTTPError as exc:
            raise _fail(f"cannot reach the API at {self.target.api}: {exc}") from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise _fail(f"{resp.status_code} {_detail(detail)}")
        return resp.json() if resp.content else None


def _detail(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict):
        issues = detail.get("errors") or detail.get("issues")
        head = detail.get("message") or detail.get("error") or ""
        if issues:
            lines = [f"  {i.get('path') or '<root>'}: {i.get('message')}"
                     + (f" (did you mean {i['suggestion']!r}?)" if i.get("suggestion") else "") for i in issues]
            return "\n".join([head, *lines]).strip()
        return json.dumps(detail, default=str)
    if isinstance(detail, list):
        return "\n".join(f"  {'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                         for d in detail)
    return str(detail)


def _emit(data: Any, output: Output, columns: list[tuple[str, str]], wide: list[tuple[str, str]] | None = None,
          title: str | None = None) -> None:
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    if output is Output.yaml:
        import yaml
        typer.echo(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # cells are text, never markup: "[edge]" in a reason must stay

    cols = columns + ((wide or []) if output is Output.wide else [])
    table = Table(title=title, box=None, header_style="bold")
    for header, _ in cols:
        table.add_column(header, overflow="fold")
    for row in data if isinstance(data, list) else [data]:
        table.add_row(*[Text(_percent(v) if h.endswith("%") else _cell(v))
                        for h, key in cols for v in [_pick(row, key)]])
    Console(width=200 if not sys.stdout.isatty() else None, soft_wrap=False).print(table)


def _percent(value: Any) -> str:
    return f"{value * 100:.0f}%" if isinstance(value, int | float) and not isinstance(value, bool) else _cell(value)


def _pick(row: Any, key: str) -> Any:
    if isinstance(row, dict) and key in row:   # metric names are dotted: the whole key first
        return row[key]
    for part in key.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value > 1e9:   # a timestamp: show its age
        return human_age(time.time() - value)
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v.get('app')}/{v.get('component')}" if isinstance(v, dict) and "component" in v
                        else str(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _listing(data: Any, key: str) -> list[dict[str, Any]]:
    """Accept a list, or {key: [...]}, or {name: {...}} mappings from the API."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get(key), list):
        return data[key]
    if isinstance(data, dict):
        return [{"name": k, **v} if isinstance(v, dict) else {"name": k, "value": v} for k, v in data.items()]
    return []


class Kind(StrEnum):
    apps = "apps"
    nodes = "nodes"
    clusters = "clusters"
    decisions = "decisions"
    policies = "policies"
    buckets = "buckets"


KIND_ALIASES = {"app": Kind.apps, "node": Kind.nodes, "cluster": Kind.clusters, "decision": Kind.decisions,
                "policy": Kind.policies, "bucket": Kind.buckets, "no": Kind.nodes, "po": Kind.policies, **{k.value: k for k in Kind}}
SINGLE = {Kind.apps: "/api/v1/apps/", Kind.nodes: "/api/v1/nodes/", Kind.clusters: "/api/v1/clusters/",
          Kind.buckets: "/api/v1/buckets/"}   # a bucket's name: APP/BUCKET_ID


def kind_of(text: str) -> Kind:
    """kubectl accepts singular and plural (`get app x`, `get apps x`) and `kind/name`."""
    found = KIND_ALIASES.get(text.lower())
    if found is None:
        raise _fail(f"unknown kind {text!r}: expected one of {', '.join(k.value for k in Kind)}")
    return found


def split_ref(kind: str, name: str | None) -> tuple[Kind, str | None]:
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    return kind_of(kind), name


def parse_since(text: str | None) -> float | None:
    """`--since 10m` (s, m, h, d) or an epoch timestamp."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return time.time() - float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise _fail(f"--since {text!r}: expected a duration like 30s, 10m, 2h or an epoch time") from None


def decision_params(app: str | None, stage: str | None, outcome: str | None, policy: str | None,
                    since: str | None, show_all: bool, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("app", app), ("stage", stage), ("outcome", outcome), ("policy", policy)):
        if value:
            params[key] = value
    if (ts := parse_since(since)) is not None:
        params["since"] = ts
    if not show_all and outcome is None:
        params["exclude_outcome"] = ["no_plan"]   # the analyses that found nothing to do
    return params


def expand_files(paths: list[Path], recursive: bool) -> list[Path]:
    """Files as given; a directory contributes its *.yaml / *.yml / *.json (sorted; -R: subdirectories too)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            out += sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))
        else:
            out.append(path)
    return out


COLUMNS: dict[Kind, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    Kind.apps: ([("NAME", "name"), ("COMPONENTS", "components"), ("STATUS", "status"), ("AGE", "submitted")], []),
    Kind.nodes: ([("NAME", "name"), ("CLUSTER", "cluster"), ("STATUS", "status"), ("LAYER", "layer"),
                  ("CPU%", "cpu_utilization"), ("TRUST", "trust"), ("LAST HEARTBEAT", "last_heartbeat"),
                  ("COMPONENTS", "components")],
                 [("WATTS", "power_watts"), ("TRUST REASON", "trust_reason")]),
    Kind.clusters: ([("NAME", "id"), ("REGISTERED", "registered"), ("ALIVE", "alive"), ("NODES", "nodes"),
                     ("NODES ALIVE", "nodes_alive")], [("LAST HEARTBEAT", "last_heartbeat"),
                                                       ("LOST REASON", "lost_reason")]),
    Kind.decisions: ([("AGE", "ts"), ("AGENT", "agent"), ("STAGE", "stage"), ("OUTCOME", "outcome"),
                      ("POLICY", "policy"), ("APP", "app"), ("REASON", "reason")],
                     [("PLAN", "plan_id"), ("ALTERNATIVES", "alternatives"), ("WHY", "explanation.summary")]),
    Kind.policies: ([("AGENT", "agent"), ("NAME", "name"), ("ENABLED", "enabled"), ("SCOPE", "scope"),
                     ("INTERVAL", "interval"), ("DISABLED BECAUSE", "disabled_reason")],
                    [("SOURCE", "source"), ("RUNS IN", "isolation.kind"), ("LAST ERROR", "last_error")]),
    Kind.buckets: ([("NAME", "key"), ("REPLICAS", "replica_count"), ("SITES", "sites"), ("COPYING", "copying"),
                    ("USERS", "users")], [("STORE NAME", "name"), ("UNREACHABLE SITES", "unreachable")]),
}
PATHS = {Kind.apps: "/api/v1/apps", Kind.nodes: "/api/v1/nodes", Kind.clusters: "/api/v1/clusters",
         Kind.decisions: "/api/v1/decisions", Kind.policies: "/api/v1/policies", Kind.buckets: "/api/v1/buckets"}


def _rows(kind: Kind, data: Any) -> list[dict[str, Any]]:
    if kind is Kind.policies and isinstance(data, dict) and not isinstance(data.get("policies"), list):
        rows = []
        for agent, items in data.items():
            for item in items if isinstance(items, list) else []:
                rows.append({"agent": agent, **item})
        return rows
    if kind is Kind.buckets and isinstance(data, dict):
        return [bucket_row(b, data.get("sites", [])) for b in data.get("buckets", [])]
    rows = _listing(data, kind.value)
    if kind is Kind.nodes:
        rows = [{**r, "status": node_status(r)} for r in rows]
    return rows


def bucket_row(b: dict[str, Any], sites: list[dict[str, Any]]) -> dict[str, Any]:
    """One line of `get buckets`: where the replicas are (site:state), what is being copied, who uses it."""
    down = {s["name"] for s in sites if not s.get("reachable", True)}
    copy = b.get("copy_in_flight") or {}
    return {"key": f"{b.get('app')}/{b.get('bucket')}" if b.get("declared") else f"(undeclared) {b['name']}",
            "name": b["name"], "replica_count": f"{sum(v == 'complete' for v in b['replicas'].values())}/"
                                               f"{b.get('replicas_wanted') or '-'}",
            "sites": ", ".join(f"{s}" if v == "complete" else f"{s}({v})" for s, v in b["replicas"].items()) or "-",
            "copying": f"{copy['source']}->{copy['target']} {copy['copied']}/{copy['total']}" if copy else "",
            "users": ", ".join(sorted({f"{u['component']}@{u['from_node']}" for u in b.get("access", [])})) or "-",
            "unreachable": ", ".join(sorted(down & set(b["replicas"]))) or ""}


def _render(data: Any, output: Output, columns: list[tuple[str, str]],
            wide: list[tuple[str, str]] | None) -> str:
    """What `_emit` prints, as text (so --watch can print only when it changed)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _emit(data, output, columns, wide)
    return buf.getvalue()


def _wait_running(client: Client, apps: list[str], timeout: float) -> bool:
    """Until every component of `apps` runs, with progress (a bar on a terminal, a line per change
    elsewhere); False (and why) on timeout."""
    from mlsysops.cli.progress import Progress

    deadline = time.monotonic() + timeout
    comps: dict[str, dict[str, Any]] = {}
    with Progress("waiting for " + ", ".join(apps)) as bar:
        while time.monotonic() < deadline:
            comps = {f"{a}/{c}": st for a in apps
                     for c, st in (client.call("GET", f"/api/v1/apps/{a}").get("components") or {}).items()}
            done = sum(1 for st in comps.values() if st.get("status") == "running")
            pending = sorted(f"{k} {st.get('status')}" for k, st in comps.items() if st.get("status") != "running")
            bar.update(done=done, total=len(comps) or None,
                       note=", ".join(pending[:3]) + (f", +{len(pending) - 3} more" if len(pending) > 3 else "")
                       if comps else "no components yet")
            if comps and done == len(comps):
                break
            time.sleep(0.5)
    waiting = {k: st for k, st in comps.items() if st.get("status") != "running"}
    if not comps or waiting:
        typer.echo(f"error: not running after {timeout:.0f}s:", err=True)
        for k, st in sorted(waiting.items()):
            typer.echo(f"  {k}: {st.get('status')}{': ' + st['reason'] if st.get('reason') else ''}", err=True)
        typer.echo("  (`mlsysops explain app/NAME` says why)", err=True)
        return False
    typer.echo(f"{len(comps)} component(s) of {', '.join(apps)} running")
    return True


def register(app: typer.Typer) -> None:
    @app.command()
    def apply(files: Annotated[list[Path], typer.Option("-f", "--filename",
                                                        help="Description file(s) or directories of them")],
              recursive: Annotated[bool, typer.Option("-R", "--recursive",
                                                      help="Also the files in subdirectories of -f DIR")] = False,
              wait: Annotated[bool, typer.Option("--wait", help="Wait until every applied app runs")] = False,
              timeout: Annotated[float, typer.Option(help="--wait: give up after this many seconds")] = 120.0,
              api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Create or replace applications (and register nodes) from description files, validated locally
        first. Like kubectl, -f takes files and directories (*.yaml, *.yml, *.json)."""
        from mlsysops.agents.descriptions import (
            DescriptionError,
            MLSysOpsApp,
            MLSysOpsNode,
            load_file,
        )

        client = Client(api, token, context)
        failed = False
        applied: list[str] = []
        paths = expand_files(files, recursive)
        if not paths:
            raise _fail(f"no description files in {', '.join(map(str, files))}")
        for path in paths:
            try:
                docs = load_file(path)
            except (DescriptionError, OSError) as exc:
                typer.echo(f"error: {path}: {exc}", err=True)
                failed = True
                continue
            for doc in docs:
                if isinstance(doc.spec, MLSysOpsNode):
                    client.call("POST", "/api/v1/nodes", json=doc.kubernetes_form)
                    typer.echo(f"node/{doc.name} registered")
                    continue
                if not isinstance(doc.spec, MLSysOpsApp):
                    typer.echo(f"error: {path}: {doc.kind}/{doc.name} cannot be applied (apps and nodes can)",
                               err=True)
                    failed = True
                    continue
                out = client.call("PUT", f"/api/v1/apps/{doc.name}", json=doc.kubernetes_form)
                verb = (out or {}).get("result") or "configured"
                typer.echo(f"app/{doc.name} {verb}")
                applied.append(doc.name)
        if wait and applied:
            failed |= not _wait_running(client, applied, timeout)
        if failed:
            raise typer.Exit(1)

    @app.command()
    def get(kind: Annotated[str, typer.Argument(help="apps | nodes | clusters | decisions | policies | "
                                                     "buckets (singular works too, and KIND/NAME)")],
            name: Annotated[str | None, typer.Argument(help="Only this object")] = None,
            output: OutOpt = Output.table,
            watch: Annotated[bool, typer.Option("--watch", "-w", help="Print again whenever something changes "
                                                                      "(polls every 2 s) until Ctrl-C")] = False,
            app_name: Annotated[str | None, typer.Option("--app", help="decisions: only this app")] = None,
            stage: Annotated[str | None, typer.Option(help="decisions: monitor | analyze | plan | execute | "
                                                           "event ...")] = None,
            outcome: Annotated[str | None, typer.Option(help="decisions: e.g. completed, failed, no_plan")] = None,
            policy: Annotated[str | None, typer.Option(help="decisions: only this policy")] = None,
            since: Annotated[str | None, typer.Option(help="decisions: newer than 30s, 10m, 2h, or an epoch "
                                                           "time")] = None,
            show_all: Annotated[bool, typer.Option("--all", help="decisions: include the analyses that found "
                                                                 "nothing to do")] = False,
            limit: Annotated[int, typer.Option(help="decisions: how many (newest)")] = 30,
            api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """List apps, nodes, clusters, decisions, policies or buckets, or show one (`get app NAME`,
        `get bucket APP/BUCKET`)."""
        what, name = split_ref(kind, name)
        client = Client(api, token, context)
        if name is not None and what not in SINGLE:
            raise _fail(f"get {what.value} takes no name (filter with the options instead)")
        params = (decision_params(app_name, stage, outcome, policy, since, show_all, limit)
                  if what is Kind.decisions else None)
        cols, wide = COLUMNS[what]
        last = None
        while True:
            if name is None:
                rows: Any = _rows(what, client.call("GET", PATHS[what], params=params))
            else:
                one = client.call("GET", SINGLE[what] + name)
                rows = _rows(what, [one])[0] if what is Kind.nodes else one
                if what is Kind.buckets and output in (Output.table, Output.wide):
                    rows = bucket_row(one, [])
                if what is Kind.apps and output in (Output.table, Output.wide):   # -o json|yaml: as served
                    comps = one.get("components") or {}
                    rows = {"name": name, **one, "components": len(comps),
                            "status": dict(Counter(c.get("status") for c in comps.values()))}
            text = _render(rows, output, cols, wide)
            if text != last:
                typer.echo(text, nl=False)
                last = text
            if not watch:
                return
            try:
                time.sleep(2)
            except KeyboardInterrupt:
                return

    @app.command()
    def describe(kind: Annotated[str, typer.Argument(help="app | node | cluster (or KIND/NAME)")],
                 name: Annotated[str | None, typer.Argument(help="Its name")] = None,
                 output: Annotated[Output, typer.Option("-o", "--output", help="table (a readable view, the "
                                                        "default) | json | yaml")] = Output.table,
                 api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Show one app (status per component with the reasons, recent decisions), node or cluster."""
        from mlsysops.cli import describe_view

        what, name = split_ref(kind, name)
        if what not in SINGLE or name is None:
            raise _fail("describe app|node|cluster NAME")
        client = Client(api, token, context)
        data = client.call("GET", SINGLE[what] + name)
        if output in (Output.json, Output.yaml):
            _emit(data, output, [])
            return
        events = routes = None
        if what is Kind.apps:
            events = client.call("GET", f"/api/v1/apps/{name}/events",
                                 params={"limit": 10, "exclude_outcome": ["no_plan"]})
            routes = client.call("GET", f"/api/v1/apps/{name}/routes")
        typer.echo(describe_view.render(what.value, name, data, events, routes))

    @app.command()
    def delete(kind: Annotated[str, typer.Argument(help="app | node")],
               name: Annotated[str, typer.Argument(help="Its name")], api: ApiOpt = None,
               token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Delete an application (its components are removed) or a node (drained first)."""
        if kind not in ("app", "node"):
            raise _fail(f"cannot delete {kind!r}: apps and nodes only")
        client = Client(api, token, context)
        if kind == "node":
            out = client.call("DELETE", f"/api/v1/nodes/{name}", timeout=45)   # the server drains up to 30 s
            typer.echo(f"node/{name} drained ({out['relocated']} relocated) and removed")
            return
        client.call("DELETE", f"/api/v1/apps/{name}")
        typer.echo(f"app/{name} deleted")

    @app.command()
    def uncordon(name: Annotated[str, typer.Argument(help="The node")], api: ApiOpt = None,
                 token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Undo a node's drain (e.g. one that could not complete): it takes work again, keeps what runs."""
        out = Client(api, token, context).call("PATCH", f"/api/v1/nodes/{name}", json={"cordoned": False})
        typer.echo(f"node/{name} uncordoned (was {out['was']}; {out['kept']} instance(s) stay)")

    @app.command()
    def explain(target: Annotated[str, typer.Argument(help="app/NAME (or NAME)")],
                component: Annotated[str | None, typer.Argument(help="Only this component")] = None,
                output: Annotated[Output, typer.Option("-o", "--output", help="table (readable, the default) | "
                                                       "json | yaml")] = Output.table,
                api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Why an app is not running as desired: per component the dominant reason, the evidence and a next
        step (filters that rejected nodes, a missing dependency, a failure, a QoS target it cannot meet)."""
        name = target.split("/", 1)[1] if target.startswith(("app/", "apps/")) else target
        params = {"component": component} if component else None
        data = Client(api, token, context).call("GET", f"/api/v1/apps/{name}/explain", params=params)
        if output in (Output.json, Output.yaml):
            _emit(data, output, [])
            return
        from mlsysops.cli.describe_view import render_explanation

        typer.echo(render_explanation(data))

    @app.command()
    def events(name: Annotated[str, typer.Argument(help="The app")], output: OutOpt = Output.table,
               limit: Annotated[int, typer.Option(help="How many (newest)")] = 50,
               stage: Annotated[str | None, typer.Option(help="Only this stage")] = None,
               outcome: Annotated[str | None, typer.Option(help="Only this outcome")] = None,
               policy: Annotated[str | None, typer.Option(help="Only this policy")] = None,
               since: Annotated[str | None, typer.Option(help="Newer than 30s, 10m, 2h or an epoch time")] = None,
               show_all: Annotated[bool, typer.Option("--all", help="Include the analyses that found nothing "
                                                                    "to do")] = False,
               api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """What every agent decided about an application, and why."""
        params = decision_params(None, stage, outcome, policy, since, show_all, limit)
        data = Client(api, token, context).call("GET", f"/api/v1/apps/{name}/events", params=params)
        cols, wide = COLUMNS[Kind.decisions]
        _emit(_listing(data, "events"), output, cols, wide)

    @app.command()
    def top(what: Annotated[str, typer.Argument(help="nodes | apps")], output: OutOpt = Output.table,
            watch: Annotated[bool, typer.Option("--watch", "-w", help="Print again whenever the numbers change "
                                                                      "(polls every 2 s) until Ctrl-C")] = False,
            api: ApiOpt = None,
            token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Live resource use: per node (CPU, memory) or per component instance (CPU, response time)."""
        if what not in ("nodes", "apps"):
            raise _fail(f"cannot show top {what!r}: expected nodes or apps")
        client = Client(api, token, context)
        last = None
        while True:
            series = client.call("GET", "/api/v1/telemetry?limit=5000")
            status = {n["name"]: n for n in _listing(client.call("GET", "/api/v1/nodes"), "nodes")}
            rows: dict[tuple[str, ...], dict[str, Any]] = {}
            running: dict[str, int] = {}
            for s in series:
                lab = s["labels"]
                if what == "nodes" and s["metric"] == "running" and "instance" in lab:
                    running[lab["node"]] = running.get(lab["node"], 0) + int(s["latest"] >= 1)
                if what == "nodes" and set(lab) - {"cluster"} == {"node"}:
                    row = rows.setdefault((lab["node"],), {"node": lab["node"], "cluster": lab.get("cluster")})
                elif what == "apps" and "instance" in lab:
                    row = rows.setdefault((lab["app"], lab["component"], lab["instance"]),
                                          {"app": lab["app"], "component": lab["component"], "node": lab["node"]})
                else:
                    continue
                row[s["metric"]] = s["latest"]
            for (node,), row in rows.items() if what == "nodes" else ():
                info = status.get(node, {})
                row["status"] = node_status(info)
                row["running"] = sum(1 for c in info.get("components") or [] if c.get("status") == "running")
            for row in rows.values():
                # the last values of a node that is down are history, not its present
                if node_status(status.get(row["node"], {})) != "Ready":
                    for key in [k for k in row if "." in k or k.endswith(("_cores", "_ms", "_bytes"))]:
                        row[key] = None
            data = [rows[k] for k in sorted(rows) if rows[k]["node"] in status]   # a removed node is gone
            if what == "nodes":
                cols = [("NODE", "node"), ("CLUSTER", "cluster"), ("STATUS", "status"),
                        ("CPU%", "system.cpu.utilization"), ("MEM%", "system.memory.utilization"),
                        ("WATTS", "hw.power"), ("JOULES", "hw.energy"), ("RUNNING", "running")]
            else:
                cols = [("APP", "app"), ("COMPONENT", "component"), ("NODE", "node"), ("CPU", "cpu_usage_cores"),
                        ("RESPONSE MS", "response_time_ms")]
            text = _render(data, output, cols, None)
            if text != last:
                typer.echo(text, nl=False)
                last = text
            if not watch:
                return
            try:
                time.sleep(2)
            except KeyboardInterrupt:
                return

    @app.command()
    def mode(value: Annotated[str | None, typer.Argument(help="heuristic | ml | auto | shadow (omit to show)")] = None,
             agent: Annotated[str | None, typer.Option(help="Only this agent (default: the whole slice)")] = None,
             app_name: Annotated[str | None, typer.Option("--app", help="Only this app (default: the slice's mode)")] = None,
             api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Show or set the management mode: heuristic policies, ML policies (ml), ML with automatic
        fallback on drift (auto), or ML beside the heuristics without acting (shadow)."""
        client = Client(api, token, context)
        if value is None:
            for aid, st in sorted(client.call("GET", "/api/v1/mode/status").items()):
                overrides = ", ".join(f"{a}={m}" for a, m in sorted(st.get("app_modes", {}).items()))
                typer.echo(f"{aid}\t{st.get('mode')}" + (f"\t(apps: {overrides})" if overrides else ""))
                for a, m in sorted(st.get("apps", {}).items()):
                    auto = m.get("auto") or {}
                    typer.echo(f"  {a}\t{m.get('mode')}\tacting: {m.get('acting')}\t{m.get('why') or auto.get('reason', '')}")
            return
        out = client.call("PUT", "/api/v1/mode", json={"mode": value, "agent": agent, "app": app_name})

        def show(node: dict, depth: int = 0) -> None:
            typer.echo(f"{'  ' * depth}{node.get('agent')}: {node.get('mode', node.get('error'))}"
                       + (f" (app {node['app']})" if node.get("app") else "")
                       + (f" (paused: {', '.join(node['paused'])})" if node.get("paused") else ""))
            for child in (node.get("children") or {}).values():
                show(child, depth + 1)
        show(out)

    @app.command("logs", help="Alias of `events`.")
    def logs(name: Annotated[str, typer.Argument(help="The app")], output: OutOpt = Output.table,
             limit: Annotated[int, typer.Option(help="How many (newest)")] = 50, api: ApiOpt = None,
             token: TokenOpt = None, context: CtxOpt = None) -> None:
        events(name, output, limit, None, None, None, None, False, api, token, context)

    @app.command()
    def ping(agent: Annotated[str | None, typer.Argument(help="Cluster agent to reach over XMPP")] = None,
             api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Round trip to the continuum agent (and on to a cluster agent over XMPP), with latency."""
        out = Client(api, token, context).call("POST", "/api/v1/ping", json={"agent": agent} if agent else {})
        typer.echo(" ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in (out or {}).items()))

    policy = typer.Typer(help="List, enable or disable policies of the agents.", no_args_is_help=True)
    app.add_typer(policy, name="policy")

    @policy.command("list")
    def policy_list(output: OutOpt = Output.table, api: ApiOpt = None, token: TokenOpt = None,
                    context: CtxOpt = None) -> None:
        """Every agent's policies: enabled or not, scope, interval (wide: source file, last error)."""
        rows = _rows(Kind.policies, Client(api, token, context).call("GET", "/api/v1/policies"))
        cols, wide = COLUMNS[Kind.policies]
        _emit(rows, output, cols, wide)

    @policy.command("upload")
    def policy_upload(agent: Annotated[str, typer.Argument(help="The agent (e.g. edge-1)")],
                      file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The policy .py")],
                      name: Annotated[str | None, typer.Option(help="Policy name (default: file stem)")] = None,
                      api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Upload a policy file (NAME.py or policy-NAME.py; admin token) to an agent: checked there without
        running it, loaded in a sandboxed worker, then kept in the agent's state and activated."""
        out = Client(api, token, context).call("PUT", f"/api/v1/policies/{agent}/{name or file.name}",
                                               content=file.read_bytes(),
                                               headers={"Content-Type": "text/x-python"})
        typer.echo(f"policy {out['policy']} {out['result']} on {out['agent']}")

    @policy.command("enable")
    def policy_enable(agent: Annotated[str, typer.Argument(help="The agent (e.g. edge-1)")],
                      name: Annotated[str, typer.Argument(help="The policy")], api: ApiOpt = None,
                      token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Let a policy decide again on that agent."""
        Client(api, token, context).call("POST", f"/api/v1/policies/{agent}/{name}/enable")
        typer.echo(f"policy {name} enabled on {agent}")

    @policy.command("disable")
    def policy_disable(agent: Annotated[str, typer.Argument(help="The agent (e.g. edge-1)")],
                       name: Annotated[str, typer.Argument(help="The policy")], api: ApiOpt = None,
                       token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Stop a policy on that agent (it stays loaded; `enable` brings it back)."""
        Client(api, token, context).call("POST", f"/api/v1/policies/{agent}/{name}/disable")
        typer.echo(f"policy {name} disabled on {agent}")
