"""KubePlacementMechanism contract against the real apiserver + controller-manager + scheduler + sim kubelets:
every action in both plan formats, make-before-break, adoption after a restart (pod UIDs unchanged), no
orphans after removal, watch-fed state, CR status, watch 410 recovery, server dry-run of the manifests."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes.aio import client as k
from kubernetes.aio import config as kcfg

from mlsysops.agents.descriptions.loader import load_file, to_k8s
from mlsysops.mechanisms.kube_placement import KubePlacementMechanism
from mlsysops.sim import SimNodeSpec
from mlsysops.substrates.kubernetes import crds
from mlsysops.substrates.kubernetes import manifests as mf
from mlsysops.substrates.kubernetes.client import ClusterClients, KubeError
from mlsysops.substrates.kubernetes.watch import ResourceWatch
from tests.kube.conftest import unique
from tests.kube.harness import until

pytestmark = pytest.mark.asyncio(loop_scope="session")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "apps" / "env-monitor.yaml"
APP = "env-monitor"


@pytest.fixture
def app_doc():
    return load_file(EXAMPLE)[0]


@pytest_asyncio.fixture(loop_scope="session")
async def env(kube_client, kube_ns, sim_kubelets, app_doc):
    """Three sim nodes of a fresh cluster, and the mechanism for it."""
    cluster = unique("c")
    names = [unique("n") for _ in range(3)]
    sim, kubelet = await sim_kubelets([SimNodeSpec(n, cluster, "edge", cpu_cores=2, startup_s=0.05)
                                       for n in names])
    mech = KubePlacementMechanism(kube_client, kube_ns, cluster, {APP: app_doc.spec}.get, move_timeout=90)
    return mech, names, sim, kubelet


def deploy(component: str, node: str, iid: str | None = None) -> dict:
    return {"app": APP, "actions": [{"action": "deploy", "component": component, "node": node,
                                     "instance_id": iid or f"{APP}.{component}.0@{node}"}]}


async def running(mech, *iids: str) -> dict:
    async def probe():
        state = await mech.get_state()
        by_id = {i["instance_id"]: i for i in state["instances"]}
        return by_id if all(by_id.get(i, {}).get("state") == "running" for i in iids) else None
    return await until(probe, timeout=30, message=f"{iids} running")


async def test_deploy_creates_a_deployment_with_affinity_and_a_service_then_runs(env, kube_client, kube_ns) -> None:
    mech, (n1, n2, _), sim, _ = env
    res = await mech.apply({"app": APP, "actions": [
        {"action": "deploy", "component": "aggregator", "node": n1, "instance_id": f"{APP}.aggregator.0@{n1}"},
        {"action": "deploy", "component": "sensor-reader", "node": n2, "instance_id": f"{APP}.sensor-reader.0@{n2}"}]})
    assert res["ok"], res
    assert "OnFailure" in res["detail"][1]["warning"]
    by_id = await running(mech, f"{APP}.aggregator.0@{n1}", f"{APP}.sensor-reader.0@{n2}")
    agg = by_id[f"{APP}.aggregator.0@{n1}"]
    assert agg["node"] == n1 and agg["cpu_request_cores"] == 0.5 and agg["pods"][0]["node"] == n1
    dep = await k.AppsV1Api(kube_client).read_namespaced_deployment(agg["deployment"], kube_ns)
    terms = dep.spec.template.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert terms.node_selector_terms[0].match_expressions[0].values == [n1]
    assert dep.spec.template.spec.node_name is None
    assert {f.manager for f in dep.metadata.managed_fields} >= {"mlsysops"}
    svc = await k.CoreV1Api(kube_client).read_namespaced_service("aggregator", kube_ns)
    assert svc.spec.ports[0].port == 1883 and svc.metadata.labels[mf.MANAGED_BY] == "mlsysops"
    assert {i.component for i in sim.instances(state="running")} == {"aggregator", "sensor-reader"}
    state = await mech.get_state()
    assert state["nodes_up"] == {n: True for n in env[1]} and state["errors"] == {}


async def test_repeated_deploy_and_fluidity_format_change_nothing(env, kube_client, kube_ns) -> None:
    mech, (n1, *_), _, _ = env
    fluidity = {"name": APP, "deployment_plan": {"aggregator": [{"action": "deploy", "host": n1}], "initial_plan": True}}
    assert (await mech.apply(fluidity))["ok"]
    before = await running(mech, f"{APP}.aggregator.0@{n1}")
    gen = (await k.AppsV1Api(kube_client).read_namespaced_deployment(before[f"{APP}.aggregator.0@{n1}"]["deployment"], kube_ns)).metadata.generation
    for cmd in (fluidity, deploy("aggregator", n1)):   # same instance id in both formats
        assert (await mech.apply(cmd))["ok"]
    deps = await k.AppsV1Api(kube_client).list_namespaced_deployment(kube_ns)
    assert len(deps.items) == 1 and deps.items[0].metadata.generation == gen
    after = await mech.get_state()
    assert [p["uid"] for p in after["instances"][0]["pods"]] == [p["uid"] for p in before[f"{APP}.aggregator.0@{n1}"]["pods"]]


async def test_unknown_node_app_or_component_is_a_reported_error(env) -> None:
    mech, (n1, *_), _, _ = env
    bad = await mech.apply({"app": APP, "actions": [{"action": "deploy", "component": "aggregator", "node": "nowhere"}]})
    assert not bad["ok"] and "nowhere" in bad["detail"][0]["error"]
    assert "nowhere" in (await mech.get_state())["errors"][f"{APP}/aggregator"]
    assert not (await mech.apply({"app": "nope", "actions": [{"action": "deploy", "component": "x", "node": n1}]}))["ok"]
    assert not (await mech.apply({"app": APP, "actions": [{"action": "deploy", "component": "x", "node": n1}]}))["ok"]
    assert not (await mech.apply({"bogus": 1}))["ok"]


async def test_move_is_make_before_break(env, kube_client, kube_ns) -> None:
    mech, (n1, n2, _), _, _ = env
    old_id = f"{APP}.aggregator.0@{n1}"
    assert (await mech.apply(deploy("aggregator", n1)))["ok"]
    await running(mech, old_id)
    timeline: list[tuple[str, str, bool]] = []     # (node, event, ready) in the order the server sent them

    async def on_event(kind, pod):
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])
        gone = kind == "DELETED" or bool(pod["metadata"].get("deletionTimestamp"))
        timeline.append((pod["spec"].get("nodeName"), "gone" if gone else "ready" if ready else "pending", ready))

    async def on_sync(items):
        pass

    core = k.CoreV1Api(kube_client)
    w = ResourceWatch(kube_client, core.list_namespaced_pod, kube_ns, on_sync=on_sync, on_event=on_event)
    task = asyncio.create_task(w.run())
    await asyncio.wait_for(w.synced.wait(), 10)
    res = await mech.apply({"app": APP, "actions": [{"action": "move", "component": "aggregator",
                                                     "instance_id": old_id, "from": n1, "to": n2}]})
    assert res["ok"], res
    await until(lambda: any(e[0] == n1 and e[1] == "gone" for e in timeline), message="old pod deleted")
    task.cancel()
    detail = res["detail"][0]
    assert detail["instance_id"] == f"{APP}.aggregator.0@{n2}" and detail["waited_for_available"]
    first_new_ready = next(i for i, e in enumerate(timeline) if e[0] == n2 and e[1] == "ready")
    first_old_gone = next(i for i, e in enumerate(timeline) if e[0] == n1 and e[1] == "gone")
    assert first_new_ready < first_old_gone, timeline
    state = await running(mech, detail["instance_id"])
    assert old_id not in state and len((await mech.get_state())["instances"]) == 1
    assert (await core.read_namespaced_service("aggregator", kube_ns)).metadata.name == "aggregator"


async def test_move_from_a_crashed_node_does_not_wait_and_fluidity_move_works(env) -> None:
    mech, (n1, n2, n3), sim, _ = env
    assert (await mech.apply(deploy("aggregator", n1)))["ok"]
    await running(mech, f"{APP}.aggregator.0@{n1}")
    sim.crash_node(n1)
    await until(lambda: _down(mech, n1), message="node down in state")
    res = await mech.apply({"name": APP, "deployment_plan": {"aggregator": [
        {"action": "move", "src_host": n1, "target_host": n3}]}})
    assert res["ok"] and not res["detail"][0]["waited_for_available"], res
    await running(mech, f"{APP}.aggregator.0@{n3}")
    assert [i["instance_id"] for i in (await mech.get_state())["instances"]] == [f"{APP}.aggregator.0@{n3}"]


async def _down(mech, node):
    return not (await mech.get_state())["nodes_up"][node]


async def test_failed_move_keeps_the_old_instance(env, app_doc) -> None:
    mech, (n1, n2, _), _, _ = env
    assert (await mech.apply(deploy("aggregator", n1)))["ok"]
    await running(mech, f"{APP}.aggregator.0@{n1}")
    mech.move_timeout = 1.5
    huge = app_doc.spec.component("aggregator").model_dump(mode="json", exclude_none=True)
    huge["containers"][0]["platform_requirements"]["cpu"] = {"requests": "64", "limits": "64"}   # fits no node
    res = await mech.apply({"app": APP, "actions": [{"action": "move", "component": "aggregator", "from": n1, "to": n2,
                                                     "spec": huge}]})
    assert not res["ok"] and "not available" in res["detail"][0]["error"]
    state = await mech.get_state()
    assert [i["instance_id"] for i in state["instances"]] == [f"{APP}.aggregator.0@{n1}"]
    assert state["instances"][0]["state"] == "running"


async def test_change_spec_rolls_image_runtime_class_and_resources(env, kube_client, kube_ns, app_doc) -> None:
    mech, (n1, *_), _, _ = env
    iid = f"{APP}.aggregator.0@{n1}"
    assert (await mech.apply(deploy("aggregator", n1)))["ok"]
    before = await running(mech, iid)
    rc = "kata-fc"
    node_api = k.NodeV1Api(kube_client)
    try:
        await node_api.create_runtime_class({"metadata": {"name": rc}, "handler": "kata"})
    except k.ApiException as exc:
        assert exc.status == 409
    spec = app_doc.spec.component("aggregator").model_dump(mode="json", exclude_none=True)
    spec["containers"][0]["image"] = "registry.example.org/env/aggregator:0.4"
    spec["containers"][0]["platform_requirements"]["cpu"]["requests"] = "250m"
    spec["runtime_class_name"] = rc
    res = await mech.apply({"app": APP, "actions": [{"action": "change_spec", "component": "aggregator",
                                                     "node": n1, "spec": spec}]})
    assert res["ok"], res
    after = (await mech.get_state())["instances"]
    assert [i["instance_id"] for i in after] == [iid] and after[0]["state"] == "running"
    assert after[0]["cpu_request_cores"] == 0.25
    assert {p["uid"] for p in after[0]["pods"]}.isdisjoint({p["uid"] for p in before[iid]["pods"]})
    pod = (await k.CoreV1Api(kube_client).list_namespaced_pod(kube_ns)).items
    live = [p for p in pod if p.metadata.deletion_timestamp is None]
    assert len(live) == 1 and live[0].spec.runtime_class_name == rc
    assert live[0].spec.containers[0].image.endswith(":0.4")


async def test_remove_leaves_no_orphans(env, kube_client, kube_ns) -> None:
    mech, (n1, n2, _), sim, _ = env
    a, b = f"{APP}.aggregator.0@{n1}", f"{APP}.aggregator.1@{n2}"
    assert (await mech.apply(deploy("aggregator", n1, a)))["ok"]
    assert (await mech.apply(deploy("aggregator", n2, b)))["ok"]
    await running(mech, a, b)
    core, apps = k.CoreV1Api(kube_client), k.AppsV1Api(kube_client)
    res = await mech.apply({"app": APP, "actions": [{"action": "remove", "component": "aggregator", "instance_id": a}]})
    assert res["ok"] and res["detail"][0]["also_removed"] == []        # the other instance still needs its Service
    assert await core.read_namespaced_service("aggregator", kube_ns)
    res = await mech.apply({"name": APP, "deployment_plan": {"aggregator": [{"action": "remove", "host": n2}]}})
    assert res["ok"] and res["detail"][0]["removed"] == b and res["detail"][0]["also_removed"] == ["Service/aggregator"]
    selector = mf.component_selector(APP)
    objs = k.CustomObjectsApi(kube_client)     # the 1.20 server serves EndpointSlices as v1beta1 only

    async def nothing_left():
        found = [*(await apps.list_namespaced_deployment(kube_ns, label_selector=selector)).items,
                 *(await apps.list_namespaced_replica_set(kube_ns, label_selector=selector)).items,
                 *(await core.list_namespaced_pod(kube_ns, label_selector=selector)).items,
                 *(await core.list_namespaced_service(kube_ns)).items,
                 *(await core.list_namespaced_endpoints(kube_ns)).items,
                 *(await objs.list_namespaced_custom_object("discovery.k8s.io", "v1beta1", kube_ns,
                                                            "endpointslices"))["items"]]
        return not found and not [i for i in sim.instances() if not i.state.terminal]

    await until(nothing_left, timeout=30, message="no objects and no sim instances left")
    again = await mech.apply({"app": APP, "actions": [{"action": "remove", "component": "aggregator", "instance_id": a}]})
    assert again["ok"] and again["detail"][0]["removed"] is None     # idempotent


async def test_restarted_mechanism_adopts_what_runs(env, kube_stack, kube_ns, app_doc) -> None:
    mech, (n1, n2, _), _, _ = env
    cmd = {"app": APP, "actions": [deploy("aggregator", n1)["actions"][0], deploy("sensor-reader", n2)["actions"][0]]}
    assert (await mech.apply(cmd))["ok"]
    before = await running(mech, f"{APP}.aggregator.0@{n1}", f"{APP}.sensor-reader.0@{n2}")
    uids = {iid: [p["uid"] for p in inst["pods"]] for iid, inst in before.items()}
    # a new agent process: new client, new mechanism, no memory
    api = await kcfg.new_client_from_config(config_file=str(kube_stack.kubeconfig))
    async with api:
        fresh = KubePlacementMechanism(api, kube_ns, mech.cluster_id, {APP: app_doc.spec}.get)
        state = await fresh.get_state()
        assert {i["instance_id"]: [p["uid"] for p in i["pods"]] for i in state["instances"]} == uids
        assert all(i["state"] == "running" for i in state["instances"])
        assert (await fresh.apply(cmd))["ok"]        # a re-plan of the same placement changes nothing
        again = await fresh.get_state()
        assert {i["instance_id"]: [p["uid"] for p in i["pods"]] for i in again["instances"]} == uids


async def test_watch_feeds_state_reports(env) -> None:
    mech, (n1, *_), sim, _ = env
    reports: list[dict] = []

    async def on_state(state):
        reports.append(state)

    task = asyncio.create_task(mech.watch(on_state))
    try:
        assert (await mech.apply(deploy("aggregator", n1)))["ok"]
        await until(lambda: any(i["state"] == "running" for r in reports for i in r["instances"]),
                    message="a report with the instance running")
        sim.crash_node(n1)
        await until(lambda: reports[-1]["instances"][0]["state"] == "failed" and not reports[-1]["nodes_up"][n1],
                    message="a report showing the instance failed with its node")
        assert reports[-1]["instances"][0]["reason"] == f"node {n1} is not ready"
    finally:
        task.cancel()


async def test_crds_install_and_cr_status_update(kube_client, kube_ns, app_doc) -> None:
    names = await crds.install_crds(kube_client)
    assert "mlsysopsapps.mlsysops.eu" in names and len(names) == 5
    assert await crds.install_crds(kube_client) == names        # idempotent
    body = to_k8s(app_doc)
    objs = k.CustomObjectsApi(kube_client)
    created = await objs.create_namespaced_custom_object("mlsysops.eu", "v1", kube_ns, "mlsysopsapps", body)
    status = {"phase": "Deployed", "observedGeneration": created["metadata"]["generation"],
              "conditions": [{"type": "Ready", "status": "True", "reason": "AllRunning",
                              "lastTransitionTime": "2026-11-27T00:00:00Z"}],
              "components": {"aggregator": {"node": "n1", "status": "running"}}}
    await crds.update_status(kube_client, "MLSysOpsApp", kube_ns, APP, status)
    got = await crds.read(kube_client, "MLSysOpsApp", kube_ns, APP)
    assert got["status"] == status
    assert got["spec"] == created["spec"] and got["metadata"]["generation"] == created["metadata"]["generation"]
    # a spec update does not drop the status (status subresource)
    spec = copy.deepcopy(got["spec"])
    spec["policies"] = ["filter_score_placement"]
    await objs.patch_namespaced_custom_object("mlsysops.eu", "v1", kube_ns, "mlsysopsapps", APP, {"spec": spec},
                                              _content_type="application/merge-patch+json")
    got2 = await crds.read(kube_client, "MLSysOpsApp", kube_ns, APP)
    assert got2["status"] == status and got2["spec"]["policies"] == ["filter_score_placement"]


async def test_watch_recovers_from_410_by_relisting(kube_stack, kube_client, kube_ns) -> None:
    core = k.CoreV1Api(kube_client)
    first = await core.create_namespaced_config_map(kube_ns, {"metadata": {"name": "cm0"}})
    for i in (1, 2):
        await core.create_namespaced_config_map(kube_ns, {"metadata": {"name": f"cm{i}"}})
    kube_stack.compact_etcd()     # what the API server does every 5 minutes: cm0's version is history now
    syncs: list[list[str]] = []
    events: list[tuple[str, str]] = []

    async def on_sync(items):
        syncs.append(sorted(i["metadata"]["name"] for i in items if i["metadata"]["name"].startswith("cm")))

    async def on_event(kind, obj):
        events.append((kind, obj["metadata"]["name"]))

    # resume from the compacted version: the server answers 410 Gone, the watch re-lists
    w = ResourceWatch(kube_client, core.list_namespaced_config_map, kube_ns, on_sync=on_sync, on_event=on_event,
                      timeout_seconds=5, resource_version=first.metadata.resource_version)
    task = asyncio.create_task(w.run())
    try:
        await asyncio.wait_for(w.synced.wait(), 10)
        assert syncs == [["cm0", "cm1", "cm2"]] and w.lists == 1
        await core.create_namespaced_config_map(kube_ns, {"metadata": {"name": "cm3"}})
        await until(lambda: ("ADDED", "cm3") in events, message="event after the re-list")
        assert ("ADDED", "cm1") not in events        # no replay of what the list already delivered
    finally:
        task.cancel()


async def test_manifests_pass_server_dry_run(kube_client, kube_ns, app_doc) -> None:
    apps, core = k.AppsV1Api(kube_client), k.CoreV1Api(kube_client)
    for comp in app_doc.spec.components:
        for obj in mf.component_manifests(app_doc.spec, comp.name, cluster="c1", nodes=["n1"],
                                          instance_id=f"{APP}.{comp.name}.0@n1", namespace=kube_ns):
            if obj["kind"] == "Deployment":
                await apps.create_namespaced_deployment(kube_ns, obj, dry_run="All")
            else:
                await core.create_namespaced_service(kube_ns, obj, dry_run="All")
    spec = app_doc.spec.component("aggregator").model_dump(mode="json", exclude_none=True)
    del spec["containers"][0]["ports"]
    [headless] = mf.services(app_doc.spec, "aggregator", cluster="c1", namespace=kube_ns, spec=spec)
    await core.create_namespaced_service(kube_ns, headless, dry_run="All")
    assert not (await apps.list_namespaced_deployment(kube_ns)).items     # dry run persisted nothing


async def test_cluster_clients_one_client_per_cluster(kube_stack) -> None:
    clients = ClusterClients({"edge-1": (str(kube_stack.kubeconfig), None), "edge-2": (str(kube_stack.kubeconfig), None)})
    try:
        a = await clients.get("edge-1")
        assert await clients.get("edge-1") is a and await clients.get("edge-2") is not a
        assert (await k.VersionApi(a).get_code()).git_version.startswith("v1.20")
        with pytest.raises(KubeError):
            await clients.get("nowhere")
    finally:
        await clients.close()


async def test_an_unschedulable_instance_says_why(kube_client, kube_ns, sim_kubelets, app_doc) -> None:
    """The scheduler cannot place the pod (the node is too small): the instance stays starting, with the
    scheduler's reason instead of silence until the progress deadline."""
    cluster, tiny = unique("c"), unique("n")
    await sim_kubelets([SimNodeSpec(tiny, cluster, "edge", cpu_cores=0.25, startup_s=0.05)])
    mech = KubePlacementMechanism(kube_client, kube_ns, cluster, {APP: app_doc.spec}.get, move_timeout=90)
    iid = f"{APP}.aggregator.0@{tiny}"
    assert (await mech.apply(deploy("aggregator", tiny, iid)))["ok"]

    async def held() -> dict | None:
        inst = {i["instance_id"]: i for i in (await mech.get_state())["instances"]}.get(iid)
        return inst if inst and (inst["reason"] or "").startswith("Unschedulable") else None

    inst = await until(held, timeout=30, message="the scheduler's reason on the instance")
    assert inst["state"] == "starting" and "Insufficient cpu" in inst["reason"], inst
