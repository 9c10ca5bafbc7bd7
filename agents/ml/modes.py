"""Management modes and the `auto` mode's fallback state machine.

| mode | who acts | the ML policy |
|---|---|---|
| `heuristic` | the heuristic policies | paused (or, managing an app, delegating to the heuristics) |
| `ml` | the ML policy, always (no fallback) | acts; a heuristic only where it has no model yet |
| `auto` | the ML policy while it is trusted, else the heuristics | falls back by itself on drift or low confidence |
| `shadow` | the heuristic policies | runs beside them, records what it would have done, acts on nothing |

A slice has a mode; an app may override it. `AutoController` is the per-(policy, app) state of `auto`:
`ml` -> `fallback` when a drift detector fires (the alarm - detector, feature, statistic - is the
recorded reason, and retraining is requested), `fallback` -> `ml` only when a retrained version
validates on outcomes it has not been trained on. Low confidence on one decision does not change the
state: that decision alone goes to the heuristic, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MODES: tuple[str, ...] = ("heuristic", "ml", "auto", "shadow")
Mode = Literal["heuristic", "ml", "auto", "shadow"]


def check_mode(mode: Any, field_name: str = "mode") -> str:
    if mode not in MODES:
        raise ValueError(f"{field_name}: expected one of {list(MODES)}, got {mode!r}")
    return str(mode)


@dataclass
class AutoController:
    state: Literal["ml", "fallback"] = "ml"
    reason: str = "no drift detected"
    since: float = 0.0
    alarm: dict[str, Any] | None = None
    drifted_version: int | None = None
    training_requested_at: float | None = None
    validation: dict[str, Any] | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)

    def fall_back(self, alarm: dict[str, Any], version: int | None, now: float) -> None:
        if self.state == "fallback":
            return
        self.state, self.alarm, self.drifted_version, self.since = "fallback", alarm, version, now
        self.reason = f"fell back to heuristics: {alarm.get('summary') or alarm}"
        self.training_requested_at = None
        self.validation = None
        self._log(now)

    def restore(self, version: int, validation: dict[str, Any], now: float) -> None:
        self.state, self.since, self.validation = "ml", now, validation
        self.reason = (f"back to ML: retrained version {version} validated "
                       f"(mae {validation.get('mae', float('nan')):.3g} on {validation.get('rows', 0)} unseen outcomes)")
        self.alarm = None
        self._log(now)

    def _log(self, now: float) -> None:
        self.transitions.append({"t": now, "state": self.state, "reason": self.reason})
        del self.transitions[:-20]

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "since": self.since, "alarm": self.alarm,
                "validation": self.validation, "transitions": list(self.transitions[-5:])}
