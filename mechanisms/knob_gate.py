"""A node knob behind the node description's `permitted_actions`: the one place that says yes or no.

Wraps any knob mechanism (cpufreq, NVML, their simulated equivalents) registered on a node agent, so a
policy's plan and a parent's `node.knob` command meet the same check: a knob whose action the node does
not permit is refused with the reason (and the mechanism is never called); `get_state` tells whether it is
permitted. ``"*"`` in `permitted_actions` permits every knob.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any


async def _call(fn: Any, *args: Any) -> Any:
    value = fn(*args)
    return await value if inspect.isawaitable(value) else value


class PermittedKnob:
    def __init__(self, inner: Any, action: str, permitted: Iterable[str] | None, node: str) -> None:
        self.inner = inner
        self.action = action
        self.node = node
        self.permitted_actions = sorted(str(a) for a in permitted or [])
        self.refused = 0

    @property
    def permitted(self) -> bool:
        return self.action in self.permitted_actions or "*" in self.permitted_actions

    def refusal(self) -> str:
        return (f"not permitted: node {self.node}'s permitted_actions {self.permitted_actions} "
                f"do not include {self.action}")

    async def get_state(self) -> dict[str, Any]:
        state = dict(await _call(self.inner.get_state))
        state["permitted"] = self.permitted
        if not self.permitted:
            state["refusal"] = self.refusal()
        return state

    async def get_options(self) -> dict[str, Any]:
        return dict(await _call(self.inner.get_options)) if self.permitted else {"commands": [],
                                                                                 "reason": self.refusal()}

    async def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        if not self.permitted:
            self.refused += 1
            return {"ok": False, "detail": self.refusal()}
        result = await _call(self.inner.apply, command)
        return result if isinstance(result, dict) else {"ok": result is not False, "detail": None}

    def frequencies_hz(self) -> list[float]:
        steps = getattr(self.inner, "frequencies_hz", None)
        return list(steps()) if callable(steps) else []
