"""End to end on a real control plane: the demo slice with substrate kubernetes (simulate_nodes) run by a
SliceRuntime over prosody, the northbound REST API in front. An app submitted through the API runs as
Deployments pinned to nodes; a crashed node's component comes back as a Running pod on another Node; a
removed app leaves nothing labelled in the namespace."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes.aio import client as k

from mlsysops.agents.slice_config import SubstrateConfig, load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role
from mlsysops.substrates.kubernetes import manifests as mf
from tests.kube.harness import until
from tests.support import AGENT_PASSWORD, app_components, formed

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
APP_FILE = ROOT / "examples" / "apps" / "env-monitor.yaml"
APP = "env-monitor"
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
TOKEN = "admin-" + uuid.uuid4().hex
V1 = "/api/v1"


def kube_slice(kubeconfig: Path, namespace: str) -> Any:
    spec = load_slice(DEMO)
    sub = SubstrateConfig(type="kubernetes", kubeconfig=kubeconfig, namespace=namespace, simulate_nodes=True)
    spec.config = spec.config.model_copy(update={"substrate": sub})
    return spec


async def components(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return await app_components(http, APP)


async def all_running(http: httpx.AsyncClient) -> dict[str, dict[str, Any]] | None:
    comps = await components(http)
    return comps if comps and all(c["status"] == "running" for c in comps.values()) else None


def raw(api: Any, obj: Any) -> Any:
    return api.sanitize_for_serialization(obj)


async def deployments(api: Any, ns: str) -> list[dict[str, Any]]:
    sel = f"{mf.LABEL_APP}={mf.label_value(APP)}"
    return raw(api, await k.AppsV1Api(api).list_namespaced_deployment(ns, label_selector=sel))["items"]


async def running_pods(api: Any, ns: str, component: str) -> list[dict[str, Any]]:
    sel = f"{mf.LABEL_APP}={mf.label_value(APP)},{mf.LABEL_COMPONENT}={mf.label_value(component)}"
    pods = raw(api, await k.CoreV1Api(api).list_namespaced_pod(ns, label_selector=sel))["items"]
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def pinned_node(dep: dict[str, Any]) -> list[str]:
    """The hostnames a Deployment's required node affinity allows."""
    terms = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [v for t in terms for e in t.get("matchExpressions", []) if e["key"] == "kubernetes.io/hostname"
            for v in e["values"]]


async def labelled_leftovers(api: Any, ns: str) -> list[str]:
    sel = f"{mf.MANAGED_BY}=mlsysops"
    core, apps = k.CoreV1Api(api), k.AppsV1Api(api)
    left = []
    for kind, fn in (("Deployment", apps.list_namespaced_deployment), ("ReplicaSet", apps.list_namespaced_replica_set),
                     ("Pod", core.list_namespaced_pod), ("Service", core.list_namespaced_service),
                     ("ConfigMap", core.list_namespaced_config_map), ("Secret", core.list_namespaced_secret)):
        left += [f"{kind}/{o['metadata']['name']}" for o in raw(api, await fn(ns, label_selector=sel))["items"]]
    crs = await k.CustomObjectsApi(api).list_namespaced_custom_object("mlsysops.eu", "v1", ns, "mlsysopsapps")
    left += [f"MLSysOpsApp/{o['metadata']['name']}" for o in crs["items"]]
    return left


async def app_cr_nodes(api: Any, ns: str, node: str) -> bool:
    cr = await app_cr(api, ns, APP)
    return bool(cr) and cr["status"]["components"]["sensor-reader"].get("nodes") == [node]


async def app_cr(api: Any, ns: str, name: str, plural: str = "mlsysopsapps") -> dict[str, Any] | None:
    try:
        return await k.CustomObjectsApi(api).get_namespaced_custom_object("mlsysops.eu", "v1", ns, plural, name)
    except k.ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def teardown(rt: SliceRuntime, api: Any, ns: str, server: ApiServer | None = None) -> None:
    if server is not None:
        await server.stop()
    if rt.kubelet is not None:
        await rt.kubelet.stop(deregister=True)   # Nodes are cluster-scoped: leave none to other tests
    await rt.stop()
    try:
        await k.CoreV1Api(api).delete_namespace(ns)
    except k.ApiException:
        pass


