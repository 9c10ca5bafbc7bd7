"""Continuum-level placement: which cluster hosts each component of an application.

The same framework as node placement, one level up: cluster filters (``cluster_filters``: the app's
``cluster_placement``, some node fits, batch capacity) say no with a ``Status``, cluster scorers
(``cluster_scorers``: free capacity, proximity to the clusters of its peers, consolidation) score the
feasible ones 0..100 with weights, the best total wins and ties go to the smallest cluster id. Free
capacity is accounted across the batch on the cluster totals. Which plugins run, with which weights and
args, is a ``ClusterSelectionConfig`` (``placement_plugins.cluster_selection_config`` builds one from a
policy's ``placement`` configuration).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.placement.framework import (
    Filter,
    Profile,
    Scorer,
    Status,
    resolve_weights,
    run_scorer,
    weighted_totals,
)
from mlsysops.agents.placement.types import ComponentRequest
from mlsysops.policies.cluster_candidates import ClusterRequest, ClusterScoringContext, ClusterView
from mlsysops.policies.cluster_filters import DEFAULT_CLUSTER_FILTERS, summary_reasons
from mlsysops.policies.cluster_scorers import DEFAULT_CLUSTER_SCORERS, DEFAULT_CLUSTER_WEIGHTS
from mlsysops.policies.placement_engine import PlacementDecision, choose, dependency_order
from mlsysops.policies.placement_scorers import DEFAULT_UNKNOWN_LATENCY_MS

__all__ = ["ClusterAssignment", "ClusterSelectionConfig", "ClusterView", "select_clusters", "summary_reasons"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterSelectionConfig:
    """The cluster plugins to run (in order) and their weights (missing names weigh 1)."""

    filters: tuple[Filter[ClusterRequest], ...] = DEFAULT_CLUSTER_FILTERS
    scorers: tuple[Scorer, ...] = DEFAULT_CLUSTER_SCORERS
    default_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CLUSTER_WEIGHTS))

    @classmethod
    def from_profile(cls, profile: Profile) -> ClusterSelectionConfig:
        return cls(filters=profile.filters, scorers=profile.scorers, default_weights=profile.weights)


DEFAULT_CLUSTER_CONFIG = ClusterSelectionConfig()


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


def _first_refusal(
    checks: Sequence[tuple[str, Any]], cluster: ClusterView
) -> Status | list[Status] | None:
    """The statuses of the first filter that refuses ``cluster`` (None: every filter passes)."""
    for plugin, check in checks:
        try:
            answer = check(cluster)
        except Exception as exc:  # noqa: BLE001 - a third-party filter must not take the decision down
            return Status.error(plugin, f"filter failed: {type(exc).__name__}: {exc}")
        if answer is None:
            continue
        if type(answer) is Status:
            return answer
        if isinstance(answer, Sequence) and answer and all(type(s) is Status for s in answer):
            return list(answer)
        return Status.error(plugin, f"filter returned {type(answer).__name__}, expected Status(es) or None")
    return None


def _prepared(request: ClusterRequest, filters: Sequence[Filter[ClusterRequest]]) -> list[tuple[str, Any]]:
    checks: list[tuple[str, Any]] = []
    for plugin in filters:
        try:
            check = plugin.prepare(request)
        except Exception as exc:  # noqa: BLE001
            error = Status.error(plugin.name, f"filter failed: {type(exc).__name__}: {exc}")
            checks.append((plugin.name, lambda cluster, error=error: error))
            continue
        if check is not None:
            checks.append((plugin.name, check))
    return checks


def select_clusters(
    app_components: Sequence[ComponentRequest],
    clusters: Sequence[ClusterView],
    allowed: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    *,
    current: Mapping[str, str] | None = None,
    unknown_latency_ms: float = DEFAULT_UNKNOWN_LATENCY_MS,
    config: ClusterSelectionConfig | None = None,
) -> ClusterAssignment:
    """Choose a cluster per component (dependency order; deterministic).

    ``allowed`` is the app's ``cluster_placement.cluster_id``; None, empty or containing ``"*"`` allows
    every cluster. ``current`` maps components already assigned to their cluster: they are kept (not
    re-decided) and count for proximity and consolidation. ``weights`` override the config's weights.
    """
    cfg = config or DEFAULT_CLUSTER_CONFIG
    resolved = resolve_weights(weights, (s.name for s in cfg.scorers), cfg.default_weights, label="cluster ")
    allowed_set = None if not allowed or "*" in allowed else frozenset(allowed)
    order = dependency_order(app_components)
    by_name = {c.name: c for c in app_components}
    by_id = {c.cluster_id: c for c in clusters}
    consumed_cpu: dict[str, float] = {c.cluster_id: 0.0 for c in clusters}
    consumed_mem: dict[str, int] = {c.cluster_id: 0 for c in clusters}
    located: dict[str, str] = {k: v for k, v in (current or {}).items() if v in by_id}
    ctx = ClusterScoringContext(by_id, located, unknown_latency_ms)
    result = ClusterAssignment(order=order)

    for name in order:
        component = by_name[name]
        if name in located:
            result.assignments[name] = located[name]
            continue
        failed_deps = [d for d in component.depends_on if d in result.unplaceable]
        if failed_deps:
            result.unplaceable[name] = [f"dependency {d} unplaceable" for d in failed_deps]
            continue
        request = ClusterRequest(component, allowed_set, consumed_cpu, consumed_mem)
        checks = _prepared(request, cfg.filters)
        rejected: dict[str, Status | list[Status]] = {}
        feasible: list[ClusterView] = []
        for cluster in clusters:
            refusal = _first_refusal(checks, cluster)
            if refusal is None:
                feasible.append(cluster)
            else:
                rejected[cluster.cluster_id] = refusal

        columns: dict[str, list[float]] = {}
        errors: list[Status] = []
        if feasible:
            for scorer in cfg.scorers:
                if resolved.get(scorer.name, 0.0) <= 0.0:
                    continue
                column = run_scorer(scorer, request, feasible, ctx)
                if type(column) is Status:
                    errors.append(column)
                elif column is not None:
                    columns[scorer.name] = column
        norm, totals = weighted_totals(columns, resolved, len(feasible))
        ids = [c.cluster_id for c in feasible]
        chosen = choose(ids, totals)
        decision = PlacementDecision(
            app=component.app,
            component=name,
            node=chosen,
            candidates=ids,
            totals=totals,
            columns={k: columns[k] for k in norm},
            weights=norm,
            rejections=rejected,
            errors=errors,
        )
        result.decisions[name] = decision
        if chosen is None:
            result.unplaceable[name] = [
                f"{cid}: {', '.join(r)}" for cid, r in sorted(decision.rejected.items())
            ] or ["no clusters"]
            continue
        result.assignments[name] = chosen
        located[name] = chosen
        consumed_cpu[chosen] += request.need_cpu
        consumed_mem[chosen] += request.need_memory
        log.debug("cluster selection %s/%s: %s", component.app, name, decision.explain())
    return result
