"""Simulated seconds in real seconds: a slice whose simulator runs `time_scale` times faster than real time
(`substrate.time_scale`) runs its agents' durations that much faster too, each down to a real floor below
which a loop (XMPP round trips, a loaded machine) cannot keep the cadence."""

from __future__ import annotations


def scaled_seconds(value: float, time_scale: float, floor: float) -> float:
    """`value` simulated seconds in real ones: divided by the time scale, never below `floor` (nor above
    `value`: a duration already shorter than its floor is kept)."""
    return value if time_scale == 1.0 else max(value / time_scale, min(value, floor))
