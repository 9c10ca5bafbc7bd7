"""Policy: place pinned components (`node_placement.node`) on their node, nothing else.

The original framework's `staticPlacedComponents` policy, for apps that opt in with
`policies: [static_placement]`. Cluster layer, application scope. A pinned node that is down or full is
reported in the explanation and retried at the next analysis; the component is never placed elsewhere.
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.placement.cluster_view import ClusterState, assigned_requests, instance_id
from mlsysops.policies.placement_engine import schedule
from mlsysops.policies.placement_plugins import placement_config

MECHANISM = "component_placement"


def initialize() -> dict[str, Any]:
    return {"name": "static_placement", "scope": "application", "priority": 0,
            "configuration": {"analyze_interval": 2.0}, "mechanisms": [MECHANISM], "telemetry": {"metrics": []}}


def _pinned_missing(system: dict[str, Any], app: str):
    state = ClusterState.from_system(system)
    out = []
    for req in assigned_requests(system, app):
        if req.node is None:
            continue
        have = [i for i in state.instances if i["app"] == app and i["component"] == req.name
                and i["status"] in ("deploying", "starting", "running", "lost")]
        if len(have) < req.instances:
            out.append(req)
    return state, out


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    _, missing = _pinned_missing(system_description, application_description["name"])
    context["explanation"] = {"pinned_missing": [r.name for r in missing]}
    return bool(missing), context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    app = application_description["name"]
    state, missing = _pinned_missing(system_description, app)
    actions, reasons = [], {}
    config = placement_config(context)
    for req in missing:
        decision = schedule(req, state.nodes, config=config)
        if decision.node is None:
            reasons[req.name] = decision.explain()
            continue
        slot = state.free_slot(app, req.name)
        actions.append({"action": "deploy", "component": req.name, "node": decision.node,
                        "instance_id": instance_id(app, req.name, slot, decision.node)})
        reasons[req.name] = decision.explain()
    context["explanation"] = {"decisions": reasons}
    return ({MECHANISM: {"app": app, "actions": actions}} if actions else {}), context
