"""What the descriptions do not say: hidden per-kind speed, interference, diurnal load and drift.

The base QoS model (`qos.py`) makes response time a function of what every policy can see (the node's
described speed and cores, its utilisation, the network). A `QosProfile` adds the structure a learning
policy can find in telemetry and a heuristic cannot read from descriptions, all seeded-free and purely a
function of (node, co-located instances, sim time), so runs are deterministic:

* **hidden per-kind speed** - nodes carry a kind label (`node-type:<kind>` by default); the kind's
  `kind_speed` multiplies the node's effective speed (e.g. an ARM board whose cores are half as fast as
  its description implies). Nodes without the label run as described.
* **interference** - an instance of component kind A on a node where `n` instances of kind B also run
  is slower by `1 + interference["A/B"] * n` (e.g. two memory-bound components thrash the cache).
  Component kinds come from `component_kinds` (component name -> kind); unknown components do not
  interfere.
* **diurnal load** - other tenants use `diurnal_amplitude x cores x (1 - cos(2 pi (t + phase) /
  period)) / 2` cores of every labelled node: visible as CPU utilisation (every policy sees it), peaking
  once per period.
* **drift** - from `at_s` (sim time) on, a `NodeDrift`'s node runs at `speed_factor` times its speed,
  without any metric saying so (unlike the `slow_node` fault, which shows in `sim.node.slowdown`); only
  the response times it produces change.

The response time becomes `qos.response_time_ms(speed=load.speed x hidden_speed, ...) x interference`;
`load.speed` already folds in the described speed, CPU frequency and slowdown faults, so a per-node
speed factor of another model (e.g. a power/frequency model) composes by multiplication.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .model import SimNodeSpec


@dataclass(frozen=True)
class NodeDrift:
    node: str
    at_s: float
    speed_factor: float

    def __post_init__(self) -> None:
        if self.speed_factor <= 0:
            raise ValueError(f"drift of node {self.node}: speed_factor must be > 0, got {self.speed_factor}")


@dataclass(frozen=True)
class QosProfile:
    kind_label: str = "node-type"
    kind_speed: Mapping[str, float] = field(default_factory=dict)
    component_kinds: Mapping[str, str] = field(default_factory=dict)
    interference: Mapping[str, float] = field(default_factory=dict)
    diurnal_amplitude: float = 0.0
    diurnal_period_s: float = 86_400.0
    diurnal_phase_s: float = 0.0
    drifts: tuple[NodeDrift, ...] = ()

    def __post_init__(self) -> None:
        for kind, speed in self.kind_speed.items():
            if speed <= 0:
                raise ValueError(f"qos profile: kind_speed.{kind} must be > 0, got {speed}")
        for pair, value in self.interference.items():
            if "/" not in pair or value < 0:
                raise ValueError(f"qos profile: interference.{pair}: want 'kindA/kindB' -> number >= 0")
        if not 0 <= self.diurnal_amplitude <= 1:
            raise ValueError(f"qos profile: diurnal_amplitude must be in 0..1, got {self.diurnal_amplitude}")
        if self.diurnal_period_s <= 0:
            raise ValueError(f"qos profile: diurnal_period_s must be > 0, got {self.diurnal_period_s}")

    def node_kind(self, spec: SimNodeSpec) -> str | None:
        prefix = f"{self.kind_label}:"
        return next((label[len(prefix):] for label in spec.labels if label.startswith(prefix)), None)

    def hidden_speed(self, spec: SimNodeSpec, now: float) -> float:
        kind = self.node_kind(spec)
        speed = self.kind_speed.get(kind, 1.0) if kind is not None else 1.0
        for drift in self.drifts:
            if drift.node == spec.name and now >= drift.at_s:
                speed *= drift.speed_factor
        return speed

    def interference_factor(self, component: str, colocated: Iterable[str]) -> float:
        kind = self.component_kinds.get(component)
        if kind is None or not self.interference:
            return 1.0
        extra = 0.0
        for other in colocated:
            other_kind = self.component_kinds.get(other)
            if other_kind is not None:
                extra += self.interference.get(f"{kind}/{other_kind}", 0.0)
        return 1.0 + extra

    def diurnal_cores(self, spec: SimNodeSpec, now: float) -> float:
        if self.diurnal_amplitude == 0 or self.node_kind(spec) is None:
            return 0.0
        phase = 2 * math.pi * (now + self.diurnal_phase_s) / self.diurnal_period_s
        return self.diurnal_amplitude * spec.cpu_cores * (1 - math.cos(phase)) / 2
