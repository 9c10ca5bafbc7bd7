"""Every "no" is a Status (code, reason, plugin); broken third-party plugins become Error statuses."""

from __future__ import annotations

import pytest

from mlsysops.agents.placement.framework import SUCCESS, Code, Status
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies.placement_engine import PlacementConfig, schedule
from mlsysops.policies.placement_filters import DEFAULT_FILTERS, FilterPlugin, filter_cpu, filter_sensors
from mlsysops.policies.placement_scorers import DEFAULT_SCORERS, ScorerPlugin

GI = 1 << 30
UNRESOLVABLE = Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def node(name: str, **kw: object) -> NodeView:
    kw.setdefault("cpu_capacity", 4.0)
    kw.setdefault("memory_capacity", 8 * GI)
    return NodeView(name=name, **kw)  # type: ignore[arg-type]


def req(**kw: object) -> ComponentRequest:
    return ComponentRequest(app="app", name="web", **kw)  # type: ignore[arg-type]


def test_status_shape() -> None:
    s = Status.unresolvable("sensors", "no sensor camera:d455")
    assert (s.code, s.reason, s.plugin) == (UNRESOLVABLE, "no sensor camera:d455", "sensors")
    assert str(s) == "no sensor camera:d455" and not s.ok and SUCCESS.ok
    assert s.to_dict() == {"plugin": "sensors", "code": "UnschedulableAndUnresolvable",
                           "reason": "no sensor camera:d455"}


def test_builtin_filter_codes() -> None:
    assert filter_sensors(req(sensors=["camera:d455"]), node("n")) == Status(
        UNRESOLVABLE, "no sensor camera:d455", "sensors")
    assert filter_cpu(req(cpu_cores=8), node("n")).code is Code.UNSCHEDULABLE
    assert filter_cpu(req(cpu_cores=1), node("n")) is SUCCESS


def test_decision_keeps_statuses_and_human_text() -> None:
    nodes = [node("node-1", sensors={"camera:d455"}), node("node-3", sensors={"camera:d435"}),
             node("node-4", sensors={"camera:d455"}, cpu_allocated=3.9, alive=False)]
    d = schedule(req(sensors=["camera:d455"], cpu_cores=0.5), nodes)
    assert d.node == "node-1"
    assert d.rejected["node-3"] == ["no sensor camera:d455"]
    assert "node-3 rejected: no sensor camera:d455" in d.explain()
    assert d.statuses["node-4"] == [
        Status(UNRESOLVABLE, "node down", "alive"),
        Status(Code.UNSCHEDULABLE, "insufficient cpu: requests 0.5, free 0.1", "cpu"),
    ]
    summary = d.rejection_summary()
    assert {"plugin": "sensors", "code": "UnschedulableAndUnresolvable", "reason": "no sensor camera:d455",
            "count": 1} in summary
    assert len(summary) == 3


def test_excluded_nodes_have_a_status() -> None:
    d = schedule(req(), [node("a"), node("b")], exclude=["a"])
    assert d.statuses["a"] == [Status(UNRESOLVABLE, "excluded", "exclude")]


def _config(*extra_filters: FilterPlugin, scorers: tuple = DEFAULT_SCORERS) -> PlacementConfig:
    return PlacementConfig(filters=DEFAULT_FILTERS + extra_filters, scorers=scorers)


def test_raising_filter_rejects_with_error_and_names_plugin() -> None:
    def boom(n: NodeView) -> Status | None:
        if n.name == "b":
            raise RuntimeError("sensor db offline")
        return None

    d = schedule(req(), [node("a"), node("b")], config=_config(FilterPlugin("flaky", lambda r: boom)))
    assert d.node == "a"
    assert d.statuses["b"] == [Status(Code.ERROR, "filter failed: RuntimeError: sensor db offline", "flaky")]


def test_filter_answering_garbage_or_plain_strings() -> None:
    legacy = FilterPlugin("legacy", lambda r: lambda n: "too old" if n.name == "a" else None)
    garbage = FilterPlugin("garbage", lambda r: lambda n: 42 if n.name == "b" else None)
    d = schedule(req(), [node("a"), node("b"), node("c")], config=_config(legacy, garbage))
    assert d.node == "c"
    assert d.statuses["a"] == [Status(Code.UNSCHEDULABLE, "too old", "legacy")]
    assert d.statuses["b"][0].code is Code.ERROR and d.statuses["b"][0].plugin == "garbage"


def test_failing_prepare_refuses_every_node() -> None:
    def prepare(r: ComponentRequest):  # noqa: ANN202
        raise KeyError("x")

    d = schedule(req(), [node("a"), node("b")], config=_config(FilterPlugin("broken", prepare)))
    assert d.node is None
    assert all(sts[0].code is Code.ERROR and sts[0].plugin == "broken" for sts in d.statuses.values())


@pytest.mark.parametrize("answer", [ValueError("nope"), [1.0], ["x", "y"]])
def test_failing_scorer_is_dropped_and_recorded(answer: object) -> None:
    def score(r, cands, ctx):  # noqa: ANN001, ANN202
        if isinstance(answer, Exception):
            raise answer
        return answer

    cfg = PlacementConfig(scorers=DEFAULT_SCORERS + (ScorerPlugin("bad", score),))
    nodes = [node("a", cpu_allocated=2.0), node("b")]
    d = schedule(req(), nodes, config=cfg)
    assert d.node == schedule(req(), nodes).node == "b"
    assert [e.plugin for e in d.errors] == ["bad"] and d.errors[0].code is Code.ERROR
    assert "bad" not in d.weights and "bad scorer" in d.explain()
