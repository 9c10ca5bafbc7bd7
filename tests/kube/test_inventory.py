"""cluster/kube_inventory.py: Kubernetes Nodes merged with MLSysOpsNode descriptions.

Unit tests feed hand-written Node dicts (no server); the `kapi` ones run sim kubelets against the real
apiserver and watch nodes appear, turn NotReady, come back and get deleted."""

from __future__ import annotations

from typing import Any

import pytest

from mlsysops.agents.descriptions.node import MLSysOpsNode
from mlsysops.cluster.kube_inventory import NodeInventory, Resources, merge, node_view
from mlsysops.sim import SimNodeSpec
from tests.kube.conftest import unique
from tests.kube.harness import until

CLUSTER = "edge-1"
aio = pytest.mark.asyncio(loop_scope="session")


def description(name: str, cores: int = 8, memory: str = "16Gi", arch: str = "amd64", gpu: bool = False,
                cluster: str = CLUSTER, **extra: Any) -> MLSysOpsNode:
    hardware: dict[str, Any] = {"cpu": {"cores": cores, "architecture": arch}, "memory": memory}
    if gpu:
        hardware["gpu"] = {"model": "k80", "instances": 1}
    return MLSysOpsNode.model_validate({"name": name, "continuum_layer": "edge", "cluster_id": cluster,
                                        "environment": {"os": "ubuntu"}, "hardware": hardware, **extra})


def node(name: str, cpu: str = "8", memory: str = "16Gi", allocatable: dict | None = None, ready: str = "True",
         labels: dict | None = None, arch: str = "amd64", gpu: int = 0, unschedulable: bool = False) -> dict:
    capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpu:
        capacity["nvidia.com/gpu"] = str(gpu)
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"capacity": capacity, "allocatable": allocatable or capacity,
                       "conditions": [{"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                                      {"type": "Ready", "status": ready, "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status"}],
                       "nodeInfo": {"architecture": arch, "operatingSystem": "linux",
                                    "containerRuntimeVersion": "containerd://1.7.2"}}}


# ---------------------------------------------------------------- unit (no server)

def test_resources_parse_quantities() -> None:
    r = Resources.parse({"cpu": "3500m", "memory": "8024368Ki", "pods": "110", "nvidia.com/gpu": "2"})
    assert r == Resources(cpu=3.5, memory=8024368 * 1024, pods=110, gpu=2)
    assert r.as_dict() == {"cpu": 3.5, "memory": 8024368 * 1024, "pods": 110, "nvidia.com/gpu": 2}
    assert Resources.parse(None) == Resources()
    assert "nvidia.com/gpu" not in Resources.parse({"cpu": "1"}).as_dict()


def test_described_and_present_node_merges_both_views() -> None:
    view = node_view("n1", node("n1", labels={"mlsysops.eu/cluster": CLUSTER}), description("n1"), CLUSTER)
    assert view.described and view.in_kubernetes and view.eligible and view.placeable
    assert view.ready is True and view.warnings == []
    assert view.conditions["Ready"] == {"status": "True", "reason": "KubeletReady",
                                        "message": "kubelet is posting ready status"}
    assert view.conditions["MemoryPressure"]["status"] == "False"
    assert view.capacity == Resources(cpu=8.0, memory=16 * 2**30, pods=110)
    assert (view.architecture, view.os, view.container_runtime) == ("amd64", "linux", "containerd://1.7.2")
    assert view.description is not None and view.description.cpu_cores == 8
    d = view.as_dict()
    assert d["description"]["hardware"]["memory"] == "16Gi" and d["allocatable"]["cpu"] == 8.0


def test_mismatches_are_warnings() -> None:
    k8s = node("n1", cpu="4", memory="8Gi", arch="arm64", gpu=1, labels={"mlsysops.eu/cluster": "other"})
    view = node_view("n1", k8s, description("n1", cores=8, memory="16Gi", arch="amd64"), CLUSTER)
    text = "\n".join(view.warnings)
    assert "description says 8 cores but Kubernetes allocatable is 4" in text
    assert "16 GiB memory but Kubernetes allocatable is 8 GiB" in text
    assert "architecture amd64 but the node reports arm64" in text
    assert "1 nvidia.com/gpu but the description has no GPU" in text
    assert "labelled mlsysops.eu/cluster=other, not edge-1" in text
    assert view.eligible and view.placeable   # a description makes it ours; warnings do not block

    gpu_missing = node_view("n2", node("n2"), description("n2", gpu=True), CLUSTER)
    assert gpu_missing.warnings == ["description has a GPU but Kubernetes allocatable has no nvidia.com/gpu"]


