"""Example node policy: raise the CPU frequency while the node is busy, lower it when it is idle."""

from mlsysops.plugins import NodeSystemDescription, PolicyContext

BUSY, IDLE = 0.8, 0.3


def initialize() -> PolicyContext:
    return {
        "scope": "global",                        # one instance for the whole node, not one per app
        "configuration": {"analyze_interval": "5s"},
        "telemetry": {"metrics": ["system.cpu.utilization"]},
        "mechanisms": ["cpu_knob"],               # the only mechanism this policy may plan for
    }


def _wanted(system: NodeSystemDescription) -> str | None:
    recent = system["cpu_utilization"][-3:]
    if not recent:
        return None
    load = sum(recent) / len(recent)
    return "max" if load > BUSY else "min" if load < IDLE else None


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    wanted = _wanted(system_description)
    current = mechanisms["cpu_knob"]["state"].get("frequency")
    return wanted is not None and wanted != current, context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    wanted = _wanted(system_description)
    recent = system_description["cpu_utilization"][-3:]
    explanation = {"summary": f"cpu {sum(recent) / len(recent):.0%} -> frequency {wanted}",
                   "alternatives": mechanisms["cpu_knob"]["options"]["frequencies"]}
    return {"cpu_knob": {"command": "set", "frequency": wanted}}, context, explanation
