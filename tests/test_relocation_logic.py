"""Relocation on lost nodes and sustained QoS violations, with cooldown and filter safety."""

from __future__ import annotations

import functools

import pytest

from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies.relocation_logic import QOS_RELATIONS, plan_relocations, qos_violated
from tests.support import component_request as req
from tests.support import node_view

KEY = ("app", "web")


node = functools.partial(node_view, layer="edge")   # these scenarios are about edge nodes


@pytest.mark.parametrize(
    ("relation", "ok_value", "bad_value"),
    [
        ("lower_or_equal", 20.0, 20.1),
        ("lower_than", 19.9, 20.0),
        ("greater_or_equal", 20.0, 19.9),
        ("greater_than", 20.1, 20.0),
        ("equal", 20.0, 20.5),
    ],
)
def test_qos_violated_relations(relation: str, ok_value: float, bad_value: float) -> None:
    assert relation in QOS_RELATIONS
    assert not qos_violated(ok_value, 20.0, relation)
    assert qos_violated(bad_value, 20.0, relation)


def test_qos_violated_edge_cases() -> None:
    assert not qos_violated(20.4, 20.0, "equal", tolerance=0.5)
    assert qos_violated(float("nan"), 20.0, "lower_or_equal")
    with pytest.raises(ValueError, match="unknown QoS relation 'less'"):
        qos_violated(1.0, 2.0, "less")


def test_lost_node_moves_components_with_capacity_accounting() -> None:
    nodes = [
        node("gone", hosted={KEY: 1, ("app", "db"): 1}),
        node("small", cpu_capacity=1.0),
        node("big", cpu_capacity=1.5),
    ]
    reqs = [req("web", cpu_cores=0.9), req("db", cpu_cores=0.9)]
    placements = {KEY: ["gone"], ("app", "db"): ["gone"]}
    moves = plan_relocations(placements, nodes, reqs, {}, lost_nodes=["gone"])
    assert [(m.component, m.from_node, m.reason) for m in moves] == [
        ("db", "gone", "node gone lost"),
        ("web", "gone", "node gone lost"),
    ]
    # db goes to the freest node; web then no longer fits there (1.5 - 0.9 < 0.9) and takes "small".
    assert [m.to_node for m in moves] == ["big", "small"]
    assert moves[1].decision is not None
    assert moves[1].decision.rejected["big"] == ["insufficient cpu: requests 0.9, free 0.6"]
    assert moves[0].decision is not None and moves[0].decision.rejected["gone"] == ["excluded"]


def test_dead_or_missing_node_counts_as_lost_and_nowhere_to_go_is_reported() -> None:
    nodes = [node("dead", alive=False, hosted={KEY: 1}), node("other", cpu_capacity=0.1)]
    moves = plan_relocations({KEY: ["dead"]}, nodes, [req(cpu_cores=1.0)], {})
    assert len(moves) == 1 and moves[0].to_node is None
    assert moves[0].reason == "node dead lost; no eligible node"
    assert moves[0].decision is not None
    assert moves[0].decision.rejected == {
        "dead": ["node down"],
        "other": ["insufficient cpu: requests 1, free 0.1"],
    }
    moves = plan_relocations({KEY: ["vanished"]}, [node("x")], [req()], {})
    assert [(m.from_node, m.to_node, m.reason) for m in moves] == [("vanished", "x", "node vanished lost")]


def qos_setup() -> tuple[list[NodeView], list[ComponentRequest]]:
    nodes = [
        node("hot", cpu_utilization=0.95, cpu_allocated=3.0, hosted={KEY: 1}),
        node("cool", cpu_utilization=0.05),
    ]
    return nodes, [req(cpu_cores=0.5, qos_target_ms=20.0)]


def test_sustained_qos_violation_moves_but_single_spike_does_not() -> None:
    nodes, reqs = qos_setup()
    placements = {KEY: ["hot"]}
    assert plan_relocations(placements, nodes, reqs, {KEY: [10, 10, 50]}) == []  # spike
    assert plan_relocations(placements, nodes, reqs, {KEY: [50, 50]}) == []  # too few observations
    assert plan_relocations(placements, nodes, reqs, {KEY: [50, 10, 50, 50]}) == []  # not K consecutive
    moves = plan_relocations(placements, nodes, reqs, {KEY: [10, 50, 50, 50]})
    assert len(moves) == 1
    m = moves[0]
    assert (m.from_node, m.to_node) == ("hot", "cool")
    assert m.reason.startswith("qos violated: last 3 observations not lower_or_equal 20 (last 50); score ")
    assert m.decision is not None and m.decision.incumbent == "hot"
    assert "current hot score" in m.explain()
    # threshold is configurable
    assert plan_relocations(placements, nodes, reqs, {KEY: [50]}, qos_violation_threshold=1)


def test_greater_or_equal_relation_from_request() -> None:
    nodes, _ = qos_setup()
    reqs = [req(qos_target_ms=30.0, qos_relation="greater_or_equal")]  # e.g. a frame rate target
    assert plan_relocations({KEY: ["hot"]}, nodes, reqs, {KEY: [40, 40, 40]}) == []
    assert len(plan_relocations({KEY: ["hot"]}, nodes, reqs, {KEY: [10, 10, 10]})) == 1


def test_cooldown_prevents_flapping() -> None:
    nodes, reqs = qos_setup()
    obs = {KEY: [50, 50, 50]}
    placements = {KEY: ["hot"]}
    moved = {KEY: 70.0}
    assert plan_relocations(placements, nodes, reqs, obs, now=100.0, last_moved=moved, cooldown_s=60) == []
    assert plan_relocations(placements, nodes, reqs, obs, now=130.0, last_moved=moved, cooldown_s=60)
    assert plan_relocations(placements, nodes, reqs, obs, now=100.0, last_moved={("app", "x"): 99.0})


def test_no_move_without_predicted_improvement() -> None:
    # Both nodes equally good: violating QoS is not a reason to shuffle.
    nodes = [node("a", hosted={KEY: 1}, cpu_allocated=0.5), node("b")]
    reqs = [req(cpu_cores=0.5, qos_target_ms=20.0)]
    assert plan_relocations({KEY: ["a"]}, nodes, reqs, {KEY: [50, 50, 50]}) == []


def test_never_moves_to_ineligible_node() -> None:
    # "cool" would score best but lacks the camera; the only other candidate is down.
    nodes = [
        node("hot", cpu_utilization=0.95, cpu_allocated=3.0, sensors={"camera"}, hosted={KEY: 1}),
        node("cool", cpu_utilization=0.0),
        node("down", alive=False, sensors={"camera"}),
    ]
    reqs = [req(cpu_cores=0.5, qos_target_ms=20.0, sensors=["camera"])]
    assert plan_relocations({KEY: ["hot"]}, nodes, reqs, {KEY: [50, 50, 50]}) == []
    nodes.append(node("cam2", sensors={"camera"}))
    moves = plan_relocations({KEY: ["hot"]}, nodes, reqs, {KEY: [50, 50, 50]})
    assert [m.to_node for m in moves] == ["cam2"]


def test_lost_takes_precedence_and_components_without_request_are_skipped() -> None:
    nodes = [node("gone", hosted={KEY: 1}), node("ok")]
    reqs = [req(qos_target_ms=20.0)]
    placements = {KEY: ["gone"], ("app", "unknown"): ["gone"]}
    moves = plan_relocations(placements, nodes, reqs, {KEY: [50, 50, 50]}, lost_nodes=["gone"])
    assert [(m.component, m.reason) for m in moves] == [("web", "node gone lost")]
