"""How late an agent's event loop runs its callbacks: the loop-lag metric `mlsysops.agent.loop.lag`.

A task asks to wake every `interval` and measures how much later than asked it does: that is how long any
ready callback (a heartbeat to answer, a presence to handle) waited behind whatever held the loop. The
latest value is exported as a gauge through the agent's OTel pipeline (Prometheus, OTLP); `max_s` is the
largest since start and `recent_max_s` the largest over the last `window` seconds (what the digest
carries up and the dashboard shows).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

METRIC = "mlsysops.agent.loop.lag"


class LoopLag:
    def __init__(self, telemetry: Any, agent_id: str, *, interval: float = 0.1, window: float = 10.0) -> None:
        self.telemetry = telemetry
        self.agent_id = agent_id
        self.interval = interval
        self.window = window
        self.last_s = 0.0
        self.max_s = 0.0
        self._recent: deque[tuple[float, float]] = deque()   # (monotonic time, lag), newest last
        self._task: asyncio.Task[None] | None = None

    @property
    def recent_max_s(self) -> float:
        return max((lag for _, lag in self._recent), default=0.0)

    def start(self, spawn: Any) -> None:
        if self._task is None or self._task.done():
            self._task = spawn(self._run(), name="loop-lag")

    def observe(self, lag: float) -> None:
        now = time.monotonic()
        self.last_s = lag
        self.max_s = max(self.max_s, lag)
        self._recent.append((now, lag))
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()
        self.telemetry.set_gauge(METRIC, {"agent": self.agent_id}, lag)

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval)
            self.observe(max(0.0, time.monotonic() - asked - self.interval))
