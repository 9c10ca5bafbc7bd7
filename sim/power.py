"""Power and energy of a simulated node.

power_watts = cores x (idle_watts_per_core + dynamic_watts_per_core x utilisation x (f / f_max)^3)

Dynamic CMOS power is C V^2 f, and DVFS lowers the voltage with the frequency (V ~ f), hence f^3 at full
utilisation. The work does not shrink with the clock: a CPU-bound instance needs f_max / f times the CPU
time at a lower f (`resources.instance_cpu_cores`) and its service time grows by as much (`qos`, through
the node's speed), so a lower frequency saves energy only while the node has headroom, and costs QoS
when it has none. Idle power is paid whatever the clock.

Energy is the integral of power over sim time, kept per node by `EnergyMeter` on a fixed grid of sim time
(every `step` seconds): the power at a grid point holds until the next one. The continuum advances the
grid at the start of every call, before it applies anything that is due or asked for, so each grid
point sees the state of that moment and the counter is a function of the clock and the history of
commands, not of how often anyone reads it (as every other sim output). A change between two grid points
(a new frequency) is charged from the next point: an error below one step's worth of the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .config import SimConfig

ENERGY_STEP_S = 0.25


def node_power_watts(cores: float, utilization: float, freq_ratio: float, cfg: SimConfig) -> float:
    util = min(max(utilization, 0.0), 1.0)
    return cores * (cfg.idle_watts_per_core + cfg.dynamic_watts_per_core * util * freq_ratio ** 3)


@dataclass
class _Meter:
    t: float | None = None      # the last grid point evaluated for this node
    watts: float = 0.0          # power from that point on
    joules: float = 0.0         # energy up to that point


class EnergyMeter:
    """Joules per node since it joined the sim: a monotonic counter (OTel's `hw.energy`)."""

    def __init__(self, step: float = ENERGY_STEP_S, start: float = 0.0) -> None:
        if step <= 0:
            raise ValueError(f"energy step must be > 0, got {step}")
        self.step = step
        self.start = start
        self._k = 0                 # index of the next grid point (start + k x step: no float drift)
        self._next = start
        self._meters: dict[str, _Meter] = {}

    def add(self, node: str) -> None:
        self._meters.setdefault(node, _Meter())

    def advance(self, until: float, nodes: Iterable[str], power: Callable[[str, float], float], *,
                inclusive: bool = True) -> None:
        """Evaluate every grid point up to `until` (or strictly before it) for `nodes`."""
        names = list(nodes)
        while self._next < until or (inclusive and self._next == until):
            t = self._next
            for name in names:
                m = self._meters.setdefault(name, _Meter())
                if m.t is not None:
                    m.joules += m.watts * (t - m.t)
                m.t, m.watts = t, power(name, t)
            self._k += 1
            self._next = self.start + self._k * self.step

    def next_point(self) -> float:
        return self._next

    def joules(self, node: str, now: float) -> float:
        m = self._meters.get(node)
        if m is None or m.t is None:
            return 0.0
        return m.joules + m.watts * max(0.0, now - m.t)
