"""Node mechanism: the simulated node's CPU frequency (`SimContinuum.set_cpu_frequency`), with the same
commands as the sysfs one (`mechanisms/cpufreq.py`) so a policy drives either without knowing which.

A simulated node has one policy, ``policy0``, whose steps are its `cpu_freqs_hz`; the governors are
emulated: ``performance`` pins the top step, ``powersave`` the lowest, ``userspace`` takes `set_speed`.
"""

from __future__ import annotations

from typing import Any

from mlsysops.mechanisms.cpufreq import COMMANDS, NOT_SUPPORTED, KnobError

GOVERNORS = ("performance", "powersave", "userspace")


class SimCpuFrequencyMechanism:
    name = "cpu_frequency"

    def __init__(self, sim: Any, node: str) -> None:
        self.sim = sim
        self.node = node
        self.governor = "performance"
        self.changes = 0

    def _steps(self) -> list[float]:
        return list(self.sim.node(self.node).cpu_freqs_hz)

    def frequencies_hz(self) -> list[float]:
        return self._steps()

    def get_state(self) -> dict[str, Any]:
        steps = self._steps()
        if not steps:
            return {"supported": False, "reason": f"{NOT_SUPPORTED}: node {self.node} has no frequency table"}
        return {"supported": True, "changes": self.changes,
                "policies": {"policy0": {"governor": self.governor, "cur_hz": self.sim.cpu_frequency(self.node),
                                         "min_hz": steps[0], "max_hz": steps[-1], "hw_min_hz": steps[0],
                                         "hw_max_hz": steps[-1], "frequencies_hz": steps, "setspeed": True,
                                         "governors": list(GOVERNORS)}}}

    def get_options(self) -> dict[str, Any]:
        steps = self._steps()
        if not steps:
            return {"supported": False, "reason": f"{NOT_SUPPORTED}: node {self.node} has no frequency table",
                    "commands": []}
        return {"supported": True, "commands": list(COMMANDS),
                "policies": {"policy0": {"governors": list(GOVERNORS), "range_hz": [steps[0], steps[-1]],
                                         "frequencies_hz": steps, "set_speed": True}}}

    async def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            detail = self._execute(command)
        except KnobError as exc:
            return {"ok": False, "detail": str(exc)}
        self.changes += 1
        return {"ok": True, "detail": detail}

    def _execute(self, command: dict[str, Any]) -> str:
        steps = self._steps()
        if not steps:
            raise KnobError(f"{NOT_SUPPORTED}: node {self.node} has no frequency table")
        op = command.get("command") if isinstance(command, dict) else None
        if op not in COMMANDS:
            raise KnobError(f"command: expected one of {list(COMMANDS)}, got {op!r}")
        if command.get("policy") not in (None, "policy0"):
            raise KnobError(f"policy: {command['policy']!r} is not one of ['policy0']")
        if op == "set_governor":
            gov = command.get("governor")
            if gov not in GOVERNORS:
                raise KnobError(f"governor: {gov!r} is not available on {self.node} (available: {list(GOVERNORS)})")
            self.governor = gov
            if gov != "userspace":
                self.sim.set_cpu_frequency(self.node, steps[-1] if gov == "performance" else steps[0])
            return f"governor {gov} on {self.node}"
        if op == "reset":
            self.governor = "performance"
            self.sim.set_cpu_frequency(self.node, steps[-1])
            return f"reset {self.node} to {steps[-1]:g} Hz"
        if op == "set_limits":
            raise KnobError(f"set_limits is not modelled by the simulator (node {self.node}); use set_speed")
        hz = command.get("hz")
        if isinstance(hz, bool) or not isinstance(hz, int | float) or not any(abs(f - hz) <= 1.0 for f in steps):
            raise KnobError(f"hz: {hz!r} is not an available frequency of {self.node} ({steps})")
        if command.get("governor") == "userspace":
            self.governor = "userspace"
        if self.governor != "userspace":
            raise KnobError(f"set_speed needs the userspace governor on {self.node} (governor is {self.governor!r})")
        self.sim.set_cpu_frequency(self.node, float(hz))
        return f"{self.node} at {hz:g} Hz"
