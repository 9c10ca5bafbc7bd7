"""Karmada objects for the continuum's placements (pure builders and readers; no I/O here).

Per app component on the cluster the continuum policy chose:
* resource templates: the component's Deployment and Services (substrates/kubernetes/manifests.py, no node
  affinity: the member cluster's own agent and scheduler pick nodes);
* one PropagationPolicy selecting exactly those templates, placing them on that ONE cluster
  (`placement.clusterAffinity.clusterNames: [cluster]`), never fanned out to every member;
* an OverridePolicy only when that cluster needs a different spec (see `ClusterOverride`).

Karmada answers with a ResourceBinding per template, named `lower(<name>-<kind>)` in the template's
namespace: `spec.clusters` is the real scheduling result, `status.conditions` (Scheduled, FullyApplied)
and `status.aggregatedStatus[]` (applied, health per member cluster) the real outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.substrates.kubernetes.manifests import (
    LABEL_APP,
    LABEL_CLUSTER,
    LABEL_COMPONENT,
    MANAGED_BY,
    MANAGER,
    component_labels,
    deployment_name,
    desired_replicas,
    dns_label,
    label_value,
    resolve_component,
    services,
)
from mlsysops.substrates.kubernetes.manifests import deployment as deployment_manifest

POLICY_GROUP, POLICY_VERSION = "policy.karmada.io", "v1alpha1"
WORK_GROUP, WORK_VERSION = "work.karmada.io", "v1alpha2"
CLUSTER_GROUP, CLUSTER_VERSION = "cluster.karmada.io", "v1alpha1"
PP_PLURAL, OP_PLURAL, RB_PLURAL, CLUSTER_PLURAL = (
    "propagationpolicies", "overridepolicies", "resourcebindings", "clusters")
LABEL_POLICY = "mlsysops.eu/karmada-policy"       # marks our PP/OP objects (value: "placement")


@dataclass(frozen=True, slots=True)
class ClusterOverride:
    """How one member cluster's copy differs from the template.

    Trigger (documented choice): an OverridePolicy is emitted for a component only when its chosen
    cluster has an override here AND the override changes that component, i.e. the cluster pulls
    images through its own registry mirror (`image_registry`, e.g. an air-gapped edge site) that differs
    from the image's registry, or the mlsysops.cluster caps replicas (`max_replicas`, e.g. a small k3s edge
    cluster) below what the description asks for. Set per cluster in the slice's mechanism settings.
    """

    image_registry: str | None = None
    max_replicas: int | None = None

    @classmethod
    def from_settings(cls, raw: dict[str, Any]) -> ClusterOverride:
        return cls(image_registry=raw.get("image_registry"),
                   max_replicas=int(raw["max_replicas"]) if raw.get("max_replicas") is not None else None)


def image_registry(image: str) -> str | None:
    """The registry part of an image reference (None for Docker Hub short names like `nginx:1`)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def binding_name(name: str, kind: str) -> str:
    """Karmada's ResourceBinding name for a template: lower(<name>-<kind>)."""
    return f"{name}-{kind}".lower()


NETWORKING_GROUP, MCS_VERSION, MCS_PLURAL = "networking.karmada.io", "v1alpha1", "multiclusterservices"


def multi_cluster_service(app: str, component: str, *, provider: str, consumers: list[str],
                          namespace: str) -> dict[str, Any]:
    """Karmada's MultiClusterService (CrossCluster) for a component's Service: Karmada makes the Service
    and its endpoints available in the consumer clusters under the same name. Named like the Service."""
    return {"apiVersion": f"{NETWORKING_GROUP}/{MCS_VERSION}", "kind": "MultiClusterService",
            "metadata": {"name": dns_label(component), "namespace": namespace,
                         "labels": {**component_labels(app, component, provider), LABEL_POLICY: "traffic"}},
            "spec": {"types": ["CrossCluster"], "providerClusters": [{"name": provider}],
                     "consumerClusters": [{"name": c} for c in sorted(consumers)]}}


def policy_name(app: str, component: str) -> str:
    return dns_label(app, component)


def templates(app: MLSysOpsApp, component: str, *, cluster: str, namespace: str) -> list[dict[str, Any]]:
    """The component's Deployment and Services as Karmada resource templates (no node affinity)."""
    return [deployment_manifest(app, component, cluster=cluster, namespace=namespace),
            *services(app, component, cluster=cluster, namespace=namespace)]


def _selectors(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["metadata"]["name"],
             "namespace": o["metadata"]["namespace"]} for o in objs]


def _policy_meta(app: str, component: str, cluster: str, namespace: str) -> dict[str, Any]:
    return {"name": policy_name(app, component), "namespace": namespace,
            "labels": {**component_labels(app, component, cluster), LABEL_POLICY: "placement"}}


