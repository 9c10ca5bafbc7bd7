"""Cluster filter plugins: may this cluster host the component? A no is a ``Status``.

Evaluated in order and, unlike node filters, the first filter that says no ends the evaluation of the
cluster (a cluster outside ``cluster_placement`` is not worth describing further; a batch-capacity
shortfall only matters for a cluster that could host the component at all). ``node_fit`` may answer
several statuses, one per distinct node reason with how many nodes gave it.

- ``cluster_placement``: the app's ``cluster_placement.cluster_id`` (UnschedulableAndUnresolvable).
- ``node_fit``: with node views, some alive node passes every node filter; with a summary only, each
  required capability is present somewhere and the largest free node fits (the summary cannot tell
  whether the capabilities co-occur on one node; the cluster agent has the final word).
- ``cpu`` / ``memory``: the cluster's free total, less what the batch already took, fits every instance
  (Unschedulable).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mlsysops.agents.placement.framework import Code, Status
from mlsysops.agents.placement.types import ANY_LAYER, ComponentRequest, format_bytes
from mlsysops.policies.cluster_candidates import ClusterRequest, ClusterView
from mlsysops.policies.placement_filters import applicable_filters, filter_statuses

ClusterCheck = Callable[[ClusterView], Status | Sequence[Status] | None]
ClusterPrepare = Callable[[ClusterRequest], ClusterCheck | None]

UNRESOLVABLE = Code.UNSCHEDULABLE_AND_UNRESOLVABLE


@dataclass(frozen=True, slots=True)
class ClusterFilterPlugin:
    """A named cluster filter; satisfies ``mlsysops.agents.placement.framework.Filter``."""

    name: str
    prepare: ClusterPrepare


def _fmt(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _cluster_placement(request: ClusterRequest) -> ClusterCheck | None:
    allowed = request.allowed
    if allowed is None:
        return None
    refused = Status(UNRESOLVABLE, f"not in cluster_placement {_fmt(allowed)}", "cluster_placement")
    return lambda cluster: None if cluster.cluster_id in allowed else refused


def summary_statuses(request: ComponentRequest, cluster: ClusterView) -> list[Status]:
    """Why a summarised cluster cannot host ``request`` (empty: it can, as far as the summary tells)."""
    def no(reason: str, code: Code = UNRESOLVABLE) -> Status:
        return Status(code, reason, "node_fit")

    if cluster.alive_nodes <= 0:
        return [no("no alive nodes")]
    out: list[Status] = []
    if request.node is not None and request.node not in cluster.node_names:
        out.append(no(f"pinned to {request.node}, not in cluster"))
    if layers := set(request.layers) - {ANY_LAYER}:
        if not layers & cluster.layers:
            out.append(no(f"no node in layer {_fmt(layers)}"))
    missing = [
        lbl
        for lbl in request.labels
        if lbl not in cluster.labels and (":" in lbl or lbl not in cluster.label_keys)
    ]
    if missing:
        out.append(no("missing label " + ", ".join(missing)))
    if request.mobile is True and cluster.mobile_nodes == 0:
        out.append(no("no mobile node"))
    if request.mobile is False and cluster.mobile_nodes >= cluster.alive_nodes:
        out.append(no("no static node"))
    if missing_sensors := [s for s in request.sensors if s not in cluster.sensors]:
        out.append(no("no sensor " + ", ".join(missing_sensors)))
    if request.architectures and not request.architectures & cluster.architectures:
        out.append(no(f"no node with architecture in {_fmt(request.architectures)}"))
    if request.gpu and cluster.gpu_count == 0:
        out.append(no("no gpu"))
    if request.cpu_cores > cluster.largest_cpu_free + 1e-9:
        out.append(no(
            f"insufficient cpu: requests {request.cpu_cores:g}, largest free {cluster.largest_cpu_free:.3g}",
            Code.UNSCHEDULABLE,
        ))
    if request.memory_bytes > cluster.largest_memory_free:
        out.append(no(
            f"insufficient memory: requests {format_bytes(request.memory_bytes)}, "
            f"largest free {format_bytes(cluster.largest_memory_free)}",
            Code.UNSCHEDULABLE,
        ))
    return out


def summary_reasons(request: ComponentRequest, cluster: ClusterView) -> list[str]:
    """``summary_statuses`` as human reasons."""
    return [status.reason for status in summary_statuses(request, cluster)]


def node_statuses(request: ComponentRequest, cluster: ClusterView) -> list[Status]:
    """Why no node of a cluster with node views can host ``request`` (empty: some node can): each
    distinct node status with how many nodes gave it, most common first (ties by reason)."""
    assert cluster.nodes is not None
    checks = applicable_filters(request)
    counts: Counter[tuple[str, Code]] = Counter()
    for node in cluster.nodes:
        statuses = filter_statuses(request, node, checks)
        if not statuses:
            return []
        counts.update((s.reason, s.code) for s in statuses)
    if not counts:
        return [Status(UNRESOLVABLE, "no nodes", "node_fit")]
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0]))
    return [
        Status(code, f"{reason} ({count} node{'s' if count != 1 else ''})", "node_fit")
        for (reason, code), count in ordered
    ]


def _node_fit(request: ClusterRequest) -> ClusterCheck:
    component = request.component

    def check(cluster: ClusterView) -> list[Status] | None:
        if cluster.nodes is not None:
            found = node_statuses(component, cluster)
        else:
            found = summary_statuses(component, cluster)
        return found or None

    return check


def _cpu(request: ClusterRequest) -> ClusterCheck:
    need = request.need_cpu

    def check(cluster: ClusterView) -> Status | None:
        free = request.cpu_left(cluster)
        if need <= free + 1e-9:
            return None
        return Status(Code.UNSCHEDULABLE, f"insufficient cpu: requests {need:g}, free {max(free, 0.0):.3g}", "cpu")

    return check


def _memory(request: ClusterRequest) -> ClusterCheck:
    need = request.need_memory

    def check(cluster: ClusterView) -> Status | None:
        free = request.memory_left(cluster)
        if need <= free:
            return None
        return Status(
            Code.UNSCHEDULABLE,
            f"insufficient memory: requests {format_bytes(need)}, free {format_bytes(max(free, 0))}",
            "memory",
        )

    return check


DEFAULT_CLUSTER_FILTERS: tuple[ClusterFilterPlugin, ...] = (
    ClusterFilterPlugin("cluster_placement", _cluster_placement),
    ClusterFilterPlugin("node_fit", _node_fit),
    ClusterFilterPlugin("cpu", _cpu),
    ClusterFilterPlugin("memory", _memory),
)
"""Cluster filters in evaluation order."""