async def test_demo_slice_on_kubernetes_submit_crash_relocate_delete(prosody, kube_stack, kube_client):
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    rt = SliceRuntime(kube_slice(kube_stack.kubeconfig, ns), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides={k_: dict(v) for k_, v in FAST.items()})
    server = None
    t_start = time.monotonic()
    try:
        await rt.start()
        server = ApiServer(create_app(ApiBackend(runtime=rt), {TOKEN: Role.admin}), port=0)
        url = await server.start()
        await until(lambda: formed(rt), 20, message="hierarchy formed")
        ready = raw(kube_client, await k.CoreV1Api(kube_client).read_namespace(ns))
        assert ready["status"]["phase"] == "Active"   # the runtime created the workload namespace
        t_formed = time.monotonic() - t_start
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15) as http:
            t0 = time.monotonic()
            r = await http.post(f"{V1}/apps", content=APP_FILE.read_text(), headers={"Content-Type": "application/yaml"})
            assert r.status_code == 201, r.text
            comps = await until(lambda: all_running(http), 60, message=f"{APP} running via the API")
            t_running = time.monotonic() - t0
            assert set(comps) == {"aggregator", "sensor-reader"}

            # One Deployment per component, pinned by required node affinity to the node the API reports.
            deps = await deployments(kube_client, ns)
            by_comp = {d["metadata"]["labels"][mf.LABEL_COMPONENT]: d for d in deps}
            assert len(deps) == 2 and set(by_comp) == set(comps), [d["metadata"]["name"] for d in deps]
            for comp, dep in by_comp.items():
                assert pinned_node(dep) == comps[comp]["nodes"], (comp, pinned_node(dep), comps[comp])
                pods = await running_pods(kube_client, ns, comp)
                assert [p["spec"]["nodeName"] for p in pods] == comps[comp]["nodes"]
            # no node agent reports pod-named instances: the table holds the mechanism's ids only
            table = rt.clusters["edge-1"].instances
            assert all("/" not in iid for iid in table), sorted(table)
            # The app is an MLSysOpsApp custom resource whose status (subresource) says where it runs.
            async def cr_running() -> dict[str, Any] | None:
                cr = await app_cr(kube_client, ns, APP)
                return cr if cr and (cr.get("status") or {}).get("phase") == "Running" else None

            cr = await until(cr_running, 20, message="MLSysOpsApp CR with phase Running")
            assert cr["spec"]["components"][0]["metadata"]["name"] in comps
            assert cr["status"]["components"]["sensor-reader"]["nodes"] == comps["sensor-reader"]["nodes"]
            # The cluster agent's policies see the Kubernetes Node (allocatable, conditions) beside the model.
            system = rt.clusters["edge-1"].system_description()
            kube_view = system["nodes"]["edge-rpi-1"]["kubernetes"]
            assert kube_view["ready"] is True and kube_view["in_kubernetes"] is True

            # The runtime applied the slice's descriptions as CRs; the cluster agent writes their status.
            victim = comps["sensor-reader"]["nodes"][0]

            async def node_status(name: str, phase: str) -> dict[str, Any] | None:
                cr = await app_cr(kube_client, ns, name, "mlsysopsnodes")
                st = (cr or {}).get("status") or {}
                return st if st.get("phase") == phase else None

            st = await until(lambda: node_status(victim, "Ready"), 20, message=f"MLSysOpsNode {victim} Ready")
            assert "env-monitor/sensor-reader" in st["components"] and st["kubernetes"]["ready"] is True
            cluster_cr = await app_cr(kube_client, ns, "edge-1", "mlsysopsclusters")
            assert cluster_cr["spec"]["cluster_id"] == "edge-1" and cluster_cr["status"]["phase"] == "Ready"

            # Crash the node running sensor-reader: it must run on another Node, seen by Kubernetes and the API.
            t1 = time.monotonic()
            rt.fail_node(victim)

            async def elsewhere() -> dict[str, Any] | None:
                now = await components(http)
                sr = now.get("sensor-reader") or {}
                if sr.get("status") != "running" or not sr.get("nodes") or victim in sr["nodes"]:
                    return None
                pods = await running_pods(kube_client, ns, "sensor-reader")
                return now if [p["spec"]["nodeName"] for p in pods] == sr["nodes"] else None

            after = await until(elsewhere, 60, message="sensor-reader running on another node")
            t_relocated = time.monotonic() - t1
            new_node = after["sensor-reader"]["nodes"][0]
            assert new_node != victim
            node = raw(kube_client, await k.CoreV1Api(kube_client).read_node(victim))
            ready_cond = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            assert ready_cond["status"] == "False"   # the crashed sim node is NotReady in Kubernetes
            await until(lambda: rt.clusters["edge-1"].system_description()["nodes"][victim]["kubernetes"]["ready"]
                        is False, 20, message="the inventory sees the crashed node NotReady")
            cr = await until(cr_running, 20, message="CR back to Running after the relocation")
            st = await until(lambda: node_status(victim, "NotReady"), 20, message=f"MLSysOpsNode {victim} NotReady")
            ready_cr = next(c for c in st["conditions"] if c["type"] == "Ready")
            assert ready_cr["status"] == "False" and "env-monitor/sensor-reader" not in st["components"]
            cluster_st = (await app_cr(kube_client, ns, "edge-1", "mlsysopsclusters"))["status"]
            assert cluster_st["phase"] == "Degraded" and cluster_st["readyNodes"] == cluster_st["nodes"] - 1
            await until(lambda: app_cr_nodes(kube_client, ns, new_node), 20, message="CR status shows the new node")

            async def one_deployment_each() -> list[dict[str, Any]] | None:
                deps = await deployments(kube_client, ns)
                comps_ = [d["metadata"]["labels"][mf.LABEL_COMPONENT] for d in deps]
                return deps if sorted(comps_) == ["aggregator", "sensor-reader"] else None

            deps = await until(one_deployment_each, 20, message="exactly one Deployment per component")
            sr_dep = next(d for d in deps if d["metadata"]["labels"][mf.LABEL_COMPONENT] == "sensor-reader")
            assert pinned_node(sr_dep) == [new_node]

            # Delete through the API: nothing labelled may be left in the namespace.
            t2 = time.monotonic()
            r = await http.delete(f"{V1}/apps/{APP}")
            assert r.status_code == 202, r.text

            async def nothing_left() -> bool:
                return not await labelled_leftovers(kube_client, ns)

            try:
                await until(nothing_left, 30, message="no labelled object left")
            except AssertionError:
                raise AssertionError(f"left: {await labelled_leftovers(kube_client, ns)}") from None
            t_deleted = time.monotonic() - t2
        print(f"\nE2E kube timings: slice up {t_formed:.2f}s, submit->running {t_running:.2f}s, "
              f"crash {victim}->running on {new_node} {t_relocated:.2f}s, delete->no objects {t_deleted:.2f}s")
    finally:
        await teardown(rt, kube_client, ns, server)


