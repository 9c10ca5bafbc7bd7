"""The placement mechanism contract against a REAL cluster (opt-in).

    KUBECONFIG=~/.kube/config python -m pytest --live -m live tests/kube/test_live.py

Needs a cluster whose nodes can pull `registry.k8s.io/pause:3.9` (k3s, kind, minikube...). Creates and
deletes a namespace `mlsysops-live-<random>`. A move is checked when the cluster has two schedulable
Ready nodes. Covered only here: real kubelets, image pulls, real pod readiness and CNI pod IPs.
"""

from __future__ import annotations

import os
import uuid

import pytest
import pytest_asyncio
from kubernetes.aio import client as k

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.mechanisms.kube_placement import KubePlacementMechanism
from mlsysops.substrates.kubernetes import manifests as mf
from mlsysops.substrates.kubernetes.client import connect
from tests.kube.harness import until

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]
APP = "live-probe"
PROBE = MLSysOpsApp.model_validate({
    "name": APP,
    "components": [{"metadata": {"name": "probe"},
                    "containers": [{"image": "registry.k8s.io/pause:3.9",
                                    "platform_requirements": {"cpu": {"requests": "10m"},
                                                              "memory": {"requests": "8Mi"}},
                                    "ports": [{"container_port": 8080}]}]}]})


@pytest_asyncio.fixture(loop_scope="session")
async def live():
    api = await connect(os.environ["KUBECONFIG"], os.environ.get("MLSYSOPS_LIVE_CONTEXT"))
    core = k.CoreV1Api(api)
    ns = f"mlsysops-live-{uuid.uuid4().hex[:6]}"
    await core.create_namespace({"metadata": {"name": ns}})
    try:
        nodes = [n for n in (await core.list_node()).items if not n.spec.unschedulable
                 and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                 and not any(t.effect == "NoSchedule" for t in n.spec.taints or [])]
        yield api, ns, [n.metadata.name for n in nodes]
    finally:
        await core.delete_namespace(ns)
        await api.close()


async def test_mechanism_contract_on_a_real_cluster(live) -> None:
    api, ns, nodes = live
    assert nodes, "no schedulable Ready node"
    # real clusters rarely carry our cluster label: the mechanism then takes all nodes
    mech = KubePlacementMechanism(api, ns, "live", {APP: PROBE}.get, move_timeout=180)
    n1 = nodes[0]
    iid = f"{APP}.probe.0@{n1}"
    res = await mech.apply({"app": APP, "actions": [{"action": "deploy", "component": "probe", "node": n1,
                                                     "instance_id": iid}]})
    assert res["ok"], res

    async def running(instance: str):
        state = await mech.get_state()
        return next((i for i in state["instances"] if i["instance_id"] == instance and i["state"] == "running"),
                    None)

    await until(lambda: running(iid), timeout=180, interval=1, message="probe running")
    current, where = iid, n1
    if len(nodes) > 1:
        res = await mech.apply({"app": APP, "actions": [{"action": "move", "component": "probe",
                                                         "instance_id": iid, "from": n1, "to": nodes[1]}]})
        assert res["ok"] and res["detail"][0]["waited_for_available"], res
        current, where = res["detail"][0]["instance_id"], nodes[1]
        await until(lambda: running(current), timeout=180, interval=1, message="moved probe running")
    spec = PROBE.component("probe").model_dump(mode="json", exclude_none=True)
    spec["containers"][0]["platform_requirements"]["cpu"]["requests"] = "20m"
    res = await mech.apply({"app": APP, "actions": [{"action": "change_spec", "component": "probe",
                                                     "instance_id": current, "node": where, "spec": spec}]})
    assert res["ok"], res
    res = await mech.apply({"app": APP, "actions": [{"action": "remove", "component": "probe",
                                                     "instance_id": current}]})
    assert res["ok"] and res["detail"][0]["also_removed"] == ["Service/probe"], res
    apps, core = k.AppsV1Api(api), k.CoreV1Api(api)
    selector = mf.component_selector(APP)

    async def nothing_left():
        return not ((await apps.list_namespaced_deployment(ns, label_selector=selector)).items
                    or (await core.list_namespaced_pod(ns, label_selector=selector)).items
                    or (await core.list_namespaced_service(ns)).items)

    await until(nothing_left, timeout=120, interval=1, message="no objects left")
