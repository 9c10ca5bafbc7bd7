"""Component and application placement: filter, score, choose, explain.

``schedule`` places one instance of one component: every node runs the applicable filters (every
rejection ``Status`` is kept for the decision record), the feasible ones are scored by the weighted
scorers, the best total wins and ties go to the lexicographically smallest node name, so a decision is
reproducible. A filter that raises or answers garbage rejects the node with an ``Error`` status; a
scorer that does so loses its column and the error is recorded (``PlacementDecision.errors``).
Which plugins run, their weights and args come from ``PlacementConfig`` (see
``mlsysops.policies.placement_plugins`` for building one from a policy's ``placement`` configuration).

``place_app`` places a whole application batch: components in dependency order, capacity accounted as
instances land (on copies of the node views; inputs are never mutated), already running instances
skipped, and a component whose dependency could not be placed is itself unplaceable.
Node names are assumed unique within one call.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.placement.framework import (
    Code,
    Filter,
    Profile,
    Scorer,
    Status,
    run_scorer,
    weighted_totals,
)
from mlsysops.agents.placement.types import ComponentRequest, NodeScore, NodeView
from mlsysops.policies.placement_filters import DEFAULT_FILTERS, NodeCheck
from mlsysops.policies.placement_scorers import (
    DEFAULT_SCORERS,
    DEFAULT_UNKNOWN_LATENCY_MS,
    DEFAULT_WEIGHTS,
    ScoringContext,
    resolve_weights,
)

log = logging.getLogger(__name__)

EXCLUDED_REASON = "excluded"
EXCLUDED = Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, EXCLUDED_REASON, "exclude")
"""The status of a node the caller excluded (``schedule(exclude=...)``)."""


class DependencyCycleError(ValueError):
    """``depends_on`` edges of a batch form a cycle; ``members`` are the components on or behind it."""

    def __init__(self, members: Sequence[str]) -> None:
        self.members = list(members)
        super().__init__("dependency cycle among components: " + ", ".join(self.members))


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    """Everything tunable about a placement decision; the defaults are the documented built-ins.

    ``default_weights`` are the profile's weights (scorers missing there weigh 1); ``weights`` overrides
    some of them (the older, per-call spelling).
    """

    weights: Mapping[str, float] | None = None
    layer_preference: Mapping[str, float] | None = None
    unknown_latency_ms: float = DEFAULT_UNKNOWN_LATENCY_MS
    filters: tuple[Filter[ComponentRequest], ...] = DEFAULT_FILTERS
    scorers: tuple[Scorer, ...] = DEFAULT_SCORERS
    default_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @classmethod
    def from_profile(cls, profile: Profile, **options: Any) -> PlacementConfig:
        return cls(filters=profile.filters, scorers=profile.scorers, default_weights=profile.weights, **options)


DEFAULT_CONFIG = PlacementConfig()


def _fmt_weight(w: float) -> str:
    return f"{w:.2g}"


@dataclass(slots=True)
class PlacementDecision:
    """The full record of one scheduling decision.

    ``candidates`` are the feasible nodes (including an ``incumbent`` that could not be chosen) with
    their weighted ``totals`` and per-scorer ``columns`` (0..100, same order); ``scores`` is the per-node
    view of the same data, built on first use. ``weights`` are the normalised weights of the scorers
    that had something to say; ``statuses`` holds every infeasible node with all its rejection
    ``Status``es and ``rejected`` the same as human reasons. ``rejections`` is the compact form the
    scheduler fills (a single status is stored bare, which keeps a 1,000-node decision from allocating a
    list per rejected node); read ``statuses`` or ``rejected``. ``errors`` are scorers that failed.
    """

    app: str
    component: str
    node: str | None
    candidates: list[str]
    totals: list[float]
    columns: dict[str, list[float]]
    weights: dict[str, float]
    rejections: Mapping[str, Status | Sequence[Status]]
    incumbent: str | None = None
    errors: list[Status] = field(default_factory=list)
    note: str | None = None
    """Why the chosen node is not simply the best total, when another placer chose it (the batch
    placer: the app's latency as a whole); shown at the end of ``explain()``."""
    _scores: dict[str, NodeScore] | None = field(default=None, repr=False, compare=False)
    _statuses: dict[str, list[Status]] | None = field(default=None, repr=False, compare=False)
    _rejected: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)

    @property
    def statuses(self) -> dict[str, list[Status]]:
        """Every infeasible node -> all its rejection statuses, in filter order."""
        if self._statuses is None:
            self._statuses = {
                name: [r] if isinstance(r, Status) else list(r) for name, r in self.rejections.items()
            }
        return self._statuses

    @property
    def rejected(self) -> dict[str, list[str]]:
        """Every infeasible node -> all its rejection reasons, in filter order."""
        if self._rejected is None:
            self._rejected = {name: [s.reason for s in st] for name, st in self.statuses.items()}
        return self._rejected

    @property
    def scores(self) -> dict[str, NodeScore]:
        if self._scores is None:
            self._scores = {
                name: NodeScore(self.totals[i], {k: self.columns[k][i] for k in self.weights})
                for i, name in enumerate(self.candidates)
            }
        return self._scores

    @property
    def ok(self) -> bool:
        return self.node is not None

    @property
    def score(self) -> float | None:
        return self.scores[self.node].total if self.node is not None else None

    @property
    def incumbent_score(self) -> float | None:
        if self.incumbent is None or self.incumbent not in self.scores:
            return None
        return self.scores[self.incumbent].total

    def ranking(self) -> list[str]:
        """Feasible nodes best first (same order the choice used)."""
        pairs = sorted(zip(self.totals, self.candidates, strict=True), key=lambda p: (-round(p[0], 6), p[1]))
        return [name for _, name in pairs]

    def reason_summary(self) -> list[str]:
        """Rejection reasons with how many nodes gave each, most common first (ties alphabetical)."""
        counts = Counter(reason for reasons in self.rejected.values() for reason in reasons)
        return [
            f"{reason} ({count} node{'s' if count != 1 else ''})"
            for reason, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    def rejection_summary(self) -> list[dict[str, Any]]:
        """``reason_summary`` for structured records: plugin, code, reason and how many candidates got
        it (``count``), per distinct status, most common first (ties by reason)."""
        counts = Counter(status for sts in self.statuses.values() for status in sts)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].reason, kv[0].plugin))
        return [{**status.to_dict(), "count": count} for status, count in ordered]

    def _fmt_score(self, node: str) -> str:
        s = self.scores[node]
        parts = ", ".join(
            f"{name} {_fmt_weight(self.weights[name])}x{s.parts[name]:.0f}" for name in self.weights
        )
        return f"score {s.total:.0f}" + (f" ({parts})" if parts else "")

    def explain(self, max_rejected: int = 3) -> str:
        """One line: the choice and its score breakdown, the runner-up, and (some of) the rejections."""
        pieces: list[str] = []
        if self.node is not None:
            pieces.append(f"{self.node} chosen: {self._fmt_score(self.node)}")
            others = [n for n in self.ranking() if n not in (self.node, self.incumbent)]
            if others:
                pieces.append(f"runner-up {others[0]} score {self.scores[others[0]].total:.0f}")
        else:
            total = len(self.candidates) + len(self.rejected)
            pieces.append(f"{self.app}/{self.component} unplaceable: no feasible node among {total}")
        if self.incumbent is not None:
            inc = self.incumbent_score
            pieces.append(
                f"current {self.incumbent} "
                + (f"score {inc:.0f}" if inc is not None else "infeasible")
            )
        shown = sorted(self.rejected)[:max_rejected]
        for name in shown:
            pieces.append(f"{name} rejected: {', '.join(self.rejected[name])}")
        hidden = len(self.rejected) - len(shown)
        if hidden > 0:
            pieces.append(f"+{hidden} more rejected: {', '.join(self.reason_summary()[:3])}")
        pieces.extend(f"{error.plugin} {error.reason}" for error in self.errors)
        if self.note:
            pieces.append(self.note)
        return "; ".join(pieces)