def propagation_policy(app: str, component: str, cluster: str, objs: list[dict[str, Any]],
                       namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{POLICY_GROUP}/{POLICY_VERSION}", "kind": "PropagationPolicy",
        "metadata": _policy_meta(app, component, cluster, namespace),
        "spec": {
            "resourceSelectors": _selectors(objs),
            "placement": {"clusterAffinity": {"clusterNames": [cluster]}},
            # Services and Deployment travel together; nothing else is pulled along implicitly.
            "propagateDeps": False,
        },
    }


def override_policy(app: MLSysOpsApp, component: str, cluster: str, objs: list[dict[str, Any]],
                    namespace: str, override: ClusterOverride | None) -> dict[str, Any] | None:
    """The OverridePolicy for `component` on `cluster`, or None when the cluster needs no change."""
    if override is None:
        return None
    comp = resolve_component(app, component)
    overriders: dict[str, Any] = {}
    registries = {image_registry(c.image or "") for c in comp.containers}
    if override.image_registry and registries != {override.image_registry}:
        overriders["imageOverrider"] = [{"component": "Registry", "operator": "replace",
                                         "value": override.image_registry}]
    if override.max_replicas is not None and desired_replicas(comp) > override.max_replicas:
        overriders["plaintext"] = [{"path": "/spec/replicas", "operator": "replace",
                                    "value": override.max_replicas}]
    if not overriders:
        return None
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    return {
        "apiVersion": f"{POLICY_GROUP}/{POLICY_VERSION}", "kind": "OverridePolicy",
        "metadata": _policy_meta(app.name, component, cluster, namespace),
        "spec": {"resourceSelectors": _selectors(deployments),
                 "overrideRules": [{"targetCluster": {"clusterNames": [cluster]}, "overriders": overriders}]},
    }


def app_selector(app: str, component: str | None = None) -> str:
    """Label selector for everything we created in Karmada for an app (or one of its components)."""
    parts = [f"{MANAGED_BY}={MANAGER}", f"{LABEL_APP}={label_value(app)}"]
    if component is not None:
        parts.append(f"{LABEL_COMPONENT}={label_value(component)}")
    return ",".join(parts)


# ---------------------------------------------------------------- reading results back


def _condition(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def binding_result(rb: dict[str, Any] | None, wanted_cluster: str | None = None) -> dict[str, Any]:
    """What a ResourceBinding says about one template: where it runs and whether it is healthy.

    `status` is the component status the continuum reports: pending (not scheduled yet), deploying
    (scheduled, not applied or not healthy yet), running (applied and healthy on every cluster),
    failed (scheduling refused or applying failed), misplaced (scheduled elsewhere than wanted).
    """
    if rb is None:
        return {"status": "pending", "clusters": [], "reason": "no ResourceBinding yet"}
    spec, status = rb.get("spec") or {}, rb.get("status") or {}
    clusters = sorted(c.get("name") for c in spec.get("clusters") or [] if c.get("name"))
    scheduled = _condition(status, "Scheduled")
    applied = _condition(status, "FullyApplied")
    agg = status.get("aggregatedStatus") or []
    health = {a.get("clusterName"): a.get("health", "Unknown") for a in agg}
    out: dict[str, Any] = {"clusters": clusters, "health": health,
                           "scheduled": (scheduled or {}).get("status") == "True",
                           "applied": (applied or {}).get("status") == "True"}
    failed_apply = [a for a in agg if a.get("applied") is False]
    if scheduled is not None and scheduled.get("status") == "False":
        out.update(status="failed", reason=f"not scheduled: {scheduled.get('reason', '')} "
                                           f"{scheduled.get('message', '')}".strip())
    elif failed_apply:
        out.update(status="failed", reason="; ".join(
            f"{a.get('clusterName')}: {a.get('appliedMessage', 'not applied')}" for a in failed_apply))
    elif not clusters or scheduled is None:
        out.update(status="pending", reason="waiting for the Karmada scheduler")
    elif wanted_cluster is not None and clusters != [wanted_cluster]:
        out.update(status="misplaced", reason=f"scheduled on {clusters}, wanted {wanted_cluster}")
    elif out["applied"] and clusters and all(health.get(c) == "Healthy" for c in clusters):
        out.update(status="running", reason="applied and healthy")
    else:
        out.update(status="deploying", reason="scheduled; waiting until applied and healthy")
    return out


def cluster_ready(cluster: dict[str, Any]) -> bool:
    cond = _condition(cluster.get("status") or {}, "Ready")
    return cond is not None and cond.get("status") == "True"


def owner_of(obj: dict[str, Any]) -> tuple[str, str, str] | None:
    """(app, component, cluster) from our labels on a template or policy."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY) != MANAGER or LABEL_APP not in labels:
        return None
    return labels[LABEL_APP], labels.get(LABEL_COMPONENT, ""), labels.get(LABEL_CLUSTER, "")


def deployment_binding(app: str, component: str) -> str:
    return binding_name(deployment_name(app, component), "Deployment")