QOS_APP = """
MLSysOpsApp:
  name: latency
  cluster_placement: {cluster_id: [edge-1]}
  components:
    - metadata: {name: worker}
      node_placement: {continuum_layer: [edge, edge_infrastructure]}
      qos_metrics:
        - {application_metric_id: response_time_ms, target: 60, relation: lower_or_equal}
      containers:
        - image: registry.example.org/worker:1
          platform_requirements: {cpu: {requests: 200m}, memory: {requests: 64Mi}}
"""


async def test_qos_violation_moves_the_deployment_to_another_node(prosody, kube_stack, kube_client):
    """The QoS path on Kubernetes: node agents label samples with the pod, the cluster matches them to its
    instance by node + component, the relocation policy moves the component (make-before-break), and the
    Deployment ends pinned to the new node with its pod running there."""
    ns = f"qos-{uuid.uuid4().hex[:6]}"
    overrides = {k_: dict(v) for k_, v in FAST.items()}
    overrides["all"]["heartbeat"] = 1.0   # a loaded machine must not turn this into a node-loss relocation
    overrides["node"] = {"disabled_policies": ["node_overload"]}   # the cluster's QoS path, not the node's
    rt = SliceRuntime(kube_slice(kube_stack.kubeconfig, ns), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides=overrides)
    try:
        await rt.start()
        await until(lambda: formed(rt), 20, message="hierarchy formed")
        rt.continuum.submit_app(yaml.safe_load(QOS_APP), source="test")

        def worker() -> dict[str, Any]:
            return rt.continuum.app_status("latency").get("worker") or {}

        await until(lambda: worker().get("status") == "running", 60, message="latency/worker running")
        hot = worker()["nodes"][0]
        rt.sim.load_spike(hot, cpu_cores=rt.sim.node(hot).cpu_cores * 2, duration_s=120)
        await until(lambda: worker().get("status") == "running" and worker()["nodes"] and hot not in worker()["nodes"],
                    60, message="QoS violation relocated the worker")
        target = worker()["nodes"][0]
        plans = rt.clusters["edge-1"].decisions(app="latency", policy="relocation", stage="plan")
        assert any("qos violated" in str(p.get("explanation")) for p in plans), [p["reason"] for p in plans]

        async def moved() -> list[dict[str, Any]] | None:
            sel = f"{mf.LABEL_APP}={mf.label_value('latency')}"
            deps = raw(kube_client, await k.AppsV1Api(kube_client).list_namespaced_deployment(ns, label_selector=sel))
            pods = [p for p in raw(kube_client, await k.CoreV1Api(kube_client).list_namespaced_pod(
                ns, label_selector=sel))["items"] if p["status"].get("phase") == "Running"]
            ok = ([pinned_node(d) for d in deps["items"]] == [[target]]
                  and [p["spec"]["nodeName"] for p in pods] == [target])
            return deps["items"] if ok else None

        await until(moved, 30, message=f"one Deployment, pinned to {target}, its pod running there")
    finally:
        await teardown(rt, kube_client, ns)


