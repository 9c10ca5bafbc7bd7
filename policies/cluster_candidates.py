"""What cluster selection's filters and scorers look at: the clusters, the request, the batch so far.

``ClusterView`` is a cluster as the continuum agent sees it; ``ClusterRequest`` is one component's
decision with the app-level constraint (``cluster_placement``) and the capacity the batch already took;
``ClusterScoringContext`` is what scorers may look at besides the candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies.placement_scorers import DEFAULT_UNKNOWN_LATENCY_MS


@dataclass(slots=True)
class ClusterView:
    """A cluster as the continuum agent sees it: summary capabilities, optionally the node views too.

    Build it with ``ClusterView.from_nodes`` when node views are known; the summary fields are then
    derived from the alive nodes. ``latency_ms`` is to other clusters (may be partial).
    """

    cluster_id: str
    nodes: list[NodeView] | None = None
    layers: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    sensors: set[str] = field(default_factory=set)
    architectures: set[str] = field(default_factory=set)
    node_names: set[str] = field(default_factory=set)
    gpu_count: int = 0
    mobile_nodes: int = 0
    alive_nodes: int = 0
    cpu_free: float = 0.0
    memory_free: int = 0
    largest_cpu_free: float = 0.0
    largest_memory_free: int = 0
    region: str = ""
    location: tuple[float, float] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    label_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.label_keys = frozenset(label.split(":", 1)[0] for label in self.labels)
        self.sensors = set(self.sensors) | {s.split(":", 1)[0] for s in self.sensors}

    @classmethod
    def from_nodes(
        cls,
        cluster_id: str,
        nodes: Sequence[NodeView],
        *,
        region: str = "",
        location: tuple[float, float] | None = None,
        latency_ms: Mapping[str, float] | None = None,
    ) -> ClusterView:
        alive = [n for n in nodes if n.alive]
        return cls(
            cluster_id=cluster_id,
            nodes=list(nodes),
            layers={n.layer for n in alive},
            labels=set().union(*(n.labels for n in alive)),
            sensors=set().union(*(n.sensors for n in alive)),
            architectures={n.architecture for n in alive},
            node_names={n.name for n in nodes},
            gpu_count=sum(1 for n in alive if n.gpu),
            mobile_nodes=sum(1 for n in alive if n.mobile),
            alive_nodes=len(alive),
            cpu_free=sum(max(n.cpu_free, 0.0) for n in alive),
            memory_free=sum(max(n.memory_free, 0) for n in alive),
            largest_cpu_free=max((n.cpu_free for n in alive), default=0.0),
            largest_memory_free=max((n.memory_free for n in alive), default=0),
            region=region,
            location=location,
            latency_ms=dict(latency_ms or {}),
        )


@dataclass(slots=True)
class ClusterRequest:
    """One component to place on a cluster. ``allowed`` None means every cluster is allowed; the
    ``consumed_*`` maps are what earlier components of the batch took per cluster (all instances)."""

    component: ComponentRequest
    allowed: frozenset[str] | None = None
    consumed_cpu: Mapping[str, float] = field(default_factory=dict)
    consumed_memory: Mapping[str, int] = field(default_factory=dict)

    @property
    def need_cpu(self) -> float:
        return self.component.cpu_cores * max(self.component.instances, 1)

    @property
    def need_memory(self) -> int:
        return self.component.memory_bytes * max(self.component.instances, 1)

    def cpu_left(self, cluster: ClusterView) -> float:
        return cluster.cpu_free - self.consumed_cpu.get(cluster.cluster_id, 0.0)

    def memory_left(self, cluster: ClusterView) -> int:
        return cluster.memory_free - self.consumed_memory.get(cluster.cluster_id, 0)


@dataclass(slots=True)
class ClusterScoringContext:
    """All clusters by id, where the batch's components are (component -> cluster) and options."""

    by_id: Mapping[str, ClusterView]
    located: Mapping[str, str]
    unknown_latency_ms: float = DEFAULT_UNKNOWN_LATENCY_MS
