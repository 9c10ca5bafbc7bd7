"""Node mechanism: CPU frequency through the Linux cpufreq sysfs interface (standard library only).

Layout read and written (``root`` defaults to ``/sys/devices/system/cpu``; tests point it at a directory
tree of the same shape)::

    root/cpufreq/policyN/{scaling_governor, scaling_available_governors, scaling_min_freq,
                          scaling_max_freq, scaling_cur_freq, cpuinfo_min_freq, cpuinfo_max_freq,
                          scaling_available_frequencies?, scaling_setspeed?, related_cpus}

Older kernels expose the same files per core (``root/cpuN/cpufreq/``); each such directory counts as a
policy of its own. Frequencies are kHz in sysfs and Hz in commands and state. A host without a cpufreq
driver (most VMs, this one included) is *not supported*: `get_state` says so and every `apply` is
refused with that reason; nothing pretends to have worked.

Commands (``policy`` names one policy, e.g. ``"policy0"``; omitted: every policy)::

    {"command": "set_governor", "governor": "powersave"}
    {"command": "set_limits", "min_hz": 1.2e9, "max_hz": 2.0e9}      # either bound may be omitted
    {"command": "set_speed", "hz": 1.5e9}      # needs the userspace governor ...
    {"command": "set_speed", "hz": 1.5e9, "governor": "userspace"}   # ... or switches to it first
    {"command": "reset"}                        # limits back to cpuinfo min/max
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("/sys/devices/system/cpu")
NOT_SUPPORTED = "not supported on this host"
KHZ = 1000.0
COMMANDS = ("set_governor", "set_limits", "set_speed", "reset")


class KnobError(ValueError):
    """A command this host refuses (out of range, unknown governor, not supported): ``reason`` says why."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_khz(path: Path) -> float | None:
    text = _read(path)
    try:
        return float(text) * KHZ if text else None
    except ValueError:
        return None


