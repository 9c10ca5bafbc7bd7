"""Continuum-level placement: which cluster hosts each component of an application.

A cluster is feasible for a component when it is allowed by the app's ``cluster_placement`` and can
host it. With full node views (``ClusterView.nodes``) "can host" means at least one alive node passes
every node filter of ``placement_filters``; with only a summary it means every required capability is
present somewhere in the cluster and the largest free node fits the request (the summary cannot tell
whether the capabilities co-occur on one node; the cluster agent has the final word). Free capacity is
accounted across the batch on the cluster totals.

Feasible clusters are scored (0..100, normalised like the node scorers) on free capacity, proximity to
the clusters of the components it interacts with / depends on, and consolidation (fewest clusters per
app); ties go to the smallest cluster id.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlsysops.agents.placement.types import ANY_LAYER, ComponentRequest, NodeView, format_bytes
from mlsysops.policies.placement_engine import PlacementDecision, choose, dependency_order
from mlsysops.policies.placement_filters import applicable_filters, run_filters
from mlsysops.policies.placement_scorers import DEFAULT_UNKNOWN_LATENCY_MS, normalize_max, normalize_reverse

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_WEIGHTS: Mapping[str, float] = {"capacity": 0.3, "proximity": 0.4, "consolidation": 0.3}


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


def _fmt(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def summary_reasons(request: ComponentRequest, cluster: ClusterView) -> list[str]:
    """Why a summarised cluster cannot host ``request`` (empty: it can, as far as the summary tells)."""
    if cluster.alive_nodes <= 0:
        return ["no alive nodes"]
    reasons: list[str] = []
    if request.node is not None and request.node not in cluster.node_names:
        reasons.append(f"pinned to {request.node}, not in cluster")
    if layers := set(request.layers) - {ANY_LAYER}:
        if not layers & cluster.layers:
            reasons.append(f"no node in layer {_fmt(layers)}")
    missing = [
        lbl
        for lbl in request.labels
        if lbl not in cluster.labels and (":" in lbl or lbl not in cluster.label_keys)
    ]
    if missing:
        reasons.append("missing label " + ", ".join(missing))
    if request.mobile is True and cluster.mobile_nodes == 0:
        reasons.append("no mobile node")
    if request.mobile is False and cluster.mobile_nodes >= cluster.alive_nodes:
        reasons.append("no static node")
    if missing_sensors := [s for s in request.sensors if s not in cluster.sensors]:
        reasons.append("no sensor " + ", ".join(missing_sensors))
    if request.architectures and not request.architectures & cluster.architectures:
        reasons.append(f"no node with architecture in {_fmt(request.architectures)}")
    if request.gpu and cluster.gpu_count == 0:
        reasons.append("no gpu")
    if request.cpu_cores > cluster.largest_cpu_free + 1e-9:
        reasons.append(
            f"insufficient cpu: requests {request.cpu_cores:g}, largest free {cluster.largest_cpu_free:.3g}"
        )
    if request.memory_bytes > cluster.largest_memory_free:
        reasons.append(
            f"insufficient memory: requests {format_bytes(request.memory_bytes)}, "
            f"largest free {format_bytes(cluster.largest_memory_free)}"
        )
    return reasons


def node_reasons(request: ComponentRequest, cluster: ClusterView) -> list[str]:
    """Why no node of a cluster with node views can host ``request`` (empty: some node can)."""
    assert cluster.nodes is not None
    checks = applicable_filters(request)
    counts: Counter[str] = Counter()
    for node in cluster.nodes:
        reasons = run_filters(request, node, checks)
        if not reasons:
            return []
        counts.update(reasons)
    if not counts:
        return ["no nodes"]
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [f"{r} ({c} node{'s' if c != 1 else ''})" for r, c in ordered]


@dataclass(slots=True)
class ClusterAssignment:
    """Per component: the chosen cluster, the decision record (``PlacementDecision.node`` holds the
    cluster id) and, for unplaceable ones, the reasons."""

    order: list[str]
    assignments: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, PlacementDecision] = field(default_factory=dict)
    unplaceable: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.unplaceable

    @property
    def clusters_used(self) -> list[str]:
        return sorted(set(self.assignments.values()))

    def explain(self) -> str:
        lines = []
        for name in self.order:
            if name in self.decisions and self.decisions[name].ok:
                lines.append(f"{name}: {self.decisions[name].explain()}")
            elif name in self.unplaceable:
                lines.append(f"{name} unplaceable: {'; '.join(self.unplaceable[name])}")
        return "\n".join(lines)


def _cluster_latency(a: ClusterView, b: ClusterView, unknown: float) -> float:
    if a.cluster_id == b.cluster_id:
        return 0.0
    value = a.latency_ms.get(b.cluster_id)
    if value is None:
        value = b.latency_ms.get(a.cluster_id, unknown)
    return value


def _resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    merged = dict(DEFAULT_CLUSTER_WEIGHTS)
    for name, value in (weights or {}).items():
        if name not in merged:
            raise ValueError(f"unknown cluster scorer {name!r}; known: {sorted(merged)}")
        if value < 0:
            raise ValueError(f"weight of cluster scorer {name!r} must be >= 0, got {value}")
        merged[name] = float(value)
    return merged


def select_clusters(
    app_components: Sequence[ComponentRequest],
    clusters: Sequence[ClusterView],
    allowed: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    *,
    current: Mapping[str, str] | None = None,
    unknown_latency_ms: float = DEFAULT_UNKNOWN_LATENCY_MS,
) -> ClusterAssignment:
    """Choose a cluster per component (dependency order; deterministic).

    ``allowed`` is the app's ``cluster_placement.cluster_id``; None, empty or containing ``"*"`` allows
    every cluster. ``current`` maps components already assigned to their cluster: they are kept (not
    re-decided) and count for proximity and consolidation.
    """
    resolved = _resolve_weights(weights)
    allow_all = not allowed or "*" in allowed
    allowed_set = set(allowed or ())
    order = dependency_order(app_components)
    by_name = {c.name: c for c in app_components}
    by_id = {c.cluster_id: c for c in clusters}
    consumed_cpu: dict[str, float] = {c.cluster_id: 0.0 for c in clusters}
    consumed_mem: dict[str, int] = {c.cluster_id: 0 for c in clusters}
    located: dict[str, str] = {k: v for k, v in (current or {}).items() if v in by_id}
    result = ClusterAssignment(order=order)

    for name in order:
        request = by_name[name]
        if name in located:
            result.assignments[name] = located[name]
            continue
        failed_deps = [d for d in request.depends_on if d in result.unplaceable]
        if failed_deps:
            result.unplaceable[name] = [f"dependency {d} unplaceable" for d in failed_deps]
            continue
        need_cpu = request.cpu_cores * max(request.instances, 1)
        need_mem = request.memory_bytes * max(request.instances, 1)
        rejected: dict[str, list[str]] = {}
        feasible: list[ClusterView] = []
        for cluster in clusters:
            cid = cluster.cluster_id
            if not allow_all and cid not in allowed_set:
                rejected[cid] = [f"not in cluster_placement {_fmt(allowed_set)}"]
                continue
            reasons = node_reasons(request, cluster) if cluster.nodes is not None else summary_reasons(
                request, cluster
            )
            free_cpu = cluster.cpu_free - consumed_cpu[cid]
            free_mem = cluster.memory_free - consumed_mem[cid]
            if not reasons and need_cpu > free_cpu + 1e-9:
                reasons.append(f"insufficient cpu: requests {need_cpu:g}, free {max(free_cpu, 0.0):.3g}")
            if not reasons and need_mem > free_mem:
                reasons.append(
                    f"insufficient memory: requests {format_bytes(need_mem)}, "
                    f"free {format_bytes(max(free_mem, 0))}"
                )
            if reasons:
                rejected[cid] = reasons
            else:
                feasible.append(cluster)

        columns: dict[str, list[float]] = {}
        if feasible:
            cpu_left = [c.cpu_free - consumed_cpu[c.cluster_id] - need_cpu for c in feasible]
            mem_left = [c.memory_free - consumed_mem[c.cluster_id] - need_mem for c in feasible]
            cpu_n, mem_n = normalize_max(cpu_left), normalize_max([float(m) for m in mem_left])
            columns["capacity"] = [(a + b) / 2.0 for a, b in zip(cpu_n, mem_n, strict=True)]
            peer_clusters = [by_id[located[p]] for p in request.peers if p in located]
            if peer_clusters:
                columns["proximity"] = normalize_reverse(
                    [
                        sum(_cluster_latency(c, p, unknown_latency_ms) for p in peer_clusters)
                        / len(peer_clusters)
                        for c in feasible
                    ]
                )
            used = set(located.values())
            if used:
                columns["consolidation"] = [100.0 if c.cluster_id in used else 0.0 for c in feasible]
        columns = {k: v for k, v in columns.items() if resolved[k] > 0}
        weight_sum = sum(resolved[k] for k in columns)
        norm = {k: resolved[k] / weight_sum for k in columns} if weight_sum > 0 else {}

        totals = [0.0] * len(feasible)
        for k, w in norm.items():
            totals = [t + w * c for t, c in zip(totals, columns[k], strict=True)]
        ids = [c.cluster_id for c in feasible]
        chosen = choose(ids, totals)
        decision = PlacementDecision(
            app=request.app,
            component=name,
            node=chosen,
            candidates=ids,
            totals=totals,
            columns={k: columns[k] for k in norm},
            weights=norm,
            rejections=rejected,
        )
        result.decisions[name] = decision
        if chosen is None:
            result.unplaceable[name] = [
                f"{cid}: {', '.join(r)}" for cid, r in sorted(rejected.items())
            ] or ["no clusters"]
            continue
        result.assignments[name] = chosen
        located[name] = chosen
        consumed_cpu[chosen] += need_cpu
        consumed_mem[chosen] += need_mem
        log.debug("cluster selection %s/%s: %s", request.app, name, decision.explain())
    return result