def test_allocatable_slightly_below_capacity_is_not_a_mismatch() -> None:
    k8s = node("n1", allocatable={"cpu": "7800m", "memory": str(int(15.5 * 2**30)), "pods": "110"})
    assert node_view("n1", k8s, description("n1"), CLUSTER).warnings == []


def test_described_node_missing_in_kubernetes() -> None:
    view = node_view("ghost", None, description("ghost"), CLUSTER)
    assert view.described and not view.in_kubernetes and not view.placeable and view.ready is None
    assert view.warnings == ["described but there is no Kubernetes Node of that name"]


def test_undescribed_nodes_labelled_unlabelled_and_foreign() -> None:
    nodes = {"labelled": node("labelled", labels={"mlsysops.eu/cluster": CLUSTER}),
             "bare": node("bare"),
             "foreign": node("foreign", labels={"mlsysops.eu/cluster": "cloud-1"})}
    views = merge(nodes, {"described": description("described")}, CLUSTER)
    assert list(views) == ["bare", "described", "labelled"]   # foreign: another cluster's node
    assert views["labelled"].eligible and views["labelled"].placeable and views["labelled"].warnings == []
    assert not views["bare"].eligible and not views["bare"].placeable
    assert "ignored for placement" in views["bare"].warnings[0]
    assert not views["described"].in_kubernetes


def test_not_ready_and_cordoned_nodes_are_not_placeable() -> None:
    assert not node_view("n", node("n", ready="False"), description("n"), CLUSTER).placeable
    assert not node_view("n", node("n", unschedulable=True), description("n"), CLUSTER).placeable
    no_cond = node("n")
    no_cond["status"]["conditions"] = []
    view = node_view("n", no_cond, description("n"), CLUSTER)
    assert view.ready is None and not view.placeable
    # what the placement filter "schedulable" says in the decision log
    assert node_view("n", node("n"), description("n"), CLUSTER).why_unplaceable() is None
    assert node_view("n", node("n", ready="False"), description("n"), CLUSTER).why_unplaceable() == \
        "Kubernetes: node not ready"
    assert "cordoned" in node_view("n", node("n", unschedulable=True), description("n"), CLUSTER).why_unplaceable()
    assert node_view("ghost", None, description("ghost"), CLUSTER).why_unplaceable() == "no Kubernetes Node of this name"
    assert "not labelled" in node_view("bare", node("bare"), None, CLUSTER).why_unplaceable()


def test_as_description_for_labelled_undescribed_node() -> None:
    inv = NodeInventory(None, CLUSTER, {"d": description("d")})
    inv.apply_list([node("lab", cpu="3500m", memory="4Gi", arch="arm64", gpu=1,
                         labels={"mlsysops.eu/cluster": CLUSTER, "mlsysops.eu/layer": "far_edge",
                                 "mlsysops.eu/tier": "edge", "mlsysops.eu/camera": "",
                                 "mlsysops.eu/node": "lab"}),
                    node("bare"), node("d")])
    made = inv.as_description("lab")
    assert made is not None
    assert (made.name, str(made.continuum_layer), made.cluster_id) == ("lab", "far_edge", CLUSTER)
    assert made.cpu_cores == 3 and made.memory_bytes == 4 * 2**30 and made.architecture == "arm64"
    assert made.gpu_present and made.labels == ["camera", "tier:edge"]
    assert made.has_labels(["tier:edge", "camera"])
    assert [str(r) for r in made.environment.container_runtime or []] == ["containerd"]
    assert inv.as_description("bare") is None          # not ours
    assert inv.as_description("nope") is None
    assert inv.as_description("d") is inv.descriptions["d"]
    # a node's own view of itself as a stand-in has no mismatches
    assert node_view("lab", inv.nodes["lab"], made, CLUSTER).warnings == []


def test_events_update_the_inventory() -> None:
    inv = NodeInventory(None, CLUSTER, {"a": description("a")})
    assert inv.apply_list([node("a"), node("b", labels={"mlsysops.eu/cluster": CLUSTER})]) == {"a", "b"}
    assert inv.placeable() == ["a", "b"]
    inv.apply_event("MODIFIED", node("a", ready="False"))
    assert inv.placeable() == ["b"] and inv.view("a").ready is False
    inv.apply_event("DELETED", node("b"))
    assert inv.view("b") is None
    inv.apply_event("DELETED", node("a"))
    assert inv.warnings() == {"a": ["described but there is no Kubernetes Node of that name"]}
    assert inv.apply_list([node("a")]) == {"a"} and inv.apply_list([node("a")]) == set()


