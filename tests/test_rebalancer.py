"""The rebalancer moves a running app only when the gain beats its threshold, within its budget."""

from __future__ import annotations

import asyncio
import random

import pytest

from mlsysops.agents.placement.framework import PlacementConfigError
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies import rebalancer
from mlsysops.policies.batch_problem import build_problem
from mlsysops.policies.rebalance_logic import RebalanceOptions, plan_rebalance

GI = 1 << 30
EAGER = RebalanceOptions(min_gain_ms=1.0, min_gain_ratio=0.0, max_moves=5, cooldown_s=0.0)


def line(count: int, cpu: float = 4.0) -> list[NodeView]:
    """Nodes on a line, 10 ms per hop; the data source on n0."""
    nodes = [NodeView(name=f"n{i}", layer="edge", cpu_capacity=cpu, memory_capacity=8 * GI) for i in range(count)]
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.latency_ms[b.name] = 10.0 * abs(int(a.name[1:]) - int(b.name[1:]))
    nodes[0].hosted[("app", "source")] = 1
    return nodes


def running_on(nodes: list[NodeView], reqs, where: dict[str, list[str]]) -> list[NodeView]:
    by = {n.name: n for n in nodes}
    for r in reqs:
        for host in where[r.name]:
            by[host] = by[host].with_placed(r)
    return [by[n.name] for n in nodes]


def chain() -> list[ComponentRequest]:
    return [ComponentRequest("app", "ingest", cpu_cores=1.0, interacts_with=["source"]),
            ComponentRequest("app", "process", cpu_cores=1.0, interacts_with=["ingest"])]


def test_moves_a_component_far_from_its_source_when_it_pays() -> None:
    reqs = chain()
    where = {"ingest": ["n3"], "process": ["n3"]}
    nodes = running_on(line(4), reqs, where)
    plan = plan_rebalance(reqs, where, nodes, options=RebalanceOptions(min_gain_ms=10.0, min_gain_ratio=0.2))
    # neither move alone gains (the other end stays 30 ms away): the linked pair moves as one step
    assert sorted((m.component, m.from_node, m.to_node, m.step) for m in plan.moves) == [
        ("ingest", "n3", "n0", 1), ("process", "n3", "n0", 1)]
    assert plan.moves[0].gain / 2 >= plan.threshold
    assert "gain" in plan.explain() and "threshold" in plan.explain()
    tight = plan_rebalance(reqs, where, nodes, options=RebalanceOptions(max_moves=1))
    assert tight.moves == [] and "over the budget of 1 move(s)" in tight.declined[0]


def test_never_moves_below_the_threshold() -> None:
    reqs = chain()
    where = {"ingest": ["n1"], "process": ["n1"]}   # 10 ms from the source; both on n0 save 10 ms
    nodes = running_on(line(3), reqs, where)
    plan = plan_rebalance(reqs, where, nodes, options=RebalanceOptions(min_gain_ms=25.0, min_gain_ratio=0.0))
    assert plan.moves == []
    assert plan.declined and "below threshold" in plan.declined[0]
    # the same placement, a threshold it beats: it moves
    plan = plan_rebalance(reqs, where, nodes, options=RebalanceOptions(min_gain_ms=4.0, min_gain_ratio=0.0))
    assert len(plan.moves) == 2 and plan.after < plan.before


@pytest.mark.parametrize("seed", range(12))
def test_no_move_without_gain_over_its_threshold_on_random_placements(seed: int) -> None:
    rng = random.Random(seed)
    base = line(6, cpu=4.0)   # room for all four on any node: every random placement is valid
    reqs = [ComponentRequest("app", f"c{i}", cpu_cores=rng.choice((0.5, 1.0)),
                             interacts_with=[f"c{i - 1}" if i else "source"]) for i in range(4)]
    where = {r.name: [rng.choice([n.name for n in base])] for r in reqs}
    nodes = running_on(base, reqs, where)
    options = RebalanceOptions(min_gain_ms=rng.choice((0.5, 5.0, 20.0)), min_gain_ratio=rng.choice((0.0, 0.1)),
                               max_moves=3, cooldown_s=0.0)
    plan = plan_rebalance(reqs, where, nodes, options=options)
    # recompute each move's gain independently from the objective
    freed = {n.name: n for n in nodes}
    for r in reqs:
        freed[where[r.name][0]] = freed[where[r.name][0]].with_placed(r, -1)
    views = [freed[n.name] for n in nodes]
    problem = build_problem(reqs, {r.name: 1 for r in reqs}, views)
    index = {n.name: i for i, n in enumerate(views)}
    state = {r.name: where[r.name][0] for r in reqs}

    def cost() -> float:
        return problem.evaluate([index[state[r.name]] for r in problem.requests]).cost

    for step in sorted({m.step for m in plan.moves}):
        moves = [m for m in plan.moves if m.step == step]
        before = cost()
        for move in moves:
            state[move.component] = move.to_node
        gain = before - cost()
        assert gain == pytest.approx(moves[0].gain, abs=1e-6)
        assert gain / len(moves) >= plan.threshold >= options.min_gain_ms
    assert len(plan.moves) <= options.max_moves


def test_cooldown_and_not_fully_running() -> None:
    reqs = chain()
    where = {"ingest": ["n3"], "process": ["n3"]}
    nodes = running_on(line(4), reqs, where)
    assert plan_rebalance(reqs, where, nodes, options=EAGER, now=100.0,
                          last_moved={"ingest": 90.0, "process": 90.0}).moves   # cooldown 0
    cooled = RebalanceOptions(min_gain_ms=1.0, min_gain_ratio=0.0, max_moves=5, cooldown_s=60.0)
    plan = plan_rebalance(reqs, where, nodes, options=cooled, now=100.0, last_moved={"ingest": 90.0,
                                                                                    "process": 90.0})
    assert plan.moves == [] and any("cooldown" in d for d in plan.declined)
    partial = plan_rebalance(reqs, {"ingest": ["n3"]}, nodes, options=EAGER)
    assert partial.moves == [] and partial.reason.startswith("not rebalanced: not fully running")


def test_options_validated_naming_the_field() -> None:
    with pytest.raises(PlacementConfigError, match=r"^rebalance.max_moves: must be an integer"):
        RebalanceOptions.from_mapping({"max_moves": 1.5})
    with pytest.raises(PlacementConfigError, match=r"^rebalance.gain: unknown key"):
        RebalanceOptions.from_mapping({"gain": 1})


def test_policy_plans_a_move_and_records_why() -> None:
    from tests.test_placement_policy_config import APP, cluster_system

    system = cluster_system()
    system["assigned"] = {"env-monitor": ["aggregator"]}
    # the aggregator runs on the only node its filters allow: nothing to gain, nothing moves
    system["instances"] = [{"instance_id": "env-monitor.aggregator.0@edge-server-1", "app": "env-monitor",
                            "component": "aggregator", "node": "edge-server-1", "status": "running",
                            "cpu_request_cores": 0.5, "memory_request_bytes": 0}]
    assert APP.component("aggregator") is not None
    context = rebalancer.initialize()
    commands, context = asyncio.run(rebalancer.plan(context, {"name": "env-monitor"}, system, {}, {}, None))
    assert commands == {}
    assert "no move gains enough" in context["explanation"]["rebalance"]
    assert context["explanation"]["threshold"] >= 10.0
