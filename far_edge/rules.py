"""The far-edge agent's local rules: what it decides on its own, connected or not (edge autonomy).

* ``restart_crashed``: a component that failed (or, with ``restart: always``, stopped) is started again
  after a backoff that doubles per consecutive restart (1 s .. 60 s), reset once it ran for a minute;
* ``idle_frequency``: while the board is idle (CPU below `idle_below` for `idle_samples` samples) the CPU
  governor goes to ``powersave``; once it is busy again (above `busy_above`) back to ``performance``. Only
  where cpufreq works and `permitted_actions` allow `cpu_frequency`; otherwise the rule says once why it
  is inactive.

Every action (and every refusal) is a decision record with its inputs, the rule and the reason.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from mlsysops.far_edge.components import Component


class LocalRules:
    def __init__(self, agent: Any, *, idle_below: float = 0.2, busy_above: float = 0.6, idle_samples: int = 5,
                 backoff: float = 1.0, backoff_max: float = 60.0, healthy_after: float = 60.0) -> None:
        self.agent = agent
        self.idle_below, self.busy_above, self.idle_samples = idle_below, busy_above, idle_samples
        self.backoff, self.backoff_max, self.healthy_after = backoff, backoff_max, healthy_after
        self._cpu: deque[float] = deque(maxlen=idle_samples)
        self._next_restart: dict[str, float] = {}
        self._streak: dict[str, int] = {}
        self.governor_set: str | None = None
        self._inactive_said = False

    async def run(self, metrics: dict[str, float]) -> None:
        await self._restart_crashed()
        await self._idle_frequency(metrics)

    # -- restart_crashed ----------------------------------------------------------------------------
    def _wants_restart(self, comp: Component) -> bool:
        if comp.restart == "never":
            return False
        return comp.state == "failed" or (comp.restart == "always" and comp.state == "stopped"
                                          and comp.reason != "stopped by the agent")

    async def _restart_crashed(self) -> None:
        now = time.monotonic()
        sup = self.agent.supervisor
        for comp in sup.components.values():
            if comp.state == "running" and time.time() - comp.since >= self.healthy_after:
                self._streak.pop(comp.name, None)
            if not self._wants_restart(comp):
                continue
            due = self._next_restart.get(comp.name)
            if due is None:
                streak = self._streak.get(comp.name, 0)
                delay = min(self.backoff * 2 ** streak, self.backoff_max)
                self._next_restart[comp.name] = now + delay
                self.agent.decide("restart_crashed", f"{comp.app}/{comp.name} {comp.reason}: restart in {delay:g}s",
                                  inputs={"component": comp.name, "state": comp.state, "reason": comp.reason,
                                          "restarts": comp.restarts, "connected": self.agent.registered},
                                  action={"restart_in_s": delay}, alternatives=["leave it down"])
                continue
            if now < due:
                continue
            self._next_restart.pop(comp.name, None)
            self._streak[comp.name] = self._streak.get(comp.name, 0) + 1
            comp.restarts += 1
            await sup.start(comp.name)

    # -- idle_frequency -----------------------------------------------------------------------------
    async def _idle_frequency(self, metrics: dict[str, float]) -> None:
        util = metrics.get("system.cpu.utilization")
        if util is None:
            return
        self._cpu.append(util)
        knob = self.agent.knobs.get("cpu_frequency")
        state = knob.get_state() if knob is not None else {"supported": False, "reason": "no cpufreq knob"}
        if not state.get("supported") or not self.agent.permitted("cpu_frequency"):
            if not self._inactive_said:
                self._inactive_said = True
                why = state.get("reason") if not state.get("supported") else \
                    "permitted_actions do not include cpu_frequency"
                self.agent.decide("idle_frequency", f"rule inactive: {why}", inputs={"permitted":
                                  self.agent.permitted_actions}, outcome="info")
            return
        idle = len(self._cpu) == self.idle_samples and max(self._cpu) < self.idle_below
        busy = util > self.busy_above
        wanted = "powersave" if idle else "performance" if busy else None
        if wanted is None or wanted == self.governor_set:
            return
        result = await knob.apply({"command": "set_governor", "governor": wanted})
        self.governor_set = wanted if result.get("ok") else self.governor_set
        self.agent.decide("idle_frequency",
                          f"cpu {util:.0%} ({'idle' if idle else 'busy'}): governor {wanted}"
                          + ("" if result.get("ok") else f" refused: {result.get('detail')}"),
                          inputs={"cpu_recent": [round(v, 3) for v in self._cpu]}, action={"governor": wanted},
                          alternatives=["performance", "powersave"], outcome="info" if result.get("ok") else "error")
