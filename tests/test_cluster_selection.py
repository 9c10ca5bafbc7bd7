"""Continuum-level cluster selection."""

from __future__ import annotations

import functools

import pytest

from mlsysops.policies.cluster_selection import ClusterView, select_clusters, summary_reasons
from mlsysops.policies.placement_engine import DependencyCycleError
from tests.support import GI, node_view
from tests.support import component_request as req

node = functools.partial(node_view, layer="edge")   # these scenarios are about edge nodes


def test_allowed_list_is_honoured() -> None:
    clusters = [
        ClusterView.from_nodes("c1", [node("a1"), node("a2")]),
        ClusterView.from_nodes("c2", [node("b1")]),
    ]
    result = select_clusters([req()], clusters, allowed=["c2"])
    assert result.assignments == {"web": "c2"}
    assert result.decisions["web"].rejected == {"c1": ["not in cluster_placement [c2]"]}
    # None, empty and "*" allow all; c1 has more free capacity.
    for allowed in (None, [], ["*"]):
        assert select_clusters([req()], clusters, allowed=allowed).assignments == {"web": "c1"}


def test_capabilities_with_node_views() -> None:
    clusters = [
        ClusterView.from_nodes("big", [node(f"n{i}", cpu_capacity=32) for i in range(4)]),
        # The camera and the gpu are on different nodes: the node filters see that no node has both.
        ClusterView.from_nodes("split", [node("cam", sensors={"camera:d455"}), node("gpu", gpu=True)]),
        ClusterView.from_nodes("edgecam", [node("e1", sensors={"camera:d455"}, gpu=True)]),
    ]
    result = select_clusters([req(sensors=["camera:d455"], gpu=True)], clusters)
    assert result.assignments == {"web": "edgecam"}
    rejected = result.decisions["web"].rejected
    assert rejected["big"] == ["no gpu (4 nodes)", "no sensor camera:d455 (4 nodes)"]  # ties: alphabetical
    assert rejected["split"] == ["no gpu (1 node)", "no sensor camera:d455 (1 node)"]
    assert "big rejected: no gpu (4 nodes), no sensor camera:d455 (4 nodes)" in result.explain()


def test_summary_only_cluster() -> None:
    summary = ClusterView(
        cluster_id="s", layers={"edge"}, labels={"node-type:rpi"}, sensors={"camera:d455"},
        architectures={"arm64"}, node_names={"rpi-1"}, alive_nodes=1, cpu_free=2.0, memory_free=GI,
        largest_cpu_free=2.0, largest_memory_free=GI,
    )
    ok = req(layers={"edge"}, labels=["node-type"], sensors=["camera"], architectures={"arm64"}, cpu_cores=1)
    assert summary_reasons(ok, summary) == []
    bad = req(layers={"cloud"}, labels=["zone:a"], sensors=["lidar"], architectures={"amd64"}, gpu=True,
              mobile=True, node="x", cpu_cores=3)
    assert summary_reasons(bad, summary) == [
        "pinned to x, not in cluster",
        "no node in layer [cloud]",
        "missing label zone:a",
        "no mobile node",
        "no sensor lidar",
        "no node with architecture in [amd64]",
        "no gpu",
        "insufficient cpu: requests 3, largest free 2",
    ]
    assert summary_reasons(ok, ClusterView(cluster_id="dead")) == ["no alive nodes"]


def test_capacity_accounted_across_batch() -> None:
    clusters = [
        ClusterView.from_nodes("a", [node("a1", cpu_capacity=2.0)]),
        ClusterView.from_nodes("b", [node("b1", cpu_capacity=1.5)]),
    ]
    reqs = [req("x", cpu_cores=1.2), req("y", cpu_cores=1.2), req("z", cpu_cores=1.2)]
    result = select_clusters(reqs, clusters, weights={"consolidation": 0})
    assert result.assignments == {"x": "a", "y": "b"}
    assert result.unplaceable["z"] == [
        "a: insufficient cpu: requests 1.2, free 0.8",
        "b: insufficient cpu: requests 1.2, free 0.3",
    ]
    assert not result.ok


def test_proximity_and_consolidation() -> None:
    lat = {"near": 2.0, "far": 80.0}
    clusters = [
        ClusterView.from_nodes("home", [node("h1", sensors={"camera"})], latency_ms=lat),
        ClusterView.from_nodes("far", [node(f"f{i}", cpu_capacity=64) for i in range(4)]),
        ClusterView.from_nodes("near", [node(f"n{i}", cpu_capacity=64) for i in range(4)]),
    ]
    reqs = [req("cam", sensors=["camera"], cpu_cores=3.5), req("proc", depends_on=["cam"], cpu_cores=1)]
    result = select_clusters(reqs, clusters)
    assert result.assignments["cam"] == "home"
    # proc cannot fit at home; among the rest the low-latency cluster wins though both are equally free.
    assert result.assignments["proc"] == "near"
    parts = {c: s.parts["proximity"] for c, s in result.decisions["proc"].scores.items()}
    assert parts == {"near": pytest.approx(97.5), "far": pytest.approx(0.0)}  # 100 * (1 - 2/80)
    # With room at home, consolidation keeps the app in one cluster.
    roomy_home = [node("h1", sensors={"camera"}, cpu_capacity=64)]
    clusters[0] = ClusterView.from_nodes("home", roomy_home, latency_ms=lat)
    result = select_clusters(reqs, clusters)
    assert result.clusters_used == ["home"]