class CpuFreqSysfs:
    """The cpufreq policies under ``root``; reads are always fresh (the kernel may change them)."""

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    def policies(self) -> dict[str, Path]:
        per_policy = sorted((self.root / "cpufreq").glob("policy[0-9]*"), key=lambda p: int(p.name[6:]))
        found = {p.name: p for p in per_policy if (p / "scaling_governor").exists()}
        if found:
            return found
        per_cpu = sorted(self.root.glob("cpu[0-9]*/cpufreq"), key=lambda p: int(p.parent.name[3:]))
        return {p.parent.name: p for p in per_cpu if (p / "scaling_governor").exists()}

    def unsupported_reason(self) -> str | None:
        if not self.root.is_dir():
            return f"{NOT_SUPPORTED}: {self.root} does not exist"
        if not self.policies():
            return f"{NOT_SUPPORTED}: no cpufreq driver ({self.root}/cpufreq has no policy with a governor)"
        return None

    def read(self, path: Path) -> dict[str, Any]:
        freqs = (_read(path / "scaling_available_frequencies") or "").split()
        return {
            "governor": _read(path / "scaling_governor"),
            "governors": (_read(path / "scaling_available_governors") or "").split(),
            "min_hz": _read_khz(path / "scaling_min_freq"),
            "max_hz": _read_khz(path / "scaling_max_freq"),
            "cur_hz": _read_khz(path / "scaling_cur_freq"),
            "hw_min_hz": _read_khz(path / "cpuinfo_min_freq"),
            "hw_max_hz": _read_khz(path / "cpuinfo_max_freq"),
            "frequencies_hz": sorted(float(f) * KHZ for f in freqs if f.isdigit()),
            "setspeed": (path / "scaling_setspeed").exists(),
            "cpus": (_read(path / "related_cpus") or "").split(),
        }

    @staticmethod
    def write(path: Path, value: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise KnobError(f"writing {value!r} to {path} failed: {exc.strerror or exc}") from None


class CpuFrequencyMechanism:
    """`get_state`/`get_options`/`apply` over `CpuFreqSysfs`; every change is checked before it is written."""

    name = "cpu_frequency"

    def __init__(self, root: str | Path = DEFAULT_ROOT) -> None:
        self.sysfs = CpuFreqSysfs(root)
        self.changes = 0

    # -- views ------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        reason = self.sysfs.unsupported_reason()
        if reason is not None:
            return {"supported": False, "reason": reason}
        return {"supported": True, "changes": self.changes,
                "policies": {name: self.sysfs.read(path) for name, path in self.sysfs.policies().items()}}

    def get_options(self) -> dict[str, Any]:
        reason = self.sysfs.unsupported_reason()
        if reason is not None:
            return {"supported": False, "reason": reason, "commands": []}
        out = {}
        for name, path in self.sysfs.policies().items():
            p = self.sysfs.read(path)
            out[name] = {"governors": p["governors"], "range_hz": [p["hw_min_hz"], p["hw_max_hz"]],
                         "frequencies_hz": p["frequencies_hz"],
                         "set_speed": p["setspeed"] and "userspace" in p["governors"]}
        return {"supported": True, "commands": list(COMMANDS), "policies": out}

    def frequencies_hz(self) -> list[float]:
        """The steps every policy offers (available frequencies, else its min and max)."""
        steps: set[float] = set()
        for path in self.sysfs.policies().values():
            p = self.sysfs.read(path)
            steps.update(p["frequencies_hz"] or [f for f in (p["hw_min_hz"], p["hw_max_hz"]) if f])
        return sorted(steps)

    # -- acting -----------------------------------------------------------------------------------
    async def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            detail = self.execute(command)
        except KnobError as exc:
            return {"ok": False, "detail": str(exc)}
        self.changes += 1
        return {"ok": True, "detail": detail}

    def execute(self, command: dict[str, Any]) -> str:
        """Check then write; raises KnobError (nothing written for any policy) when a value is refused."""
        reason = self.sysfs.unsupported_reason()
        if reason is not None:
            raise KnobError(reason)
        if not isinstance(command, dict):
            raise KnobError(f"command: expected an object, got {type(command).__name__}")
        op = command.get("command")
        if op not in COMMANDS:
            raise KnobError(f"command: expected one of {list(COMMANDS)}, got {op!r}")
        targets = self._targets(command.get("policy"))
        writes: list[tuple[Path, str]] = []
        for name, path in targets.items():
            writes += self._plan(op, name, path, self.sysfs.read(path), command)
        for path, value in writes:
            self.sysfs.write(path, value)
        return f"{op} on {', '.join(targets)}: " + "; ".join(f"{p.parent.name}/{p.name}={v}" for p, v in writes)

    def _targets(self, policy: Any) -> dict[str, Path]:
        policies = self.sysfs.policies()
        if policy is None:
            return policies
        if policy not in policies:
            raise KnobError(f"policy: {policy!r} is not one of {sorted(policies)}")
        return {policy: policies[policy]}

    def _plan(self, op: str, name: str, path: Path, p: dict[str, Any], cmd: dict[str, Any]
              ) -> list[tuple[Path, str]]:
        lo, hi = p["hw_min_hz"], p["hw_max_hz"]
        if op == "set_governor":
            gov = cmd.get("governor")
            if gov not in p["governors"]:
                raise KnobError(f"governor: {gov!r} is not available on {name} (available: {p['governors']})")
            return [(path / "scaling_governor", str(gov))]
        if op == "reset":
            return self._limits(path, p, lo, hi)
        if op == "set_limits":
            new_min = _hz(cmd, "min_hz", p["min_hz"])
            new_max = _hz(cmd, "max_hz", p["max_hz"])
            for field, value in (("min_hz", new_min), ("max_hz", new_max)):
                _in_range(name, field, value, lo, hi)
            if new_min > new_max:
                raise KnobError(f"min_hz {new_min:g} > max_hz {new_max:g} on {name}")
            return self._limits(path, p, new_min, new_max)
        # set_speed
        hz = _hz(cmd, "hz", None)
        switch = cmd.get("governor") == "userspace" and p["governor"] != "userspace" \
            and "userspace" in p["governors"] and p["setspeed"]
        if not switch and (p["governor"] != "userspace" or not p["setspeed"]):
            raise KnobError(f"set_speed needs the userspace governor on {name} (governor is {p['governor']!r}"
                            f"{'' if p['setspeed'] else ', and scaling_setspeed is absent'})")
        _in_range(name, "hz", hz, p["min_hz"], p["max_hz"])
        if p["frequencies_hz"] and not any(abs(f - hz) < KHZ for f in p["frequencies_hz"]):
            raise KnobError(f"hz: {hz:g} is not an available frequency of {name} ({p['frequencies_hz']})")
        if switch:
            return [(path / "scaling_governor", "userspace"), (path / "scaling_setspeed", _khz(hz))]
        return [(path / "scaling_setspeed", _khz(hz))]

    @staticmethod
    def _limits(path: Path, p: dict[str, Any], new_min: float, new_max: float) -> list[tuple[Path, str]]:
        # the kernel refuses min > max at every step: raise max first when min goes above the old max
        min_w, max_w = (path / "scaling_min_freq", _khz(new_min)), (path / "scaling_max_freq", _khz(new_max))
        return [max_w, min_w] if p["max_hz"] is None or new_min > p["max_hz"] else [min_w, max_w]


def _hz(cmd: dict[str, Any], field: str, default: float | None) -> float:
    value = cmd.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise KnobError(f"{field}: expected a frequency in Hz, got {value!r}")
    return float(value)


def _in_range(name: str, field: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo - 1) or (hi is not None and value > hi + 1):
        raise KnobError(f"{field}: {value:g} Hz is out of range for {name} [{lo}, {hi}] Hz")


def _khz(hz: float) -> str:
    return str(round(hz / KHZ))
