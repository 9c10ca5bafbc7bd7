"""The continuum agent on Karmada (substrate `karmada`): the demo slice run by a SliceRuntime over prosody,
the REST API in front, the local kube-apiserver playing the Karmada API server with the stand-in CRDs and
scheduler of tests/kube/karmada_crds.py. Each component gets ONE PropagationPolicy naming the cluster the
continuum chose; the API shows the binding's result; a restarted continuum adopts the placements; deleting
the app leaves no template or policy behind."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.aio import client as k

from mlsysops.agents.descriptions import load_file
from mlsysops.agents.slice_config import SubstrateConfig, load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.continuum.agent import ContinuumAgent, dispatch_status
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role
from mlsysops.mechanisms.karmada_placement import KarmadaPlacementMechanism
from mlsysops.substrates.kubernetes import karmada as kk
from mlsysops.substrates.kubernetes import manifests as mf
from tests.kube.harness import until, write_kubeconfig
from tests.kube.karmada_crds import StandInScheduler, add_cluster, install_crds
from tests.support import AGENT_PASSWORD, app_components, formed

ASYNC = pytest.mark.asyncio(loop_scope="session")
pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
APP_FILE = ROOT / "examples" / "apps" / "env-monitor.yaml"
APP = "env-monitor"
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
TOKEN = "admin-" + uuid.uuid4().hex
V1 = "/api/v1"


def karmada_slice(kubeconfig: Path, namespace: str) -> Any:
    spec = load_slice(DEMO)
    spec.config = spec.config.model_copy(update={"substrate": SubstrateConfig(
        type="karmada", kubeconfig=kubeconfig, namespace=namespace)})
    return spec


async def components(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return await app_components(http, APP)


async def all_in(http: httpx.AsyncClient, status: str) -> dict[str, dict[str, Any]] | None:
    comps = await components(http)
    return comps if comps and all(c["status"] == status for c in comps.values()) else None


async def policies(api: Any, ns: str, plural: str = kk.PP_PLURAL) -> list[dict[str, Any]]:
    listed = await k.CustomObjectsApi(api).list_namespaced_custom_object(
        kk.POLICY_GROUP, kk.POLICY_VERSION, ns, plural, label_selector=f"{mf.LABEL_APP}={mf.label_value(APP)}")
    return listed["items"]


async def leftovers(api: Any, ns: str) -> list[str]:
    """Templates, policies and bindings of the app (bindings carry no labels of ours: all of them)."""
    custom, sel = k.CustomObjectsApi(api), f"{mf.LABEL_APP}={mf.label_value(APP)}"
    left = [f"{o['kind']}/{o['metadata']['name']}" for plural in (kk.PP_PLURAL, kk.OP_PLURAL)
            for o in await policies(api, ns, plural)]
    left += [f"ResourceBinding/{o['metadata']['name']}" for o in (await custom.list_namespaced_custom_object(
        kk.WORK_GROUP, kk.WORK_VERSION, ns, kk.RB_PLURAL))["items"]]
    left += [f"Deployment/{d.metadata.name}" for d in
             (await k.AppsV1Api(api).list_namespaced_deployment(ns, label_selector=sel)).items]
    left += [f"Service/{s.metadata.name}" for s in
             (await k.CoreV1Api(api).list_namespaced_service(ns, label_selector=sel)).items]
    return left


async def binding_clusters(api: Any, ns: str, comp: str) -> list[str]:
    rb = await k.CustomObjectsApi(api).get_namespaced_custom_object(
        kk.WORK_GROUP, kk.WORK_VERSION, ns, kk.RB_PLURAL, kk.deployment_binding(APP, comp))
    return [c["name"] for c in rb["spec"]["clusters"]]


@ASYNC
async def test_continuum_places_each_component_on_its_cluster_through_karmada(prosody, kube_stack, kube_client,
                                                                             tmp_path):
    await install_crds(kube_client)
    for cluster in ("cloud-1", "edge-1"):
        await add_cluster(kube_client, cluster)
    ns = f"karmada-{uuid.uuid4().hex[:6]}"
    rt = SliceRuntime(karmada_slice(kube_stack.kubeconfig, ns), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], state_dir=tmp_path / "state",
                      overrides={k_: dict(v) for k_, v in FAST.items()})
    server = None
    t_start = time.monotonic()
    try:
        await rt.start()
        assert isinstance(rt.continuum.cluster_dispatch, KarmadaPlacementMechanism)
        server = ApiServer(create_app(ApiBackend(runtime=rt), {TOKEN: Role.admin}), port=0)
        url = await server.start()
        await until(lambda: formed(rt), 20, message="hierarchy formed")
        t_formed = time.monotonic() - t_start
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15) as http:
            t0 = time.monotonic()
            r = await http.post(f"{V1}/apps", content=APP_FILE.read_text(), headers={"Content-Type": "application/yaml"})
            assert r.status_code == 201, r.text

            # No Karmada scheduler yet: placed (one policy per component), but pending with the reason.
            async def placed_pending() -> dict[str, dict[str, Any]] | None:
                comps = await all_in(http, "pending")
                return comps if comps and all(c["cluster"] for c in comps.values()) else None

            comps = await until(placed_pending, 30, message="both components placed, pending in Karmada")
            assert {c["reason"] for c in comps.values()} == {"no ResourceBinding yet"}, comps
            pps = await policies(kube_client, ns)
            by_comp = {p["metadata"]["labels"][mf.LABEL_COMPONENT]: p for p in pps}
            assert len(pps) == 2 and set(by_comp) == {"aggregator", "sensor-reader"}, [p["metadata"]["name"] for p in pps]
            for comp, pp in by_comp.items():
                # ONE cluster, the continuum's choice (env-monitor allows only edge-1), not every member
                assert pp["spec"]["placement"]["clusterAffinity"]["clusterNames"] == [comps[comp]["cluster"]]
                assert comps[comp]["cluster"] == rt.continuum.assignments[APP][comp] == "edge-1"
            assert not await policies(kube_client, ns, kk.OP_PLURAL)   # no cluster override configured
            assert rt.clusters["edge-1"].instances == {}               # cluster agents were not asked to deploy

            async with StandInScheduler(kube_client, ns):
                t1 = time.monotonic()
                comps = await until(lambda: all_in(http, "running"), 30, message=f"{APP} running via Karmada")
                t_running, t_bound = time.monotonic() - t0, time.monotonic() - t1
                for comp, st in comps.items():
                    assert st["cluster"] == "edge-1" and st["reason"] is None, (comp, st)
                    assert await binding_clusters(kube_client, ns, comp) == ["edge-1"]

                # the app is an MLSysOpsApp CR in the Karmada API server, its status from the bindings
                async def app_cr_running() -> dict[str, Any] | None:
                    try:
                        cr = await k.CustomObjectsApi(kube_client).get_namespaced_custom_object(
                            "mlsysops.eu", "v1", ns, "mlsysopsapps", APP)
                    except k.ApiException:
                        return None
                    return cr if (cr.get("status") or {}).get("phase") == "Running" else None

                cr = await until(app_cr_running, 20, message="MLSysOpsApp CR Running in Karmada")
                assert {c: v["cluster"] for c, v in cr["status"]["components"].items()} == {
                    "aggregator": "edge-1", "sensor-reader": "edge-1"}

                # A restarted continuum adopts the placements found in Karmada: no second placement.
                t2 = time.monotonic()
                cont = await rt.restart_continuum()
                comps = await until(lambda: all_in(http, "running"), 30, message="running after the restart")
                t_restart = time.monotonic() - t2
                assert cont.assignments == {APP: {"aggregator": "edge-1", "sensor-reader": "edge-1"}}
                assert [e for e in cont.decision_log.query(stage="event", limit=200) if "adopted" in e.reason]
                assert not cont.decision_log.query(app=APP, stage="execute", limit=10)
                assert len(await policies(kube_client, ns)) == 2

                t3 = time.monotonic()
                r = await http.delete(f"{V1}/apps/{APP}")
                assert r.status_code == 202, r.text

                async def nothing_left() -> bool:
                    return not await leftovers(kube_client, ns)

                try:
                    await until(nothing_left, 30, message="no template, policy or binding left")
                except AssertionError:
                    raise AssertionError(f"left: {await leftovers(kube_client, ns)}") from None
                t_deleted = time.monotonic() - t3
            assert cont.assignments == {}
        print(f"\nE2E karmada timings: slice up {t_formed:.2f}s, submit->running {t_running:.2f}s "
              f"(binding->running {t_bound:.2f}s), restart->running {t_restart:.2f}s, "
              f"delete->no objects {t_deleted:.2f}s")
    finally:
        if server is not None:
            await server.stop()
        await rt.stop()
        try:
            await k.CoreV1Api(kube_client).delete_namespace(ns)
        except k.ApiException:
            pass


@ASYNC
async def test_unreachable_karmada_keeps_the_status_table_and_records_one_event(tmp_path):
    """A Karmada API server that refuses connections: the monitor tick keeps every row and logs once."""
    from mlsysops.agents.managed_agent import AgentSettings
    from mlsysops.substrates.kubernetes.client import connect

    spec = load_slice(DEMO)
    kubeconfig = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:9", "unused")   # discard port: refused
    api = await connect(str(kubeconfig), None)
    cont = ContinuumAgent("continuum-x@localhost", "pw", description=spec.continuum, cluster_jids={},
                          inventory=spec.inventory, settings=AgentSettings())
    try:
        cont.use_dispatch(KarmadaPlacementMechanism(api, cont.apps.get, namespace="ns", assignments=cont.assignments,
                                                    save=cont.save_assignments))
        cont.submit_app(load_file(APP_FILE)[0])
        before = cont.app_status(APP)
        for _ in range(2):    # each tick is a full retry round of the client (about 1.8 s)
            await cont.monitor()
        assert cont.app_status(APP) == before
        events = [e for e in cont.decision_log.query(stage="event", limit=50) if "unreachable" in e.reason]
        assert len(events) == 1, [e.reason for e in events]
    finally:
        cont.store.close()
        cont.decision_log.close()
        await api.close()


@pytest.mark.parametrize(("placed", "assigned", "want"), [
    (None, None, None),
    (None, "edge-1", ("pending", "edge-1")),
    ({"cluster": "edge-1", "status": "pending", "reason": "no ResourceBinding yet"}, "edge-1", ("pending", "edge-1")),
    ({"cluster": "edge-1", "status": "failed", "scheduled": False, "reason": "not scheduled: NoClusterFit"},
     "edge-1", ("pending", "edge-1")),
    ({"cluster": "edge-1", "status": "deploying", "reason": "scheduled"}, "edge-1", ("deploying", "edge-1")),
    ({"cluster": "edge-1", "status": "misplaced", "reason": "scheduled on cloud-1"}, "edge-1", ("deploying", "edge-1")),
    ({"cluster": "edge-1", "status": "running", "reason": "applied and healthy"}, "edge-1", ("running", "edge-1")),
    ({"cluster": "edge-1", "status": "failed", "scheduled": True, "reason": "edge-1: quota"}, "edge-1",
     ("failed", "edge-1")),
    ({"cluster": None, "status": "failed", "reason": "403", "last_error": "403"}, None, ("failed", None)),
])
def test_dispatch_status_mapping(placed, assigned, want):
    row = dispatch_status(placed, assigned)
    assert (row and (row["status"], row["cluster"])) == want or row is want is None
    if row and row["status"] == "running":
        assert row["reason"] is None
    if row and row["status"] in ("pending", "failed"):
        assert row["reason"]


def test_agent_continuum_on_an_unreachable_karmada_says_so(tmp_path):
    """`mlsysops agent continuum` with substrate karmada: a Karmada API server that cannot be reached is a
    clear one-line error and exit code 1, before anything starts."""
    import os
    import subprocess
    import sys

    import yaml

    kubeconfig = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:9", "unused")   # discard port: refused
    raw = yaml.safe_load(DEMO.read_text())
    raw["substrate"] = {"type": "karmada", "kubeconfig": str(kubeconfig)}
    raw["continuum"] = str(DEMO.parent / raw["continuum"])
    raw["clusters"] = [str(DEMO.parent / c) for c in raw["clusters"]]
    raw["nodes"] = [str(DEMO.parent / n) for n in raw["nodes"]]
    raw["state_dir"] = str(tmp_path / "state")
    slice_file = tmp_path / "slice.yaml"
    slice_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MLSYSOPS_XMPP_PASSWORD": AGENT_PASSWORD}   # agents have no default password
    out = subprocess.run([sys.executable, "-m", "mlsysops.cli.main", "agent", "continuum", "-c", str(slice_file)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Karmada API server:" in out.stderr and "Traceback" not in out.stderr, out.stderr