def test_current_assignments_are_kept_and_used() -> None:
    clusters = [ClusterView.from_nodes("a", [node("a1")]), ClusterView.from_nodes("b", [node("b1")])]
    result = select_clusters([req("db"), req("web", interacts_with=["db"])], clusters, current={"db": "b"})
    assert result.assignments == {"db": "b", "web": "b"}
    assert "db" not in result.decisions


def test_unplaceable_dependency_and_cycle() -> None:
    clusters = [ClusterView.from_nodes("a", [node("a1")])]
    result = select_clusters([req("cam", sensors=["camera"]), req("p", depends_on=["cam"])], clusters)
    assert result.unplaceable == {
        "cam": ["a: no sensor camera (1 node)"],
        "p": ["dependency cam unplaceable"],
    }
    with pytest.raises(DependencyCycleError):
        select_clusters([req("a", depends_on=["b"]), req("b", depends_on=["a"])], clusters)
    with pytest.raises(ValueError, match="unknown cluster scorer"):
        select_clusters([req()], clusters, weights={"latency": 1})


def test_deterministic() -> None:
    clusters = [ClusterView.from_nodes(c, [node(c + "1")]) for c in ("c3", "c1", "c2")]
    results = {tuple(select_clusters([req()], clusters).assignments.items()) for _ in range(3)}
    assert results == {(("web", "c1"),)}


def test_cluster_rejections_are_statuses_with_plugin_and_code() -> None:
    from mlsysops.agents.placement.framework import Code, Status

    clusters = [
        ClusterView.from_nodes("c1", [node("a1")]),
        ClusterView.from_nodes("c2", [node("b1", cpu_capacity=1.0)]),
        ClusterView.from_nodes("c3", [node("c31")]),
    ]
    result = select_clusters([req(cpu_cores=2)], clusters, allowed=["c1", "c2"])
    statuses = result.decisions["web"].statuses
    assert statuses["c3"] == [Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, "not in cluster_placement [c1, c2]",
                                     "cluster_placement")]
    assert statuses["c2"] == [Status(Code.UNSCHEDULABLE, "insufficient cpu: requests 2, free 1 (1 node)",
                                     "node_fit")]
    assert result.assignments == {"web": "c1"}


def test_cluster_plugins_configured_through_the_registry() -> None:
    from mlsysops.agents.placement.framework import PlacementConfigError
    from mlsysops.policies.placement_plugins import CLUSTER_PLUGINS, cluster_selection_config

    lat = {"near": 2.0}
    clusters = [
        ClusterView.from_nodes("home", [node("h1", cpu_capacity=64)], latency_ms=lat),
        ClusterView.from_nodes("near", [node("n1", cpu_capacity=8)]),
    ]
    reqs = [req("cam"), req("proc", depends_on=["cam"])]
    default, weights = cluster_selection_config({})
    assert weights is None and [f.name for f in default.filters] == CLUSTER_PLUGINS.names("filters")
    assert select_clusters(reqs, clusters, config=default).assignments == {"cam": "home", "proc": "home"}
    # Consolidation disabled: only capacity and proximity speak.
    no_consolidation, _ = cluster_selection_config({"placement": {"scorers": {"consolidation": {"enabled": False}}}})
    d = select_clusters(reqs, clusters, config=no_consolidation).decisions["proc"]
    assert set(d.weights) == {"capacity", "proximity"}
    # Disabling cluster_placement ignores the app's allowed list.
    free, _ = cluster_selection_config({"placement": {"filters": {"disable": ["cluster_placement"]}}})
    assert select_clusters([req()], clusters, allowed=["near"], config=free).assignments == {"web": "home"}
    assert select_clusters([req()], clusters, allowed=["near"]).assignments == {"web": "near"}
    with pytest.raises(PlacementConfigError, match="unknown cluster scorer 'latency'") as info:
        cluster_selection_config({"placement": {"scorers": {"latency": {"weight": 1}}}})
    assert info.value.field == "placement.scorers.latency"
    with pytest.raises(PlacementConfigError, match="unknown_latency_ms"):
        cluster_selection_config({"placement": {"scorers": {"proximity": {"args": {"unknown_latency_ms": 0}}}}})


def test_summary_only_cluster_statuses() -> None:
    from mlsysops.agents.placement.framework import Code
    from mlsysops.policies.cluster_filters import summary_statuses

    summary = ClusterView(cluster_id="s", layers={"edge"}, alive_nodes=1, cpu_free=2.0, memory_free=GI,
                          largest_cpu_free=2.0, largest_memory_free=GI)
    got = summary_statuses(req(gpu=True, cpu_cores=3), summary)
    assert [(s.plugin, s.code, s.reason) for s in got] == [
        ("node_fit", Code.UNSCHEDULABLE_AND_UNRESOLVABLE, "no gpu"),
        ("node_fit", Code.UNSCHEDULABLE, "insufficient cpu: requests 3, largest free 2"),
    ]
    result = select_clusters([req(gpu=True)], [summary])
    assert result.unplaceable == {"web": ["s: no gpu"]}
