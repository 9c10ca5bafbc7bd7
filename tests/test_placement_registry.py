"""The placement plugin registry: enable, disable, weight and configure plugins; errors name the field."""

from __future__ import annotations

from typing import Any

import pytest

from mlsysops.agents.placement.framework import (
    Code,
    PlacementConfigError,
    PluginRegistry,
    Status,
    no_args,
)
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies.placement_engine import schedule
from mlsysops.policies.placement_filters import FilterPlugin
from mlsysops.policies.placement_plugins import NODE_PLUGINS, placement_config
from mlsysops.policies.placement_scorers import DEFAULT_WEIGHTS, ScorerPlugin

GI = 1 << 30


def node(name: str, **kw: object) -> NodeView:
    kw.setdefault("cpu_capacity", 4.0)
    kw.setdefault("memory_capacity", 8 * GI)
    return NodeView(name=name, **kw)  # type: ignore[arg-type]


def req(**kw: object) -> ComponentRequest:
    return ComponentRequest(app="app", name="web", **kw)  # type: ignore[arg-type]


def names(plugins: tuple[Any, ...]) -> list[str]:
    return [p.name for p in plugins]


def test_default_profile_is_the_builtin_set_in_order() -> None:
    profile = NODE_PLUGINS.profile(None)
    assert names(profile.filters) == ["alive", "schedulable", "pinned", "layer", "labels", "mobility",
                                      "sensors", "architecture", "gpu", "cpu", "memory", "service_slots", "trust"]
    assert names(profile.scorers) == [*DEFAULT_WEIGHTS, "trust"]
    assert dict(profile.weights) == {**DEFAULT_WEIGHTS, "trust": 0.2}


def test_disable_filter_changes_the_decision() -> None:
    nodes = [node("plain"), node("tagged", labels={"zone:a"}, cpu_allocated=3.5)]
    r = req(labels=["zone:a"])
    assert schedule(r, nodes, config=placement_config({})).node == "tagged"
    relaxed = placement_config({"placement": {"filters": {"disable": ["labels"]}}})
    assert "labels" not in names(relaxed.filters)
    assert schedule(r, nodes, config=relaxed).node == "plain"  # more free capacity wins once labels are off
    per_entry = placement_config({"placement": {"filters": {"labels": {"enabled": False}}}})
    assert names(per_entry.filters) == names(relaxed.filters)


def test_scorer_weight_enable_and_args() -> None:
    nodes = [
        node("idle", cpu_allocated=3.5, cpu_utilization=0.05),
        node("roomy", cpu_allocated=0.0, cpu_utilization=0.95),
    ]
    r = req(cpu_cores=0.25)
    util_only = placement_config({"placement": {"scorers": {
        "utilization": {"weight": 5}, "least_allocated": {"enabled": False}}}})
    assert "least_allocated" not in names(util_only.scorers)
    d = schedule(r, nodes, config=util_only)
    assert d.node == "idle" and d.weights == {"utilization": pytest.approx(1.0)}
    # layer preference as plugin args
    layered = placement_config({"placement": {"scorers": {"layer": {"args": {"preference": {"edge": 1}}}}}})
    pair = [node("c", layer="cloud"), node("e", layer="edge")]
    assert schedule(req(), pair, config=layered).node == "e"
    assert schedule(req(), pair, config=placement_config({})).node == "c"


def test_proximity_unknown_latency_arg() -> None:
    db = node("db", hosted={("app", "db"): 1}, cpu_allocated=4.0)
    known = node("known", latency_ms={"db": 60.0})
    unknown = node("unknown")
    only_proximity = {"least_allocated": {"enabled": False}, "utilization": {"enabled": False},
                      "spread": {"enabled": False}}
    r = req(depends_on=["db"], cpu_cores=1)
    near_guess = placement_config({"placement": {"scorers": {
        **only_proximity, "proximity": {"args": {"unknown_latency_ms": 10}}}}})
    assert schedule(r, [db, known, unknown], config=near_guess).node == "unknown"
    far_guess = placement_config({"placement": {"scorers": only_proximity}})  # default 100 ms
    assert schedule(r, [db, known, unknown], config=far_guess).node == "known"


