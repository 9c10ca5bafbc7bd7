"""Cluster score plugins: 0..100 per feasible cluster, normalised like the node scorers.

Default weights (``DEFAULT_CLUSTER_WEIGHTS``):
- ``capacity`` 0.3: free cpu and memory left after the component's instances land (mean of both).
- ``proximity`` 0.4: low latency to the clusters of the components it interacts with / depends on
  (silent when none is placed yet); args: ``unknown_latency_ms`` (> 0).
- ``consolidation`` 0.3: clusters the app already uses (fewest clusters per app; silent when none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlsysops.policies.cluster_candidates import ClusterRequest, ClusterScoringContext, ClusterView
from mlsysops.policies.placement_scorers import normalize_max, normalize_reverse

DEFAULT_CLUSTER_WEIGHTS: Mapping[str, float] = {"capacity": 0.3, "proximity": 0.4, "consolidation": 0.3}

ClusterScoreFn = Callable[[ClusterRequest, Sequence[ClusterView], ClusterScoringContext], list[float] | None]


@dataclass(frozen=True, slots=True)
class ClusterScorerPlugin:
    """A named cluster scorer; satisfies ``mlsysops.agents.placement.framework.Scorer``."""

    name: str
    score: ClusterScoreFn


def score_capacity(
    request: ClusterRequest, candidates: Sequence[ClusterView], ctx: ClusterScoringContext
) -> list[float]:
    cpu_left = [request.cpu_left(c) - request.need_cpu for c in candidates]
    mem_left = [float(request.memory_left(c) - request.need_memory) for c in candidates]
    cpu_n, mem_n = normalize_max(cpu_left), normalize_max(mem_left)
    return [(a + b) / 2.0 for a, b in zip(cpu_n, mem_n, strict=True)]


def cluster_latency(a: ClusterView, b: ClusterView, unknown: float) -> float:
    if a.cluster_id == b.cluster_id:
        return 0.0
    value = a.latency_ms.get(b.cluster_id)
    if value is None:
        value = b.latency_ms.get(a.cluster_id, unknown)
    return value


def score_proximity(
    request: ClusterRequest, candidates: Sequence[ClusterView], ctx: ClusterScoringContext
) -> list[float] | None:
    return _proximity(request, candidates, ctx, ctx.unknown_latency_ms)


def _proximity(
    request: ClusterRequest, candidates: Sequence[ClusterView], ctx: ClusterScoringContext, unknown: float
) -> list[float] | None:
    peers = [ctx.by_id[ctx.located[p]] for p in request.component.peers if p in ctx.located]
    if not peers:
        return None
    return normalize_reverse(
        [sum(cluster_latency(c, p, unknown) for p in peers) / len(peers) for c in candidates]
    )


def score_consolidation(
    request: ClusterRequest, candidates: Sequence[ClusterView], ctx: ClusterScoringContext
) -> list[float] | None:
    used = set(ctx.located.values())
    if not used:
        return None
    return [100.0 if c.cluster_id in used else 0.0 for c in candidates]


def proximity_scorer(args: Mapping[str, Any]) -> ClusterScorerPlugin:
    """The cluster ``proximity`` scorer; ``args.unknown_latency_ms`` replaces the assumed latency."""
    if unknown := sorted(set(args) - {"unknown_latency_ms"}):
        raise ValueError(f"unknown arg {unknown[0]!r}; expected 'unknown_latency_ms'")
    if "unknown_latency_ms" not in args:
        return ClusterScorerPlugin("proximity", score_proximity)
    value = args["unknown_latency_ms"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"unknown_latency_ms must be a number > 0, got {value!r}")
    latency = float(value)
    return ClusterScorerPlugin(
        "proximity", lambda request, candidates, ctx: _proximity(request, candidates, ctx, latency)
    )


DEFAULT_CLUSTER_SCORERS: tuple[ClusterScorerPlugin, ...] = (
    ClusterScorerPlugin("capacity", score_capacity),
    ClusterScorerPlugin("proximity", score_proximity),
    ClusterScorerPlugin("consolidation", score_consolidation),
)