def choose(names: Sequence[str], totals: Sequence[float], skip: str | None = None) -> str | None:
    """Best total wins; totals within 1e-6 of the best tie and go to the smallest name."""
    best_total: float | None = None
    for name, total in zip(names, totals, strict=True):
        if name != skip and (best_total is None or total > best_total):
            best_total = total
    if best_total is None:
        return None
    floor = best_total - 1e-6
    return min(name for name, total in zip(names, totals, strict=True) if total >= floor and name != skip)


def schedule(
    request: ComponentRequest,
    nodes: Sequence[NodeView],
    weights: Mapping[str, float] | None = None,
    exclude: Iterable[str] = (),
    *,
    config: PlacementConfig | None = None,
    incumbent: str | None = None,
) -> PlacementDecision:
    """Choose a node for one instance of ``request``.

    ``exclude`` nodes are rejected with reason ``"excluded"`` and take no part in normalisation.
    ``incumbent`` (the node the component runs on now) is filtered and scored like any other node so
    that callers can compare, but it is never chosen.
    """
    cfg = config or DEFAULT_CONFIG
    resolved = resolve_weights(weights if weights is not None else cfg.weights, cfg.scorers, cfg.default_weights)
    names, checks, broken = _prepare(request, cfg.filters)
    excluded = set(exclude)

    candidates: list[NodeView] = []
    rejected: dict[str, Status | list[Status]] = {}
    for node in nodes:
        if excluded and node.name in excluded:
            rejected[node.name] = EXCLUDED
            continue
        if broken:
            rejected[node.name] = broken
            continue
        # Hot loop (every node of every decision): no per-check bookkeeping. A filter that raises or
        # answers a non-Status drops this node to the careful path, which names the plugin.
        found: Any = None
        try:
            for check in checks:
                status = check(node)
                if status is not None:
                    if type(status) is not Status:
                        raise _NotAStatus
                    if found is None:
                        found = status
                    elif type(found) is list:
                        found.append(status)
                    else:
                        found = [found, status]
        except Exception:  # noqa: BLE001 - a third-party filter must not take the decision down
            found = _careful_statuses(node, checks, names) or None
        if found is None:
            candidates.append(node)
        else:
            rejected[node.name] = found

    columns: dict[str, list[float]] = {}
    errors: list[Status] = []
    if candidates:
        ctx = ScoringContext(nodes, cfg.layer_preference, cfg.unknown_latency_ms)
        for scorer in cfg.scorers:
            if resolved.get(scorer.name, 0.0) <= 0.0:
                continue
            column = run_scorer(scorer, request, candidates, ctx)
            if type(column) is Status:
                errors.append(column)
            elif column is not None:
                columns[scorer.name] = column
    norm, totals = weighted_totals(columns, resolved, len(candidates))
    names = [n.name for n in candidates]
    decision = PlacementDecision(
        app=request.app,
        component=request.name,
        node=choose(names, totals, skip=incumbent),
        candidates=names,
        totals=totals,
        columns={name: columns[name] for name in norm},
        weights=norm,
        rejections=rejected,
        incumbent=incumbent,
        errors=errors,
    )
    if log.isEnabledFor(logging.DEBUG):
        log.debug("schedule %s/%s: %s", request.app, request.name, decision.explain())
    return decision


