"""Traffic across clusters on Kubernetes (the cluster agent's `traffic_routes` mechanism).

Command (the continuum's full set for one app on this cluster, see `continuum/traffic_routes.py`)::

    {"app": "shop", "expose": ["api"],
     "routes": {"db": {"cluster": "cloud-1", "endpoints": [{"address": "10.0.0.7", "port": 31234, "name": "pg"}]}}}

* `expose`: an export Service (NodePort) per component (`substrates/kubernetes/traffic.py`); the reply's
  `exposed` lists its endpoints: the Ready nodes' addresses (nodes running the component first) at the
  node ports, or the load balancer's ingress when the cluster gave it one. Exports of the app that are
  no longer listed are deleted.
* `routes`: per component, a selector-less Service named after it plus an EndpointSlice we manage,
  rewritten in place (never deleted and re-created, so a caller never sees it empty); `assigned` (added
  by the cluster agent: the app's components assigned here) says whether a Service of that name with a
  selector is arriving (kept, the slice bridges) or leaving (taken over); routes no longer
  listed are deleted, the Service only while it is still a route (the placement mechanism may have
  taken it over with a selector because the component now runs here).

Mechanisms decide nothing: which cluster serves whom is the continuum's decision. API errors are reported
(`ok: False` with the reason); what was written before stays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes.aio import client as k

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.substrates.kubernetes import manifests as mf
from mlsysops.substrates.kubernetes import traffic as tr
from mlsysops.substrates.kubernetes.client import KubeError, RetryPolicy, apply, call, delete

log = logging.getLogger(__name__)
MAX_ENDPOINTS = 8     # node addresses offered per exposed port: enough for failover, small on the wire


def _ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def _node_address(node: dict[str, Any]) -> str | None:
    addrs = {a.get("type"): a.get("address") for a in (node.get("status") or {}).get("addresses") or []}
    return addrs.get("ExternalIP") or addrs.get("InternalIP")


class KubeTrafficMechanism:
    name = "traffic_routes"

    def __init__(self, api: k.ApiClient, namespace: str, cluster_id: str, *,
                 policy: RetryPolicy | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.cluster_id = cluster_id
        self.policy = policy or RetryPolicy()
        self.core = k.CoreV1Api(api)
        self.custom = k.CustomObjectsApi(api)
        self.apps: Mapping[str, MLSysOpsApp] = {}
        self._slice_version: str | None = None

    def initialize(self, *, app_models: Mapping[str, MLSysOpsApp]) -> None:
        self.apps = app_models

    def _raw(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    async def slice_version(self) -> str:
        """discovery.k8s.io/v1 where served (1.21+), else v1beta1 (1.17-1.20)."""
        if self._slice_version is None:
            groups = self._raw(await call(k.ApisApi(self.api).get_api_versions, policy=self.policy))
            versions = next(([v["version"] for v in g.get("versions") or []] for g in groups.get("groups") or []
                             if g.get("name") == tr.DISCOVERY_GROUP), [])
            if not versions:
                raise KubeError(f"the API server serves no {tr.DISCOVERY_GROUP} (EndpointSlice) group")
            self._slice_version = "v1" if "v1" in versions else versions[0]
        return self._slice_version

    # -- contract -----------------------------------------------------------------------------------
    async def get_options(self) -> dict[str, Any]:
        return {"actions": ["expose", "route"], "expose_as": "NodePort", "namespace": self.namespace,
                "substrate": "kubernetes"}

    async def get_state(self) -> dict[str, Any]:
        """What is written on the server: exports and routes of every app of this cluster."""
        sel = f"{mf.MANAGED_BY}={mf.MANAGER},{mf.LABEL_CLUSTER}={mf.label_value(self.cluster_id)}"
        try:
            svcs = self._raw(await call(self.core.list_namespaced_service, self.namespace,
                                        label_selector=f"{sel},{tr.LABEL_ROLE}=export", policy=self.policy))
            version = await self.slice_version()
            slices = await call(self.custom.list_namespaced_custom_object, tr.DISCOVERY_GROUP, version,
                                self.namespace, tr.SLICE_PLURAL, label_selector=f"{sel},{tr.LABEL_ROLE}=route",
                                policy=self.policy)
        except KubeError as exc:
            return {"cluster": self.cluster_id, "stale": True, "error": str(exc)}
        exposed: dict[str, dict[str, Any]] = {}
        for svc in svcs["items"]:
            labels = svc["metadata"].get("labels") or {}
            ports = [{"name": p.get("name"), "port": p.get("nodePort")} for p in svc["spec"].get("ports") or []]
            exposed.setdefault(labels.get(mf.LABEL_APP, "?"), {})[labels.get(mf.LABEL_COMPONENT, "?")] = ports
        routes: dict[str, dict[str, Any]] = {}
        for obj in slices["items"]:
            meta = obj["metadata"]
            labels = meta.get("labels") or {}
            routes.setdefault(labels.get(mf.LABEL_APP, "?"), {})[labels.get(tr.LABEL_ROUTE_FOR, "?")] = {
                "cluster": (meta.get("annotations") or {}).get(tr.ANN_SERVING_CLUSTER),
                "endpoints": tr.slice_endpoints(obj)}
        return {"cluster": self.cluster_id, "exposed": exposed, "routes": routes}

    async def apply(self, command: Any) -> dict[str, Any]:
        if not isinstance(command, dict) or not isinstance(command.get("app"), str):
            return {"ok": False, "detail": "invalid command: expected {app, expose, routes}"}
        app = command["app"]
        expose = list(command.get("expose") or [])
        routes = dict(command.get("routes") or {})
        model = self.apps.get(app)
        try:
            exposed, not_exposed = await self._expose(app, model, expose)
            written, removed = await self._route(app, model, routes, set(command.get("assigned") or []))
        except KubeError as exc:
            return {"ok": False, "detail": f"traffic routes of {app} on {self.cluster_id}: {exc}"}
        return {"ok": True, "detail": {"exposed": exposed, "not_exposed": not_exposed, "routes": written,
                                       "removed": removed}}

    # -- serving side -------------------------------------------------------------------------------
    async def _expose(self, app: str, model: MLSysOpsApp | None, components: list[str]
                      ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        exposed: dict[str, list[dict[str, Any]]] = {}
        not_exposed: dict[str, str] = {}
        nodes = None
        for comp in components:
            if model is None or model.component(comp) is None:
                not_exposed[comp] = f"{app}/{comp} is not known on {self.cluster_id}"
                continue
            svc = tr.export_service(model, comp, cluster=self.cluster_id, namespace=self.namespace)
            if svc is None:
                not_exposed[comp] = "it declares no container port (ports are what other clusters can call)"
                continue
            live = self._raw(await apply(self.core.patch_namespaced_service, svc["metadata"]["name"],
                                         self.namespace, body=svc, policy=self.policy))
            if nodes is None:
                nodes = self._raw(await call(self.core.list_node, policy=self.policy))["items"]
            eps = await self._endpoints(app, comp, live, nodes)
            if eps:
                exposed[comp] = eps
            else:
                not_exposed[comp] = f"no Ready node of {self.cluster_id} has an address to offer"
        listed = self._raw(await call(self.core.list_namespaced_service, self.namespace,
                                      label_selector=tr.route_selector(app, self.cluster_id, "export"),
                                      policy=self.policy))
        wanted = {tr.export_name(c) for c in components}
        for svc in listed["items"]:
            if svc["metadata"]["name"] not in wanted:
                await delete(self.core.delete_namespaced_service, svc["metadata"]["name"], self.namespace,
                             policy=self.policy)
        return exposed, not_exposed

    async def _endpoints(self, app: str, comp: str, svc: dict[str, Any], nodes: list[dict[str, Any]]
                         ) -> list[dict[str, Any]]:
        ports = svc["spec"].get("ports") or []
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        lb = [i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")]
        if lb:
            return [{"address": a, "port": p["port"], "name": p.get("name"), "protocol": p.get("protocol", "TCP")}
                    for a in lb for p in ports]
        pods = self._raw(await call(self.core.list_namespaced_pod, self.namespace,
                                    label_selector=mf.component_selector(app, comp, self.cluster_id),
                                    policy=self.policy))["items"]
        hosting = {(p.get("spec") or {}).get("nodeName") for p in pods}
        ready = [n for n in nodes if _ready(n) and _node_address(n)]
        ready.sort(key=lambda n: (n["metadata"]["name"] not in hosting, n["metadata"]["name"]))
        addresses = list(dict.fromkeys(_node_address(n) for n in ready))[:MAX_ENDPOINTS]
        return [{"address": a, "port": p["nodePort"], "name": p.get("name"), "protocol": p.get("protocol", "TCP")}
                for a in addresses for p in ports if p.get("nodePort")]

    # -- calling side -------------------------------------------------------------------------------
    async def _route(self, app: str, model: MLSysOpsApp | None, routes: dict[str, Any], assigned: set[str]
                     ) -> tuple[dict[str, Any], list[str]]:
        version = await self.slice_version()
        written: dict[str, Any] = {}
        shared: list[str] = []
        for comp, route in sorted(routes.items()):
            eps = list(route.get("endpoints") or [])
            if not eps:
                continue    # never write an empty slice: what was there stays
            svc = tr.route_service(model, app, comp, cluster=self.cluster_id, namespace=self.namespace,
                                   serving_cluster=route["cluster"], endpoints=eps)
            if not await self._apply_route_service(svc, comp in assigned):
                shared.append(comp)
                continue
            body = tr.endpoint_slice(app, comp, cluster=self.cluster_id, namespace=self.namespace,
                                     serving_cluster=route["cluster"], endpoints=eps, api_version=version)
            await apply(self.custom.patch_namespaced_custom_object, tr.DISCOVERY_GROUP, version, self.namespace,
                        tr.SLICE_PLURAL, body["metadata"]["name"], body=body, policy=self.policy)
            written[comp] = {"cluster": route["cluster"], "endpoints": tr.slice_endpoints(body)}
        removed = []
        listed = await call(self.custom.list_namespaced_custom_object, tr.DISCOVERY_GROUP, version, self.namespace,
                            tr.SLICE_PLURAL, label_selector=tr.route_selector(app, self.cluster_id, "route"),
                            policy=self.policy)
        keep = {mf.label_value(c) for c in routes if c not in shared}
        for obj in listed["items"]:
            comp = (obj["metadata"].get("labels") or {}).get(tr.LABEL_ROUTE_FOR)
            if comp in keep:
                continue
            await delete(self.custom.delete_namespaced_custom_object, tr.DISCOVERY_GROUP, version, self.namespace,
                         tr.SLICE_PLURAL, obj["metadata"]["name"], policy=self.policy)
            removed.append(f"EndpointSlice/{obj['metadata']['name']}")
        services = self._raw(await call(self.core.list_namespaced_service, self.namespace,
                                        label_selector=tr.route_selector(app, self.cluster_id, "route"),
                                        policy=self.policy))
        for svc in services["items"]:
            comp = (svc["metadata"].get("labels") or {}).get(tr.LABEL_ROUTE_FOR)
            if comp in keep or svc["spec"].get("selector"):
                continue
            await delete(self.core.delete_namespaced_service, svc["metadata"]["name"], self.namespace,
                         policy=self.policy)
            removed.append(f"Service/{svc['metadata']['name']}")
        for comp in shared:
            written[comp] = {"shared": True}
        return written, removed

    async def _apply_route_service(self, svc: dict[str, Any], deploying_here: bool) -> bool:
        """A Service of the component's name that another app owns is not ours to take over. One with a
        selector is the placement mechanism's: kept while the component is (being) deployed here (the
        slice bridges until it runs), taken over when the component is leaving (its clean-up, by
        component label, then leaves the route alone). False: the serving cluster's own Service is in this
        very namespace (clusters sharing one API server): it already selects the pods, no route needed."""
        name = svc["metadata"]["name"]
        try:
            current = self._raw(await call(self.core.read_namespaced_service, name, self.namespace, policy=self.policy))
        except KubeError as exc:
            if not exc.not_found:
                raise
        else:
            owner = (current["metadata"].get("labels") or {}).get(mf.LABEL_APP)
            if owner != svc["metadata"]["labels"][mf.LABEL_APP]:
                raise KubeError(f"Service {self.namespace}/{name} exists and belongs to {owner or 'someone else'}")
            labels = current["metadata"].get("labels") or {}
            if current["spec"].get("selector") and labels.get(mf.LABEL_CLUSTER) != mf.label_value(self.cluster_id):
                return False
            if current["spec"].get("selector") and deploying_here:
                return True
        await apply(self.core.patch_namespaced_service, name, self.namespace, body=svc, policy=self.policy)
        return True
