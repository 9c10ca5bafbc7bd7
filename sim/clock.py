"""The sim's single source of time.

Every state in the sim (startup transitions, fault expiry, noise) is a function of `SimClock.now()`, so a
manual clock makes unit tests deterministic and a real-time clock (optionally scaled) drives live runs.
"""

from __future__ import annotations

import time
from typing import Literal

ClockMode = Literal["manual", "realtime"]


class SimClock:
    """Seconds of simulated time since the clock was created (plus `start`).

    * manual: time moves only through `advance(dt)`.
    * realtime: time follows `time.monotonic()` multiplied by `scale`; `advance(dt)` adds a jump on top
      (handy for benchmarks that want to skip ahead).
    """

    def __init__(self, mode: ClockMode = "manual", *, scale: float = 1.0, start: float = 0.0) -> None:
        if mode not in ("manual", "realtime"):
            raise ValueError(f"clock mode must be 'manual' or 'realtime', got {mode!r}")
        if scale <= 0:
            raise ValueError(f"clock scale must be > 0, got {scale}")
        self._mode: ClockMode = mode
        self._scale = float(scale)
        self._offset = float(start)
        self._t0 = time.monotonic()

    @classmethod
    def manual(cls, start: float = 0.0) -> SimClock:
        return cls("manual", start=start)

    @classmethod
    def realtime(cls, scale: float = 1.0) -> SimClock:
        return cls("realtime", scale=scale)

    @property
    def mode(self) -> ClockMode:
        return self._mode

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        if self._mode == "manual":
            return self._offset
        return self._offset + (time.monotonic() - self._t0) * self._scale

    def advance(self, dt: float) -> float:
        """Move time forward by `dt` sim seconds and return the new time."""
        if dt < 0:
            raise ValueError(f"time cannot go backwards (dt={dt})")
        self._offset += float(dt)
        return self.now()

    def __repr__(self) -> str:
        return f"SimClock(mode={self._mode!r}, scale={self._scale}, now={self.now():.3f})"
