"""The built-in placement policies read ``context["placement"]`` and record structured rejections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlsysops.agents.descriptions import load_file
from mlsysops.agents.placement.framework import PlacementConfigError
from mlsysops.policies import continuum_cluster_placement, filter_score_placement

ROOT = Path(__file__).resolve().parent.parent
NODES = ROOT / "examples/slices/demo/nodes"
EDGE = ("edge-rpi-1", "edge-rpi-2", "edge-server-1", "far-edge-1")
CLOUD = ("cloud-vm-1", "cloud-vm-2")


def spec(path: Path) -> Any:
    (doc,) = load_file(path)
    return doc.spec


def nodes(names: tuple[str, ...]) -> dict[str, Any]:
    return {n: {"model": spec(NODES / f"{n}.yaml"), "alive": True} for n in names}


APP = spec(ROOT / "examples/apps/env-monitor.yaml")
APP_DESC = {"name": "env-monitor"}


def plan(module: Any, context: dict[str, Any], system: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return asyncio.run(module.plan(context, APP_DESC, system, {}, {}, None))


def cluster_system() -> dict[str, Any]:
    return {"cluster_id": "edge-1", "nodes": nodes(EDGE), "instances": [], "app_models": {"env-monitor": APP},
            "assigned": {"env-monitor": ["aggregator"]}}


def test_node_policy_records_statuses_and_honours_disabled_filters() -> None:
    context = filter_score_placement.initialize()
    commands, context = plan(filter_score_placement, context, cluster_system())
    (action,) = commands["component_placement"]["actions"]
    assert action["node"] == "edge-server-1"
    rejections = context["explanation"]["rejections"]["aggregator"]
    assert rejections and all({"plugin", "code", "reason", "count"} <= set(r) for r in rejections)
    assert {r["plugin"] for r in rejections} <= {"layer", "labels"}
    assert {r["code"] for r in rejections} == {"UnschedulableAndUnresolvable"}
    # With layer and label constraints switched off the server no longer is the only choice.
    context["placement"] = {"filters": {"disable": ["layer", "labels"]}}
    commands, context = plan(filter_score_placement, context, cluster_system())
    assert context["explanation"]["rejections"]["aggregator"] == []


def test_node_policy_rejects_a_bad_configuration_naming_the_field() -> None:
    context = {**filter_score_placement.initialize(), "placement": {"scorers": {"energy": {"weight": 1}}}}
    with pytest.raises(PlacementConfigError, match="unknown scorer 'energy'") as info:
        plan(filter_score_placement, context, cluster_system())
    assert info.value.field == "placement.scorers.energy"


def continuum_system() -> dict[str, Any]:
    return {"clusters": {"edge-1": {"alive": True, "nodes": nodes(EDGE)},
                         "cloud-1": {"alive": True, "nodes": nodes(CLOUD)}},
            "assignments": {}, "app_models": {"env-monitor": APP}}


def test_continuum_policy_uses_cluster_plugins() -> None:
    context = continuum_cluster_placement.initialize()
    commands, context = plan(continuum_cluster_placement, context, continuum_system())
    assert set(commands["cluster_dispatch"]["assign"].values()) == {"edge-1"}
    (rejection,) = context["explanation"]["rejections"]["aggregator"]
    assert rejection == {"plugin": "cluster_placement", "code": "UnschedulableAndUnresolvable",
                         "reason": "not in cluster_placement [edge-1]", "count": 1}
    context["placement"] = {"filters": {"disable": ["cluster_placement"]}}
    _, context = plan(continuum_cluster_placement, context, continuum_system())
    plugins = {r["plugin"] for r in context["explanation"]["rejections"]["aggregator"]}
    assert "cluster_placement" not in plugins
    context["placement"] = {"scorers": {"capacity": {"weight": -1}}}
    with pytest.raises(PlacementConfigError, match="placement.scorers.capacity.weight"):
        plan(continuum_cluster_placement, context, continuum_system())
