"""When and where to move running component instances.

Two triggers, checked in this order, deterministic (components sorted by (app, name)):

1. **Lost node** - an instance on a node listed in ``lost_nodes``, marked not alive, or absent from the
   node views must move (reason ``"node X lost"``). Cooldown does not apply: the instance is gone.
   If no node is eligible the relocation is still reported with ``to_node=None`` so the caller can mark
   the component pending rather than silently dropping it.
2. **Sustained QoS violation** - the last ``qos_violation_threshold`` observations of the component's QoS
   metric all violate its target (a single spike never moves anything), the component is not in its
   cooldown (``now - last_moved[key] >= cooldown_s``), and the scheduler predicts improvement: the best
   other feasible node scores at least ``min_score_gain`` points more than the current node, both scored
   in the same normalisation with the instance's own allocation removed from the current node. At most
   one instance per component moves per plan (the one on the worst-scoring node).

Targets always come from ``placement_engine.schedule``, so a move never goes to a node failing a filter.
Capacity is accounted across the relocations of one plan. The function is pure: the caller records
``now`` into ``last_moved`` for the moves it executes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mlsysops.agents.placement.types import ComponentKey, ComponentRequest, NodeView
from mlsysops.policies.placement_engine import PlacementConfig, PlacementDecision, schedule

log = logging.getLogger(__name__)

QOS_RELATIONS = ("lower_or_equal", "greater_or_equal", "equal", "lower_than", "greater_than")
"""The relations of ``qos_metrics[].relation`` in the MLSysOpsApp CRD."""

DEFAULT_QOS_VIOLATION_THRESHOLD = 3
DEFAULT_COOLDOWN_S = 60.0
DEFAULT_MIN_SCORE_GAIN = 5.0


def qos_violated(value: float, target: float, relation: str, tolerance: float = 0.0) -> bool:
    """True when ``value`` breaks ``target`` under the CRD ``relation`` (the relation is the goal).

    ``tolerance`` only widens ``equal``. Unknown relations raise ``ValueError``.
    """
    if math.isnan(value):
        return True
    if relation == "lower_or_equal":
        return value > target
    if relation == "greater_or_equal":
        return value < target
    if relation == "lower_than":
        return value >= target
    if relation == "greater_than":
        return value <= target
    if relation == "equal":
        return abs(value - target) > tolerance
    raise ValueError(f"unknown QoS relation {relation!r}; expected one of {', '.join(QOS_RELATIONS)}")


@dataclass(frozen=True, slots=True)
class Relocation:
    """One proposed move; ``to_node`` None means "must move but nowhere to go"."""

    app: str
    component: str
    from_node: str
    to_node: str | None
    reason: str
    decision: PlacementDecision | None

    @property
    def key(self) -> ComponentKey:
        return (self.app, self.component)

    def explain(self) -> str:
        target = self.to_node or "nowhere"
        detail = f": {self.decision.explain()}" if self.decision is not None else ""
        return f"{self.app}/{self.component} {self.from_node} -> {target} ({self.reason}){detail}"


def _observed(recent: Sequence[float], request: ComponentRequest) -> str:
    return (f"last {len(recent)} observations not {request.qos_relation} {request.qos_target_ms:g}, latest "
            f"{recent[-1]:g}")


def plan_relocations(
    placements: Mapping[ComponentKey, Sequence[str]],
    nodes: Sequence[NodeView],
    requests: Iterable[ComponentRequest] | Mapping[ComponentKey, ComponentRequest],
    qos_observed: Mapping[ComponentKey, Sequence[float]],
    *,
    lost_nodes: Iterable[str] = (),
    qos_violation_threshold: int = DEFAULT_QOS_VIOLATION_THRESHOLD,
    cooldown_s: float = DEFAULT_COOLDOWN_S,
    now: float = 0.0,
    last_moved: Mapping[ComponentKey, float] | None = None,
    min_score_gain: float = DEFAULT_MIN_SCORE_GAIN,
    weights: Mapping[str, float] | None = None,
    config: PlacementConfig | None = None,
    held: list[str] | None = None,
) -> list[Relocation]:
    """Relocations for ``placements`` ((app, component) -> nodes running an instance, one entry per
    instance) given node views, the component requests and recent QoS observations (oldest first).
    ``held`` (if given) collects, in plain words, the QoS violations left where they are and why."""
    notes: list[str] = held if held is not None else []
    if qos_violation_threshold < 1:
        raise ValueError("qos_violation_threshold must be >= 1")
    reqs: dict[ComponentKey, ComponentRequest] = (
        dict(requests) if isinstance(requests, Mapping) else {r.key: r for r in requests}
    )
    current = list(nodes)
    position = {n.name: i for i, n in enumerate(current)}
    lost = set(lost_nodes) | {n.name for n in current if not n.alive}
    # Dead views are rejected by the alive filter already; exclude only the ones still looking alive.
    known_lost = [name for name in sorted(lost) if name in position and current[position[name]].alive]
    moved_recently = last_moved or {}
    out: list[Relocation] = []
    relocated: set[ComponentKey] = set()

    for key in sorted(placements):
        request = reqs.get(key)
        if request is None:
            log.warning("no request for placed component %s/%s; cannot relocate it", *key)
            continue
        for node_name in sorted(placements[key]):
            if node_name in position and node_name not in lost:
                continue
            reason = f"node {node_name} lost"
            decision = schedule(request, current, weights, exclude=known_lost, config=config)
            if decision.node is not None:
                idx = position[decision.node]
                current[idx] = current[idx].with_placed(request)
            else:
                reason += "; no eligible node"
            out.append(Relocation(key[0], key[1], node_name, decision.node, reason, decision))
            relocated.add(key)

    for key in sorted(placements):
        request = reqs.get(key)
        if request is None or key in relocated or request.qos_target_ms is None:
            continue
        observed = qos_observed.get(key, ())
        recent = list(observed[-qos_violation_threshold:])
        if len(recent) < qos_violation_threshold or not all(
            qos_violated(v, request.qos_target_ms, request.qos_relation) for v in recent
        ):
            continue
        last = moved_recently.get(key)
        if last is not None and now - last < cooldown_s:
            log.debug("%s/%s violates QoS but is in cooldown (%.1fs left)", *key, cooldown_s - (now - last))
            notes.append(f"{key[0]}/{key[1]} violates its QoS target ({_observed(recent, request)}) but moved "
                         f"{now - last:.0f}s ago; cooldown {cooldown_s:g}s")
            continue
        best: tuple[float, str, PlacementDecision] | None = None
        refused: PlacementDecision | None = None
        for node_name in sorted(set(placements[key])):
            if node_name not in position or node_name in lost:
                continue
            view = current[position[node_name]]
            trial = list(current)
            if view.hosted.get(key, 0) > 0:
                trial[position[node_name]] = view.with_placed(request, -1)
            decision = schedule(
                request, trial, weights, exclude=known_lost, config=config, incumbent=node_name
            )
            if decision.node is None:
                refused = decision
                continue
            incumbent_score = decision.incumbent_score
            new_score = decision.scores[decision.node].total
            gain = math.inf if incumbent_score is None else new_score - incumbent_score
            if best is None or gain > best[0]:
                best = (gain, node_name, decision)
        if best is None:
            log.debug("%s/%s violates QoS but no other feasible node", *key)
            why = f": {refused.explain()}" if refused is not None else ""
            notes.append(f"{key[0]}/{key[1]} violates its QoS target ({_observed(recent, request)}) and no other "
                         f"node is feasible{why}")
            continue
        gain, from_node, decision = best
        if gain < min_score_gain:
            log.debug("%s/%s violates QoS but best gain %.1f < %.1f", *key, gain, min_score_gain)
            notes.append(f"{key[0]}/{key[1]} violates its QoS target ({_observed(recent, request)}); the best "
                         f"move ({decision.node}) gains {gain:.1f} < {min_score_gain:g}: not worth moving")
            continue
        assert decision.node is not None
        inc = decision.incumbent_score
        reason = (
            f"qos violated: last {qos_violation_threshold} observations not {request.qos_relation} "
            f"{request.qos_target_ms:g} (last {recent[-1]:g}); score "
            + (f"{inc:.0f}" if inc is not None else "infeasible")
            + f" -> {decision.scores[decision.node].total:.0f}"
        )
        src, dst = position[from_node], position[decision.node]
        if current[src].hosted.get(key, 0) > 0:
            current[src] = current[src].with_placed(request, -1)
        current[dst] = current[dst].with_placed(request)
        out.append(Relocation(key[0], key[1], from_node, decision.node, reason, decision))
    return out