CLI_APP = """
MLSysOpsApp:
  name: solo
  components:
    - metadata: {name: worker}
      node_placement: {continuum_layer: [edge]}
      containers:
        - image: registry.example.org/worker:1
          platform_requirements: {cpu: {requests: 200m}, memory: {requests: 64Mi}}
"""


async def test_cli_cluster_agent_places_on_the_kubeconfig_cluster(prosody, kube_stack, kube_client, sim_kubelets,
                                                                   tmp_path):
    """`mlsysops agent cluster` with substrate kubernetes needs no --sim: it creates the namespace and runs
    the app as Deployments on the kubeconfig's cluster (Nodes from sim kubelets in this process)."""
    import asyncio
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import textwrap

    from mlsysops.mechanisms.sim_placement import sim_node_spec

    ns = f"cli-{uuid.uuid4().hex[:6]}"
    nodes_dir = ROOT / "examples" / "slices" / "demo" / "nodes"
    slice_file = tmp_path / "slice.yaml"
    slice_file.write_text(textwrap.dedent(f"""
        slice: kubecli
        xmpp: {{server: external, host: localhost, port: {prosody.port}, ca_file: {prosody.ca_file}}}
        substrate: {{type: kubernetes, kubeconfig: {kube_stack.kubeconfig}, namespace: {ns}}}
        clusters:
          - {{MLSysOpsCluster: {{cluster_id: edge-1, nodes: []}}}}
        nodes: ["{nodes_dir}/edge-rpi-1.yaml", "{nodes_dir}/edge-rpi-2.yaml"]
        intervals: {{heartbeat: 0.5s, analyze: 0.5s, monitor: 0.2s, status_report: 0.5s}}
        state_dir: {tmp_path / "state"}
    """))
    (tmp_path / "app.yaml").write_text(CLI_APP)
    spec = load_slice(slice_file)
    await sim_kubelets([sim_node_spec(n) for n in spec.nodes.values()])
    exe = shutil.which("mlsysops", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "mlsysops.cli"]
    # every agent process needs its password (there is no default); prosody here lets each register once
    env = {**os.environ, "HOME": str(tmp_path), "MLSYSOPS_XMPP_PASSWORD": AGENT_PASSWORD}
    procs: list[subprocess.Popen] = []

    async def start(*args: str, log: str) -> subprocess.Popen:
        # Popen, not asyncio subprocesses: the test loop's policy (uvloop) has no child watcher
        with open(tmp_path / f"{log}.err", "w") as err:
            proc = subprocess.Popen([*cmd, *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        procs.append(proc)
        return proc

    async def line_with(proc: subprocess.Popen, marker: str) -> str:
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            assert line, f"process ended before printing {marker!r}"
            if marker in line:
                return line

    try:
        cont = await start("agent", "continuum", "-c", str(slice_file), "--apply", str(tmp_path / "app.yaml"),
                           "--api-port", "0", log="continuum")
        url = (await line_with(cont, "API: ")).split("API: ", 1)[1].split()[0]
        cluster = await start("agent", "cluster", "-c", str(slice_file), "--id", "edge-1", log="cluster")
        assert f"Kubernetes namespace {ns}" in await line_with(cluster, "cluster agent")
        for node in spec.nodes:
            await start("agent", "node", "-c", str(slice_file), "--id", node, "--host", log=node)
        token = (tmp_path / "state" / "token").read_text().strip()
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
            async def worker() -> dict[str, Any] | None:
                r = await http.get(f"{V1}/apps/solo")
                w = r.json()["components"]["worker"] if r.status_code == 200 else {}
                return w if w.get("status") == "running" else None

            w = await until(worker, 60, message="solo/worker running through the CLI cluster agent")
        sel = f"{mf.LABEL_APP}=solo"
        deps = raw(kube_client, await k.AppsV1Api(kube_client).list_namespaced_deployment(ns, label_selector=sel))
        assert [pinned_node(d) for d in deps["items"]] == [w["nodes"]]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = [await asyncio.to_thread(proc.wait, 30) for proc in procs]
        try:
            await k.CoreV1Api(kube_client).delete_namespace(ns)
        except k.ApiException:
            pass
    assert codes == [0] * len(procs)


PROBE = """
MLSysOpsApp:
  name: probe
  cluster_placement: {cluster_id: [edge-1]}
  components:
    - metadata: {name: worker}
      node_placement: {continuum_layer: [edge, edge_infrastructure]}
      containers:
        - image: registry.example.org/worker:1
          platform_requirements: {cpu: {requests: 200m}, memory: {requests: 64Mi}}
"""


async def test_api_server_outage_keeps_the_table_and_reconciles_after(prosody, kube_stack, kube_client, tmp_path):
    """The slice talks to the API server through a proxy that goes down: the cluster agent keeps its table
    (the app stays running in the API), records the outage once, and an app submitted meanwhile is deployed
    once the server is back; nothing is deployed twice."""
    import asyncio
    import contextlib

    from tests.kube.harness import write_kubeconfig
    from tests.kube.test_kube_faults import FaultProxy

    class ReleasingProxy(FaultProxy):
        """Ends forwarded watch streams at stop() (else shutdown waits for the upstream watch timeout)."""

        async def forward(self, req: Any) -> Any:
            streaming = asyncio.ensure_future(super().forward(req))
            released = asyncio.ensure_future(self.released.wait())
            await asyncio.wait({streaming, released}, return_when=asyncio.FIRST_COMPLETED)
            released.cancel()
            if streaming.done():
                return streaming.result()
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await streaming
            raise ConnectionResetError("proxy stopped")

    proxy = ReleasingProxy(kube_stack.server, kube_stack.token)
    await proxy.start()
    ns = f"e2e-out-{uuid.uuid4().hex[:6]}"
    rt = SliceRuntime(kube_slice(write_kubeconfig(tmp_path / "kc", proxy.url, "unused"), ns),
                      xmpp_port=prosody.port, force_xmpp=True, jid_suffix="-" + uuid.uuid4().hex[:6],
                      overrides={k_: dict(v) for k_, v in FAST.items()})
    server = None
    try:
        await rt.start()
        server = ApiServer(create_app(ApiBackend(runtime=rt), {TOKEN: Role.admin}), port=0)
        url = await server.start()
        await until(lambda: formed(rt), 20, message="hierarchy formed")
        edge = rt.clusters["edge-1"]
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15) as http:
            r = await http.post(f"{V1}/apps", content=APP_FILE.read_text(), headers={"Content-Type": "application/yaml"})
            assert r.status_code == 201, r.text
            await until(lambda: all_running(http), 60, message=f"{APP} running")
            table = {iid: row["status"] for iid, row in edge.instances.items()}

            proxy.down = True
            t0 = time.monotonic()
            await until(lambda: edge.substrate_error, 30, message="the cluster agent notices the outage")
            r = await http.post(f"{V1}/apps", content=PROBE, headers={"Content-Type": "application/yaml"})
            assert r.status_code == 201, r.text
            await until(lambda: edge.decision_log.query(app="probe", stage="execute", limit=5), 30,
                        message="a placement of probe attempted during the outage")
            assert {iid: row["status"] for iid, row in edge.instances.items() if iid in table} == table
            assert await all_running(http), "the app must stay running in the API during the outage"
            outage = [e for e in edge.decision_log.query(stage="event", limit=500)
                      if "substrate unreachable" in e.reason]
            assert len(outage) == 1, [e.reason for e in outage]

            proxy.down = False
            t1 = time.monotonic()

            async def probe_running() -> bool:
                r = await http.get(f"{V1}/apps/probe")
                comps = r.json()["components"] if r.status_code == 200 else {}
                return bool(comps) and all(c["status"] == "running" for c in comps.values())

            await until(probe_running, 60, message="probe deployed once the API server is back")
            t_back = time.monotonic() - t1
            assert edge.substrate_error is None
            assert await all_running(http)
        sel = f"{mf.MANAGED_BY}=mlsysops"
        deps = raw(kube_client, await k.AppsV1Api(kube_client).list_namespaced_deployment(ns, label_selector=sel))
        comps = sorted((d["metadata"]["labels"][mf.LABEL_APP], d["metadata"]["labels"][mf.LABEL_COMPONENT])
                       for d in deps["items"])
        assert comps == [("env-monitor", "aggregator"), ("env-monitor", "sensor-reader"), ("probe", "worker")]
        print(f"\nE2E kube outage: down {t1 - t0:.2f}s, back -> probe running {t_back:.2f}s")
    finally:
        proxy.down = False
        await teardown(rt, kube_client, ns, server)
        await proxy.stop()