def _prepare(
    request: ComponentRequest, filters: Sequence[Filter[ComponentRequest]]
) -> tuple[list[str], list[NodeCheck], list[Status]]:
    """The applicable checks and their plugin names (same order), and the statuses of filters whose
    ``prepare`` failed (then every node is refused: a filter we could not run is never skipped)."""
    names: list[str] = []
    checks: list[NodeCheck] = []
    broken: list[Status] = []
    for plugin in filters:
        try:
            check = plugin.prepare(request)
        except Exception as exc:  # noqa: BLE001 - isolate third-party filters
            broken.append(Status.error(plugin.name, f"filter failed: {type(exc).__name__}: {exc}"))
            continue
        if check is not None:
            names.append(plugin.name)
            checks.append(check)
    return names, checks, broken


class _NotAStatus(Exception):
    """A filter answered something other than None or a Status (handled by ``_careful_statuses``)."""


def _careful_statuses(node: NodeView, checks: Sequence[NodeCheck], names: Sequence[str]) -> list[Status]:
    """The node's statuses check by check: an exception or a non-Status answer becomes the plugin's
    ``Error`` status (a plain string is taken as its reason, ``Unschedulable``)."""
    out: list[Status] = []
    for plugin, check in zip(names, checks, strict=True):
        try:
            answer = check(node)
        except Exception as exc:  # noqa: BLE001
            out.append(Status.error(plugin, f"filter failed: {type(exc).__name__}: {exc}"))
            continue
        if answer is None:
            continue
        if type(answer) is Status:
            out.append(answer)
        elif isinstance(answer, str):
            out.append(Status(Code.UNSCHEDULABLE, answer, plugin))
        else:
            out.append(Status.error(plugin, f"filter returned {type(answer).__name__}, expected Status or None"))
    return out


