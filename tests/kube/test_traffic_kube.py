"""Traffic across clusters on real control planes: the demo slice with two API servers (cloud-1 on the
package's kube-apiserver, edge-1 on a second one started here), simulated kubelets on each, the agents
over prosody. A component called from both clusters moves from cloud-1 to edge-1: the caller cluster's
selector-less Service + EndpointSlice follow it (pointing at the serving cluster's NodePort on its node
addresses), the cluster it moved into drops its route for its own Service, and deleting the app leaves
nothing in either namespace."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.aio import client as k
from kubernetes.aio import config as kcfg

from mlsysops.agents.descriptions import load_obj
from mlsysops.agents.slice_config import ClusterAPIServer, SubstrateConfig, load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.sim.kubelet import node_address
from mlsysops.substrates.kubernetes import manifests as mf
from mlsysops.substrates.kubernetes import traffic as tr
from tests.kube.harness import KubeStack, until
from tests.support import formed

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
APP = """
MLSysOpsApp:
  name: {name}
  components:
    - metadata: {{name: api}}
      node_placement: {{node: {node}}}
      containers:
        - image: registry.example.org/api:1
          platform_requirements: {{cpu: {{requests: 200m}}}}
          ports: [{{container_port: 8080, name: http}}]
    - metadata: {{name: reader}}
      node_placement: {{node: edge-rpi-1}}
      containers:
        - image: registry.example.org/reader:1
          platform_requirements: {{cpu: {{requests: 100m}}}}
          env: [{{name: API, value: "api:8080"}}]
    - metadata: {{name: board}}
      node_placement: {{node: cloud-vm-2}}
      containers:
        - image: registry.example.org/board:1
          platform_requirements: {{cpu: {{requests: 100m}}}}
  component_interactions:
    - {{component_name1: reader, type: egress, component_name2: api}}
    - {{component_name1: board, type: egress, component_name2: api}}
