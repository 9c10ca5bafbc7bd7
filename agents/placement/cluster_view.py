"""Read the cluster agent's `system_description` into placement views.

The cluster agent hands its policies one dict (reference contract: `system_description`)::

    {"cluster_id": "edge-1",
     "now": 1700000000.0,
     "nodes": {name: {"model": MLSysOpsNode, "alive": bool, "cpu_utilization": float,
                      "trust": {"score", "signals", "penalties", "reasons"}}},   # mlsysops.agents.trust
     "instances": [{"instance_id", "app", "component", "node", "status", "cpu_request_cores",
                    "memory_request_bytes", "since", "reason"}],   # status: deploying|running|failed|lost
     "latency_ms": {node: {node: ms}},
     "app_models": {app: MLSysOpsApp},
     "assigned": {app: [component, ...]},        # what the continuum asked this cluster to run
     "qos": {"app/component": [value, ...]},      # recent QoS observations, oldest first (worst instance)
     "proposals": [{"app", "component", "instance_id", "node", "reason"}]}

Instances with status `lost` (their node is gone) stay in the table until relocation replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlsysops.agents.placement.adapters import component_requests, node_view
from mlsysops.agents.placement.types import ComponentKey, ComponentRequest, NodeView

ACTIVE = ("deploying", "starting", "running")


def occupying(inst: dict[str, Any]) -> bool:
    """Serves, will serve, or holds its place: a failed instance Kubernetes keeps retrying where it is
    (`retrying`, e.g. ImagePullBackOff) is not replaced elsewhere, which would only spread the failure and
    leave failing Deployments behind; it shows as failed with the reason until its spec is fixed."""
    return inst["status"] in ACTIVE or bool(inst.get("retrying"))


def instance_id(app: str, component: str, slot: int, node: str) -> str:
    """Deterministic id: a retried or repeated plan for the same slot and node is a no-op."""
    return f"{app}.{component}.{slot}@{node}"


def slot_of(iid: str) -> int | None:
    try:
        return int(iid.rsplit("@", 1)[0].rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return None


@dataclass(slots=True)
class ClusterState:
    cluster_id: str
    nodes: list[NodeView]
    alive: set[str]
    instances: list[dict[str, Any]]

    @classmethod
    def from_system(cls, system: dict[str, Any]) -> ClusterState:
        instances = list(system.get("instances", []))
        latency = system.get("latency_ms", {})
        views = []
        alive = set()
        for name, info in system.get("nodes", {}).items():
            is_alive = bool(info.get("alive", False))
            if is_alive:
                alive.add(name)
            hosted = [i for i in instances if i["node"] == name and occupying(i)]
            views.append(node_view(info["model"], alive=is_alive,
                                   cpu_utilization=float(info.get("cpu_utilization") or 0.0),
                                   instances=hosted, latency_ms=latency.get(name),
                                   unschedulable=info.get("unschedulable"), trust=info.get("trust")))
        return cls(system.get("cluster_id", ""), views, alive, instances)

    def active(self, app: str, component: str) -> list[dict[str, Any]]:
        """Instances that serve or will serve: active status on an alive node."""
        return [i for i in self.instances if i["app"] == app and i["component"] == component
                and occupying(i) and i["node"] in self.alive]

    def lost(self, app: str) -> list[dict[str, Any]]:
        return [i for i in self.instances if i["app"] == app and
                (i["status"] == "lost" or (i["status"] in ACTIVE and i["node"] not in self.alive))]

    def free_slot(self, app: str, component: str) -> int:
        used = {slot_of(i["instance_id"]) for i in self.active(app, component)}
        slot = 0
        while slot in used:
            slot += 1
        return slot


def assigned_requests(system: dict[str, Any], app: str) -> list[ComponentRequest]:
    model = system.get("app_models", {}).get(app)
    if model is None:
        return []
    return component_requests(model, only=system.get("assigned", {}).get(app))


def placements(state: ClusterState, app: str) -> dict[ComponentKey, list[str]]:
    out: dict[ComponentKey, list[str]] = {}
    for inst in state.instances:
        if inst["app"] == app and (occupying(inst) or inst["status"] == "lost"):
            out.setdefault((app, inst["component"]), []).append(inst["node"])
    return out
