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
`max_variables`, `score_weight_ms`, `scope`). With `scope: cluster` (default) the app is placed together
with every other app of this cluster that has components ready to place (they compete for the same
nodes), and takes its share; `scope: app` places it alone. The batch placer runs in a worker thread (HiGHS releases the GIL),
so a solve does not hold the agent's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlsysops.agents.placement.cluster_view import ClusterState, assigned_requests, instance_id
from mlsysops.policies.batch_placement import BatchOptions, place_apps, place_batch, placer_of
from mlsysops.policies.placement_engine import AppPlacement, DependencyCycleError, dependency_order, place_app
from mlsysops.policies.placement_plugins import placement_config

MECHANISM = "component_placement"
POLICY = "filter_score_placement"


def initialize() -> dict[str, Any]:
    return {"name": "filter_score_placement", "scope": "application", "priority": 0,
            "configuration": {"analyze_interval": 2.0},
            "mechanisms": [MECHANISM],
            "telemetry": {"metrics": ["system.cpu.utilization"], "system_scrape_interval": 1.0},
            "weights": None, "placer": "batch", "batch": None}


def _missing(system: dict[str, Any], app: str,
             state: ClusterState | None = None) -> tuple[ClusterState, list, dict[str, list[str]]]:
    state = state or ClusterState.from_system(system)
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


def _ready(system: dict[str, Any], state: ClusterState, app: str) -> tuple[list, dict[str, str], dict]:
    """The app's missing components whose local dependencies run, those still waiting, and where its
    instances are (deploying, running or lost)."""
    _, missing, placed = _missing(system, app, state)
    running = {i["component"] for i in state.instances if i["app"] == app and i["status"] == "running"}
    local = {r.name for r in assigned_requests(system, app)}
    ready, waiting = [], {}
    for req in missing:
        pending = [d for d in req.depends_on if d in local and d not in running]
        if pending:
            waiting[req.name] = f"waits for {', '.join(pending)} to run (depends_on)"
        else:
            req.depends_on = [d for d in req.depends_on if d in local]
            ready.append(req)
    return ready, waiting, placed


def _pending_elsewhere(system: dict[str, Any], state: ClusterState, app: str) -> dict[str, tuple[list, dict]]:
    """Other apps of this cluster with ready components to place, managed by this policy (their
    `policies` unset or naming it), whose batch is well formed: they compete for the same nodes."""
    out = {}
    for other in sorted(system.get("assigned", {})):
        model = system.get("app_models", {}).get(other)
        if other == app or model is None or (model.policies and POLICY not in model.policies):
            continue
        ready, _, placed = _ready(system, state, other)
        if not ready:
            continue
        try:
            dependency_order(ready)
        except ValueError:   # a broken app is its own plan's error, not ours
            continue
        out[other] = (ready, placed)
    return out


def _place(context: dict[str, Any], system: dict[str, Any], state: ClusterState, app: str, ready: list,
           placed: dict) -> AppPlacement:
    config = placement_config(context)
    if placer_of(context) != "batch":
        return place_app(ready, state.nodes, placed=placed, config=config)
    options = BatchOptions.from_mapping(context.get("batch"))
    others = _pending_elsewhere(system, state, app) if options.scope == "cluster" and ready else {}
    if not others:
        return place_batch(ready, state.nodes, placed=placed, config=config, options=options)
    apps = {app: ready, **{name: batch for name, (batch, _) in others.items()}}
    where = {app: placed, **{name: p for name, (_, p) in others.items()}}
    return place_apps(apps, state.nodes, placed=where, config=config, options=options)[app]


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    state = ClusterState.from_system(system_description)
    ready, waiting, placed = _ready(system_description, state, app)
    try:
        # a worker thread: the exact model runs in HiGHS, which releases the GIL
        result = await asyncio.to_thread(_place, context, system_description, state, app, ready, placed)
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
