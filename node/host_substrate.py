"""A real machine as a node agent's substrate: psutil and sysfs, sampled once per Monitor tick.

`observe()` returns the same snapshot as the simulated substrates (``{"up", "metrics", "instances"}``), with
the metric names of the OTel system semantic conventions where they exist (`system.cpu.utilization`,
`system.memory.*`, `system.cpu.frequency`, `system.cpu.load_average.1m`), and I/O as the same per-second
rates the sim reports (`system.network.io.receive|transmit`, `system.disk.io.read|write`, bytes/s), which the
node agent folds into the conventions' cumulative counters `system.network.io` / `system.disk.io`
(agents/telemetry/io_counters.py).
psutil's "since the previous call" CPU reading is taken exactly once per tick, here: several OTel readers
re-run callbacks and would otherwise corrupt it. Instances come from the workload substrate (Kubernetes),
not from here; components push their QoS metrics to the node agent (`agents/telemetry/push.py`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

CPUFREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")


def cpu_frequency_hz() -> float | None:
    """Current frequency of CPU 0: sysfs (kHz) where the kernel exposes it, else psutil; None if neither."""
    try:
        return float(CPUFREQ.read_text().strip()) * 1000.0
    except (OSError, ValueError):
        pass
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, FileNotFoundError):
        return None
    return float(freq.current) * 1e6 if freq and freq.current else None


class HostNodeSubstrate:
    def __init__(self, node: str) -> None:
        self.node = node
        psutil.cpu_percent(interval=None)             # prime: the first call has no reference window
        self._prev: tuple[float, Any, Any] | None = None

    async def observe(self) -> dict[str, Any]:
        return {"up": True, "metrics": self.sample(), "instances": []}

    def sample(self) -> dict[str, float]:
        now = time.monotonic()
        vm = psutil.virtual_memory()
        m: dict[str, float] = {
            "system.cpu.utilization": psutil.cpu_percent(interval=None) / 100.0,
            "system.cpu.logical.count": float(psutil.cpu_count() or 1),
            "system.memory.usage": float(vm.total - vm.available),
            "system.memory.limit": float(vm.total),
            "system.memory.utilization": (vm.total - vm.available) / vm.total if vm.total else 0.0,
            "system.cpu.load_average.1m": os.getloadavg()[0],
        }
        freq = cpu_frequency_hz()
        if freq is not None:
            m["system.cpu.frequency"] = freq
        net, disk = psutil.net_io_counters(), psutil.disk_io_counters()
        if self._prev is not None:
            then, pnet, pdisk = self._prev
            dt = max(now - then, 1e-3)
            if net is not None and pnet is not None:
                m["system.network.io.receive"] = max(0.0, (net.bytes_recv - pnet.bytes_recv) / dt)
                m["system.network.io.transmit"] = max(0.0, (net.bytes_sent - pnet.bytes_sent) / dt)
            if disk is not None and pdisk is not None:
                m["system.disk.io.read"] = max(0.0, (disk.read_bytes - pdisk.read_bytes) / dt)
                m["system.disk.io.write"] = max(0.0, (disk.write_bytes - pdisk.write_bytes) / dt)
        self._prev = (now, net, disk)
        return m

    async def close(self) -> None:
        return None
