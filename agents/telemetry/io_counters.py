"""Node I/O as the OTel semantic conventions define it: cumulative byte counters with a direction attribute.

Substrates report I/O as rates in bytes/s (the sim computes loads; the host substrate turns psutil's deltas
into rates). The conventions define `system.network.io` (attribute `network.io.direction`: receive|transmit)
and `system.disk.io` (`disk.io.direction`: read|write) as cumulative counters in bytes. `IoCounters.fold()`
integrates each rate over the time since the previous tick into such counters. They start at 0 when the
agent starts, which Prometheus' rate() reads as a counter reset, like a restarted node-exporter.
"""

from __future__ import annotations

RATES: dict[str, tuple[str, dict[str, str]]] = {   # substrate rate -> (counter, attributes)
    "system.network.io.receive": ("system.network.io", {"network.io.direction": "receive"}),
    "system.network.io.transmit": ("system.network.io", {"network.io.direction": "transmit"}),
    "system.disk.io.read": ("system.disk.io", {"disk.io.direction": "read"}),
    "system.disk.io.write": ("system.disk.io", {"disk.io.direction": "write"}),
}
COUNTERS = frozenset(counter for counter, _ in RATES.values()) | {"hw.energy"}   # joules since start

IoSample = tuple[str, dict[str, str], float]


class IoCounters:
    def __init__(self) -> None:
        self.totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._last: float | None = None

    def fold(self, metrics: dict[str, float], now: float) -> tuple[dict[str, float], list[IoSample]]:
        """Split one tick's `metrics` into everything else and the I/O counters (name, attributes, bytes)."""
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        rest: dict[str, float] = {}
        counters: list[IoSample] = []
        for name, value in metrics.items():
            spec = RATES.get(name)
            if spec is None:
                rest[name] = value
                continue
            counter, attrs = spec
            key = (counter, tuple(attrs.items()))
            self.totals[key] = self.totals.get(key, 0.0) + max(0.0, float(value)) * dt
            counters.append((counter, dict(attrs), self.totals[key]))
        return rest, counters
