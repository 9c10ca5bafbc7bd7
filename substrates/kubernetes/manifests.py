"""Pure builders: an MLSysOpsApp component description -> Kubernetes manifests (plain dicts).

Every object carries `app.kubernetes.io/managed-by: mlsysops` and `mlsysops.eu/{app,component,cluster}`
labels, so the owner can list (and adopt, or garbage-collect) everything it made by label alone.

* `deployment()`: replicas (from the description's scaling, or given), required node affinity on
  `kubernetes.io/hostname` for the chosen node(s) (never `nodeName`: the scheduler still checks capacity
  and taints), env, ports, runtimeClassName, resources, a make-before-break rolling update
  (maxSurge 1, maxUnavailable 0). With `instance_id` it is the Deployment of one placed instance
  (the cluster agent places instances one by one); without, the whole component (Karmada templates).
* `services()`: a Service for a component with ports, and a headless one for a component that
  receives traffic in `component_interactions` but declares no port. The Service is named after the
  component, because descriptions address peers that way (env `AGGREGATOR=aggregator:1883`).

Restart policy: a Deployment only accepts `Always`. The description's `OnFailure`/`Never` is kept in the
annotation `mlsysops.eu/restart-policy` and reported by `restart_policy_note()`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from mlsysops.agents.descriptions.app import Component, Container, MLSysOpsApp

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "mlsysops"
LABEL_APP = "mlsysops.eu/app"
LABEL_COMPONENT = "mlsysops.eu/component"
LABEL_CLUSTER = "mlsysops.eu/cluster"
LABEL_INSTANCE = "mlsysops.eu/instance"        # short hash of the instance id (ids hold '@')
ANN_INSTANCE_ID = "mlsysops.eu/instance-id"
ANN_NODE = "mlsysops.eu/node"
ANN_RESTART_POLICY = "mlsysops.eu/restart-policy"
HOSTNAME_LABEL = "kubernetes.io/hostname"
GPU_RESOURCE = "nvidia.com/gpu"

_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def dns_label(*parts: str, max_len: int = 63) -> str:
    """A DNS-1123 label from parts; too long or lossy names get a hash suffix so they stay unique."""
    raw = "-".join(parts)
    name = _DNS_LABEL.sub("-", raw.lower()).strip("-") or "x"
    if len(name) > max_len or name != raw:
        suffix = short_hash(raw)
        name = f"{name[: max_len - len(suffix) - 1].rstrip('-')}-{suffix}"
    return name


def label_value(value: str) -> str:
    clean = _LABEL_VALUE.sub("-", value).strip("-._")
    if len(clean) > 63 or clean != value:
        suffix = short_hash(value)
        clean = f"{clean[: 63 - len(suffix) - 1].rstrip('-._')}-{suffix}".lstrip("-")
    return clean


def selector_labels(app: str, component: str, instance_id: str | None = None) -> dict[str, str]:
    labels = {LABEL_APP: label_value(app), LABEL_COMPONENT: label_value(component)}
    if instance_id is not None:
        labels[LABEL_INSTANCE] = short_hash(instance_id, 12)
    return labels


def component_labels(app: str, component: str, cluster: str, instance_id: str | None = None) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, LABEL_CLUSTER: label_value(cluster),
            **selector_labels(app, component, instance_id)}


def component_selector(app: str, component: str | None = None, cluster: str | None = None) -> str:
    """Label selector string for list calls: everything we manage for an app (or one component)."""
    parts = [f"{MANAGED_BY}={MANAGER}", f"{LABEL_APP}={label_value(app)}"]
    if component is not None:
        parts.append(f"{LABEL_COMPONENT}={label_value(component)}")
    if cluster is not None:
        parts.append(f"{LABEL_CLUSTER}={label_value(cluster)}")
    return ",".join(parts)


def component_selector_all(cluster: str) -> str:
    """Everything we manage on one cluster."""
    return f"{MANAGED_BY}={MANAGER},{LABEL_CLUSTER}={label_value(cluster)}"


def deployment_name(app: str, component: str, instance_id: str | None = None) -> str:
    if instance_id is None:
        return dns_label(app, component)
    return dns_label(app, component, short_hash(instance_id))


def resolve_component(app: MLSysOpsApp, component: str, spec: dict[str, Any] | Component | None = None
                      ) -> Component:
    """The component description; `spec` (change_spec) replaces the stored one."""
    if isinstance(spec, Component):
        return spec
    if spec is not None:
        return Component.model_validate(spec)
    comp = app.component(component)
    if comp is None:
        raise ValueError(f"app {app.name} has no component {component!r}")
    return comp


def desired_replicas(comp: Component) -> int:
    scaling = comp.node_placement.scaling if comp.node_placement else None
    return max(1, int(scaling.instances)) if scaling is not None and scaling.instances else 1


# ---------------------------------------------------------------- containers


def _cpu(value: Any) -> str:
    return f"{max(1, round(value.value * 1000))}m"


def _memory(value: Any) -> str:
    return str(max(1, round(value.value)))


def container_resources(c: Container) -> dict[str, Any]:
    req = c.platform_requirements
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if req is not None:
        if req.cpu is not None and req.cpu.requests is not None:
            requests["cpu"] = _cpu(req.cpu.requests)
        if req.cpu is not None and req.cpu.limits is not None:
            limits["cpu"] = _cpu(req.cpu.limits)
        if req.memory is not None and req.memory.requests is not None:
            requests["memory"] = _memory(req.memory.requests)
        if req.memory is not None and req.memory.limits is not None:
            limits["memory"] = _memory(req.memory.limits)
        if req.gpu is not None and (req.gpu.limits or req.gpu.requests):
            # extended resources: requests must equal limits, so set the limit only
            limits[GPU_RESOURCE] = str(req.gpu.limits or req.gpu.requests)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _container_name(comp: Component, index: int) -> str:
    return dns_label(comp.name) if index == 0 else dns_label(comp.name, str(index))


def container_manifest(comp: Component, c: Container, index: int) -> dict[str, Any]:
    if not c.image:
        raise ValueError(f"component {comp.name}: container {index} has no image")
    out: dict[str, Any] = {"name": _container_name(comp, index), "image": c.image}
    if c.command:
        out["command"] = list(c.command)
    if c.image_pull_policy is not None:
        out["imagePullPolicy"] = str(c.image_pull_policy)
    if c.env:
        env = []
        for e in c.env:
            item: dict[str, Any] = {"name": e.name}
            if e.value is not None:
                item["value"] = e.value
            elif e.value_from is not None and e.value_from.field_ref is not None:
                item["valueFrom"] = {"fieldRef": {"fieldPath": e.value_from.field_ref.field_path}}
            env.append(item)
        out["env"] = env
    if c.ports:
        ports = []
        for p in c.ports:
            if p.container_port is None:
                continue
            port: dict[str, Any] = {"containerPort": p.container_port,
                                    "protocol": str(p.protocol or "TCP")}
            if p.name:
                port["name"] = p.name
            if p.host_port is not None:
                port["hostPort"] = p.host_port
            if p.host_ip:
                port["hostIP"] = p.host_ip
            ports.append(port)
        if ports:
            out["ports"] = ports
    resources = container_resources(c)
    if resources:
        out["resources"] = resources
    return out


def restart_policy_note(comp: Component) -> str | None:
    rp = comp.restart_policy
    if rp is None or str(rp) == "Always":
        return None
    return (f"component {comp.name}: restart_policy {rp} is not possible for a Deployment; "
            "it runs with Always (kept in annotation mlsysops.eu/restart-policy)")


def node_affinity(nodes: list[str]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": sorted(set(nodes))}]}]}}}


def pod_spec(comp: Component, nodes: list[str] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container_manifest(comp, c, i) for i, c in enumerate(comp.containers)],
        "restartPolicy": "Always",
    }
    if nodes:
        spec["affinity"] = node_affinity(nodes)
    if comp.runtime_class_name is not None and str(comp.runtime_class_name) != "default":
        spec["runtimeClassName"] = str(comp.runtime_class_name)
    if comp.host_network:
        spec["hostNetwork"] = True
    return spec


# ---------------------------------------------------------------- objects


def deployment(app: MLSysOpsApp, component: str, *, cluster: str, nodes: list[str] | None = None,
               instance_id: str | None = None, replicas: int | None = None, namespace: str | None = None,
               spec: dict[str, Any] | Component | None = None) -> dict[str, Any]:
    comp = resolve_component(app, component, spec)
    labels = component_labels(app.name, comp.name, cluster, instance_id)
    annotations: dict[str, str] = {}
    if instance_id is not None:
        annotations[ANN_INSTANCE_ID] = instance_id
    if nodes:
        annotations[ANN_NODE] = ",".join(sorted(set(nodes)))
    if comp.restart_policy is not None and str(comp.restart_policy) != "Always":
        annotations[ANN_RESTART_POLICY] = str(comp.restart_policy)
    if replicas is None:
        replicas = 1 if instance_id is not None else desired_replicas(comp)
    metadata: dict[str, Any] = {"name": deployment_name(app.name, comp.name, instance_id), "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(app.name, comp.name, instance_id)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 2,
            "template": {"metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
                         "spec": pod_spec(comp, nodes)},
        },
    }


def receivers(app: MLSysOpsApp) -> set[str]:
    """Components that receive traffic according to `component_interactions`."""
    out: set[str] = set()
    for it in app.component_interactions or []:
        kind = str(it.type) if it.type is not None else "egress"
        target = it.component_name1 if kind == "ingress" else it.component_name2
        if target:
            out.add(target)
    return out


def service_ports(comp: Component) -> list[dict[str, Any]]:
    ports = []
    seen: set[tuple[int, str]] = set()
    for c in comp.containers:
        for p in c.ports or []:
            proto = str(p.protocol or "TCP")
            if p.container_port is None or (p.container_port, proto) in seen:
                continue
            seen.add((p.container_port, proto))
            ports.append({"name": p.name or f"{proto.lower()}-{p.container_port}", "port": p.container_port,
                          "targetPort": p.container_port, "protocol": proto})
    return ports


def services(app: MLSysOpsApp, component: str, *, cluster: str, namespace: str | None = None,
             spec: dict[str, Any] | Component | None = None) -> list[dict[str, Any]]:
    comp = resolve_component(app, component, spec)
    ports = service_ports(comp)
    if not ports and comp.name not in receivers(app):
        return []
    svc_spec: dict[str, Any] = {"selector": selector_labels(app.name, comp.name)}
    if ports:
        svc_spec["ports"] = ports
        if comp.external_access:
            svc_spec["type"] = "NodePort"
    else:   # receives traffic on undeclared ports: DNS to the pods only
        svc_spec["clusterIP"] = "None"
    metadata: dict[str, Any] = {"name": dns_label(comp.name),
                                "labels": component_labels(app.name, comp.name, cluster)}
    if namespace:
        metadata["namespace"] = namespace
    return [{"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": svc_spec}]


def component_manifests(app: MLSysOpsApp, component: str, *, cluster: str, nodes: list[str] | None = None,
                        instance_id: str | None = None, namespace: str | None = None,
                        spec: dict[str, Any] | Component | None = None) -> list[dict[str, Any]]:
    return [deployment(app, component, cluster=cluster, nodes=nodes, instance_id=instance_id,
                       namespace=namespace, spec=spec),
            *services(app, component, cluster=cluster, namespace=namespace, spec=spec)]
