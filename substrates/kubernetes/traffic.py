"""Pure builders for traffic between clusters (plain dicts, like `manifests`).

Serving cluster: an *export* Service of type NodePort (`<component>-export`) selecting the component's
pods; its node ports on the cluster's node addresses are the endpoints other clusters call.

Calling cluster: a Service named after the component (the DNS name its callers already use,
`<component>.<namespace>.svc`) with the component's ports and **no selector**, plus one EndpointSlice
managed by us (`endpointslice.kubernetes.io/managed-by: traffic.mlsysops.eu`) that lists the serving
cluster's endpoints. kube-proxy matches a Service port to the slice's port of the same name, so the
caller's port stays the description's (e.g. 1883) while the slice says the node port.

Route objects carry `mlsysops.eu/route-for: <component>` and no `mlsysops.eu/component` label: the
placement mechanism's clean-up of a component (by component label) never takes a route, and a route's
clean-up deletes a Service only while it is still a route (no selector).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mlsysops.agents.descriptions.app import Component, MLSysOpsApp
from mlsysops.substrates.kubernetes.manifests import (
    LABEL_APP,
    LABEL_CLUSTER,
    MANAGED_BY,
    MANAGER,
    component_labels,
    dns_label,
    label_value,
    resolve_component,
    selector_labels,
    service_ports,
)

LABEL_ROLE = "mlsysops.eu/traffic-role"            # export | route
LABEL_ROUTE_FOR = "mlsysops.eu/route-for"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_SLICE_MANAGER = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGER = "traffic.mlsysops.eu"   # a label value: no "/"
ANN_SERVING_CLUSTER = "mlsysops.eu/serving-cluster"
DISCOVERY_GROUP = "discovery.k8s.io"
SLICE_PLURAL = "endpointslices"


def export_name(component: str) -> str:
    return dns_label(component, "export")


def route_service_name(component: str) -> str:
    return dns_label(component)


def slice_name(component: str) -> str:
    return dns_label(component, "mlsysops")


def export_service(app: MLSysOpsApp, component: str | Component, *, cluster: str, namespace: str) -> dict[str, Any] | None:
    """The NodePort Service through which other clusters reach `component`; None without declared ports."""
    comp = resolve_component(app, component) if isinstance(component, str) else component
    ports = service_ports(comp)
    if not ports:
        return None
    labels = {**component_labels(app.name, comp.name, cluster), LABEL_ROLE: "export"}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": export_name(comp.name), "namespace": namespace, "labels": labels},
            "spec": {"type": "NodePort", "selector": selector_labels(app.name, comp.name), "ports": ports}}


def route_labels(app: str, component: str, cluster: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, LABEL_APP: label_value(app), LABEL_CLUSTER: label_value(cluster),
            LABEL_ROLE: "route", LABEL_ROUTE_FOR: label_value(component)}


def route_selector(app: str, cluster: str, role: str) -> str:
    return f"{MANAGED_BY}={MANAGER},{LABEL_APP}={label_value(app)},{LABEL_CLUSTER}={label_value(cluster)},{LABEL_ROLE}={role}"


def route_ports(app: MLSysOpsApp | None, component: str, endpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The caller-side Service ports: the description's (name, port) when the app is known here, else one
    per endpoint port name at the endpoint's own port."""
    comp = app.component(component) if app is not None else None
    if comp is not None and service_ports(comp):
        return [{"name": p["name"], "port": p["port"], "protocol": p["protocol"]} for p in service_ports(comp)]
    seen: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        name = ep.get("name") or f"{ep.get('protocol', 'TCP').lower()}-{ep['port']}"
        seen.setdefault(name, {"name": name, "port": ep["port"], "protocol": ep.get("protocol", "TCP")})
    return list(seen.values())


def route_service(app: MLSysOpsApp | None, app_name: str, component: str, *, cluster: str, namespace: str,
                  serving_cluster: str, endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": route_service_name(component), "namespace": namespace,
                         "labels": route_labels(app_name, component, cluster),
                         "annotations": {ANN_SERVING_CLUSTER: serving_cluster}},
            "spec": {"ports": route_ports(app, component, endpoints)}}


def address_type(addresses: list[str]) -> str:
    kinds = set()
    for a in addresses:
        try:
            kinds.add(f"IPv{ipaddress.ip_address(a).version}")
        except ValueError:
            kinds.add("FQDN")
    return kinds.pop() if len(kinds) == 1 else "FQDN"


def endpoint_slice(app_name: str, component: str, *, cluster: str, namespace: str, serving_cluster: str,
                   endpoints: list[dict[str, Any]], api_version: str) -> dict[str, Any]:
    """One slice for the serving cluster's endpoints (node ports are cluster-wide: one port set)."""
    addresses = list(dict.fromkeys(ep["address"] for ep in endpoints))   # as offered: the hosting nodes first
    ports: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        name = ep.get("name") or f"{ep.get('protocol', 'TCP').lower()}-{ep['port']}"
        ports.setdefault(name, {"name": name, "port": ep["port"], "protocol": ep.get("protocol", "TCP")})
    labels = {**route_labels(app_name, component, cluster), LABEL_SERVICE_NAME: route_service_name(component),
              LABEL_SLICE_MANAGER: SLICE_MANAGER}
    return {"apiVersion": f"{DISCOVERY_GROUP}/{api_version}", "kind": "EndpointSlice",
            "metadata": {"name": slice_name(component), "namespace": namespace, "labels": labels,
                         "annotations": {ANN_SERVING_CLUSTER: serving_cluster}},
            "addressType": address_type(addresses),
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
            "ports": list(ports.values())}


def slice_endpoints(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The (address, port) pairs a slice lists, in the same shape as `Endpoint` bodies."""
    out = []
    for ep in obj.get("endpoints") or []:
        for addr in ep.get("addresses") or []:
            for p in obj.get("ports") or []:
                out.append({"address": addr, "port": p.get("port"), "name": p.get("name"),
                            "protocol": p.get("protocol", "TCP")})
    return sorted(out, key=lambda e: (e["address"], e["port"] or 0))
