"""agents/kube/status_writer.py against the real apiserver: the description CRs (MLSysOpsCluster/Node) get
their `.status` through the status subresource, only on change, with condition transition times; the spec
is never touched; a missing CR is reported and written once it exists (never created by the writer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.aio import client as k

from mlsysops.agents.slice_config import load_slice
from mlsysops.cluster.kube_status_writer import StatusWriter
from mlsysops.substrates.kubernetes.crds import GROUP, VERSION, apply_descriptions, install_crds

aio = pytest.mark.asyncio(loop_scope="session")
DEMO = Path(__file__).resolve().parents[2] / "examples" / "slices" / "demo.yaml"


async def read(api: k.ApiClient, ns: str, plural: str, name: str) -> dict | None:
    try:
        return await k.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    except k.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def node_status(agent_up: bool, components: dict[str, str]) -> dict:
    return {"phase": "Ready" if agent_up else "NotReady", "agent": {"connected": agent_up},
            "components": components, "kubernetes": {"ready": True},
            "conditions": [{"type": "Ready", "status": agent_up, "reason": "NodeReady" if agent_up else "NodeNotReady"},
                           {"type": "Schedulable", "status": True, "reason": "Schedulable"}]}


@aio
async def test_status_round_trip_on_the_description_crs(kube_client, kube_ns) -> None:
    spec = load_slice(DEMO)
    await install_crds(kube_client)
    n = await apply_descriptions(kube_client, kube_ns, [spec.clusters["edge-1"], spec.nodes["edge-rpi-1"]])
    assert n == 2
    spec_before = (await read(kube_client, kube_ns, "mlsysopsnodes", "edge-rpi-1"))["spec"]

    writer = StatusWriter(kube_client, kube_ns, clock=lambda: 1_800_000_000)
    writer.set("MLSysOpsNode", "edge-rpi-1", node_status(True, {"env-monitor/sensor-reader": "running"}))
    writer.set("MLSysOpsCluster", "edge-1", {"phase": "Ready", "nodes": 1, "readyNodes": 1})
    assert await writer.sync() and writer.writes == 2
    cr = await read(kube_client, kube_ns, "mlsysopsnodes", "edge-rpi-1")
    assert cr["spec"] == spec_before                     # the operator's description is not touched
    st = cr["status"]
    assert st["phase"] == "Ready" and st["components"] == {"env-monitor/sensor-reader": "running"}
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"] == {"type": "Ready", "status": "True", "reason": "NodeReady",
                              "lastTransitionTime": "2027-01-15T08:00:00Z"}
    assert (await read(kube_client, kube_ns, "mlsysopsclusters", "edge-1"))["status"]["readyNodes"] == 1

    # every tick states the same: nothing written
    rv = cr["metadata"]["resourceVersion"]
    for _ in range(3):
        writer.set("MLSysOpsNode", "edge-rpi-1", node_status(True, {"env-monitor/sensor-reader": "running"}))
        assert not writer.pending and await writer.sync()
    assert writer.writes == 2
    assert (await read(kube_client, kube_ns, "mlsysopsnodes", "edge-rpi-1"))["metadata"]["resourceVersion"] == rv

    # the agent is lost: Ready flips (new time), Schedulable keeps its time; a dropped section is removed
    writer.clock = lambda: 1_800_000_600
    lost = node_status(False, {})
    del lost["kubernetes"]
    writer.set("MLSysOpsNode", "edge-rpi-1", lost)
    assert await writer.sync() and writer.writes == 3
    st = (await read(kube_client, kube_ns, "mlsysopsnodes", "edge-rpi-1"))["status"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert st["phase"] == "NotReady" and st["components"] == {} and "kubernetes" not in st
    assert (conds["Ready"]["status"], conds["Ready"]["lastTransitionTime"]) == ("False", "2027-01-15T08:10:00Z")
    assert conds["Schedulable"]["lastTransitionTime"] == "2027-01-15T08:00:00Z"


@aio
async def test_missing_description_is_reported_not_created(kube_client, kube_ns) -> None:
    spec = load_slice(DEMO)
    await install_crds(kube_client)
    await apply_descriptions(kube_client, kube_ns, [spec.nodes["edge-rpi-1"]])
    writer = StatusWriter(kube_client, kube_ns, missing_retry_s=0.0)
    writer.set("MLSysOpsNode", "edge-rpi-2", node_status(True, {}))    # not applied (yet)
    writer.set("MLSysOpsNode", "edge-rpi-1", node_status(True, {}))
    assert not await writer.sync()                                    # no exception to the agent
    assert writer.missing == {("MLSysOpsNode", "edge-rpi-2")}
    assert await read(kube_client, kube_ns, "mlsysopsnodes", "edge-rpi-2") is None   # not created by us
    assert (await read(kube_client, kube_ns, "mlsysopsnodes", "edge-rpi-1"))["status"]["phase"] == "Ready"

    await apply_descriptions(kube_client, kube_ns, [spec.nodes["edge-rpi-2"]])     # the operator applies it
    assert await writer.sync() and not writer.missing
    assert (await read(kube_client, kube_ns, "mlsysopsnodes", "edge-rpi-2"))["status"]["phase"] == "Ready"
