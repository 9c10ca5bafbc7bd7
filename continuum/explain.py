"""Why an app is (not) running as desired: one dominant reason per component, the evidence, a next step.

`explain_app` reads what the continuum already has: the component statuses its clusters report, the
decision records of the slice about the app (placement rejections with their filters, held situations,
node losses, moves), the app's description and the nodes' descriptions. It decides nothing and changes
nothing; `mlsysops explain app/NAME`, `GET /api/v1/apps/NAME/explain` and the dashboard's "why" panel show
its answer.

The reasons, most specific first:
- unplaceable: which filters rejected how many nodes, and for resources the largest node that would do
  ("no node in layer [edge] has 64 cpu cores; the largest, edge-server-1, has 8");
- waiting for a dependency (`depends_on`) that is not running, with that dependency's own reason;
- failed / deploying with the substrate's reason (ImagePullBackOff, ...);
- relocating after its node was lost;
- running but violating its QoS target with nowhere better to go (a `held` record of the relocation policy);
- running: where, and whether it was moved recently and why.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from mlsysops.agents.placement.adapters import component_requests, node_view
from mlsysops.agents.placement.types import ComponentRequest, NodeView, format_bytes

RECENT_S = 600.0   # a move or a held QoS violation older than this is history, not "now"
_FILTER = re.compile(r"^(insufficient cpu|insufficient memory|layer|missing label|no sensor|node down|"
                     r"not mobile|node is mobile|pinned|architecture|no gpu|gpu|trust|dependency)")


def explain_app(name: str, app: Any, status: Mapping[str, Mapping[str, Any]], records: Iterable[Mapping[str, Any]],
                nodes: Mapping[str, Any], alive: Mapping[str, bool | None], component: str | None = None,
                now: float | None = None) -> dict[str, Any]:
    """The explanation of app `name` (optionally one component). `app` is its MLSysOpsApp (None if the
    continuum no longer holds it), `status` the continuum's component statuses, `records` the decision
    records about the app (any order), `nodes` node name -> MLSysOpsNode, `alive` node name -> up?"""
    now = time.time() if now is None else now
    recs = sorted(records, key=lambda r: r.get("ts") or 0.0)
    requests = {r.name: r for r in component_requests(app)} if app is not None else {}
    views = [node_view(m, alive=bool(alive.get(n, True))) for n, m in sorted(nodes.items())]
    names = [component] if component else sorted(set(status) | set(requests))
    out = []
    for comp in names:
        st = dict(status.get(comp) or {"status": "unknown", "reason": "the continuum has no status for it"})
        out.append(_component(name, comp, st, requests.get(comp), recs, views, status, now))
    converged = all(c["converged"] for c in out)
    return {"app": name, "converged": converged, "components": out,
            "summary": "running as desired" if converged else
            "; ".join(f"{c['component']}: {c['reason']}" for c in out if not c["converged"])}


def _component(app: str, comp: str, st: dict[str, Any], req: ComponentRequest | None, recs: list[Mapping[str, Any]],
               views: list[NodeView], status: Mapping[str, Mapping[str, Any]], now: float) -> dict[str, Any]:
    state = st.get("status") or "unknown"
    where = st.get("nodes") or []
    base = {"component": comp, "status": state, "cluster": st.get("cluster"), "nodes": where}
    reason_text = str(st.get("reason") or "")
    if state == "running":
        qos = _latest(recs, lambda r: r.get("outcome") == "held" and f"{app}/{comp} violates" in str(r.get("reason")),
                      now)
        if qos is not None:
            return {**base, "converged": False, "reason": "QoS target violated and no better node to move to",
                    "evidence": [_held_text(qos, app, comp)],
                    "next_step": "add capacity close to its peers, relax the QoS target, or look at the node it "
                                 f"runs on ({', '.join(where) or '?'}): `mlsysops describe node NAME`"}
        evidence = [f"running on {', '.join(where) or '?'} in {st.get('cluster') or '?'}"]
        moved = _relocation(recs, app, comp, where, now)
        if moved:
            evidence.append(moved)
        return {**base, "converged": True, "reason": "running", "evidence": evidence, "next_step": None}
    if "waits for" in reason_text or "depends_on" in reason_text:
        deps = [d for d in (req.depends_on if req else []) if (status.get(d) or {}).get("status") != "running"]
        dep_why = "; ".join(f"{d} is {(status.get(d) or {}).get('status', 'unknown')}"
                            + (f" ({status[d].get('reason')})" if (status.get(d) or {}).get("reason") else "")
                            for d in deps)
        return {**base, "converged": False, "reason": f"waiting for its dependency {', '.join(deps) or '?'}",
                "evidence": [reason_text] + ([dep_why] if dep_why else []),
                "next_step": f"see why {deps[0]} is not running: `mlsysops explain app/{app} {deps[0]}`"
                if deps else None}
    unplaceable = _unplaceable(recs, comp)
    blocked = sorted({m.group(1) for e in unplaceable for m in [re.search(r"dependency (\S+) unplaceable", e)] if m})
    if blocked:   # placed only after what it depends on, and that cannot be placed
        dep = blocked[0]
        dep_reason, _ = _dominant(None, _unplaceable(recs, dep), views)
        return {**base, "converged": False, "reason": f"waiting for its dependency {dep}, which cannot be placed",
                "evidence": [*unplaceable, f"{dep}: {dep_reason}"],
                "next_step": f"see why {dep} cannot be placed: `mlsysops explain app/{app} {dep}`"}
    if state in ("pending", "unknown") or unplaceable:
        if unplaceable:
            dominant, step = _dominant(req, unplaceable, views)
            return {**base, "converged": False, "reason": dominant, "evidence": unplaceable, "next_step": step}
        return {**base, "converged": False, "reason": reason_text or "not placed yet",
                "evidence": [f"status {state} since {_ago(st, now, 'since')}"],
                "next_step": "wait for the next placement round; if it stays, `mlsysops events "
                             f"{app} --stage plan` shows the placement decisions"}
    if state == "failed":
        return {**base, "converged": False, "reason": f"failed: {reason_text or 'no reason reported'}",
                "evidence": [f"on {', '.join(where) or '?'} in {st.get('cluster') or '?'}"],
                "next_step": _failure_step(reason_text)}
    if state in ("relocating", "lost"):
        lost = _latest(recs, lambda r: "lost" in str(r.get("reason")), now)
        return {**base, "converged": False, "reason": f"{state}: {reason_text or 'its node was lost'}",
                "evidence": [str(lost.get("reason"))] if lost else [],
                "next_step": "it is placed again as soon as a node qualifies; `mlsysops get nodes` shows "
                             "which are Ready"}
    return {**base, "converged": False, "reason": f"{state}" + (f": {reason_text}" if reason_text else ""),
            "evidence": [f"since {_ago(st, now, 'since')}"], "next_step": None}


def _unplaceable(recs: list[Mapping[str, Any]], comp: str) -> list[str]:
    """The newest placement record that found the component unplaceable: its per-cluster/node reasons."""
    for r in reversed(recs):
        expl = r.get("explanation")
        if not isinstance(expl, dict):
            continue
        why = (expl.get("unplaceable") or {}).get(comp) if isinstance(expl.get("unplaceable"), dict) else None
        if why:
            return [why] if isinstance(why, str) else [str(w) for w in why]
        if r.get("stage") == "plan" and comp in (expl.get("decisions") or {}):
            return []   # placed since: older rejections are history
    return []


def _dominant(req: ComponentRequest | None, evidence: list[str], views: list[NodeView]) -> tuple[str, str | None]:
    """The one reason that decides, and what to do about it."""
    counts: Counter[str] = Counter()
    for line in evidence:
        for part in re.split(r"[;,]\s*|:\s+(?=[a-z])", line):
            m = _FILTER.match(part.strip())
            if m:
                n = re.search(r"\((\d+) nodes?\)", part)
                counts[m.group(1)] += int(n.group(1)) if n else 1
    if req is None:
        top = counts.most_common(1)
        return (f"unplaceable: {top[0][0]} on {top[0][1]} node(s)" if top else "unplaceable", None)
    layer_nodes = [v for v in views if not req.layers or "*" in req.layers or v.layer in req.layers]
    where = f"in layer {_fmt(req.layers)}" if req.layers and "*" not in req.layers else "in the slice"
    if not layer_nodes:
        return (f"no node {where}", f"add a node {where} or allow another layer in node_placement")
    if req.cpu_cores and max(v.cpu_capacity for v in layer_nodes) < req.cpu_cores:
        big = max(layer_nodes, key=lambda v: v.cpu_capacity)
        return (f"no node {where} has {req.cpu_cores:g} cpu cores; the largest, {big.name}, has "
                f"{big.cpu_capacity:g}", f"lower the cpu request to at most {big.cpu_capacity:g} or add a node "
                f"with {req.cpu_cores:g} cores {where}")
    if req.memory_bytes and max(v.memory_capacity for v in layer_nodes) < req.memory_bytes:
        big = max(layer_nodes, key=lambda v: v.memory_capacity)
        return (f"no node {where} has {format_bytes(req.memory_bytes)} of memory; the largest, {big.name}, has "
                f"{format_bytes(big.memory_capacity)}", f"lower the memory request or add a bigger node {where}")
    for label in req.labels:
        if not any(label in v.labels or (":" not in label and label in v.label_keys) for v in layer_nodes):
            return (f"no node {where} has label {label}", f"label a node {label} or drop the requirement")
    for sensor in req.sensors:
        if not any(sensor in v.sensors for v in layer_nodes):
            return (f"no node {where} has a {sensor} sensor", "add a node with that sensor or drop the requirement")
    if req.gpu and not any(v.gpu for v in layer_nodes):
        return (f"no node {where} has a GPU", "add a GPU node or drop the GPU requirement")
    up = [v for v in layer_nodes if v.alive]
    if not up:
        return (f"every node {where} is down", "bring a node back (`mlsysops get nodes`)")
    if counts.get("insufficient cpu") or counts.get("insufficient memory"):
        return (f"the nodes {where} that could run it are full right now",
                "free capacity (delete or shrink other apps) or add a node; it is placed once room appears")
    top = counts.most_common(1)
    if top:
        return (f"unplaceable: {top[0][0]} rejects {top[0][1]} node(s)", None)
    return ("unplaceable", None)


def _failure_step(reason: str) -> str:
    low = reason.lower()
    if "imagepull" in low or "errimage" in low:
        return "check the image name and the registry's credentials, then `mlsysops apply` the fixed description"
    if "crashloop" in low or "exit" in low:
        return "the container itself fails: look at its logs on the substrate"
    return "`mlsysops events APP --stage execute` shows what the mechanism reported"


def _latest(recs: list[Mapping[str, Any]], match: Any, now: float) -> Mapping[str, Any] | None:
    for r in reversed(recs):
        if now - float(r.get("ts") or 0.0) > RECENT_S:
            return None
        if match(r):
            return r
    return None


_TRANSITION = re.compile(r": (\S+) -> (\S+) on (\S+) \[(.*)\]$")


def _relocation(recs: list[Mapping[str, Any]], app: str, comp: str, where: list[str], now: float) -> str | None:
    """"moved 12s ago from edge-rpi-1 (node edge-rpi-1 lost: missed 3 heartbeats)", from the continuum's
    status transitions of the component (whatever policy did the repair: relocation or a new placement)."""
    prefix = f"{app}/{comp}: "
    seen: list[tuple[Mapping[str, Any], set[str]]] = []
    for r in recs:
        text = str(r.get("reason") or "")
        m = _TRANSITION.search(text) if text.startswith(prefix) else None
        if m:
            seen.append((r, {n.strip(" '\"") for n in m.group(4).split(",") if n.strip(" '\"")}))
    now_on = set(where)
    for i in range(len(seen) - 1, 0, -1):
        rec, nodes = seen[i]
        before = seen[i - 1][1]
        if nodes == now_on and before and before != nodes:
            if now - float(rec.get("ts") or 0.0) > RECENT_S:
                return None
            gone = sorted(before - nodes)
            lost = next((str(r.get("reason")) for r in reversed(recs) if gone
                         and str(r.get("reason")).startswith(f"node {gone[0]} lost")), None)
            return (f"moved {_ago(rec, now)} from {', '.join(gone) or '?'}" + (f" ({lost})" if lost else ""))
    return None


def _held_text(record: Mapping[str, Any], app: str, comp: str) -> str:
    reason = str(record.get("reason") or "")
    parts = [p for p in reason.split("; ") if f"{app}/{comp}" in p]
    return parts[0].split(": ", 1)[-1] if parts else reason


def _ago(record: Mapping[str, Any], now: float, key: str = "ts") -> str:
    ts = record.get(key)
    if not isinstance(ts, int | float):
        return "?"
    s = int(max(0.0, now - ts))
    text = f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"
    return f"{text} ago"


def _fmt(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"