@dataclass(slots=True)
class AppPlacement:
    """Result of placing a batch of components (keyed by component name)."""

    order: list[str]
    placements: dict[str, list[str]] = field(default_factory=dict)
    decisions: dict[str, list[PlacementDecision]] = field(default_factory=dict)
    unplaceable: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    nodes: list[NodeView] = field(default_factory=list)
    """Node views after the batch landed (allocations and ``hosted`` updated)."""
    batch: dict[str, Any] | None = None
    """How the batch placer decided (method, solver status, objective, time); None per instance."""

    @property
    def ok(self) -> bool:
        return not self.unplaceable

    def explain(self) -> str:
        lines: list[str] = [self.batch["summary"]] if self.batch else []
        for name in self.order:
            if name in self.skipped:
                lines.append(f"{name}: already placed")
            for decision in self.decisions.get(name, []):
                if decision.ok:
                    lines.append(f"{name}: {decision.explain()}")
            if name in self.unplaceable:
                lines.append(f"{name} unplaceable: {'; '.join(self.unplaceable[name])}")
        return "\n".join(lines)


def dependency_order(requests: Sequence[ComponentRequest]) -> list[str]:
    """Component names so that each comes after what it depends on (stable w.r.t. input order).

    Dependencies on components outside the batch are ignored (they are placed or not our concern).
    Raises ``DependencyCycleError`` on a cycle and ``ValueError`` on duplicate names.
    """
    index = {}
    for i, r in enumerate(requests):
        if r.name in index:
            raise ValueError(f"duplicate component name {r.name!r} in placement batch")
        index[r.name] = i
    deps = {r.name: {d for d in r.depends_on if d in index and d != r.name} for r in requests}
    if any(r.name in r.depends_on for r in requests):
        raise DependencyCycleError([r.name for r in requests if r.name in r.depends_on])
    order: list[str] = []
    done: set[str] = set()
    remaining = [r.name for r in requests]
    while remaining:
        ready = [name for name in remaining if deps[name] <= done]
        if not ready:
            raise DependencyCycleError(remaining)
        for name in ready:
            order.append(name)
            done.add(name)
        remaining = [name for name in remaining if name not in done]
    return order


def place_app(
    requests: Sequence[ComponentRequest],
    nodes: Sequence[NodeView],
    weights: Mapping[str, float] | None = None,
    *,
    placed: Mapping[str, Sequence[str]] | None = None,
    config: PlacementConfig | None = None,
) -> AppPlacement:
    """Place every component instance of a batch; pure (inputs are not mutated).

    ``placed`` maps component name -> nodes where instances already run; when omitted the count comes
    from ``NodeView.hosted`` (on any mlsysops.node, alive or not: moving instances off dead mlsysops.nodes is relocation's
    job, not a reason to start duplicates). Only the missing ``instances - running`` are placed.
    """
    by_name = {r.name: r for r in requests}
    order = dependency_order(requests)
    current = list(nodes)
    position = {n.name: i for i, n in enumerate(current)}
    result = AppPlacement(order=order)

    for name in order:
        request = by_name[name]
        if placed is not None:
            running = len(placed.get(name, ()))
        else:
            running = sum(n.hosted.get(request.key, 0) for n in nodes)
        failed_deps = [d for d in request.depends_on if d in result.unplaceable]
        if failed_deps:
            result.unplaceable[name] = [f"dependency {d} unplaceable" for d in failed_deps]
            continue
        needed = request.instances - running
        if needed <= 0:
            result.skipped.append(name)
            continue
        decisions = result.decisions.setdefault(name, [])
        landed = result.placements.setdefault(name, [])
        for i in range(needed):
            decision = schedule(request, current, weights, config=config)
            decisions.append(decision)
            if decision.node is None:
                reasons = decision.reason_summary() or ["no nodes"]
                if needed > 1:
                    reasons.insert(0, f"placed {i} of {needed} instances")
                result.unplaceable[name] = reasons
                break
            idx = position[decision.node]
            current[idx] = current[idx].with_placed(request)
            landed.append(decision.node)
        if not landed:
            del result.placements[name]
    result.nodes = current
    return result
