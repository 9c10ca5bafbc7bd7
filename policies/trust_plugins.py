"""Placement plugins that use the cluster's trust in each node (`mlsysops.agents.trust`).

- filter ``trust``: rejects a node whose trust score is below ``min_score`` (default 0.3, i.e. several
  recent losses or failures, or one impersonation), with the score and its main reason. The code is
  ``Unschedulable``: trust comes back as the evidence fades (half-life), unlike a missing label.
- scorer ``trust`` (weight 0.2): the score itself, 0..100, active only when the candidates' trust differs
  (so it shows in an explanation only when it mattered); a node with something held against it loses that
  much to its peers.

Configure them like any plugin: ``placement: {filters: {trust: {args: {min_score: 0.5}}}, scorers:
{trust: {weight: 0.5}}}`` (``docs/placement.md``); the evidence weights are the slice's ``trust:`` section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlsysops.agents.placement.framework import Code, Status
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies.placement_filters import FilterPlugin, NodeCheck
from mlsysops.policies.placement_scorers import ScorerPlugin

DEFAULT_MIN_SCORE = 0.3
DEFAULT_WEIGHT = 0.2


def trust_filter(args: Mapping[str, Any]) -> FilterPlugin:
    if unknown := sorted(set(args) - {"min_score"}):
        raise ValueError(f"unknown arg {unknown[0]!r}; expected 'min_score'")
    floor = args.get("min_score", DEFAULT_MIN_SCORE)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not math.isfinite(floor) or not 0 <= floor <= 1:
        raise ValueError(f"min_score must be a number in [0, 1], got {floor!r}")
    floor = float(floor)

    def prepare(request: ComponentRequest) -> NodeCheck | None:
        if floor <= 0:
            return None

        def check(node: NodeView) -> Status | None:
            if node.trust >= floor:
                return None
            why = f": {node.trust_reasons[0]}" if node.trust_reasons else ""
            return Status(Code.UNSCHEDULABLE, f"trust {node.trust:.2f} < {floor:.2f}{why}", "trust")
        return check

    return FilterPlugin("trust", prepare)


def score_trust(request: ComponentRequest, candidates: Sequence[NodeView], ctx: Any) -> list[float] | None:
    """The node's trust score on 0..100; None (nothing to say, not in the explanation) when every
    candidate is trusted alike."""
    values = [max(0.0, min(1.0, n.trust)) for n in candidates]
    if not values or max(values) - min(values) < 1e-9:
        return None
    return [v * 100.0 for v in values]


TRUST_SCORER = ScorerPlugin("trust", score_trust)
