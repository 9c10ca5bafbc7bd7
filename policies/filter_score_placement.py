"""Policy: place an application's components on this cluster's nodes (filters + scorers).

Cluster layer, application scope. Analyze: some component assigned to this cluster has fewer instances
(deploying/running, or lost and awaiting relocation) than wanted. Plan: kube-scheduler style placement
(`mlsysops.policies.placement_engine.place_app`) of the missing instances whose local dependencies already run
(`depends_on` means "start after those run"); the explanation carries every filter's reason and score,
and per component the structured rejections (plugin, code, reason, count of nodes).
Configuration: `context["placement"]` enables, disables, weights and configures the filters and scorers
(`mlsysops.policies.placement_plugins`); `context["weights"]` still overrides scorer weights.
`context["placer"]`: `batch` (default: the app's missing instances placed as a whole,
`mlsysops.policies.batch_placement`, through the same plugins) or `instance` (one instance at a time,
`place_app`, the previous default); `context["batch"]` tunes the batch placer (`time_budget_s`, `exact`,
`max_variables`, `score_weight_ms`). The batch placer runs in a worker thread (HiGHS releases the GIL),
so a solve does not hold the agent's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlsysops.agents.placement.cluster_view import ClusterState, assigned_requests, instance_id
from mlsysops.policies.batch_placement import BatchOptions, place_batch, placer_of
from mlsysops.policies.placement_engine import DependencyCycleError, place_app
from mlsysops.policies.placement_plugins import placement_config

MECHANISM = "component_placement"


def initialize() -> dict[str, Any]:
    return {"name": "filter_score_placement", "scope": "application", "priority": 0,
            "configuration": {"analyze_interval": 2.0},
            "mechanisms": [MECHANISM],
            "telemetry": {"metrics": ["system.cpu.utilization"], "system_scrape_interval": 1.0},
            "weights": None, "placer": "batch", "batch": None}


def _missing(system: dict[str, Any], app: str) -> tuple[ClusterState, list, dict[str, list[str]]]:
    state = ClusterState.from_system(system)
    requests = assigned_requests(system, app)
    placed: dict[str, list[str]] = {}
    for inst in state.instances:
        if inst["app"] == app and inst["status"] in ("deploying", "starting", "running", "lost"):
            placed.setdefault(inst["component"], []).append(inst["node"])
    missing = [r for r in requests if len(placed.get(r.name, [])) < r.instances]
    return state, missing, placed


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    _, missing, placed = _missing(system_description, app)
    context["explanation"] = {"missing": {r.name: r.instances - len(placed.get(r.name, [])) for r in missing}}
    return bool(missing), context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    state, missing, placed = _missing(system_description, app)
    running = {i["component"] for i in state.instances if i["app"] == app and i["status"] == "running"}
    local = {r.name for r in assigned_requests(system_description, app)}
    ready, waiting = [], {}
    for req in missing:
        pending = [d for d in req.depends_on if d in local and d not in running]
        if pending:
            waiting[req.name] = f"waits for {', '.join(pending)} to run (depends_on)"
        else:
            req.depends_on = [d for d in req.depends_on if d in local]
            ready.append(req)
    config = placement_config(context)
    try:
        if placer_of(context) == "batch":
            options = BatchOptions.from_mapping(context.get("batch"))
            result = await asyncio.to_thread(place_batch, ready, state.nodes, placed=placed, config=config,
                                             options=options)
        else:
            result = place_app(ready, state.nodes, placed=placed, config=config)
    except DependencyCycleError as exc:
        context["explanation"] = {"error": str(exc)}
        return {}, context
    actions = []
    for component, nodes in result.placements.items():
        taken = {i["instance_id"] for i in state.active(app, component)}
        slot = 0
        for node in nodes:
            while any(t.startswith(f"{app}.{component}.{slot}@") for t in taken):
                slot += 1
            iid = instance_id(app, component, slot, node)
            taken.add(iid)
            actions.append({"action": "deploy", "component": component, "node": node, "instance_id": iid})
    context["explanation"] = {
        "summary": result.explain(),
        "decisions": {c: [d.explain() for d in ds] for c, ds in result.decisions.items()},
        "unplaceable": result.unplaceable,
        "rejections": {c: ds[-1].rejection_summary() for c, ds in result.decisions.items() if ds},
        "waiting": waiting,
        "alternatives": {c: [d.ranking()[:3] for d in ds] for c, ds in result.decisions.items()},
        "placer": result.batch or "instance",
    }
    if not actions:
        return {}, context
    return {MECHANISM: {"app": app, "actions": actions}}, context