def test_legacy_weights_still_apply_over_the_profile() -> None:
    cfg = placement_config({"weights": {"spread": 0}, "placement": {"scorers": {"proximity": {"weight": 2}}}})
    assert cfg.weights == {"spread": 0.0}
    assert cfg.default_weights["proximity"] == 2.0
    # a legacy weight for a scorer the profile disables is dropped, not an error at schedule time
    cfg = placement_config({"weights": {"spread": 1}, "placement": {"scorers": {"disable": ["spread"]}}})
    assert schedule(req(), [node("a")], config=cfg).node == "a"


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"filters": {"disable": ["colour"]}}, "placement.filters.disable.colour", "unknown filter 'colour'"),
        ({"scorers": {"latency": {"weight": 2}}}, "placement.scorers.latency", "unknown scorer 'latency'"),
        ({"scorers": {"spread": {"weight": -1}}}, "placement.scorers.spread.weight", ">= 0"),
        ({"scorers": {"spread": {"weight": "high"}}}, "placement.scorers.spread.weight", "must be a number"),
        ({"scorers": {"spread": {"weight": True}}}, "placement.scorers.spread.weight", "must be a number"),
        ({"filters": {"labels": {"weight": 1}}}, "placement.filters.labels.weight", "unknown key"),
        ({"filters": {"labels": {"enabled": "no"}}}, "placement.filters.labels.enabled", "true or false"),
        ({"scorers": {"layer": {"args": {"preference": {"edge": -1}}}}}, "placement.scorers.layer.args",
         "preference"),
        ({"scorers": {"spread": {"args": {"x": 1}}}}, "placement.scorers.spread.args", "takes no args"),
        ({"filters": {"enable": ["gpu"], "disable": ["gpu"]}}, "placement.filters.disable",
         "both enabled and disabled"),
        ({"filters": {"disable": "labels"}}, "placement.filters.disable", "list of names"),
        ({"scorer": {}}, "placement.scorer", "unknown key"),
        ([], "placement", "mapping"),
    ],
)
def test_errors_name_the_field(spec: Any, field: str, message: str) -> None:
    with pytest.raises(PlacementConfigError, match=message) as info:
        placement_config({"placement": spec})
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")


def test_legacy_weights_are_validated_too() -> None:
    with pytest.raises(PlacementConfigError, match="unknown scorer 'latency'") as info:
        placement_config({"weights": {"latency": 1}})
    assert info.value.field == "weights.latency"


def test_disable_star_then_enable_a_few() -> None:
    cfg = placement_config({"placement": {"filters": {"disable": ["*"], "enable": ["alive"]}}})
    assert names(cfg.filters) == ["alive"]


def test_third_party_plugins_on_a_copy() -> None:
    def battery_filter(args: Any) -> FilterPlugin:
        floor = float(args.get("min_percent", 20))
        low = Status.unschedulable("battery", f"battery below {floor:g}%")

        def prepare(request: ComponentRequest):  # noqa: ANN202
            return lambda n: None if "battery:low" not in n.labels else low

        return FilterPlugin("battery", prepare)

    mine = NODE_PLUGINS.copy()
    mine.register_filter("battery", battery_filter, enabled=False)
    mine.register_scorer("prefer_b", no_args(ScorerPlugin(
        "prefer_b", lambda r, cands, ctx: [100.0 if n.name.startswith("b") else 0.0 for n in cands])), weight=10)
    assert "battery" not in NODE_PLUGINS.names("filters")  # the shared registry is untouched
    nodes = [node("a"), node("b1", labels={"battery:low"}), node("b2", cpu_allocated=3.0)]
    off = placement_config({}, mine)
    assert "battery" not in names(off.filters)
    assert schedule(req(), nodes, config=off).node == "b1"
    on = placement_config({"placement": {"filters": {"enable": ["battery"],
                                                     "battery": {"args": {"min_percent": 15}}}}}, mine)
    d = schedule(req(), nodes, config=on)
    assert d.node == "b2"
    assert d.statuses["b1"] == [Status(Code.UNSCHEDULABLE, "battery below 15%", "battery")]
    assert "b1 rejected: battery below 15%" in d.explain()
    with pytest.raises(PlacementConfigError, match="unknown filter 'battery'"):
        placement_config({"placement": {"filters": {"enable": ["battery"]}}})  # not in the shared registry


def test_registration_rules() -> None:
    reg = PluginRegistry()
    reg.register_filter("x", no_args(FilterPlugin("x", lambda r: None)))
    with pytest.raises(ValueError, match="already registered"):
        reg.register_filter("x", no_args(FilterPlugin("x", lambda r: None)))
    for bad in ("", "enable", "disable", "*"):
        with pytest.raises(ValueError, match="invalid filter name"):
            reg.register_filter(bad, no_args(None))
    with pytest.raises(PlacementConfigError, match="weight must be"):
        reg.register_scorer("s", no_args(None), weight=-2)
