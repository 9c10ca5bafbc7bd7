"""Policy: move components off lost nodes, away from sustained QoS violations and on node proposals.

Cluster layer, application scope, priority 10: when it and the placement policy plan for the same app in
one cycle, relocation wins (the scheduler's conflict rule) because healing beats first placement.
Anti-flapping: a per-component cooldown kept in the policy context.
"""

from __future__ import annotations

import time
from typing import Any

from mlsysops.agents.placement.cluster_view import ClusterState, assigned_requests, instance_id, placements
from mlsysops.policies.placement_engine import schedule
from mlsysops.policies.placement_plugins import placement_config
from mlsysops.policies.relocation_logic import Relocation, plan_relocations

MECHANISM = "component_placement"


def initialize() -> dict[str, Any]:
    return {"name": "relocation", "scope": "application", "priority": 10,
            "configuration": {"analyze_interval": 1.0},
            "mechanisms": [MECHANISM],
            "telemetry": {"metrics": ["response_time_ms", "system.cpu.utilization"],
                          "system_scrape_interval": 1.0},
            "qos_violation_threshold": 3, "cooldown_s": 10.0, "last_moved": {}}


def _relocations(context: dict[str, Any], app: str, system: dict[str, Any],
                 held: list[str] | None = None) -> tuple[ClusterState, list[Relocation]]:
    state = ClusterState.from_system(system)
    requests = {r.key: r for r in assigned_requests(system, app)}
    lost_nodes = sorted({i["node"] for i in state.lost(app)})
    qos = {(app, key.split("/", 1)[1]): values for key, values in system.get("qos", {}).items()
           if key.split("/", 1)[0] == app}
    last_moved = {tuple(k.split("/", 1)): v for k, v in context.get("last_moved", {}).items()}
    config = placement_config(context)
    moves = plan_relocations(placements(state, app), state.nodes, requests, qos,
                             lost_nodes=lost_nodes, now=system.get("now", time.time()),
                             qos_violation_threshold=int(context.get("qos_violation_threshold", 3)),
                             cooldown_s=float(context.get("cooldown_s", 10.0)), last_moved=last_moved,
                             config=config, held=held)
    moved = {m.key for m in moves}
    for prop in system.get("proposals", []):   # node agents propose, the cluster decides
        key = (prop["app"], prop["component"])
        if prop["app"] != app or key in moved or key not in requests:
            continue
        since = last_moved.get(key)
        if since is not None and system.get("now", time.time()) - since < float(context.get("cooldown_s", 10)):
            continue
        decision = schedule(requests[key], state.nodes, exclude=[prop["node"]], incumbent=prop["node"],
                            config=config)
        if decision.node is not None:
            moves.append(Relocation(app, key[1], prop["node"], decision.node,
                                    f"proposed by node {prop['node']}: {prop['reason']}", decision))
    return state, moves


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    held: list[str] = []
    _, moves = _relocations(context, application_description["name"], system_description, held)
    held += [f"{m.app}/{m.component} must leave {m.from_node} ({m.reason}) but has nowhere to go"
             for m in moves if m.to_node is None]
    context["explanation"] = {"relocations": [m.explain() for m in moves], "held": held}
    return any(m.to_node for m in moves), context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    state, moves = _relocations(context, app, system_description)
    actions = []
    now = system_description.get("now", time.time())
    for move in moves:
        if move.to_node is None:
            continue
        old = next((i for i in state.instances if i["app"] == app and i["component"] == move.component
                    and i["node"] == move.from_node), None)
        slot = state.free_slot(app, move.component)
        actions.append({"action": "move", "component": move.component, "from": move.from_node,
                        "to": move.to_node, "instance_id": old["instance_id"] if old else None,
                        "new_instance_id": instance_id(app, move.component, slot, move.to_node)})
        context.setdefault("last_moved", {})[f"{app}/{move.component}"] = now
    context["explanation"] = {"relocations": [m.explain() for m in moves],
                              "alternatives": {m.component: (m.decision.ranking()[:3] if m.decision else [])
                                               for m in moves}}
    if not actions:
        return {}, context
    return {MECHANISM: {"app": app, "actions": actions}}, context
