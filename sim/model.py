"""Plain data types of the simulated continuum.

The sim is a leaf package: callers hand it these dataclasses (an adapter elsewhere maps MLSysOpsNode
descriptions onto `SimNodeSpec`) and get frozen views back, never live internal objects.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

LAYERS: tuple[str, ...] = ("cloud", "edge_infrastructure", "edge", "far_edge")
"""Continuum layers, top (cloud) to bottom (far edge); the order is used as a distance rank."""

DEFAULT_STARTUP_S: dict[str, float] = {
    "cloud": 0.3,
    "edge_infrastructure": 0.35,
    "edge": 0.4,
    "far_edge": 0.6,
}
"""Default time (sim seconds) an instance needs to become running, per layer; small so tests are fast."""


@dataclass(frozen=True)
class SimNodeSpec:
    """Static description of one simulated node.

    `speed` is relative performance (1.0 = reference); `startup_s=None` takes the layer default.
    `location` is (lon, lat) in degrees, used for the distance part of network latency.
    """

    name: str
    cluster: str
    layer: str = "edge"
    cpu_cores: float = 4.0
    memory_bytes: int = 8 * 2**30
    cpu_freqs_hz: list[float] = field(default_factory=list)
    gpu: bool = False
    architecture: str = "amd64"
    sensors: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    location: tuple[float, float] | None = None
    mobile: bool = False
    speed: float = 1.0
    startup_s: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("node name must not be empty")
        if self.layer not in LAYERS:
            raise ValueError(f"node {self.name}: layer must be one of {LAYERS}, got {self.layer!r}")
        if self.cpu_cores <= 0:
            raise ValueError(f"node {self.name}: cpu_cores must be > 0, got {self.cpu_cores}")
        if self.memory_bytes <= 0:
            raise ValueError(f"node {self.name}: memory_bytes must be > 0, got {self.memory_bytes}")
        if self.speed <= 0:
            raise ValueError(f"node {self.name}: speed must be > 0, got {self.speed}")
        if any(f <= 0 for f in self.cpu_freqs_hz):
            raise ValueError(f"node {self.name}: cpu_freqs_hz must be positive")
        object.__setattr__(self, "cpu_freqs_hz", sorted(float(f) for f in self.cpu_freqs_hz))
        if self.location is not None:
            lon, lat = self.location
            object.__setattr__(self, "location", (float(lon), float(lat)))
        if self.startup_s is None:
            object.__setattr__(self, "startup_s", DEFAULT_STARTUP_S[self.layer])
        elif self.startup_s < 0:
            raise ValueError(f"node {self.name}: startup_s must be >= 0, got {self.startup_s}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["location"] = list(self.location) if self.location is not None else None
        return d


class InstanceState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        return self in (InstanceState.FAILED, InstanceState.STOPPED)


class EventKind(enum.StrEnum):
    INSTANCE_STARTING = "instance.starting"
    INSTANCE_RUNNING = "instance.running"
    INSTANCE_FAILED = "instance.failed"
    INSTANCE_STOPPED = "instance.stopped"
    NODE_DOWN = "node.down"
    NODE_UP = "node.up"


@dataclass(frozen=True)
class SimInstance:
    """Read-only view of a component instance at the moment it was read.

    `state_since` is the sim time of the last transition; `running_at` is when the instance became (or,
    while starting, will become) running.
    """

    instance_id: str
    app: str
    component: str
    node: str
    state: InstanceState
    reason: str | None
    cpu_request_cores: float
    memory_request_bytes: int
    base_response_ms: float
    interactions: tuple[str, ...]
    created_at: float
    state_since: float
    running_at: float | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = str(self.state)
        d["interactions"] = list(self.interactions)
        return d


@dataclass(frozen=True)
class SimEvent:
    """A state transition, stamped with the sim time at which it happened (not when it was noticed)."""

    time: float
    kind: EventKind
    node: str
    instance: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "kind": str(self.kind),
            "node": self.node,
            "instance": self.instance,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class FaultRecord:
    """One entry of `SimContinuum.fault_log`: every injection, recovery and clear, in order."""

    time: float
    kind: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind, "target": self.target, "params": dict(self.params)}
