"""Stand-ins for Karmada in tests: minimal CRDs (written for this project) and a stand-in scheduler.

Real Karmada cannot run here (../shared/tools/KUBERNETES.md §1), so the Karmada API server is played by
the local kube-apiserver with these CRDs:
* policy.karmada.io/v1alpha1 PropagationPolicy (spec.resourceSelectors required) and OverridePolicy
  (spec.overrideRules required), namespaced;
* work.karmada.io/v1alpha2 ResourceBinding (spec.resource required, status subresource), namespaced;
* cluster.karmada.io/v1alpha1 Cluster (cluster-scoped, status subresource; upstream serves it from an
  aggregated API server, here it is a CRD).
Everything else is `x-kubernetes-preserve-unknown-fields`: the schemas check our required fields only.

`StandInScheduler` watches PropagationPolicies (and OverridePolicies) in one namespace and writes, per
selected template, the ResourceBinding Karmada would: named lower(<name>-<kind>), owned by the template
(so the real garbage collector removes it with the template), `spec.clusters` from clusterNames that
exist as Ready Cluster objects, status conditions Scheduled/FullyApplied and `aggregatedStatus` healthy.
It also records, per cluster, the image(s) and replicas after the OverridePolicies, which real Karmada
would put into the member cluster's Work.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from kubernetes.aio import client as k
from kubernetes.aio import watch as kw

from mlsysops.substrates.kubernetes.client import APPLY, KubeError, apply, call

log = logging.getLogger(__name__)
MANAGER = "karmada-standin"
MERGE = "application/merge-patch+json"
POLICY, WORK, CLUSTER = "policy.karmada.io", "work.karmada.io", "cluster.karmada.io"
NETWORKING = "networking.karmada.io"


def _obj(required: list[str], properties: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if required:
        out["required"] = required
    if properties:
        out["properties"] = properties
    return out


_STR = {"type": "string"}
_SELECTOR = _obj(["apiVersion", "kind"], {"apiVersion": _STR, "kind": _STR, "name": _STR, "namespace": _STR})


def _crd(group: str, version: str, kind: str, plural: str, scope: str, spec: dict[str, Any],
         status: bool) -> dict[str, Any]:
    schema = {"type": "object", "required": ["spec"],
              "properties": {"apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"}, "spec": spec,
                             "status": _obj([])}}
    ver: dict[str, Any] = {"name": version, "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": schema}}
    if status:
        ver["subresources"] = {"status": {}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}", "labels": {"mlsysops.eu/test": "karmada-standin"}},
            "spec": {"group": group, "scope": scope, "versions": [ver],
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"}}}


def standin_crds() -> list[dict[str, Any]]:
    return [
        _crd(POLICY, "v1alpha1", "PropagationPolicy", "propagationpolicies", "Namespaced",
             _obj(["resourceSelectors"], {"resourceSelectors": {"type": "array", "minItems": 1, "items": _SELECTOR},
                                          "placement": _obj([])}), status=False),
        _crd(POLICY, "v1alpha1", "OverridePolicy", "overridepolicies", "Namespaced",
             _obj(["overrideRules"], {"resourceSelectors": {"type": "array", "items": _SELECTOR},
                                      "overrideRules": {"type": "array", "minItems": 1, "items": _obj([])}}),
             status=False),
        _crd(WORK, "v1alpha2", "ResourceBinding", "resourcebindings", "Namespaced",
             _obj(["resource"], {"resource": _obj(["apiVersion", "kind", "name"], {
                 "apiVersion": _STR, "kind": _STR, "name": _STR, "namespace": _STR, "uid": _STR}),
                 "clusters": {"type": "array", "items": _obj(["name"], {"name": _STR, "replicas": {"type": "integer"}})}}),
             status=True),
        _crd(NETWORKING, "v1alpha1", "MultiClusterService", "multiclusterservices", "Namespaced",
             _obj(["types"], {"types": {"type": "array", "items": {"type": "string", "enum": ["CrossCluster"]}},
                              "providerClusters": {"type": "array", "items": _obj(["name"], {"name": _STR})},
                              "consumerClusters": {"type": "array", "items": _obj(["name"], {"name": _STR})}}),
             status=True),
        _crd(CLUSTER, "v1alpha1", "Cluster", "clusters", "Cluster",
             _obj(["syncMode"], {"syncMode": {"type": "string", "enum": ["Push", "Pull"]}}), status=True),
    ]


async def install_crds(api: k.ApiClient, timeout_s: float = 30.0) -> None:
    from mlsysops.cli.deploy.apply import apply_manifests

    results = await apply_manifests(api, standin_crds(), crd_timeout_s=timeout_s)
    failed = [r for r in results if r.outcome != "applied"]
    if failed:
        raise RuntimeError(f"stand-in Karmada CRDs not installed: {failed}")


async def add_cluster(api: k.ApiClient, name: str, ready: bool = True) -> None:
    """A member cluster as Karmada's Cluster object, Ready or not."""
    custom = k.CustomObjectsApi(api)
    body = {"apiVersion": f"{CLUSTER}/v1alpha1", "kind": "Cluster", "metadata": {"name": name},
            "spec": {"syncMode": "Push"}}
    await apply(custom.patch_cluster_custom_object, CLUSTER, "v1alpha1", "clusters", name, body=body)
    cond = {"type": "Ready", "status": "True" if ready else "False", "reason": "StandIn", "message": "",
            "lastTransitionTime": _now()}
    await call(custom.patch_cluster_custom_object_status, CLUSTER, "v1alpha1", "clusters", name,
               {"status": {"conditions": [cond]}}, _content_type=MERGE)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _apply_overriders(template: dict[str, Any], cluster: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Images and replicas of a Deployment template on `cluster` after the matching OverridePolicies."""
    spec = template.get("spec") or {}
    images = [c.get("image", "") for c in ((spec.get("template") or {}).get("spec") or {}).get("containers", [])]
    replicas = spec.get("replicas")
    for op in ops:
        if not any(s.get("kind") == template["kind"] and s.get("name") == template["metadata"]["name"]
                   for s in op["spec"].get("resourceSelectors") or []):
            continue
        for rule in op["spec"]["overrideRules"]:
            if cluster not in ((rule.get("targetCluster") or {}).get("clusterNames") or []):
                continue
            ov = rule.get("overriders") or {}
            for io in ov.get("imageOverrider") or []:
                if io.get("component") == "Registry" and io.get("operator") == "replace":
                    images = [f"{io['value']}/{img.split('/', 1)[1] if '/' in img else img}" for img in images]
            for pt in ov.get("plaintext") or []:
                if pt.get("path") == "/spec/replicas" and pt.get("operator") == "replace":
                    replicas = pt["value"]
    return {"images": images, "replicas": replicas}


class StandInScheduler:
    """Writes ResourceBindings from PropagationPolicies in one namespace (a test double of Karmada's
    scheduler + binding controller + status aggregation), level-triggered on every policy event."""

    def __init__(self, api: k.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.custom = k.CustomObjectsApi(api)
        self.tasks: list[asyncio.Task[None]] = []
        self.reconciles = 0

    async def __aenter__(self) -> StandInScheduler:
        self.tasks = [asyncio.create_task(self._watch(POLICY, "v1alpha1", plural), name=f"standin-{plural}")
                      for plural in ("propagationpolicies", "overridepolicies")]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _watch(self, group: str, version: str, plural: str) -> None:
        rv = None
        while True:
            try:
                if rv is None:   # (re-)list: reconcile everything, then watch from there
                    listed = await self.custom.list_namespaced_custom_object(group, version, self.ns, plural)
                    rv = listed["metadata"]["resourceVersion"]
                    await self.reconcile_all()
                async for ev in kw.Watch().stream(self.custom.list_namespaced_custom_object, group, version,
                                                  self.ns, plural, resource_version=rv, timeout_seconds=60):
                    obj = ev["raw_object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] == "DELETED" and plural == "propagationpolicies":
                        await self._unbind(obj["metadata"]["name"])
                    else:
                        await self.reconcile_all()
            except k.ApiException as exc:
                if exc.status != 410:
                    log.warning("stand-in scheduler watch %s: %s", plural, exc)
                    await asyncio.sleep(0.2)
                rv = None
            except (KubeError, KeyError) as exc:
                log.warning("stand-in scheduler: %s", exc)
                await asyncio.sleep(0.2)

    async def reconcile_all(self) -> None:
        pps = await self.custom.list_namespaced_custom_object(POLICY, "v1alpha1", self.ns, "propagationpolicies")
        ops = await self.custom.list_namespaced_custom_object(POLICY, "v1alpha1", self.ns, "overridepolicies")
        clusters = await self.custom.list_cluster_custom_object(CLUSTER, "v1alpha1", "clusters")
        ready = {c["metadata"]["name"] for c in clusters["items"]
                 if any(x.get("type") == "Ready" and x.get("status") == "True"
                        for x in (c.get("status") or {}).get("conditions") or [])}
        for pp in pps["items"]:
            for sel in pp["spec"]["resourceSelectors"]:
                await self._bind(pp, sel, ops["items"], ready)
        self.reconciles += 1

    async def _template(self, sel: dict[str, Any]) -> dict[str, Any] | None:
        api = self.api
        try:
            if sel["kind"] == "Deployment":
                obj = await k.AppsV1Api(api).read_namespaced_deployment(sel["name"], self.ns)
            elif sel["kind"] == "Service":
                obj = await k.CoreV1Api(api).read_namespaced_service(sel["name"], self.ns)
            else:
                return None
        except k.ApiException as exc:
            if exc.status == 404:
                return None    # Karmada waits for the template; so do we (next event re-reconciles)
            raise
        return api.sanitize_for_serialization(obj)

    async def _bind(self, pp: dict[str, Any], sel: dict[str, Any], ops: list[dict[str, Any]],
                    ready: set[str]) -> None:
        template = await self._template(sel)
        if template is None:
            return
        name = f"{sel['name']}-{sel['kind']}".lower()
        wanted = ((pp["spec"].get("placement") or {}).get("clusterAffinity") or {}).get("clusterNames") or []
        fit = [c for c in wanted if c in ready]
        replicas = (template.get("spec") or {}).get("replicas")
        rb = {"apiVersion": f"{WORK}/v1alpha2", "kind": "ResourceBinding",
              "metadata": {"name": name, "namespace": self.ns,
                           "labels": {"propagationpolicy.karmada.io/name": pp["metadata"]["name"]},
                           "ownerReferences": [{"apiVersion": sel["apiVersion"], "kind": sel["kind"],
                                                "name": sel["name"], "uid": template["metadata"]["uid"],
                                                "controller": True, "blockOwnerDeletion": True}]},
              "spec": {"resource": {"apiVersion": sel["apiVersion"], "kind": sel["kind"], "name": sel["name"],
                                    "namespace": self.ns, "uid": template["metadata"]["uid"]},
                       "clusters": [{"name": c, **({"replicas": replicas} if replicas is not None else {})}
                                    for c in fit],
                       "placement": pp["spec"].get("placement") or {}}}
        await call(self.custom.patch_namespaced_custom_object, WORK, "v1alpha2", self.ns, "resourcebindings",
                   name, rb, field_manager=MANAGER, force=True, _content_type=APPLY)
        now = _now()
        if fit:
            conds = [{"type": "Scheduled", "status": "True", "reason": "Success", "message": "", "lastTransitionTime": now},
                     {"type": "FullyApplied", "status": "True", "reason": "FullyAppliedSuccess", "message": "",
                      "lastTransitionTime": now}]
        else:
            conds = [{"type": "Scheduled", "status": "False", "reason": "NoClusterFit",
                      "message": f"0/{len(ready)} clusters are available: none of {wanted} is a Ready member",
                      "lastTransitionTime": now}]
        agg = [{"clusterName": c, "applied": True, "health": "Healthy",
                "status": _apply_overriders(template, c, ops) if sel["kind"] == "Deployment" else {}}
               for c in fit]
        await call(self.custom.patch_namespaced_custom_object_status, WORK, "v1alpha2", self.ns,
                   "resourcebindings", name, {"status": {"conditions": conds, "aggregatedStatus": agg}},
                   _content_type=MERGE)

    async def _unbind(self, pp_name: str) -> None:
        listed = await self.custom.list_namespaced_custom_object(
            WORK, "v1alpha2", self.ns, "resourcebindings", label_selector=f"propagationpolicy.karmada.io/name={pp_name}")
        for rb in listed["items"]:
            with contextlib.suppress(k.ApiException):
                await self.custom.delete_namespaced_custom_object(WORK, "v1alpha2", self.ns, "resourcebindings",
                                                                  rb["metadata"]["name"])
