"""Our engine's policy arguments -> the shapes the original framework passed, per layer.

The layer is recognised from our system description (each layer's live view is a TypedDict of
`mlsysops.agents.contracts.system_description`): `clusters` + `assignments` = continuum, `cluster_id` =
cluster, `node` = node. What the original passed (ORIGINAL-INTERFACES.md, "Policy plugins"):

| argument | continuum | cluster | node |
|---|---|---|---|
| application_description | `[flat app]` | `[{name, spec: flat app, app_uid}]` | `[{name, component_name, spec, pod_spec}]` per local component (global scope: `[]`) |
| system_description | `{"MLSysOpsContinuum": {...}}` | `{"MLSysOpsCluster": {...}}` | `{"MLSysOpsNode": {...}}` |

`mechanisms` keeps ours and adds the original names we answer to (`names.ORIGINAL_MECHANISMS`), with the
state the original mechanism had where a policy reads it (`fluidity`'s `applications`/`nodes`).
`telemetry` is the original dict: endpoints from the environment, a `dataframe` and an async `query`.
"""

from __future__ import annotations

import os
from typing import Any

from mlsysops.agents.compat.frame import frame_from_telemetry
from mlsysops.agents.compat.names import aliases_for

Layer = str   # continuum | cluster | node


def layer_of(system: dict[str, Any]) -> Layer:
    if "clusters" in system and "assignments" in system:
        return "continuum"
    if "cluster_id" in system:
        return "cluster"
    if "node" in system:
        return "node"
    raise ValueError(f"cannot tell the layer from a system description with keys {sorted(system)}")


def _flat_app(asset: dict[str, Any]) -> dict[str, Any]:
    """Our asset is `{name, **spec, policies}`: the flat description, as the original had it."""
    app = dict(asset)
    if app.get("policies") is None:
        app.pop("policies", None)
    return app


def _apps(app_desc: Any, scope: str) -> list[dict[str, Any]]:
    if scope == "global":
        return [_flat_app(a) for _, a in sorted((app_desc or {}).items())]
    return [_flat_app(app_desc)] if isinstance(app_desc, dict) else []


def application_description(layer: Layer, app_desc: Any, scope: str) -> list[dict[str, Any]]:
    apps = _apps(app_desc, scope)
    if layer == "continuum":
        return apps
    if layer == "cluster":
        # the original passed the CR: spec = the object with its fields at the root; app_uid was the
        # Kubernetes uid, which a simulated slice has not: the app's name identifies it uniquely here
        return [{"name": a["name"], "spec": a, "app_uid": a["name"]} for a in apps]
    # node: one entry per component running here, the app spec restricted to the local components (the
    # node agent knows them by name only) and the instance as `pod_spec`
    out = []
    for a in apps:
        spec = {"name": a["name"], "components": list(a.get("components", []))}
        for inst in a.get("instances", []):
            out.append({"name": a["name"], "component_name": inst["component"], "spec": spec, "pod_spec": inst})
    return out


def system_description(layer: Layer, system: dict[str, Any]) -> dict[str, Any]:
    own = dict(system.get("description") or {})
    if layer == "continuum":
        own["clusters"] = sorted(system.get("clusters", {}))
        return {"MLSysOpsContinuum": own}
    if layer == "cluster":
        own.setdefault("cluster_id", system.get("cluster_id"))
        own["nodes"] = sorted(system.get("nodes", {}))
        return {"MLSysOpsCluster": own}
    own.setdefault("name", system.get("node"))
    return {"MLSysOpsNode": own}


def _model_dict(model: Any) -> dict[str, Any]:
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", exclude_none=True, by_alias=True)
    return dict(model) if isinstance(model, dict) else {}


def fluidity_state(system: dict[str, Any], apps: list[dict[str, Any]]) -> dict[str, Any]:
    """The original fluidity mechanism's `get_state()` shape, from our cluster view's instance table."""
    by_app: dict[str, dict[str, Any]] = {}
    per_node: dict[str, list[str]] = {}
    for row in system.get("instances", []):
        if row.get("status") in ("failed", "lost"):
            continue
        comps = by_app.setdefault(row["app"], {})
        comp = comps.setdefault(row["component"], {"uid": row["instance_id"], "qos_metrics": {},
                                                   "state": row.get("status"), "node_placed": row.get("node"),
                                                   "labels": {}})
        comp["state"] = row.get("status")
        per_node.setdefault(row.get("node", ""), []).append(f"{row['app']}/{row['component']}")
    applications = {}
    specs = {a["name"]: a for a in apps}
    for name, model in (system.get("app_models") or {}).items():
        spec = specs.get(name) or _model_dict(model)
        comps = by_app.get(name, {})
        # every component of the app has an entry, `node_placed: None` until it runs somewhere (policies
        # index the state by component name)
        for comp in spec.get("components", []):
            meta = comp.get("metadata", {}) if isinstance(comp, dict) else {}
            if meta.get("name") and meta["name"] not in comps:
                comps[meta["name"]] = {"uid": meta.get("uid"), "qos_metrics": {}, "state": None,
                                       "node_placed": None, "labels": {}}
        applications[name] = {"spec": spec, "components": comps, "global_metrics": {}}
    nodes = {name: {"spec": _model_dict(entry.get("model")), "ready": bool(entry.get("alive")),
                    "resources": {}, "components": per_node.get(name, [])}
             for name, entry in (system.get("nodes") or {}).items()}
    return {"applications": applications, "nodes": nodes,
            "cluster": {"description": dict(system.get("description") or {})}}


def mechanisms_view(layer: Layer, mechanisms: dict[str, Any], system: dict[str, Any],
                    apps: list[dict[str, Any]]) -> dict[str, Any]:
    view = dict(mechanisms)
    for original, ours in aliases_for(layer).items():
        if ours in mechanisms and original not in mechanisms:
            view[original] = {"state": None, "options": None}
    if layer == "cluster" and "fluidity" in view:
        flat = [a.get("spec", a) for a in apps]
        view["fluidity"] = {"state": fluidity_state(system, flat),
                            "options": (view["fluidity"] or {}).get("options")}
    return view


def telemetry_dict(telemetry: Any) -> dict[str, Any]:
    async def query(start_time: float | None = None, end_time: float | None = None, latest: bool = False) -> Any:
        frame = frame_from_telemetry(telemetry, latest=latest, start_time=start_time, end_time=end_time)
        if latest and frame.empty:
            raise ValueError("The data store is empty. No latest row available.")   # as the original did
        return frame

    return TelemetryDict(telemetry, prometheus_endpoint=os.environ.get("LOCAL_OTEL_ENDPOINT"),
                         grafana_endpoint=os.environ.get("GRAFANA_ENDPOINT"), query=query)


class TelemetryDict(dict):
    """The original telemetry dict; its `dataframe` (every series of the agent) is built on first read,
    since most policies only `query` (measured: building it on every call tripled a cycle's cost)."""

    def __init__(self, telemetry: Any, **items: Any) -> None:
        super().__init__(items, dataframe=None)
        self._telemetry = telemetry
        self._built = False

    def _resolve(self) -> None:
        if not self._built:
            self._built = True
            dict.__setitem__(self, "dataframe", frame_from_telemetry(self._telemetry))

    def __getitem__(self, key: Any) -> Any:
        if key == "dataframe":
            self._resolve()
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def items(self) -> Any:
        self._resolve()
        return super().items()

    def values(self) -> Any:
        self._resolve()
        return super().values()
