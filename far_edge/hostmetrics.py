"""Host metrics of a board from /proc and sysfs (no psutil): what the node agent reports, under the same
OTel semantic-convention names (`system.cpu.utilization`, `system.memory.*`, `system.cpu.frequency`,
`system.cpu.load_average.1m`, `hw.energy`/`hw.power` where the kernel exposes RAPL energy counters).

CPU utilisation is the busy share of /proc/stat's jiffies since the previous sample, so the first sample
has none. Every file may be missing (containers, odd kernels): a metric that cannot be read is absent,
never invented.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


class HostMetrics:
    def __init__(self, proc: str | Path = "/proc", sys: str | Path = "/sys") -> None:
        self.proc = Path(proc)
        self.sys = Path(sys)
        self._cpu: tuple[int, int] | None = None
        self._energy: tuple[float, float] | None = None   # (monotonic, microjoules)

    def _cpu_times(self) -> tuple[int, int] | None:
        text = _read(self.proc / "stat")
        if not text or not text.startswith("cpu "):
            return None
        fields = [int(v) for v in text.split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)     # idle + iowait
        return sum(fields[:8]), idle                                  # guest time is already in user

    def _memory(self) -> dict[str, float]:
        text = _read(self.proc / "meminfo") or ""
        info = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                info[key] = int(parts[0]) * 1024
        total = info.get("MemTotal")
        avail = info.get("MemAvailable", info.get("MemFree"))
        if not total or avail is None:
            return {}
        used = float(total - avail)
        return {"system.memory.usage": used, "system.memory.limit": float(total),
                "system.memory.utilization": used / total}

    def _energy_uj(self) -> float | None:
        """Package energy (RAPL) in microjoules, summed over packages; None where there is no powercap."""
        total, found = 0.0, False
        for zone in sorted((self.sys / "class" / "powercap").glob("intel-rapl:[0-9]")):
            text = _read(zone / "energy_uj")
            if text and text.strip().isdigit():
                total += float(text)
                found = True
        return total if found else None

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        times = self._cpu_times()
        if times is not None:
            if self._cpu is not None:
                dt, didle = times[0] - self._cpu[0], times[1] - self._cpu[1]
                if dt > 0:
                    out["system.cpu.utilization"] = max(0.0, min(1.0, 1.0 - didle / dt))
            self._cpu = times
        out["system.cpu.logical.count"] = float(os.cpu_count() or 1)
        out.update(self._memory())
        load = _read(self.proc / "loadavg")
        if load:
            out["system.cpu.load_average.1m"] = float(load.split()[0])
        freq = _read(self.sys / "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
        if freq and freq.strip().isdigit():
            out["system.cpu.frequency"] = float(freq) * 1000.0
        energy = self._energy_uj()
        if energy is not None:
            now = time.monotonic()
            out["hw.energy"] = energy / 1e6
            if self._energy is not None and now > self._energy[0] and energy >= self._energy[1]:
                out["hw.power"] = (energy - self._energy[1]) / 1e6 / (now - self._energy[0])
            self._energy = (now, energy)
        return out
