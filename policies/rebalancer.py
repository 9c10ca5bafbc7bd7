"""Policy: background rebalancer (the descheduler idea) - move running components when it pays.

Cluster layer, application scope, priority 5 (relocation, 10, wins a conflict for the same app: healing
first). **Off by default**: it is not among the cluster's default policies; a slice turns it on by
listing it (``policies: {cluster: {enabled: [filter_score_placement, relocation, rebalancer]}}``) and may
tune it (``settings: {rebalancer: {rebalance: {...}}}``). Once on, its defaults are conservative: every
60 s, at most 2 instance moves per app (one linked pair), only for a gain per moved instance of at least
10 ms *and* 20 % of the app's cost (link latency + score cost, ``batch_problem``), a component moved at
most once per 10 minutes (``rebalance_logic``). Each plan's explanation has the app's cost before and after, the cost of the
whole app re-placed now, every move with its gain and the moves declined with why.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mlsysops.agents.placement.cluster_view import ClusterState, assigned_requests, instance_id
from mlsysops.policies.batch_placement import BatchOptions
from mlsysops.policies.placement_plugins import placement_config
from mlsysops.policies.rebalance_logic import RebalanceOptions, RebalancePlan, plan_rebalance

MECHANISM = "component_placement"


def initialize() -> dict[str, Any]:
    return {"name": "rebalancer", "scope": "application", "priority": 5,
            "configuration": {"analyze_interval": 60.0},
            "mechanisms": [MECHANISM],
            "telemetry": {"metrics": []},
            "rebalance": {}, "batch": None, "last_moved": {}}


def _plan(context: dict[str, Any], app: str, system: dict[str, Any]) -> tuple[ClusterState, RebalancePlan]:
    state = ClusterState.from_system(system)
    requests = assigned_requests(system, app)
    running: dict[str, list[str]] = {}
    for inst in state.instances:
        if inst["app"] == app and inst["status"] == "running" and inst["node"] in state.alive:
            running.setdefault(inst["component"], []).append(inst["node"])
    last = {k.split("/", 1)[1]: v for k, v in context.get("last_moved", {}).items() if k.split("/", 1)[0] == app}
    plan = plan_rebalance(requests, running, state.nodes, config=placement_config(context),
                          options=RebalanceOptions.from_mapping(context.get("rebalance")),
                          batch=BatchOptions.from_mapping(context.get("batch")),
                          now=system.get("now", time.time()), last_moved=last)
    return state, plan


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    _, plan = await asyncio.to_thread(_plan, context, application_description["name"], system_description)
    context["explanation"] = {"rebalance": plan.explain()}
    return bool(plan.moves), context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    state, result = await asyncio.to_thread(_plan, context, app, system_description)
    now = system_description.get("now", time.time())
    actions = []
    for move in result.moves:
        old = next((i for i in state.instances if i["app"] == app and i["component"] == move.component
                    and i["node"] == move.from_node and i["status"] == "running"), None)
        slot = state.free_slot(app, move.component)
        actions.append({"action": "move", "component": move.component, "from": move.from_node,
                        "to": move.to_node, "instance_id": old["instance_id"] if old else None,
                        "new_instance_id": instance_id(app, move.component, slot, move.to_node)})
        context.setdefault("last_moved", {})[f"{app}/{move.component}"] = now
    context["explanation"] = {"rebalance": result.explain(), "before": result.before, "after": result.after,
                              "whole_app_replaced": result.whole, "threshold": result.threshold,
                              "moves": [m.explain() for m in result.moves], "declined": result.declined}
    if not actions:
        return {}, context
    return {MECHANISM: {"app": app, "actions": actions}}, context
