"""Continuum mechanism on Karmada: put each app component on the ONE member cluster the continuum chose.

Command: the same as `cluster_dispatch` (from `continuum_cluster_placement`), so the two are
interchangeable::

    {"app": "shop", "assign": {"web": "edge-1"}, "previous": {"web": "cloud-1"}, "remove": ["old"]}

Per assigned component, in the Karmada API server (namespace `namespace`), server-side applied with
field manager `mlsysops` (substrates/kubernetes/karmada.py builds the objects):
* resource templates (the component's Deployment and Services, without node affinity);
* a PropagationPolicy whose clusterAffinity names only the chosen cluster; a move is just this policy
  changing cluster, Karmada then removes the copy from the previous cluster (`previous` needs no call);
* an OverridePolicy when the chosen cluster needs a different spec (`ClusterOverride`), deleted again
  when it no longer does.

`get_state()` lists our policies by label and reads each Deployment's ResourceBinding for the real
result (clusters, Scheduled/FullyApplied, health per cluster); `adopt()` makes those placements the
mechanism's own after a restart. `remove_app()` deletes every template and policy labelled for the app; Karmada garbage-collects
the bindings (they are owned by the templates). API failures are reported per component, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubernetes.aio import client as k

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.agents.placement.adapters import callees
from mlsysops.plugins import Capability
from mlsysops.substrates.kubernetes import karmada as kk
from mlsysops.substrates.kubernetes.client import KubeError, apply, call, connect

log = logging.getLogger(__name__)

AppResolver = Callable[[str], MLSysOpsApp | None]


class KarmadaPlacementMechanism:
    """Mechanism plugin object: `apply(command)`, `get_state()`, `get_options()`, `remove_app()`."""

    name = "karmada_placement"
    # the continuum takes component status from get_state(), not from cluster agents
    capabilities = frozenset({Capability.REPORTS_STATUS, Capability.ADOPT, Capability.REMOVE_APP})

    def __init__(self, api: k.ApiClient, resolve: AppResolver, *, namespace: str = "default",
                 overrides: dict[str, kk.ClusterOverride] | None = None,
                 assignments: dict[str, dict[str, str]] | None = None,
                 save: Callable[[str], None] | None = None) -> None:
        """`assignments`/`save`: the continuum agent's table and persistence hook (as `cluster_dispatch`
        updates them), so the two mechanisms are interchangeable."""
        self.api = api
        self.resolve = resolve
        self.namespace = namespace
        self.overrides = dict(overrides or {})
        self.assignments: dict[str, dict[str, str]] = assignments if assignments is not None else {}
        self.save = save
        self.errors: dict[str, dict[str, str]] = {}
        self.custom = k.CustomObjectsApi(api)
        self.apps_api = k.AppsV1Api(api)
        self.core = k.CoreV1Api(api)
        self._mcs_served: bool | None = None

    @classmethod
    async def connect(cls, resolve: AppResolver, *, kubeconfig: str | None = None,
                      context: str | None = "karmada-apiserver", settings: dict[str, Any] | None = None
                      ) -> KarmadaPlacementMechanism:
        """From the slice's mechanism settings: `namespace`, `overrides: {cluster: {image_registry,
        max_replicas}}`."""
        settings = settings or {}
        overrides = {c: kk.ClusterOverride.from_settings(v) for c, v in (settings.get("overrides") or {}).items()}
        return cls(await connect(kubeconfig, context), resolve, namespace=settings.get("namespace", "default"),
                   overrides=overrides)

    async def close(self) -> None:
        await self.api.close()

    # -- contract -----------------------------------------------------------------------------------
    async def get_options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"actions": ["assign", "remove"], "namespace": self.namespace,
                               "overrides": {c: {"image_registry": o.image_registry, "max_replicas": o.max_replicas}
                                             for c, o in sorted(self.overrides.items())}}
        try:
            listed = await call(self.custom.list_cluster_custom_object, kk.CLUSTER_GROUP, kk.CLUSTER_VERSION,
                                kk.CLUSTER_PLURAL)
            out["clusters"] = {c["metadata"]["name"]: kk.cluster_ready(c) for c in listed.get("items", [])}
        except KubeError as exc:
            out["clusters"], out["error"] = {}, str(exc)
        return out

    async def get_state(self) -> dict[str, Any]:
        try:
            pps = await call(self.custom.list_namespaced_custom_object, kk.POLICY_GROUP, kk.POLICY_VERSION,
                             self.namespace, kk.PP_PLURAL, label_selector=f"{kk.LABEL_POLICY}=placement")
            rbs = await call(self.custom.list_namespaced_custom_object, kk.WORK_GROUP, kk.WORK_VERSION,
                             self.namespace, kk.RB_PLURAL)
        except KubeError as exc:
            return {"namespace": self.namespace, "stale": True, "error": str(exc),
                    "assignments": {a: dict(c) for a, c in self.assignments.items()}}
        bindings = {rb["metadata"]["name"]: rb for rb in rbs.get("items", [])}
        apps: dict[str, dict[str, Any]] = {}
        assignments: dict[str, dict[str, str]] = {}
        for pp in pps.get("items", []):
            owner = kk.owner_of(pp)
            if owner is None:
                continue
            app, comp, _ = owner
            wanted = ((pp.get("spec") or {}).get("placement") or {}).get("clusterAffinity", {}).get("clusterNames")
            cluster = wanted[0] if wanted else None
            deps = [s["name"] for s in pp["spec"].get("resourceSelectors", []) if s.get("kind") == "Deployment"]
            result = kk.binding_result(
                bindings.get(kk.binding_name(deps[0], "Deployment")) if deps else None, cluster)
            if comp in self.errors.get(app, {}):
                result["last_error"] = self.errors[app][comp]
            apps.setdefault(app, {})[comp] = {"cluster": cluster, **result}
            if cluster:
                assignments.setdefault(app, {})[comp] = cluster
        for app, failed in self.errors.items():   # a first placement that failed has no policy to list
            for comp, err in failed.items():
                apps.setdefault(app, {}).setdefault(comp, {"cluster": None, "status": "failed", "reason": err,
                                                           "last_error": err})
        return {"namespace": self.namespace, "apps": apps, "assignments": assignments}

    async def adopt(self) -> dict[str, Any]:
        """After a restart: take the placements found in Karmada as ours (the server is the truth)."""
        state = await self.get_state()
        if not state.get("stale"):
            self.assignments.clear()
            self.assignments.update(state["assignments"])
        return state

    async def apply(self, command: Any) -> dict[str, Any]:
        if not isinstance(command, dict):
            return {"ok": False, "detail": f"invalid command: {command!r}"}
        name, assign = command.get("app"), command.get("assign") or {}
        remove = command.get("remove") or []
        app = self.resolve(name) if isinstance(name, str) else None
        if app is None or not isinstance(assign, dict) or not isinstance(remove, list):
            return {"ok": False, "detail": f"unknown app {name!r} or malformed 'assign'/'remove'"}
        results = [await self._place(app, comp, cluster) for comp, cluster in sorted(assign.items())]
        results += [await self._remove(app.name, comp) for comp in remove]
        if self.save is not None:
            self.save(app.name)     # durable: a restarted continuum knows where every component went
        for comp, old in sorted((command.get("previous") or {}).items()):
            if assign.get(comp) not in (None, old):
                results.append({"component": comp, "ok": True, "previous": old,
                                "note": "moved by the PropagationPolicy; Karmada removes the old copy"})
        results.append(await self._sync_traffic(app))
        return {"ok": all(r["ok"] for r in results), "detail": results}

    # -- traffic between member clusters --------------------------------------------------------------
    async def mcs_served(self) -> bool:
        if self._mcs_served is None:
            groups = self.api.sanitize_for_serialization(await call(k.ApisApi(self.api).get_api_versions))
            self._mcs_served = any(g.get("name") == kk.NETWORKING_GROUP and
                                   any(v.get("version") == kk.MCS_VERSION for v in g.get("versions") or [])
                                   for g in groups.get("groups") or [])
        return self._mcs_served

    async def _sync_traffic(self, app: MLSysOpsApp) -> dict[str, Any]:
        """One MultiClusterService per component called from other member clusters than its own (Karmada
        then serves its Service and endpoints there); removed when no such caller is left."""
        placed = self.assignments.get(app.name, {})
        wanted: dict[str, tuple[str, list[str]]] = {}
        for comp in app.components:
            provider = placed.get(comp.name)
            consumers = sorted({placed[c.name] for c in app.components
                                if c.name in placed and comp.name in callees(app, c.name)} - {provider})
            if provider and consumers:
                wanted[comp.name] = (provider, consumers)
        res: dict[str, Any] = {"component": None, "traffic": {c: {"provider": p, "consumers": cs}
                                                              for c, (p, cs) in wanted.items()}, "ok": True}
        try:
            if not await self.mcs_served():
                if wanted:
                    res["note"] = (f"this Karmada serves no {kk.NETWORKING_GROUP}/{kk.MCS_VERSION} "
                                   f"MultiClusterService: calls to {sorted(wanted)} from other member clusters "
                                   "are not routed")
                return res
            for comp, (provider, consumers) in sorted(wanted.items()):
                mcs = kk.multi_cluster_service(app.name, comp, provider=provider, consumers=consumers,
                                               namespace=self.namespace)
                await apply(self.custom.patch_namespaced_custom_object, kk.NETWORKING_GROUP, kk.MCS_VERSION,
                            self.namespace, kk.MCS_PLURAL, mcs["metadata"]["name"], body=mcs)
            listed = await call(self.custom.list_namespaced_custom_object, kk.NETWORKING_GROUP, kk.MCS_VERSION,
                                self.namespace, kk.MCS_PLURAL, label_selector=kk.app_selector(app.name))
            keep = {kk.multi_cluster_service(app.name, c, provider=p, consumers=cs, namespace=self.namespace)
                    ["metadata"]["name"] for c, (p, cs) in wanted.items()}
            for item in listed.get("items", []):
                if item["metadata"]["name"] not in keep:
                    await self._delete_custom(kk.NETWORKING_GROUP, kk.MCS_VERSION, kk.MCS_PLURAL,
                                              item["metadata"]["name"])
        except KubeError as exc:
            res.update(ok=False, error=f"MultiClusterService of {app.name}: {exc}")
        return res

    # -- actions ------------------------------------------------------------------------------------
    async def _place(self, app: MLSysOpsApp, component: str, cluster: str) -> dict[str, Any]:
        res: dict[str, Any] = {"component": component, "cluster": cluster, "ok": False}
        try:
            objs = kk.templates(app, component, cluster=cluster, namespace=self.namespace)
        except ValueError as exc:
            res["error"] = str(exc)
            return res
        pp = kk.propagation_policy(app.name, component, cluster, objs, self.namespace)
        op = kk.override_policy(app, component, cluster, objs, self.namespace, self.overrides.get(cluster))
        try:
            for obj in objs:
                await self._apply_template(obj)
            await self._prune_services(app.name, component, {o["metadata"]["name"] for o in objs})
            await apply(self.custom.patch_namespaced_custom_object, kk.POLICY_GROUP, kk.POLICY_VERSION,
                        self.namespace, kk.PP_PLURAL, pp["metadata"]["name"], body=pp)
            if op is not None:
                await apply(self.custom.patch_namespaced_custom_object, kk.POLICY_GROUP, kk.POLICY_VERSION,
                            self.namespace, kk.OP_PLURAL, op["metadata"]["name"], body=op)
            else:
                await self._delete_custom(kk.POLICY_GROUP, kk.POLICY_VERSION, kk.OP_PLURAL,
                                          kk.policy_name(app.name, component))
        except KubeError as exc:
            res["error"] = str(exc)
            self.errors.setdefault(app.name, {})[component] = str(exc)
            log.warning("karmada placement of %s/%s on %s failed: %s", app.name, component, cluster, exc)
            return res
        self.errors.get(app.name, {}).pop(component, None)
        self.assignments.setdefault(app.name, {})[component] = cluster
        res.update(ok=True, objects=[f"{o['kind']}/{o['metadata']['name']}" for o in objs],
                   propagation_policy=pp["metadata"]["name"],
                   override_policy=op["metadata"]["name"] if op else None,
                   binding=kk.deployment_binding(app.name, component))
        return res

    async def _apply_template(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if obj["kind"] == "Deployment":
            await apply(self.apps_api.patch_namespaced_deployment, name, self.namespace, body=obj)
        else:
            await apply(self.core.patch_namespaced_service, name, self.namespace, body=obj)

    async def _prune_services(self, app: str, component: str, keep: set[str]) -> None:
        """A component whose description lost its ports must not leave its old Service template behind."""
        listed = await call(self.core.list_namespaced_service, self.namespace,
                            label_selector=kk.app_selector(app, component))
        for svc in listed.items:
            if svc.metadata.name not in keep:
                await self._delete_service(svc.metadata.name)

    async def _delete(self, fn: Any, name: str) -> None:
        try:
            await call(fn, name, self.namespace)
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def _delete_service(self, name: str) -> None:
        """Raw delete: a 1.20-era server answers a Service DELETE with a `Status`, which the client's
        V1Service model cannot parse; only the HTTP status matters here."""
        resp = await call(self.core.delete_namespaced_service_without_preload_content, name, self.namespace)
        try:
            status = int(getattr(resp, "status", 0) or 0)
        finally:
            release = getattr(resp, "release", None)
            if release is not None:
                release()
        if status >= 300 and status != 404:
            raise KubeError(f"delete Service {name}: HTTP {status}", status)

    async def _delete_custom(self, group: str, version: str, plural: str, name: str) -> None:
        try:
            await call(self.custom.delete_namespaced_custom_object, group, version, self.namespace, plural, name)
        except KubeError as exc:
            if not exc.not_found:
                raise

    async def _remove(self, app: str, component: str | None) -> dict[str, Any]:
        """Delete every policy and template labelled for the app (or one component), found by label."""
        selector = kk.app_selector(app, component)
        deleted: list[str] = []
        try:
            for plural in (kk.PP_PLURAL, kk.OP_PLURAL):
                listed = await call(self.custom.list_namespaced_custom_object, kk.POLICY_GROUP,
                                    kk.POLICY_VERSION, self.namespace, plural, label_selector=selector)
                for item in listed.get("items", []):
                    await self._delete_custom(kk.POLICY_GROUP, kk.POLICY_VERSION, plural, item["metadata"]["name"])
                    deleted.append(f"{item['kind']}/{item['metadata']['name']}")
            if await self.mcs_served():
                listed = await call(self.custom.list_namespaced_custom_object, kk.NETWORKING_GROUP, kk.MCS_VERSION,
                                    self.namespace, kk.MCS_PLURAL, label_selector=selector)
                for item in listed.get("items", []):
                    await self._delete_custom(kk.NETWORKING_GROUP, kk.MCS_VERSION, kk.MCS_PLURAL,
                                              item["metadata"]["name"])
                    deleted.append(f"MultiClusterService/{item['metadata']['name']}")
            for kind, lister, deleter in (
                    ("Deployment", self.apps_api.list_namespaced_deployment, self.apps_api.delete_namespaced_deployment),
                    ("Service", self.core.list_namespaced_service, None)):
                for item in (await call(lister, self.namespace, label_selector=selector)).items:
                    if deleter is None:
                        await self._delete_service(item.metadata.name)
                    else:
                        await self._delete(deleter, item.metadata.name)
                    deleted.append(f"{kind}/{item.metadata.name}")
        except KubeError as exc:
            return {"component": component, "ok": False, "error": str(exc), "removed": deleted}
        placed = self.assignments.get(app, {})
        for comp in [component] if component else list(placed):
            placed.pop(comp, None)
        if not placed:
            self.assignments.pop(app, None)
        return {"component": component, "ok": True, "removed": deleted}

    async def remove_app(self, app: str, assign: dict[str, str] | None = None) -> dict[str, Any]:
        """Remove everything of `app` (same signature as `cluster_dispatch.remove_app`)."""
        res = await self._remove(app, None)
        self.errors.pop(app, None)
        return res
