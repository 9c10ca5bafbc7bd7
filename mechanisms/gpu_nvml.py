"""Node mechanism: GPU power limit and locked clocks through NVML (`nvidia-ml-py`, imported lazily).

Without the package, the NVML library or a GPU (this VM) the mechanism is *not supported*: `get_state`
says why and `apply` refuses with that reason. Commands (``index``: one GPU; omitted: every GPU)::

    {"command": "set_power_limit", "watts": 150}
    {"command": "set_clocks", "min_mhz": 600, "max_mhz": 1200}    # locked graphics clocks
    {"command": "reset"}                                          # default power limit, clocks unlocked
"""

from __future__ import annotations

from typing import Any

from mlsysops.mechanisms.cpufreq import NOT_SUPPORTED, KnobError

COMMANDS = ("set_power_limit", "set_clocks", "reset")


class GpuNvmlMechanism:
    name = "gpu_frequency"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._reason: str | None = None
        self.changes = 0

    def _init(self) -> Any:
        if self._nvml is not None or self._reason is not None:
            return self._nvml
        try:
            import pynvml
        except ImportError:
            self._reason = f"{NOT_SUPPORTED}: nvidia-ml-py is not installed (pip install mlsysops[gpu])"
            return None
        try:
            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                self._reason = f"{NOT_SUPPORTED}: NVML reports no GPU"
                return None
        except pynvml.NVMLError as exc:
            self._reason = f"{NOT_SUPPORTED}: NVML: {exc}"
            return None
        self._nvml = pynvml
        return pynvml

    def _devices(self, index: Any) -> list[tuple[int, Any]]:
        nv = self._init()
        if nv is None:
            raise KnobError(self._reason or NOT_SUPPORTED)
        count = nv.nvmlDeviceGetCount()
        if index is not None and (not isinstance(index, int) or not 0 <= index < count):
            raise KnobError(f"index: expected 0..{count - 1}, got {index!r}")
        wanted = range(count) if index is None else [index]
        return [(i, nv.nvmlDeviceGetHandleByIndex(i)) for i in wanted]

    def get_state(self) -> dict[str, Any]:
        try:
            devices = self._devices(None)
        except KnobError as exc:
            return {"supported": False, "reason": str(exc)}
        nv = self._nvml
        gpus = {}
        for i, h in devices:
            gpus[str(i)] = {"name": str(nv.nvmlDeviceGetName(h)),
                            "power_limit_w": nv.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
                            "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                            "graphics_clock_mhz": nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_GRAPHICS)}
        return {"supported": True, "changes": self.changes, "gpus": gpus}

    def get_options(self) -> dict[str, Any]:
        try:
            devices = self._devices(None)
        except KnobError as exc:
            return {"supported": False, "reason": str(exc), "commands": []}
        nv = self._nvml
        out = {}
        for i, h in devices:
            lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
            out[str(i)] = {"power_limit_w": [lo / 1000.0, hi / 1000.0],
                           "max_graphics_clock_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_GRAPHICS)}
        return {"supported": True, "commands": list(COMMANDS), "gpus": out}

    async def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            detail = self._execute(command)
        except KnobError as exc:
            return {"ok": False, "detail": str(exc)}
        self.changes += 1
        return {"ok": True, "detail": detail}

    def _execute(self, command: dict[str, Any]) -> str:
        op = command.get("command") if isinstance(command, dict) else None
        devices = self._devices(command.get("index") if isinstance(command, dict) else None)
        if op not in COMMANDS:
            raise KnobError(f"command: expected one of {list(COMMANDS)}, got {op!r}")
        nv = self._nvml
        done = []
        try:
            for i, h in devices:
                if op == "set_power_limit":
                    lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
                    watts = command.get("watts")
                    if not isinstance(watts, int | float) or not lo / 1000.0 <= watts <= hi / 1000.0:
                        raise KnobError(f"watts: expected {lo / 1000.0:g}..{hi / 1000.0:g} for GPU {i}, got {watts!r}")
                    nv.nvmlDeviceSetPowerManagementLimit(h, int(watts * 1000))
                elif op == "set_clocks":
                    top = nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_GRAPHICS)
                    lo, hi = command.get("min_mhz"), command.get("max_mhz")
                    if not all(isinstance(v, int) for v in (lo, hi)) or not 0 < lo <= hi <= top:
                        raise KnobError(f"min_mhz/max_mhz: expected 0 < min <= max <= {top} for GPU {i}, "
                                        f"got {lo!r}/{hi!r}")
                    nv.nvmlDeviceSetGpuLockedClocks(h, lo, hi)
                else:
                    nv.nvmlDeviceSetPowerManagementLimit(h, nv.nvmlDeviceGetPowerManagementDefaultLimit(h))
                    nv.nvmlDeviceResetGpuLockedClocks(h)
                done.append(str(i))
        except nv.NVMLError as exc:
            raise KnobError(f"NVML refused {op} on GPU {i}: {exc}") from None
        return f"{op} on GPU {', '.join(done)}"
