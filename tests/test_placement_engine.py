"""schedule() and place_app() in crafted scenarios."""

from __future__ import annotations

import copy
import functools

import pytest

from mlsysops.policies.placement_engine import DependencyCycleError, dependency_order, place_app, schedule
from tests.support import component_request as req
from tests.support import node_view

node = functools.partial(node_view, layer="edge")   # these scenarios are about edge nodes


def test_pinned_node_wins_even_if_worse() -> None:
    nodes = [node("node-1"), node("node-2", cpu_allocated=3.0), node("node-3")]
    d = schedule(req(node="node-2"), nodes)
    assert d.node == "node-2"
    assert d.rejected == {"node-1": ["pinned to node-2"], "node-3": ["pinned to node-2"]}


def test_sensor_constraint_and_explain() -> None:
    nodes = [node("node-1", sensors={"camera:d455"}), node("node-3", sensors={"camera:d435"})]
    d = schedule(req(sensors=["camera:d455"]), nodes)
    assert d.node == "node-1"
    text = d.explain()
    assert text.startswith("node-1 chosen: score 100 (")
    assert "node-3 rejected: no sensor camera:d455" in text


def test_layer_constraint() -> None:
    nodes = [node("a", layer="cloud"), node("b", layer="edge", cpu_allocated=3.0)]
    assert schedule(req(layers={"edge"}), nodes).node == "b"
    assert schedule(req(layers={"cloud"}), nodes).node == "a"


def test_capacity_exhaustion_makes_unplaceable_with_reasons() -> None:
    nodes = [node("a", cpu_capacity=1.0, cpu_allocated=0.8), node("b", alive=False)]
    d = schedule(req(cpu_cores=0.5), nodes)
    assert d.node is None and not d.ok and d.score is None
    assert d.rejected == {"a": ["insufficient cpu: requests 0.5, free 0.2"], "b": ["node down"]}
    text = d.explain()
    assert "app/web unplaceable" in text
    assert "a rejected: insufficient cpu" in text and "b rejected: node down" in text


def test_proximity_picks_node_near_peer() -> None:
    db = node("db", hosted={("app", "db"): 1}, cpu_allocated=3.9)  # nearly full: web cannot co-locate
    near = node("near", latency_ms={"db": 1.0})
    far = node("far", latency_ms={"db": 50.0})
    d = schedule(req(cpu_cores=0.5, interacts_with=["db"]), [far, db, near])
    assert d.node == "near"
    assert "proximity" in d.weights
    assert d.scores["near"].parts["proximity"] > d.scores["far"].parts["proximity"]


def test_deterministic_tie_break_by_name() -> None:
    nodes = [node("z"), node("m"), node("b")]
    d = schedule(req(), nodes)
    assert d.node == "b"
    assert d.ranking() == ["b", "m", "z"]
    assert "runner-up m" in d.explain()


def test_exclude_and_incumbent() -> None:
    nodes = [node("a"), node("b"), node("c", cpu_allocated=1.0)]
    d = schedule(req(), nodes, exclude=["a"])
    assert d.node == "b" and d.rejected["a"] == ["excluded"] and "a" not in d.scores
    d = schedule(req(), nodes, incumbent="a")
    assert d.node == "b" and d.incumbent_score is not None and "current a score" in d.explain()


def test_explain_truncates_many_rejections_with_summary() -> None:
    nodes = [node(f"n{i:02}", alive=False) for i in range(10)] + [node("ok")]
    text = schedule(req(), nodes).explain(max_rejected=2)
    assert "n00 rejected: node down" in text and "n05" not in text
    assert "+8 more rejected: node down (10 nodes)" in text


