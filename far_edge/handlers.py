"""What the far-edge agent answers its cluster: `ping`, `config.update`, `node.knob` (requests from the
cluster only: the agent checks the sender before these run). Bodies are checked here, by hand, with the
reason naming the field (the node agent's pydantic schemas in `agents/payloads.py` and
`agents/managed_agent.py` say the same; the far edge has no pydantic)."""

from __future__ import annotations

import math
import time
from typing import Any

from mlsysops.agents.wire import Frame, Kind

MODES = ("heuristic", "ml")


def finite_number(value: Any) -> float | None:
    """`value` as a finite float, or None: not a bool, not an int too large for a float, not nan/inf."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class RequestFailed(Exception):
    """A request answered FAILURE with `reason` (or a request of ours that failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def dispatch(self: Any, frame: Frame) -> dict[str, Any]:
    b = frame.body
    if frame.kind == Kind.PING:
        sent = finite_number(b.get("sent_at"))
        if sent is None:
            raise RequestFailed(f"invalid body for ping/request: sent_at: expected a finite number, "
                                f"got {b.get('sent_at')!r:.80}")
        return {"sent_at": sent, "received_at": time.time()}
    if frame.kind == Kind.CONFIG_UPDATE:
        return config_update(self, b)
    if frame.kind == Kind.NODE_KNOB:
        return await knob(self, b)
    raise RequestFailed(f"no handler for {frame.kind}/{frame.performative.value}")

def config_update(self: Any, b: dict[str, Any]) -> dict[str, Any]:
    mode, tele = b.get("mode"), b.get("telemetry")
    if mode is not None and mode not in MODES:
        raise RequestFailed(f"invalid body for config.update/request: mode: expected one of {list(MODES)}, "
                            f"got {mode!r}")
    if tele is not None:
        if not isinstance(tele, dict) or set(tele) - {"metrics", "interval"}:
            raise RequestFailed("invalid body for config.update/request: telemetry: expected "
                                "{metrics: [names], interval: seconds}")
        metrics, interval = tele.get("metrics", []), tele.get("interval")
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise RequestFailed("invalid body for config.update/request: telemetry.metrics: expected a list "
                                "of metric names")
        if interval is not None and ((finite_number(interval) or 0) <= 0):
            raise RequestFailed(f"invalid body for config.update/request: telemetry.interval: expected a "
                                f"number > 0, got {interval!r}")
    out: dict[str, Any] = {"agent": self.agent_id}
    if tele is not None:
        self.wanted_metrics = sorted(set(tele.get("metrics", [])))
        if tele.get("interval"):
            self.monitor_interval = min(float(tele["interval"]), self.report_interval)
        out["telemetry"] = {"metrics": self.wanted_metrics, "interval": self.monitor_interval,
                            "note": "a far-edge agent sends every metric it reads"}
    if mode is not None:
        before, self.mode = self.mode, mode
        self.decide("config", f"management mode {before} -> {mode} (no ML policy runs on a far-edge agent)")
        out.update({"mode": mode, "paused": []})
    return out

async def knob(self: Any, b: dict[str, Any]) -> dict[str, Any]:
    name, command = b.get("knob"), b.get("command", {})
    if not isinstance(name, str) or not isinstance(command, dict):
        raise RequestFailed("invalid body for node.knob/request: expected {knob: name, command: {...}}")
    gate = self._gates.get(name)
    if gate is None:
        raise RequestFailed(f"knob: {name!r} is not a knob of node {self.node} (knobs: {sorted(self._gates)})")
    result = await gate.apply(command)
    self.decide("knob", f"{name} {command.get('command')} from the cluster: "
                f"{'done' if result.get('ok') else 'refused'}: {result.get('detail')}",
                inputs={"command": command}, outcome="info" if result.get("ok") else "error")
    if not result.get("ok"):
        raise RequestFailed(f"{name}: {result.get('detail')}")
    return {"ok": True, "detail": result.get("detail"), "state": await gate.get_state()}
