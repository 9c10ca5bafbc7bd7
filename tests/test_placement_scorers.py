"""Scorers normalise to 0..100 across candidates and weights combine them as documented."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlsysops.policies.placement_engine import PlacementConfig, schedule
from mlsysops.policies.placement_scorers import (
    DEFAULT_WEIGHTS,
    ScoringContext,
    normalize_max,
    normalize_reverse,
    resolve_weights,
    score_layer,
    score_least_allocated,
    score_proximity,
    score_spread,
    score_utilization,
)
from tests.support import GI
from tests.support import component_request as req
from tests.support import node_view as node


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=50))
def test_normalisation_bounds(raw: list[float]) -> None:
    for out in (normalize_max(raw), normalize_reverse(raw)):
        assert len(out) == len(raw)
        assert all(0.0 <= x <= 100.0 for x in out)
    if max(raw) > 0:
        assert max(normalize_max(raw)) == pytest.approx(100.0)
        assert min(normalize_reverse(raw)) == pytest.approx(0.0)


def test_least_allocated_prefers_free_and_balanced() -> None:
    nodes = [
        node("busy", cpu_allocated=3.0, memory_allocated=6 * GI),
        node("free"),
        node("lopsided", cpu_allocated=0.0, memory_allocated=7 * GI),
    ]
    scores = score_least_allocated(req(cpu_cores=0.5, memory_bytes=GI), nodes, ScoringContext(nodes))
    assert scores[1] == pytest.approx(100.0)
    assert scores[0] < scores[1] and scores[2] < scores[1]


def test_utilization() -> None:
    nodes = [node("a", cpu_utilization=0.9), node("b", cpu_utilization=0.1)]
    a, b = score_utilization(req(), nodes, ScoringContext(nodes))
    assert b == pytest.approx(100.0) and a == pytest.approx(100 * 0.1 / 0.9)


def test_proximity_uses_latency_to_peer_hosts_and_is_silent_without_peers() -> None:
    db = node("db-host", hosted={("app", "db"): 1})
    near = node("near", latency_ms={"db-host": 2.0})
    far = node("far", latency_ms={"db-host": 40.0})
    reverse_only = node("rev")
    db.latency_ms["rev"] = 10.0  # only the peer side knows the latency
    nodes = [db, near, far, reverse_only]
    ctx = ScoringContext(nodes)
    scores = score_proximity(req(depends_on=["db"]), [near, far, reverse_only, db], ctx)
    assert scores is not None
    s_near, s_far, s_rev, s_same = scores
    assert s_same == pytest.approx(100.0)  # same node: latency 0
    assert s_far == pytest.approx(0.0)
    assert s_near > s_rev > s_far
    assert score_proximity(req(), nodes, ctx) is None
    assert score_proximity(req(interacts_with=["cache"]), nodes, ctx) is None  # peer not placed anywhere


def test_spread_counts_same_app_and_double_for_same_component() -> None:
    nodes = [
        node("empty"),
        node("sibling", hosted={("app", "db"): 1}),
        node("same", hosted={("app", "web"): 1}),
        node("other-app", hosted={("x", "web"): 3}),
    ]
    scores = score_spread(req(), nodes, ScoringContext(nodes))
    assert scores is not None
    empty, sibling, same, other = scores
    assert empty == other == pytest.approx(100.0)
    assert same == pytest.approx(0.0) and sibling == pytest.approx(50.0)
    assert score_spread(req(), [nodes[0], nodes[3]], ScoringContext(nodes)) is None


def test_layer_preference() -> None:
    nodes = [node("c", layer="cloud"), node("e", layer="edge"), node("f", layer="far_edge")]
    assert score_layer(req(), nodes, ScoringContext(nodes)) is None
    scores = score_layer(req(), nodes, ScoringContext(nodes, layer_preference={"edge": 2, "cloud": 1}))
    assert scores == [pytest.approx(50.0), pytest.approx(100.0), pytest.approx(0.0)]


def test_resolve_weights_validates() -> None:
    assert resolve_weights(None) == dict(DEFAULT_WEIGHTS)
    assert resolve_weights({"spread": 0})["spread"] == 0
    with pytest.raises(ValueError, match="unknown scorer 'latency'"):
        resolve_weights({"latency": 1})
    with pytest.raises(ValueError, match="must be >= 0"):
        resolve_weights({"spread": -1})


def test_weights_steer_the_choice_and_sum_to_one() -> None:
    # "idle" is observed idle but heavily allocated; "roomy" is free but observed busy.
    nodes = [
        node("idle", cpu_allocated=3.5, cpu_utilization=0.05),
        node("roomy", cpu_allocated=0.0, cpu_utilization=0.95),
    ]
    r = req(cpu_cores=0.25)
    by_load = schedule(r, nodes, {"least_allocated": 1.0, "utilization": 0.0})
    by_util = schedule(r, nodes, {"least_allocated": 0.0, "utilization": 1.0})
    assert by_load.node == "roomy" and by_util.node == "idle"
    mixed = schedule(r, nodes, {"least_allocated": 3, "utilization": 1})
    assert sum(mixed.weights.values()) == pytest.approx(1.0)
    assert mixed.weights == {"least_allocated": pytest.approx(0.75), "utilization": pytest.approx(0.25)}
    for s in mixed.scores.values():
        assert 0 <= s.total <= 100
        assert s.total == pytest.approx(sum(mixed.weights[k] * v for k, v in s.parts.items()))


def test_layer_preference_through_config() -> None:
    nodes = [node("c", layer="cloud"), node("e", layer="edge")]
    cfg = PlacementConfig(layer_preference={"edge": 1.0})
    assert schedule(req(), nodes, config=cfg).node == "e"
    assert schedule(req(), nodes).node == "c"  # tie without preference: name order
