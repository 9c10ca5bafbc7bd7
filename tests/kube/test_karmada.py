"""The Karmada mechanism against the real local apiserver playing the Karmada API server, with the
stand-in CRDs and scheduler of tests/kube/karmada_crds.py.

Real Karmada (opt-in): `KARMADA_KUBECONFIG=~/.kube/karmada.config [KARMADA_CONTEXT=karmada-apiserver]
python -m pytest tests/kube/test_karmada.py --live -m karmada_live` places an nginx component on one Ready
member cluster, waits until its ResourceBinding reports it applied and healthy there, and removes it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes.aio import client as k

from mlsysops.agents.descriptions import load_file, load_obj
from mlsysops.mechanisms.karmada_placement import KarmadaPlacementMechanism
from mlsysops.substrates.kubernetes import karmada as kk
from tests.kube.harness import until
from tests.kube.karmada_crds import StandInScheduler, add_cluster, install_crds

ROOT = Path(__file__).resolve().parents[2]
APP = load_file(ROOT / "examples" / "apps" / "env-monitor.yaml")[0].spec
ASYNC = pytest.mark.asyncio(loop_scope="session")
pytestmark = ASYNC


@pytest_asyncio.fixture(loop_scope="session")
async def karmada(kube_client, kube_ns) -> AsyncIterator[StandInScheduler]:
    await install_crds(kube_client)
    for name in ("cloud-1", "edge-1"):
        await add_cluster(kube_client, name)
    await add_cluster(kube_client, "down-1", ready=False)
    async with StandInScheduler(kube_client, kube_ns) as sched:
        yield sched


def mechanism(kube_client, ns: str, **kw: Any) -> KarmadaPlacementMechanism:
    return KarmadaPlacementMechanism(kube_client, {APP.name: APP}.get, namespace=ns, **kw)


async def state_of(mech: KarmadaPlacementMechanism, comp: str) -> dict[str, Any]:
    return (await mech.get_state()).get("apps", {}).get(APP.name, {}).get(comp, {})


async def rb(kube_client, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return await k.CustomObjectsApi(kube_client).get_namespaced_custom_object(
            kk.WORK_GROUP, kk.WORK_VERSION, ns, kk.RB_PLURAL, name)
    except k.ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def test_each_component_lands_only_on_its_chosen_cluster(kube_client, kube_ns, karmada):
    mech = mechanism(kube_client, kube_ns)
    out = await mech.apply({"app": APP.name, "assign": {"aggregator": "cloud-1", "sensor-reader": "edge-1"}})
    assert out["ok"], out
    custom = k.CustomObjectsApi(kube_client)
    for comp, cluster in (("aggregator", "cloud-1"), ("sensor-reader", "edge-1")):
        pp = await custom.get_namespaced_custom_object(kk.POLICY_GROUP, kk.POLICY_VERSION, kube_ns, kk.PP_PLURAL,
                                                       kk.policy_name(APP.name, comp))
        assert pp["spec"]["placement"]["clusterAffinity"]["clusterNames"] == [cluster]
        st = await until(lambda c=comp: _running(mech, c))
        assert st["clusters"] == [cluster] and st["cluster"] == cluster and st["health"] == {cluster: "Healthy"}
        binding = await rb(kube_client, kube_ns, kk.deployment_binding(APP.name, comp))
        assert [c["name"] for c in binding["spec"]["clusters"]] == [cluster]      # read back: name lower(<name>-<kind>)
    dep = await k.AppsV1Api(kube_client).read_namespaced_deployment(f"{APP.name}-aggregator", kube_ns)
    assert dep.spec.template.spec.affinity is None               # members pick nodes, not the template
    svc_rb = await until(lambda: rb(kube_client, kube_ns, "aggregator-service"))
    assert [c["name"] for c in svc_rb["spec"]["clusters"]] == ["cloud-1"]     # the Service travels along
    assert (await mech.get_state())["assignments"] == {APP.name: {"aggregator": "cloud-1",
                                                                  "sensor-reader": "edge-1"}}


async def _running(mech: KarmadaPlacementMechanism, comp: str) -> dict[str, Any] | None:
    st = await state_of(mech, comp)
    return st if st.get("status") == "running" else None


async def test_move_changes_the_binding_and_a_restarted_mechanism_adopts(kube_client, kube_ns, karmada):
    mech = mechanism(kube_client, kube_ns)
    assert (await mech.apply({"app": APP.name, "assign": {"aggregator": "cloud-1"}}))["ok"]
    await until(lambda: _running(mech, "aggregator"))
    out = await mech.apply({"app": APP.name, "assign": {"aggregator": "edge-1"}, "previous": {"aggregator": "cloud-1"}})
    assert out["ok"] and any(d.get("previous") == "cloud-1" for d in out["detail"])

    async def moved() -> bool:
        binding = await rb(kube_client, kube_ns, kk.deployment_binding(APP.name, "aggregator"))
        return bool(binding) and [c["name"] for c in binding["spec"]["clusters"]] == ["edge-1"]

    await until(moved)
    saved: list[str] = []
    table: dict[str, dict[str, str]] = {"stale-app": {"x": "cloud-1"}}
    fresh = mechanism(kube_client, kube_ns, assignments=table, save=saved.append)   # a restarted continuum
    st = await until(lambda: _running(fresh, "aggregator"))
    assert st["cluster"] == "edge-1"
    await fresh.adopt()
    assert table == {APP.name: {"aggregator": "edge-1"}}          # the agent's own table, from the server
    assert (await fresh.apply({"app": APP.name, "assign": {"sensor-reader": "cloud-1"}}))["ok"]
    assert table[APP.name] == {"aggregator": "edge-1", "sensor-reader": "cloud-1"} and saved == [APP.name]


async def test_override_policy_only_where_the_cluster_needs_it(kube_client, kube_ns, karmada):
    overrides = {"edge-1": kk.ClusterOverride(image_registry="registry.edge.local", max_replicas=1)}
    mech = mechanism(kube_client, kube_ns, overrides=overrides)
    custom = k.CustomObjectsApi(kube_client)
    out = await mech.apply({"app": APP.name, "assign": {"aggregator": "edge-1"}})
    assert out["ok"] and out["detail"][0]["override_policy"] == kk.policy_name(APP.name, "aggregator")
    op = await custom.get_namespaced_custom_object(kk.POLICY_GROUP, kk.POLICY_VERSION, kube_ns, kk.OP_PLURAL,
                                                   kk.policy_name(APP.name, "aggregator"))
    (rule,) = op["spec"]["overrideRules"]
    assert rule["targetCluster"] == {"clusterNames": ["edge-1"]}
    assert rule["overriders"]["imageOverrider"][0]["value"] == "registry.edge.local"
    assert "plaintext" not in rule["overriders"]       # 1 replica wanted: the cap changes nothing

    async def overridden() -> list[str] | None:
        binding = await rb(kube_client, kube_ns, kk.deployment_binding(APP.name, "aggregator"))
        agg = ((binding or {}).get("status") or {}).get("aggregatedStatus") or []
        images = agg[0]["status"]["images"] if agg else []
        return images if images and images[0].startswith("registry.edge.local/") else None

    assert await until(overridden) == ["registry.edge.local/env/aggregator:0.3"]
    # Moving to a cluster without overrides removes the OverridePolicy again.
    out = await mech.apply({"app": APP.name, "assign": {"aggregator": "cloud-1"}})
    assert out["ok"] and out["detail"][0]["override_policy"] is None
    with pytest.raises(k.ApiException) as gone:
        await custom.get_namespaced_custom_object(kk.POLICY_GROUP, kk.POLICY_VERSION, kube_ns, kk.OP_PLURAL,
                                                  kk.policy_name(APP.name, "aggregator"))
    assert gone.value.status == 404


async def test_a_cluster_karmada_cannot_use_shows_as_failed(kube_client, kube_ns, karmada):
    mech = mechanism(kube_client, kube_ns)
    assert (await mech.apply({"app": APP.name, "assign": {"aggregator": "down-1"}}))["ok"]

    async def failed() -> dict[str, Any] | None:
        st = await state_of(mech, "aggregator")
        return st if st.get("status") == "failed" else None

    st = await until(failed)
    assert "NoClusterFit" in st["reason"] and st["clusters"] == []
    options = await mech.get_options()
    assert options["clusters"]["down-1"] is False and options["clusters"]["edge-1"] is True


async def test_unknown_app_or_bad_command_is_refused_without_api_calls(kube_client, kube_ns):
    mech = mechanism(kube_client, kube_ns)
    assert not (await mech.apply({"app": "nope", "assign": {"x": "edge-1"}}))["ok"]
    assert not (await mech.apply({"app": APP.name, "assign": ["edge-1"]}))["ok"]
    assert not (await mech.apply("deploy everything"))["ok"]


async def test_removing_the_app_leaves_nothing_behind(kube_client, kube_ns, karmada):
    mech = mechanism(kube_client, kube_ns, overrides={"edge-1": kk.ClusterOverride(image_registry="r.local")})
    assert (await mech.apply({"app": APP.name, "assign": {"aggregator": "edge-1", "sensor-reader": "cloud-1"}}))["ok"]
    await until(lambda: _running(mech, "aggregator"))
    await until(lambda: _running(mech, "sensor-reader"))
    res = await mech.remove_app(APP.name)
    # 2 PPs, 1 OP, 2 Deployments, 1 Service, the aggregator's MultiClusterService (its caller is in cloud-1)
    assert res["ok"] and len(res["removed"]) == 7, res["removed"]
    custom, apps, core = k.CustomObjectsApi(kube_client), k.AppsV1Api(kube_client), k.CoreV1Api(kube_client)

    async def empty() -> bool:
        left = []
        for group, version, plural in ((kk.POLICY_GROUP, kk.POLICY_VERSION, kk.PP_PLURAL),
                                       (kk.POLICY_GROUP, kk.POLICY_VERSION, kk.OP_PLURAL),
                                       (kk.WORK_GROUP, kk.WORK_VERSION, kk.RB_PLURAL),
                                       (kk.NETWORKING_GROUP, kk.MCS_VERSION, kk.MCS_PLURAL)):
            left += (await custom.list_namespaced_custom_object(group, version, kube_ns, plural))["items"]
        left += (await apps.list_namespaced_deployment(kube_ns)).items
        left += [s for s in (await core.list_namespaced_service(kube_ns)).items]
        return not left

    await until(empty, timeout=20)        # bindings go with their templates (garbage collector)
    assert (await mech.get_state())["apps"] == {} and mech.assignments == {}


async def mcs(kube_client, ns: str) -> dict[str, dict[str, Any]]:
    listed = await k.CustomObjectsApi(kube_client).list_namespaced_custom_object(
        kk.NETWORKING_GROUP, kk.MCS_VERSION, ns, kk.MCS_PLURAL)
    return {o["metadata"]["name"]: o["spec"] for o in listed["items"]}


async def test_a_component_called_from_another_member_gets_a_multicluster_service(kube_client, kube_ns, karmada):
    mech = mechanism(kube_client, kube_ns)
    res = await mech.apply({"app": APP.name, "assign": {"aggregator": "edge-1", "sensor-reader": "cloud-1"}})
    assert res["ok"], res
    assert await mcs(kube_client, kube_ns) == {"aggregator": {
        "types": ["CrossCluster"], "providerClusters": [{"name": "edge-1"}], "consumerClusters": [{"name": "cloud-1"}]}}
    # the caller joins the aggregator's cluster: no cross-cluster call left, the MultiClusterService goes
    assert (await mech.apply({"app": APP.name, "assign": {"sensor-reader": "edge-1"},
                              "previous": {"sensor-reader": "cloud-1"}}))["ok"]
    assert await mcs(kube_client, kube_ns) == {}
    await mech.apply({"app": APP.name, "assign": {"aggregator": "cloud-1"}, "previous": {"aggregator": "edge-1"}})
    assert (await mcs(kube_client, kube_ns))["aggregator"]["providerClusters"] == [{"name": "cloud-1"}]
    assert (await mech.remove_app(APP.name))["ok"]
    assert await mcs(kube_client, kube_ns) == {}


LIVE_APP = load_obj({"MLSysOpsApp": {"name": "karmada-live", "components": [
    {"metadata": {"name": "web"}, "containers": [{"image": "nginx:1.25-alpine", "ports": [{"container_port": 80}]}]}]}}
).spec


@pytest.mark.karmada_live
async def test_live_karmada_places_on_one_member_and_cleans_up():
    from mlsysops.substrates.kubernetes.client import connect

    api = await connect(os.environ["KARMADA_KUBECONFIG"], os.environ.get("KARMADA_CONTEXT", "karmada-apiserver"))
    async with api:
        ns = f"t-karmada-{uuid.uuid4().hex[:6]}"
        core = k.CoreV1Api(api)
        await core.create_namespace({"metadata": {"name": ns}})    # Karmada propagates namespaces itself
        mech = KarmadaPlacementMechanism(api, {LIVE_APP.name: LIVE_APP}.get, namespace=ns)
        try:
            ready = sorted(c for c, ok in (await mech.get_options())["clusters"].items() if ok)
            if not ready:
                pytest.skip("no Ready member cluster in this Karmada")
            target = ready[0]
            assert (await mech.apply({"app": LIVE_APP.name, "assign": {"web": target}}))["ok"]

            async def running() -> dict[str, Any] | None:
                st = (await mech.get_state()).get("apps", {}).get(LIVE_APP.name, {}).get("web", {})
                return st if st.get("status") == "running" else None

            st = await until(running, timeout=300)
            assert st["clusters"] == [target]                   # on the chosen member only
            assert (await mech.remove_app(LIVE_APP.name))["ok"]

            async def unbound() -> bool:
                return await rb(api, ns, kk.deployment_binding(LIVE_APP.name, "web")) is None

            await until(unbound, timeout=120)
        finally:
            await core.delete_namespace(ns)