"""


def app_doc(name: str, node: str) -> Any:
    return load_obj(yaml.safe_load(textwrap.dedent(APP.format(name=name, node=node))))


def raw(api: Any, obj: Any) -> Any:
    return api.sanitize_for_serialization(obj)


async def route_slice(api: Any, ns: str, app: str) -> dict[str, Any] | None:
    sel = f"{mf.LABEL_APP}={mf.label_value(app)},{tr.LABEL_ROLE}=route"
    items = (await k.CustomObjectsApi(api).list_namespaced_custom_object(
        tr.DISCOVERY_GROUP, "v1beta1", ns, tr.SLICE_PLURAL, label_selector=sel))["items"]
    return items[0] if len(items) == 1 else None


async def service(api: Any, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return raw(api, await k.CoreV1Api(api).read_namespaced_service(name, ns))
    except k.ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def node_port(api: Any, ns: str) -> int | None:
    svc = await service(api, ns, tr.export_name("api"))
    return svc["spec"]["ports"][0].get("nodePort") if svc else None


async def leftovers(api: Any, ns: str, app: str) -> list[str]:
    sel = f"{mf.LABEL_APP}={mf.label_value(app)}"
    core = k.CoreV1Api(api)
    left = [f"Service/{s['metadata']['name']}"
            for s in raw(api, await core.list_namespaced_service(ns, label_selector=sel))["items"]]
    left += [f"Deployment/{d['metadata']['name']}" for d in
             raw(api, await k.AppsV1Api(api).list_namespaced_deployment(ns, label_selector=sel))["items"]]
    left += [f"EndpointSlice/{o['metadata']['name']}" for o in (await k.CustomObjectsApi(api).list_namespaced_custom_object(
        tr.DISCOVERY_GROUP, "v1beta1", ns, tr.SLICE_PLURAL, label_selector=sel))["items"]]
    return left


@pytest.fixture(scope="module")
def edge_stack(tmp_path_factory):
    stack = KubeStack.start(tmp_path_factory.mktemp("kube-edge"))
    try:
        yield stack
    finally:
        stack.stop()


async def test_callers_endpoints_follow_a_component_across_two_api_servers(prosody, kube_stack, kube_client,
                                                                         edge_stack):
    ns = f"tr-{uuid.uuid4().hex[:6]}"
    spec = load_slice(DEMO)
    spec.config = spec.config.model_copy(update={"substrate": SubstrateConfig(
        type="kubernetes", kubeconfig=kube_stack.kubeconfig, namespace=ns, simulate_nodes=True,
        clusters={"edge-1": ClusterAPIServer(kubeconfig=edge_stack.kubeconfig)})})
    rt = SliceRuntime(spec, xmpp_port=prosody.port, force_xmpp=True, jid_suffix="-" + uuid.uuid4().hex[:6],
                      overrides={k_: dict(v) for k_, v in FAST.items()})
    edge = await kcfg.new_client_from_config(config_file=str(edge_stack.kubeconfig))
    cloud = kube_client
    name = "tr-" + uuid.uuid4().hex[:4]
    try:
        await rt.start()
        await until(lambda: formed(rt), 30, message="hierarchy formed")
        rt.continuum.submit_app(app_doc(name, "cloud-vm-1"))

        # api served by cloud-1: edge-1's callers reach it through cloud-1's NodePort on cloud-vm-1
        port = await until(lambda: node_port(cloud, ns), 60, "cloud-1 did not expose api")
        eps = await until(lambda: route_slice(edge, ns, name), 60, "no EndpointSlice in edge-1")
        assert eps["endpoints"][0]["addresses"] == [node_address("cloud-vm-1")]   # the hosting node first
        assert eps["ports"] == [{"name": "http", "port": port, "protocol": "TCP"}]
        assert eps["metadata"]["labels"][tr.LABEL_SERVICE_NAME] == "api"
        assert eps["metadata"]["labels"][tr.LABEL_SLICE_MANAGER] == tr.SLICE_MANAGER
        svc = await service(edge, ns, "api")
        assert "selector" not in svc["spec"] and svc["spec"]["ports"][0]["port"] == 8080   # the callers' port
        assert await route_slice(cloud, ns, name) is None                                 # board: local Service

        # api moves to edge-1: edge-1's route goes (its own Service selects the pod), cloud-1 gets one
        rt.continuum.submit_app(app_doc(name, "edge-server-1"))
        moved = await until(lambda: route_slice(cloud, ns, name), 90, "no EndpointSlice in cloud-1 after the move")
        edge_port = await node_port(edge, ns)
        assert moved["endpoints"][0]["addresses"] == [node_address("edge-server-1")]
        assert moved["ports"][0]["port"] == edge_port
        await until(lambda: _no_route(edge, ns, name), 60, "edge-1 kept its route to cloud-1")
        local = await service(edge, ns, "api")
        assert local["spec"]["selector"] == mf.selector_labels(name, "api")
        assert await node_port(cloud, ns) is None                      # cloud-1 no longer exposes it
        events = [e.reason for e in rt.continuum.decision_log.query(app=name, stage="event", limit=300)]
        assert any(f"traffic from cloud-1 to {name}/api now goes to edge-1" in r for r in events)

        assert await rt.continuum.remove_app(name)
        for api, cluster in ((cloud, "cloud-1"), (edge, "edge-1")):
            left: list[str] = []
            try:
                await until(lambda api=api, left=left: _empty(api, ns, name, left), 90, "objects left after delete")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: in {cluster}: {left}") from None
    finally:
        for kubelet in [rt.kubelet, *rt.member_kubelets.values()]:
            if kubelet is not None:
                await kubelet.stop(deregister=True)
        await rt.stop()
        for api in (cloud, edge):
            try:
                await k.CoreV1Api(api).delete_namespace(ns)
            except k.ApiException:
                pass
        await edge.close()


async def _no_route(api: Any, ns: str, app: str) -> bool:
    return await route_slice(api, ns, app) is None


async def _empty(api: Any, ns: str, app: str, left: list[str]) -> bool:
    left[:] = await leftovers(api, ns, app)
    return not left
