"""The `system_description` each layer passes to its policies (a fresh deep copy every cycle).

The original framework passed the agent's own description file; ours passes the layer's live view,
documented here, with that description's body under `description` (what an original policy receives,
through `mlsysops.agents.compat`, as `{"MLSysOpsCluster": {...}}` etc.). Model objects (`MLSysOpsNode`, `MLSysOpsApp`) are the pydantic description models of
`mlsysops.agents.descriptions`.
"""

from __future__ import annotations

from typing import Any, TypedDict

# -- continuum -------------------------------------------------------------------------------------------


class ContinuumNodeEntry(TypedDict):
    model: Any                       # MLSysOpsNode, as the cluster registered it
    alive: bool
    cpu_utilization: float           # 0..1, from the cluster's heartbeat digest
    instances: list[dict[str, Any]]  # {app, component, cpu_request_cores, memory_request_bytes}


class ClusterEntry(TypedDict):
    alive: bool          # False once the cluster agent has been lost longer than the eviction timeout
    agent_alive: bool    # its agent answers heartbeats right now
    nodes: dict[str, ContinuumNodeEntry]


class ContinuumSystemDescription(TypedDict):
    now: float
    description: dict[str, Any]              # the agent's own MLSysOpsContinuum body
    clusters: dict[str, ClusterEntry]
    app_models: dict[str, Any]               # app name -> MLSysOpsApp
    assignments: dict[str, dict[str, str]]   # app -> {component: cluster}


# -- cluster ---------------------------------------------------------------------------------------------


class ClusterNodeEntry(TypedDict, total=False):
    model: Any             # MLSysOpsNode (required)
    alive: bool            # (required) node agent alive and, on Kubernetes, the Node Ready
    cpu_utilization: float  # (required)
    kubernetes: dict[str, Any]    # Kubernetes only: what the cluster says about the Node
    unschedulable: str | None     # Kubernetes only: why nothing can be placed there


class InstanceRow(TypedDict, total=False):
    instance_id: str
    app: str
    component: str
    node: str
    status: str          # deploying | running | failed | lost | relocating
    since: float
    reason: str | None
    cpu_request_cores: float
    memory_request_bytes: int
    retrying: bool       # Kubernetes keeps retrying it where it is (e.g. ImagePullBackOff)


class RelocationRequest(TypedDict):
    app: str
    component: str
    instance_id: str
    node: str
    reason: str
    ts: float


class ClusterSystemDescription(TypedDict):
    """See also `mlsysops.agents.placement.cluster_view`, which reads it into placement views."""

    cluster_id: str
    now: float
    description: dict[str, Any]              # the agent's own MLSysOpsCluster body
    nodes: dict[str, ClusterNodeEntry]
    instances: list[InstanceRow]             # removed instances excluded
    latency_ms: dict[str, dict[str, float]]  # node -> node -> ms, from the placement mechanism's state
    app_models: dict[str, Any]               # app name -> MLSysOpsApp
    assigned: dict[str, list[str]]           # app -> the components the continuum asked this cluster to run
    qos: dict[str, list[float]]              # "app/component" -> recent QoS samples, oldest first
    proposals: list[RelocationRequest]       # nodes' relocation proposals of the last minute


# -- node ------------------------------------------------------------------------------------------------


class NodeInstance(TypedDict):
    instance_id: str
    app: str
    component: str
    state: str               # the substrate's state of the instance (e.g. running, starting, failed)
    cpu_usage_cores: float


class NodeSystemDescription(TypedDict):
    node: str
    now: float
    description: dict[str, Any]      # the agent's own MLSysOpsNode body
    cpu_utilization: list[float]   # the last (up to 60) samples, oldest first, 0..1
    instances: list[NodeInstance]
