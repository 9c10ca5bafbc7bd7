"""Policy: a node that stays overloaded proposes moving its heaviest component away (node layer).

Global scope. Node agents never place components themselves (ARCHITECTURE §2): the plan goes to the
`relocation_proposal` mechanism, which sends `plan.propose` to the cluster agent; the cluster's
relocation policy decides. The node's `system_description`::

    {"node": name, "cpu_utilization": [values, oldest first],
     "instances": [{"instance_id", "app", "component", "state", "cpu_usage_cores"}]}
"""

from __future__ import annotations

from typing import Any

MECHANISM = "relocation_proposal"


def initialize() -> dict[str, Any]:
    return {"name": "node_overload", "scope": "global", "priority": 0,
            "configuration": {"analyze_interval": 1.0}, "mechanisms": [MECHANISM],
            "telemetry": {"metrics": ["system.cpu.utilization"], "system_scrape_interval": 1.0},
            "threshold": 0.9, "samples": 5, "cooldown_s": 30.0, "last_proposal": 0.0}


def _overloaded(context: dict[str, Any], system: dict[str, Any]) -> bool:
    window = system.get("cpu_utilization", [])[-int(context.get("samples", 5)):]
    return len(window) >= int(context.get("samples", 5)) and min(window) >= float(context.get("threshold", 0.9))


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    hot = _overloaded(context, system_description)
    cooling = system_description.get("now", 0.0) - context.get("last_proposal", 0.0) < context.get("cooldown_s", 30)
    running = [i for i in system_description.get("instances", []) if i.get("state") == "running"]
    context["explanation"] = {"overloaded": hot, "cooldown": cooling, "running": len(running)}
    return hot and not cooling and bool(running), context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    running = [i for i in system_description.get("instances", []) if i.get("state") == "running"]
    if not running:
        return {}, context
    heaviest = max(running, key=lambda i: (i.get("cpu_usage_cores", 0.0), i["instance_id"]))
    window = system_description.get("cpu_utilization", [])[-int(context.get("samples", 5)):]
    reason = (f"cpu utilisation >= {context.get('threshold', 0.9):.0%} for {len(window)} samples "
              f"(min {min(window):.0%}); heaviest component {heaviest['app']}/{heaviest['component']} "
              f"uses {heaviest.get('cpu_usage_cores', 0.0):.2f} cores")
    context["last_proposal"] = system_description.get("now", 0.0)
    context["explanation"] = {"reason": reason,
                              "alternatives": [f"{i['app']}/{i['component']}" for i in running]}
    return {MECHANISM: {"app": heaviest["app"], "component": heaviest["component"],
                        "instance_id": heaviest["instance_id"], "node": system_description["node"],
                        "reason": reason}}, context
