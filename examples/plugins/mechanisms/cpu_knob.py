"""Example node mechanism: a CPU frequency knob (kept in memory here; a real one writes cpufreq sysfs)."""

FREQUENCIES = ("min", "max")
_state = {"frequency": "min", "cores": 1, "changes": 0}


def initialize(cores: int = 1) -> None:
    """Called once at load with the settings it names (`cores` from the agent's mechanism settings)."""
    _state["cores"] = cores


async def apply(command: dict) -> dict:
    frequency = command.get("frequency")
    if command.get("command") != "set" or frequency not in FREQUENCIES:
        return {"ok": False, "detail": f"expected {{'command': 'set', 'frequency': one of {FREQUENCIES}}}"}
    _state["frequency"] = frequency
    _state["changes"] += 1
    return {"ok": True, "detail": f"{_state['cores']} cores at {frequency}"}


def get_state() -> dict:
    return dict(_state)


def get_options() -> dict:
    return {"frequencies": list(FREQUENCIES)}