@aio
async def test_relist_notifies_nodes_deleted_while_not_watching() -> None:
    seen: list[tuple[str, bool | None]] = []

    async def on_change(name: str, view: Any) -> None:
        seen.append((name, None if view is None else view.in_kubernetes))

    inv = NodeInventory(None, CLUSTER, {"a": description("a")}, on_change=on_change)
    await inv._on_sync([node("a"), node("b", labels={"mlsysops.eu/cluster": CLUSTER})])
    await inv._on_sync([node("c", labels={"mlsysops.eu/cluster": "other"})])   # a re-list after 410
    assert seen == [("a", True), ("b", True), ("a", False), ("b", None), ("c", None)]
    assert list(inv.merged()) == ["a"]


# ---------------------------------------------------------------- against the real apiserver

@aio
async def test_inventory_watches_sim_nodes(kube_client, sim_kubelets) -> None:
    cluster = unique("c")
    a, b, extra = unique("na"), unique("nb"), unique("nx")
    changes: list[tuple[str, bool | None]] = []

    async def on_change(name: str, view: Any) -> None:
        changes.append((name, None if view is None else view.ready))

    # a: described as it is; b: described with more cores than it has; extra: undescribed, labelled
    descs = {a: description(a, cores=2, memory="4Gi", arch="arm64", cluster=cluster),
             b: description(b, cores=8, memory="8Gi", cluster=cluster),
             "ghost": description("ghost", cluster=cluster)}
    sim, _ = await sim_kubelets([SimNodeSpec(a, cluster, "edge", cpu_cores=2, memory_bytes=4 * 2**30,
                                             architecture="arm64", labels=["tier:edge"], gpu=False),
                                 SimNodeSpec(b, cluster, "cloud", cpu_cores=4, memory_bytes=8 * 2**30),
                                 SimNodeSpec(extra, cluster, "far_edge", cpu_cores=1, memory_bytes=2**30,
                                             gpu=True, labels=["tier:far"])])
    inv = NodeInventory(kube_client, cluster, descs, on_change=on_change)
    try:
        assert await inv.start(timeout=10)
        views = inv.merged()
        assert {a, b, extra, "ghost"} <= set(views)
        assert not any(v.labels.get("mlsysops.eu/cluster") not in (None, cluster) for v in views.values())
        va, vb, vx = views[a], views[b], views[extra]
        assert va.warnings == [] and va.placeable and va.labels["mlsysops.eu/tier"] == "edge"
        assert va.allocatable == Resources(cpu=2.0, memory=4 * 2**30, pods=110)
        assert va.architecture == "arm64" and va.os == "linux"
        assert vb.warnings == ["description says 8 cores but Kubernetes allocatable is 4"]
        assert vx.eligible and not vx.described and vx.allocatable.gpu == 1 and vx.layer == "far_edge"
        assert vb.layer == "edge"   # the description's layer wins over the Node's label (cloud)
        assert views["ghost"].warnings == ["described but there is no Kubernetes Node of that name"]
        made = inv.as_description(extra)
        assert made is not None and str(made.continuum_layer) == "far_edge" and made.gpu_present
        assert made.labels == ["tier:far"] and made.cpu_cores == 1

        sim.crash_node(a)
        await until(lambda: inv.view(a).ready is False, message="crashed node NotReady in the inventory")
        assert a not in inv.placeable() and inv.view(a).conditions["Ready"]["reason"] == "SimNodeDown"
        assert (a, False) in changes
        sim.recover_node(a)
        await until(lambda: inv.view(a).ready is True, message="recovered node Ready again")

        from kubernetes.aio import client as k
        await k.CoreV1Api(kube_client).delete_node(extra)
        await until(lambda: inv.view(extra) is None, message="deleted node gone")
        assert (extra, None) in changes
        await k.CoreV1Api(kube_client).delete_node(b)
        await until(lambda: not inv.view(b).in_kubernetes, message="deleted described node flagged")
        assert inv.view(b).warnings == ["described but there is no Kubernetes Node of that name"]
    finally:
        await inv.stop()
