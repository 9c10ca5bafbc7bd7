"""sim/kubelet.py against the real apiserver + controller-manager + scheduler: sim nodes as Nodes,
pods run as sim instances, node crash -> NotReady and pods recreated elsewhere, deletion stops instances."""

from __future__ import annotations

import pytest
from kubernetes.aio import client as k

from mlsysops.sim import InstanceState, SimNodeSpec
from tests.kube.conftest import unique
from tests.kube.harness import until

pytestmark = pytest.mark.asyncio(loop_scope="session")


def deployment(name: str, cluster: str, replicas: int = 1, cpu: str = "250m") -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": {**labels, "mlsysops.eu/app": "demo",
                                                          "mlsysops.eu/component": name}},
                                  "spec": {"nodeSelector": {"mlsysops.eu/cluster": cluster},
                                           "containers": [{"name": "c", "image": "example.org/x:1",
                                                           "resources": {"requests": {"cpu": cpu,
                                                                                      "memory": "64Mi"}}}]}}}}


async def pods_of(core: k.CoreV1Api, ns: str, app: str) -> list:
    return [p for p in (await core.list_namespaced_pod(ns, label_selector=f"app={app}")).items
            if p.metadata.deletion_timestamp is None]


async def test_nodes_registered_with_labels_capacity_and_ready(kube_client, sim_kubelets) -> None:
    cluster = unique("c")
    n1 = unique("edge")
    sim, _ = await sim_kubelets([SimNodeSpec(n1, cluster, "edge", cpu_cores=2, memory_bytes=4 * 2**30,
                                             architecture="arm64", labels=["tier:edge"], gpu=True)])
    node = await k.CoreV1Api(kube_client).read_node(n1)
    labels = node.metadata.labels
    assert labels["kubernetes.io/hostname"] == n1 and labels["mlsysops.eu/cluster"] == cluster
    assert labels["mlsysops.eu/node"] == n1 and labels["kubernetes.io/arch"] == "arm64"
    assert labels["mlsysops.eu/tier"] == "edge"
    assert node.status.capacity == {"cpu": "2", "memory": str(4 * 2**30), "pods": "110", "nvidia.com/gpu": "1"}
    assert node.status.allocatable == node.status.capacity
    assert [(c.type, c.status) for c in node.status.conditions] == [("Ready", "True")]
    lease = await k.CoordinationV1Api(kube_client).read_namespaced_lease(n1, "kube-node-lease")
    assert lease.spec.holder_identity == n1


async def test_pods_run_as_sim_instances_and_crash_recreates_them_elsewhere(kube_client, kube_ns, sim_kubelets) -> None:
    cluster = unique("c")
    a, b = unique("na"), unique("nb")
    sim, kubelet = await sim_kubelets([SimNodeSpec(a, cluster, "edge", startup_s=0.1),
                                       SimNodeSpec(b, cluster, "edge", startup_s=0.1)])
    apps, core = k.AppsV1Api(kube_client), k.CoreV1Api(kube_client)
    await apps.create_namespaced_deployment(kube_ns, deployment("web", cluster, replicas=2))

    async def available():
        d = await apps.read_namespaced_deployment("web", kube_ns)
        return (d.status.available_replicas or 0) == 2

    await until(available, message="web 2/2 available")
    pods = await pods_of(core, kube_ns, "web")
    assert all(p.status.phase == "Running" and p.status.pod_ip for p in pods)
    running = {i.instance_id: i for i in sim.instances(state=InstanceState.RUNNING)}
    assert {f"{kube_ns}/{p.metadata.name}" for p in pods} == set(running)
    assert all(i.cpu_request_cores == 0.25 and i.memory_request_bytes == 64 * 2**20 for i in running.values())

    victim = pods[0].spec.node_name
    survivor = b if victim == a else a
    sim.crash_node(victim)

    async def node_not_ready():
        n = await core.read_node(victim)
        return n.status.conditions[0].status == "False"

    await until(node_not_ready, message="crashed node NotReady")

    async def all_on_survivor():
        ps = await pods_of(core, kube_ns, "web")
        d = await apps.read_namespaced_deployment("web", kube_ns)
        return (len(ps) == 2 and all(p.spec.node_name == survivor for p in ps)
                and (d.status.available_replicas or 0) == 2)

    await until(all_on_survivor, timeout=30, message="pods recreated on the surviving node")
    assert not [i for i in sim.instances(node=victim) if not i.state.terminal]

    # deletion: pods go (grace 0 by the kubelet), instances stop
    await apps.delete_namespaced_deployment("web", kube_ns, propagation_policy="Foreground")

    async def gone():
        return not await pods_of(core, kube_ns, "web") and not [
            i for i in sim.instances() if not i.state.terminal]

    await until(gone, timeout=30, message="pods and sim instances gone")
    assert not kubelet.errors


async def test_recovered_node_is_ready_again_and_capacity_rejection_fails_bare_pod(kube_client, kube_ns, sim_kubelets) -> None:
    cluster = unique("c")
    n = unique("n")
    sim, kubelet = await sim_kubelets([SimNodeSpec(n, cluster, "edge", cpu_cores=1, startup_s=0.05)])
    core = k.CoreV1Api(kube_client)
    sim.crash_node(n)

    async def ready(status):
        node = await core.read_node(n)
        tainted = any(t.key == "node.kubernetes.io/not-ready" for t in node.spec.taints or [])
        return node.status.conditions[0].status == status and tainted == (status == "False")

    await until(lambda: ready("False"), message="NotReady + taint")
    # a pod bound while the node is down waits; it runs once the node is back
    await core.create_namespaced_pod(kube_ns, {"metadata": {"name": "early"}, "spec": {"nodeName": n, "containers": [
        {"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m"}}}]}})
    await until(lambda: f"{kube_ns}/early" in kubelet.pods, message="kubelet saw the pod")
    assert not [i for i in sim.instances() if not i.state.terminal]
    sim.recover_node(n)
    await until(lambda: ready("True"), message="Ready again, taint gone")

    async def early_running():
        return (await core.read_namespaced_pod("early", kube_ns)).status.phase == "Running"

    await until(early_running, message="pod bound during the outage runs after recovery")
    # the sim, not the scheduler, rejects: a bare pod bound directly, too big for the sim node
    pod = {"metadata": {"name": "big"}, "spec": {"nodeName": n, "containers": [
        {"name": "c", "image": "x", "resources": {"requests": {"cpu": "3"}}}]}}
    await core.create_namespaced_pod(kube_ns, pod)

    async def failed():
        p = await core.read_namespaced_pod("big", kube_ns)
        return p.status.phase == "Failed" and p.status.reason == "SimRejected"

    await until(failed, message="pod Failed by the sim kubelet")
