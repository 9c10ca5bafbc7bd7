"""kubectl-like commands that talk to the northbound API: apply, get, describe, delete, events, ping, policy.

Tables by default, `-o json|yaml|wide` for scripts, `--watch` on get; errors on stderr and a non-zero exit
code. The API URL and token come from flags, env or the config file (`client_config`).
"""

from __future__ import annotations

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

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

    cols = columns + ((wide or []) if output is Output.wide else [])
    table = Table(title=title, box=None, header_style="bold")
    for header, _ in cols:
        table.add_column(header)
    for row in data if isinstance(data, list) else [data]:
        table.add_row(*[_cell(_pick(row, key)) for _, key in cols])
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


def _pick(row: Any, key: str) -> Any:
    for part in key.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


def human_age(seconds: float) -> str:
    """kubectl-style age: 45s, 5m30s, 42m, 4h53m, 30h, 3d4h, 12d (coarser the older)."""
    s = int(max(0.0, seconds))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value > 1e9:   # a timestamp: show its age
        return human_age(time.time() - value)
    if isinstance(value, float):
        return f"{value:.2f}"
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


COLUMNS: dict[Kind, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {
    Kind.apps: ([("NAME", "name"), ("COMPONENTS", "components"), ("STATUS", "status"), ("AGE", "submitted")], []),
    Kind.nodes: ([("NAME", "name"), ("CLUSTER", "cluster"), ("ALIVE", "alive"), ("CPU", "cpu_utilization"),
                  ("COMPONENTS", "components")], [("LAST HEARTBEAT", "last_heartbeat")]),
    Kind.clusters: ([("NAME", "id"), ("REGISTERED", "registered"), ("ALIVE", "alive"), ("NODES", "nodes"),
                     ("NODES ALIVE", "nodes_alive")], [("LAST HEARTBEAT", "last_heartbeat"),
                                                       ("LOST REASON", "lost_reason")]),
    Kind.decisions: ([("AGE", "ts"), ("AGENT", "agent"), ("STAGE", "stage"), ("OUTCOME", "outcome"),
                      ("POLICY", "policy"), ("APP", "app"), ("REASON", "reason")],
                     [("PLAN", "plan_id"), ("ALTERNATIVES", "alternatives")]),
    Kind.policies: ([("AGENT", "agent"), ("NAME", "name"), ("ENABLED", "enabled"), ("SCOPE", "scope"),
                     ("INTERVAL", "interval")], [("SOURCE", "source"), ("LAST ERROR", "last_error")]),
}
PATHS = {Kind.apps: "/api/v1/apps", Kind.nodes: "/api/v1/nodes", Kind.clusters: "/api/v1/clusters",
         Kind.decisions: "/api/v1/decisions", Kind.policies: "/api/v1/policies"}


def _rows(kind: Kind, data: Any) -> list[dict[str, Any]]:
    if kind is Kind.policies and isinstance(data, dict) and not isinstance(data.get("policies"), list):
        rows = []
        for agent, items in data.items():
            for item in items if isinstance(items, list) else []:
                rows.append({"agent": agent, **item})
        return rows
    return _listing(data, kind.value)


def register(app: typer.Typer) -> None:
    @app.command()
    def apply(files: Annotated[list[Path], typer.Option("-f", "--filename", help="Description file(s)")],
              api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Create or replace applications from description files (validated locally first)."""
        from mlsysops.agents.descriptions import (
            DescriptionError,
            MLSysOpsApp,
            MLSysOpsNode,
            load_file,
        )

        client = Client(api, token, context)
        failed = False
        for path in files:
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
        if failed:
            raise typer.Exit(1)

    @app.command()
    def get(kind: Kind, output: OutOpt = Output.table,
            watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every 2 s until Ctrl-C")] = False,
            app_name: Annotated[str | None, typer.Option("--app", help="decisions: only this app")] = None,
            limit: Annotated[int, typer.Option(help="decisions: how many")] = 30,
            api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """List apps, nodes, clusters, decisions or policies."""
        client = Client(api, token, context)
        params = {"limit": limit, **({"app": app_name} if app_name else {})} if kind is Kind.decisions else None
        while True:
            rows = _rows(kind, client.call("GET", PATHS[kind], params=params))
            cols, wide = COLUMNS[kind]
            _emit(rows, output, cols, wide)
            if not watch:
                return
            try:
                time.sleep(2)
            except KeyboardInterrupt:
                return
            typer.echo("")

    @app.command()
    def describe(kind: Annotated[str, typer.Argument(help="app | node | cluster")], name: str,
                 output: OutOpt = Output.yaml, api: ApiOpt = None, token: TokenOpt = None,
                 context: CtxOpt = None) -> None:
        """Show one app (description + per-component status), node or cluster."""
        paths = {"app": "/api/v1/apps/", "node": "/api/v1/nodes/", "cluster": "/api/v1/clusters/"}
        if kind not in paths:
            raise _fail(f"cannot describe {kind!r}: expected one of {sorted(paths)}")
        data = Client(api, token, context).call("GET", paths[kind] + name)
        if output is Output.table and kind == "app":
            comps = data.get("components", {})
            rows = [{"component": c, **s} for c, s in comps.items()] if isinstance(comps, dict) else comps
            _emit(rows, output, [("COMPONENT", "component"), ("STATUS", "status"), ("CLUSTER", "cluster"),
                                 ("NODES", "nodes"), ("SINCE", "since"), ("REASON", "reason")], title=name)
            return
        _emit(data, Output.yaml if output is Output.table else output, [])

    @app.command()
    def delete(kind: Annotated[str, typer.Argument(help="app | node")], name: str, api: ApiOpt = None,
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
    def uncordon(name: str, api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Undo a node's drain (e.g. one that could not complete): it takes work again, keeps what runs."""
        out = Client(api, token, context).call("PATCH", f"/api/v1/nodes/{name}", json={"cordoned": False})
        typer.echo(f"node/{name} uncordoned (was {out['was']}; {out['kept']} instance(s) stay)")

    @app.command()
    def events(name: str, output: OutOpt = Output.table, limit: int = 50, api: ApiOpt = None,
               token: TokenOpt = None, context: CtxOpt = None) -> None:
        """What every agent decided about an application, and why."""
        data = Client(api, token, context).call("GET", f"/api/v1/apps/{name}/events", params={"limit": limit})
        cols, wide = COLUMNS[Kind.decisions]
        _emit(_listing(data, "events"), output, cols, wide)

    @app.command()
    def top(what: Annotated[str, typer.Argument(help="nodes | apps")], output: OutOpt = Output.table,
            watch: Annotated[bool, typer.Option("--watch", "-w")] = False, api: ApiOpt = None,
            token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Live resource use: per node (CPU, memory) or per component instance (CPU, response time)."""
        if what not in ("nodes", "apps"):
            raise _fail(f"cannot show top {what!r}: expected nodes or apps")
        client = Client(api, token, context)
        while True:
            series = client.call("GET", "/api/v1/telemetry?limit=5000")
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
                row["running"] = running.get(node, 0)
            data = [rows[k] for k in sorted(rows)]
            if what == "nodes":
                cols = [("NODE", "node"), ("CLUSTER", "cluster"), ("CPU%", "system.cpu.utilization"),
                        ("MEM%", "system.memory.utilization"), ("RUNNING", "running")]
            else:
                cols = [("APP", "app"), ("COMPONENT", "component"), ("NODE", "node"), ("CPU", "cpu_usage_cores"),
                        ("RESPONSE MS", "response_time_ms")]
            _emit(data, output, cols)
            if not watch:
                return
            try:
                time.sleep(2)
            except KeyboardInterrupt:
                return

    @app.command()
    def mode(value: Annotated[str | None, typer.Argument(help="heuristic | ml (omit to show)")] = None,
             agent: Annotated[str | None, typer.Option(help="Only this agent (default: the whole slice)")] = None,
             api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Show or set the management mode: heuristic policies, or ML policies where they exist."""
        client = Client(api, token, context)
        if value is None:
            for aid, m in sorted(client.call("GET", "/api/v1/mode").items()):
                typer.echo(f"{aid}\t{m}")
            return
        out = client.call("PUT", "/api/v1/mode", json={"mode": value, "agent": agent})

        def show(node: dict, depth: int = 0) -> None:
            typer.echo(f"{'  ' * depth}{node.get('agent')}: {node.get('mode', node.get('error'))}"
                       + (f" (paused: {', '.join(node['paused'])})" if node.get("paused") else ""))
            for child in (node.get("children") or {}).values():
                show(child, depth + 1)
        show(out)

    @app.command("logs", help="Alias of `events`.")
    def logs(name: str, output: OutOpt = Output.table, limit: int = 50, api: ApiOpt = None,
             token: TokenOpt = None, context: CtxOpt = None) -> None:
        events(name, output, limit, api, token, context)

    @app.command()
    def ping(agent: Annotated[str | None, typer.Argument(help="Cluster agent to reach over XMPP")] = None,
             api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Round trip to the continuum agent (and on to a cluster agent over XMPP), with latency."""
        out = Client(api, token, context).call("POST", "/api/v1/ping", json={"agent": agent} if agent else {})
        typer.echo(" ".join(f"{k}={v}" for k, v in (out or {}).items()))

    policy = typer.Typer(help="List, enable or disable policies of the agents.", no_args_is_help=True)
    app.add_typer(policy, name="policy")

    @policy.command("list")
    def policy_list(output: OutOpt = Output.table, api: ApiOpt = None, token: TokenOpt = None,
                    context: CtxOpt = None) -> None:
        rows = _rows(Kind.policies, Client(api, token, context).call("GET", "/api/v1/policies"))
        cols, wide = COLUMNS[Kind.policies]
        _emit(rows, output, cols, wide)

    @policy.command("upload")
    def policy_upload(agent: str, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                      name: Annotated[str | None, typer.Option(help="Policy name (default: file stem)")] = None,
                      api: ApiOpt = None, token: TokenOpt = None, context: CtxOpt = None) -> None:
        """Upload a policy file to an agent: validated there before it is activated."""
        out = Client(api, token, context).call("PUT", f"/api/v1/policies/{agent}/{name or file.stem}",
                                               content=file.read_bytes(),
                                               headers={"Content-Type": "text/x-python"})
        typer.echo(f"policy {out['policy']} {out['result']} on {out['agent']}")

    @policy.command("enable")
    def policy_enable(agent: str, name: str, api: ApiOpt = None, token: TokenOpt = None,
                      context: CtxOpt = None) -> None:
        Client(api, token, context).call("POST", f"/api/v1/policies/{agent}/{name}/enable")
        typer.echo(f"policy {name} enabled on {agent}")

    @policy.command("disable")
    def policy_disable(agent: str, name: str, api: ApiOpt = None, token: TokenOpt = None,
                       context: CtxOpt = None) -> None:
        Client(api, token, context).call("POST", f"/api/v1/policies/{agent}/{name}/disable")
        typer.echo(f"policy {name} disabled on {agent}")