def test_dependency_order_and_cycle() -> None:
    reqs = [req("ui", depends_on=["api"]), req("api", depends_on=["db", "external"]), req("db")]
    assert dependency_order(reqs) == ["db", "api", "ui"]
    with pytest.raises(DependencyCycleError) as err:
        dependency_order([req("a", depends_on=["b"]), req("b", depends_on=["a"]), req("c")])
    assert set(err.value.members) == {"a", "b"}
    with pytest.raises(DependencyCycleError):
        dependency_order([req("a", depends_on=["a"])])
    with pytest.raises(ValueError, match="duplicate"):
        dependency_order([req("a"), req("a")])


def test_place_app_accounts_capacity_across_batch_without_mutating_inputs() -> None:
    nodes = [node("small", cpu_capacity=1.0), node("big", cpu_capacity=2.0)]
    snapshot = copy.deepcopy(nodes)
    reqs = [req(f"c{i}", cpu_cores=0.9) for i in range(4)]
    result = place_app(reqs, nodes)
    assert nodes == snapshot  # pure
    landed = [n for name in ("c0", "c1", "c2") for n in result.placements[name]]
    assert sorted(landed) == ["big", "big", "small"]
    assert "c3" in result.unplaceable and not result.ok
    assert any("insufficient cpu" in r for r in result.unplaceable["c3"])
    after = {n.name: n for n in result.nodes}
    assert after["big"].cpu_allocated == pytest.approx(1.8)
    assert after["small"].hosted != {} and sum(after["big"].hosted.values()) == 2


def test_place_app_dependency_first_then_proximity() -> None:
    a = node("a", latency_ms={"b": 30.0})
    b = node("b", sensors={"camera"})
    c = node("c", latency_ms={"b": 5.0})  # closer to the camera node; loses the name tie-break
    reqs = [req("proc", depends_on=["cam"], cpu_cores=3.5), req("cam", sensors=["camera"], cpu_cores=1.0)]
    result = place_app(reqs, [a, b, c])
    assert result.order == ["cam", "proc"]
    assert result.placements == {"cam": ["b"], "proc": ["c"]}


def test_place_app_unplaceable_dependency_propagates() -> None:
    reqs = [req("cam", sensors=["camera"]), req("proc", depends_on=["cam"])]
    result = place_app(reqs, [node("a")])
    assert result.unplaceable["cam"] == ["no sensor camera (1 node)"]
    assert result.unplaceable["proc"] == ["dependency cam unplaceable"]
    assert "cam unplaceable: no sensor camera" in result.explain()


def test_place_app_instances_spread_and_skip_already_placed() -> None:
    nodes = [node("a"), node("b"), node("c")]
    result = place_app([req("web", instances=3, cpu_cores=0.5)], nodes)
    assert sorted(result.placements["web"]) == ["a", "b", "c"]
    # Two already running (from hosted): only one more is placed.
    running = [node("a", hosted={("app", "web"): 1}), node("b", hosted={("app", "web"): 1}), node("c")]
    result = place_app([req("web", instances=3), req("db")], running)
    assert result.placements["web"] == ["c"]
    # Explicit placed mapping wins; fully placed components are skipped.
    result = place_app([req("web", instances=2), req("db")], nodes, placed={"web": ["a", "b"]})
    assert result.skipped == ["web"] and "web" not in result.decisions
    assert "web: already placed" in result.explain()


def test_place_app_partial_instances_reason() -> None:
    result = place_app([req("web", instances=3, cpu_cores=3.0)], [node("a"), node("b")])
    assert sorted(result.placements["web"]) == ["a", "b"]
    assert result.unplaceable["web"][0] == "placed 2 of 3 instances"


def test_all_reasons_kept_per_rejected_node() -> None:
    nodes = [node("a", layer="cloud", alive=False), node("b", layer="cloud"), node("c")]
    d = schedule(req(layers={"edge"}, gpu=True), nodes)
    assert d.rejected == {
        "a": ["node down", "layer cloud not in [edge]", "no gpu"],
        "b": ["layer cloud not in [edge]", "no gpu"],
        "c": ["no gpu"],
    }
    assert d.reason_summary() == ["no gpu (3 nodes)", "layer cloud not in [edge] (2 nodes)", "node down (1 node)"]
