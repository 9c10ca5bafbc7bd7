"""`mlsysops describe`: one object as a person reads it (kubectl describe), not as YAML.

Times are ages ("3m ago"), utilisation percentages, reasons in full (wrapped, never cut); `-o yaml|json`
keeps the raw API answer for scripts.
"""

from __future__ import annotations

import textwrap
import time
from collections import Counter
from typing import Any

from mlsysops.cli.formatting import human_age, node_status

WIDTH = 100


def _age(ts: Any) -> str:
    if not isinstance(ts, int | float) or ts <= 0:
        return "-"
    return f"{human_age(time.time() - ts)} ago"


def _pct(v: Any) -> str:
    return f"{v * 100:.0f}%" if isinstance(v, int | float) else "-"


def _field(label: str, value: Any, indent: int = 0) -> str:
    pad = " " * indent
    head = f"{pad}{label + ':':<18}"
    text = "-" if value in (None, "", []) else str(value)
    return textwrap.fill(text, WIDTH, initial_indent=head, subsequent_indent=" " * len(head))


def _table(headers: list[str], rows: list[list[str]], indent: int = 2) -> list[str]:
    if not rows:
        return [" " * indent + "<none>"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
    pad = " " * indent
    out = [pad + "  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths)) + "  " + headers[-1]]
    lead = len(out[0]) - len(headers[-1])
    for r in rows:
        first = pad + "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  "
        last = textwrap.wrap(r[-1], max(30, WIDTH - lead)) or ["-"]
        out.append(first + last[0])
        out += [" " * lead + more for more in last[1:]]
    return out


def _route_target(r: dict[str, Any]) -> str:
    if r.get("via") == "local":
        return "its own cluster (Service)"
    if r.get("via") == "none":
        return "nowhere yet (no running instance to route to)"
    eps = ", ".join(f"{e.get('address')}:{e.get('port')}" for e in r.get("endpoints") or [])
    return f"{eps}" + (f"  [last rewrite failed: {r['error']}]" if r.get("error") else "")


def render_app(name: str, data: dict[str, Any], events: list[dict[str, Any]] | None,
               routes: list[dict[str, Any]] | None = None) -> str:
    comps = data.get("components") or {}
    counts = Counter(st.get("status", "?") for st in comps.values())
    lines = [_field("Name", name), _field("Submitted", _age(data.get("submitted"))),
             _field("Components", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"),
             "Status:"]
    lines += _table(["COMPONENT", "STATUS", "CLUSTER", "NODES", "SINCE", "REASON"],
                    [[c, st.get("status", "?"), st.get("cluster") or "-", ",".join(st.get("nodes") or []) or "-",
                      _age(st.get("since")), st.get("reason") or ""] for c, st in sorted(comps.items())])
    if routes:
        lines.append("Traffic (where each calling cluster's calls go):")
        lines += _table(["COMPONENT", "FROM", "TO", "SINCE", "ENDPOINTS"],
                        [[r["component"], r["from_cluster"], r.get("to_cluster") or "-", _age(r.get("since")),
                          _route_target(r)] for r in routes])
    if events is not None:
        lines.append("Recent decisions (newest last; `mlsysops events` for more):")
        lines += _table(["AGE", "AGENT", "STAGE", "OUTCOME", "REASON"],
                        [[_age(e.get("ts")), str(e.get("agent") or "-"), str(e.get("stage") or "-"),
                          str(e.get("outcome") or "-"), str(e.get("reason") or "")] for e in events[-10:]])
    if any(st.get("status") != "running" for st in comps.values()):
        lines.append(f"Why not running: mlsysops explain app/{name}")
    return "\n".join(lines)


def render_node(name: str, data: dict[str, Any]) -> str:
    desc = data.get("description") or {}
    spec = desc.get("spec") if isinstance(desc.get("spec"), dict) else desc
    lines = [_field("Name", name), _field("Cluster", data.get("cluster")),
             _field("Status", node_status(data)), _field("Last heartbeat", _age(data.get("last_heartbeat"))),
             _field("CPU", _pct(data.get("cpu_utilization"))),
             _field("Trust", "-" if data.get("trust") is None else f"{data['trust']:.2f}"
                    + (f" ({data['trust_reason']})" if data.get("trust_reason") else ""))]
    if spec:
        lines += [_field("Layer", spec.get("continuum_layer")), _field("Labels", ", ".join(spec.get("labels") or []))]
    lines.append("Components:")
    lines += _table(["APP", "COMPONENT", "STATUS"],
                    [[c.get("app", "-"), c.get("component", "-"), c.get("status", "-")]
                     for c in data.get("components") or []])
    return "\n".join(lines)


def render_cluster(name: str, data: dict[str, Any]) -> str:
    lines = [_field("Name", name), _field("Registered", data.get("registered")),
             _field("Agent", "alive" if data.get("alive") else f"lost: {data.get('lost_reason') or 'no heartbeat'}"),
             _field("Joined", _age(data.get("joined_at"))), _field("Last heartbeat", _age(data.get("last_heartbeat"))),
             _field("Nodes", f"{data.get('nodes_alive', 0)}/{data.get('nodes', 0)} ready"), "Nodes:"]
    lines += _table(["NODE", "STATUS", "CPU", "TRUST", "COMPONENTS"],
                    [[n["name"], node_status(n), _pct(n.get("cpu_utilization")),
                      "-" if n.get("trust") is None else f"{n['trust']:.2f}",
                      ", ".join(f"{c['app']}/{c['component']}" for c in n.get("components") or []) or "-"]
                     for n in data.get("node_status") or []])
    return "\n".join(lines)


def render_explanation(data: dict[str, Any]) -> str:
    head = (f"app/{data['app']}: running as desired" if data.get("converged")
            else f"app/{data['app']}: not running as desired")
    lines = [head]
    for c in data.get("components") or []:
        mark = "ok " if c.get("converged") else "!! "
        lines.append(f"{mark}{c['component']} ({c.get('status')}): {c.get('reason')}")
        for ev in c.get("evidence") or []:
            lines.append(textwrap.fill(str(ev), WIDTH, initial_indent="     - ", subsequent_indent="       "))
        if c.get("next_step"):
            lines.append(textwrap.fill(c["next_step"], WIDTH, initial_indent="     next: ",
                                       subsequent_indent="           "))
    return "\n".join(lines)


def render(kind: str, name: str, data: dict[str, Any], events: list[dict[str, Any]] | None = None,
           routes: list[dict[str, Any]] | None = None) -> str:
    if kind == "apps":
        return render_app(name, data, events, routes)
    if kind == "nodes":
        return render_node(name, data)
    return render_cluster(name, data)
