"""Policy: choose the cluster of every component of an application (continuum layer).

Application scope. Analyze: a component has no cluster yet, its cluster is lost, or an updated description
rules its cluster out (not in `cluster_placement`, or pinned to a node elsewhere). Plan: filter+score
over clusters (`mlsysops.policies.cluster_selection.select_clusters`), honouring `cluster_placement.cluster_id`;
components already on a live cluster stay where they are. The command goes to the `cluster_dispatch`
mechanism, which forwards `app.deploy` to the chosen cluster agents. `context["placement"]` configures
the cluster filters and scorers (`mlsysops.policies.placement_plugins.CLUSTER_PLUGINS`); `context["weights"]`
still overrides scorer weights.

The continuum's `system_description`::

    {"clusters": {cluster_id: {"alive": bool,
                               "nodes": {name: {"model": MLSysOpsNode, "alive": bool,
                                                "cpu_utilization": float, "instances": [...]}}}},
     "assignments": {app: {component: cluster_id}},
     "app_models": {app: MLSysOpsApp}}
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.placement.adapters import component_requests, node_view
from mlsysops.policies.cluster_selection import ClusterView, select_clusters
from mlsysops.policies.placement_plugins import cluster_selection_config

MECHANISM = "cluster_dispatch"


def initialize() -> dict[str, Any]:
    return {"name": "continuum_cluster_placement", "scope": "application", "priority": 0,
            "configuration": {"analyze_interval": 2.0}, "mechanisms": [MECHANISM],
            "telemetry": {"metrics": []}, "weights": None}


def _views(system: dict[str, Any]) -> tuple[list[ClusterView], set[str]]:
    views, alive = [], set()
    for cid, info in system.get("clusters", {}).items():
        if not info.get("alive"):
            continue
        alive.add(cid)
        nodes = [node_view(n["model"], alive=bool(n.get("alive")),
                           cpu_utilization=float(n.get("cpu_utilization") or 0.0),
                           instances=n.get("instances", []))
                 for n in info.get("nodes", {}).values()]
        views.append(ClusterView.from_nodes(cid, nodes))
    return views, alive


def _still_allowed(model: Any, component: str, cid: str, system: dict[str, Any]) -> bool:
    """An updated description may rule out a component's cluster: the app's `cluster_placement` no longer
    lists it, or the component is now pinned to a node of another cluster. Then it must move."""
    allowed = model.cluster_placement.cluster_id if model.cluster_placement else None
    if allowed and cid not in allowed:
        return False
    comp = model.component(component)
    pinned = comp.node_placement.node if comp is not None and comp.node_placement else None
    if pinned:
        owner = next((c for c, info in system.get("clusters", {}).items() if pinned in (info.get("nodes") or {})), None)
        return owner is None or owner == cid
    return True


def _pending(system: dict[str, Any], app: str) -> tuple[dict[str, str], list[str]]:
    model = system["app_models"][app]
    current = system.get("assignments", {}).get(app, {})
    alive = {cid for cid, info in system.get("clusters", {}).items() if info.get("alive")}
    keep = {c: cid for c, cid in current.items() if cid in alive and _still_allowed(model, c, cid, system)}
    todo = [c.name for c in model.components if c.name not in keep]
    return keep, todo


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    keep, todo = _pending(system_description, app)
    context["explanation"] = {"unassigned": todo}
    return bool(todo), context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    model = system_description["app_models"][app]
    keep, todo = _pending(system_description, app)
    views, _ = _views(system_description)
    allowed = model.cluster_placement.cluster_id if model.cluster_placement else None
    config, weights = cluster_selection_config(context)
    result = select_clusters(component_requests(model), views, allowed, weights, current=keep, config=config)
    assign = {c: result.assignments[c] for c in todo if c in result.assignments}
    previous = system_description.get("assignments", {}).get(app, {})
    context["explanation"] = {
        "summary": result.explain(),
        "unplaceable": result.unplaceable,
        "decisions": {c: d.explain() for c, d in result.decisions.items() if c in todo},
        "rejections": {c: d.rejection_summary() for c, d in result.decisions.items() if c in todo},
        "alternatives": {c: d.ranking()[:3] for c, d in result.decisions.items() if c in todo},
    }
    if not assign:
        return {}, context
    return {MECHANISM: {"app": app, "assign": assign,
                        "previous": {c: previous[c] for c in assign if c in previous}}}, context
