"""Plain value types for placement decisions (kube-scheduler style).

These types deliberately do not depend on the description models: adapters from MLSysOpsApp /
MLSysOpsNode descriptions build them. A ``NodeView`` is a *snapshot*: the placement code never mutates
one, it derives updated copies (``NodeView.with_placed``) when a batch lands components on a node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

ComponentKey = tuple[str, str]
"""(application name, component name)."""

ANY_LAYER = "*"


@dataclass(slots=True)
class ComponentRequest:
    """What one application component asks of the node that will host it.

    ``layers`` empty or containing ``"*"`` means any layer. ``labels`` are ``"key:value"`` (exact label) or
    ``"key"`` (any value). ``sensors`` are sensor type names, optionally with a model (``"camera:d455"``).
    ``mobile`` None means "don't care". ``qos_relation`` is one of the MLSysOpsApp CRD relations and
    applies to ``qos_target_ms``.
    """

    app: str
    name: str
    layers: set[str] = field(default_factory=set)
    labels: list[str] = field(default_factory=list)
    node: str | None = None
    mobile: bool | None = None
    sensors: list[str] = field(default_factory=list)
    cpu_cores: float = 0.0
    memory_bytes: int = 0
    gpu: bool = False
    architectures: set[str] = field(default_factory=set)
    depends_on: list[str] = field(default_factory=list)
    instances: int = 1
    interacts_with: list[str] = field(default_factory=list)
    qos_target_ms: float | None = None
    qos_relation: str = "lower_or_equal"

    @property
    def key(self) -> ComponentKey:
        return (self.app, self.name)

    @property
    def any_layer(self) -> bool:
        return not self.layers or ANY_LAYER in self.layers

    @property
    def peers(self) -> list[str]:
        """Components this one talks to (interacts_with + depends_on), without duplicates, in order."""
        seen: dict[str, None] = {}
        for name in (*self.interacts_with, *self.depends_on):
            if name != self.name:
                seen.setdefault(name, None)
        return list(seen)


@dataclass(slots=True)
class NodeView:
    """A node as the scheduler sees it at one instant.

    ``sensors`` may hold ``"camera:d455"``; the bare type (``"camera"``) is added automatically so a request
    for any camera matches. ``label_keys`` is derived (``"node-type:rpi"`` -> ``"node-type"``) so a request
    for a bare label key is a set lookup. ``hosted`` counts running instances per (app, component).
    """

    name: str
    cluster: str = ""
    layer: str = ""
    labels: set[str] = field(default_factory=set)
    mobile: bool = False
    sensors: set[str] = field(default_factory=set)
    architecture: str = "amd64"
    gpu: bool = False
    cpu_capacity: float = 0.0
    memory_capacity: int = 0
    cpu_allocated: float = 0.0
    memory_allocated: int = 0
    cpu_utilization: float = 0.0
    alive: bool = True
    unschedulable: str | None = None   # why new work may not go there though the node is up (Kubernetes)
    trust: float = 1.0                 # the cluster's trust in the node (mlsysops.agents.trust), 1 = full
    trust_reasons: tuple[str, ...] = ()
    location: tuple[float, float] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    hosted: dict[ComponentKey, int] = field(default_factory=dict)
    label_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = set(self.labels)
        self.label_keys = frozenset(label.split(":", 1)[0] for label in self.labels)
        sensors = set(self.sensors)
        sensors.update(s.split(":", 1)[0] for s in self.sensors)
        self.sensors = sensors

    @property
    def cpu_free(self) -> float:
        return self.cpu_capacity - self.cpu_allocated

    @property
    def memory_free(self) -> int:
        return self.memory_capacity - self.memory_allocated

    def with_placed(self, request: ComponentRequest, count: int = 1) -> NodeView:
        """A copy with ``count`` instances of ``request`` added (negative ``count`` removes them)."""
        hosted = dict(self.hosted)
        new_count = hosted.get(request.key, 0) + count
        if new_count > 0:
            hosted[request.key] = new_count
        else:
            hosted.pop(request.key, None)
        return replace(
            self,
            cpu_allocated=self.cpu_allocated + request.cpu_cores * count,
            memory_allocated=self.memory_allocated + request.memory_bytes * count,
            hosted=hosted,
        )


@dataclass(frozen=True, slots=True)
class NodeScore:
    """Weighted total (0..100) and the per-scorer normalised scores (0..100) behind it."""

    total: float
    parts: Mapping[str, float]


def format_bytes(n: float) -> str:
    """Kubernetes-style binary quantity for reason strings (``64Mi``)."""
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n:.0f}"
