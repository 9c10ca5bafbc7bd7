"""The streaming Half-Space Trees detector of node trust: no judgement before a reference window exists,
ordinary samples score low, samples from a region the reference never visited score high, and the
reference follows the stream window by window."""

from __future__ import annotations

import random

import pytest

from mlsysops.agents.half_space_trees import HalfSpaceTrees


def steady(rng: random.Random) -> dict[str, float]:
    return {"cpu": 0.3 + rng.gauss(0, 0.02), "memory": 0.5 + rng.gauss(0, 0.02)}


def test_no_score_before_a_full_reference_window() -> None:
    d = HalfSpaceTrees(window_size=20, seed=1)
    rng = random.Random(1)
    for _ in range(19):
        d.learn_one(steady(rng))
        assert d.score_one({"cpu": 0.99, "memory": 0.01}) == 0.0
    d.learn_one(steady(rng))
    assert d.score_one({"cpu": 0.99, "memory": 0.01}) > 0.8


def test_ordinary_samples_score_low_and_unvisited_regions_high() -> None:
    d = HalfSpaceTrees(seed=3)
    rng = random.Random(3)
    for _ in range(200):
        d.learn_one(steady(rng))
    ordinary = [d.score_one(steady(rng)) for _ in range(50)]
    assert max(ordinary) < 0.8
    assert min(d.score_one(x) for x in ({"cpu": 0.95, "memory": 0.5}, {"cpu": 0.3, "memory": 0.05})) > 0.8
    assert 0.0 <= d.score_one({"cpu": 0.95, "memory": 0.05}) <= 1.0


def test_the_reference_follows_the_stream() -> None:
    d = HalfSpaceTrees(window_size=50, seed=4)
    rng = random.Random(4)
    for _ in range(100):
        d.learn_one(steady(rng))
    moved = {"cpu": 0.8, "memory": 0.5}
    assert d.score_one(moved) > 0.8
    for _ in range(100):   # the node's normal changed: two windows later it is the reference
        d.learn_one({"cpu": 0.8 + rng.gauss(0, 0.02), "memory": 0.5 + rng.gauss(0, 0.02)})
    assert d.score_one(moved) < 0.8 and d.score_one(steady(rng)) > 0.8


def test_a_missing_feature_follows_the_denser_side() -> None:
    d = HalfSpaceTrees(seed=5)
    rng = random.Random(5)
    for _ in range(100):
        d.learn_one(steady(rng))
    assert d.score_one({"cpu": 0.3}) < 0.8 and d.score_one({"cpu": 0.95}) > 0.8


@pytest.mark.parametrize("kwargs", [{"n_trees": 0}, {"height": 0}, {"window_size": 0}])
def test_bad_sizes_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        HalfSpaceTrees(**kwargs)
