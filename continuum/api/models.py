"""Request and response models of the northbound API (the OpenAPI schemas are generated from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    ok: bool
    time: float


class Readiness(BaseModel):
    ready: bool
    clusters_alive: int
    clusters_known: int


class ComponentStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str
    cluster: str | None = None
    nodes: list[str] = Field(default_factory=list)
    since: float | None = None
    reason: str | None = None


class AppSummary(BaseModel):
    name: str
    submitted: float | None
    components: int
    status: dict[str, int] = Field(description="number of components per status")


class AppDetail(BaseModel):
    name: str
    submitted: float | None
    description: dict[str, Any] = Field(description="the description in Kubernetes form")
    components: dict[str, ComponentStatus]


class ComponentExplanation(BaseModel):
    component: str
    status: str
    cluster: str | None = None
    nodes: list[str] = Field(default_factory=list)
    converged: bool = Field(description="running as desired (and within its QoS target, as far as known)")
    reason: str = Field(description="the one dominant reason, in plain words")
    evidence: list[str] = Field(description="what the reason rests on: filters and their counts, reports, moves")
    next_step: str | None = Field(description="what an operator can do about it")


class AppExplanation(BaseModel):
    app: str
    converged: bool
    summary: str
    components: list[ComponentExplanation]


class TrafficRoute(BaseModel):
    """Where one calling cluster's traffic to one component goes."""

    component: str
    from_cluster: str
    to_cluster: str | None
    via: Literal["local", "endpoints", "none"] = Field(description=(
        "local: the component runs in the caller's cluster (its Service selects the pods); endpoints: a "
        "route to the serving cluster's exposed endpoints; none: no route yet (not running anywhere)"))
    endpoints: list[dict[str, Any]] = Field(default_factory=list)
    since: float | None = None
    error: str | None = Field(None, description="why the last rewrite of this cluster's routes failed")


class AppAccepted(BaseModel):
    name: str
    result: Literal["created", "replaced", "unchanged"]
    components: int
    warnings: list[dict[str, Any]] = Field(default_factory=list)


class AppRemoved(BaseModel):
    name: str
    result: Literal["removed"] = "removed"


class HostedComponent(BaseModel):
    app: str
    component: str
    status: str


class NodeSummary(BaseModel):
    name: str
    cluster: str
    layer: str | None = Field(None, description="continuum layer of the node (cloud, edge_infrastructure, edge, "
                                                "far_edge: a device behind a gateway is a far_edge node)")
    alive: bool | None = Field(description="as last reported by its cluster; null while the cluster agent is lost")
    cpu_utilization: float | None
    power_watts: float | None = Field(None, description="latest hw.power of the node (W), from its telemetry")
    energy_joules: float | None = Field(None, description="latest hw.energy counter of the node (J since its "
                                                          "agent or simulator started)")
    last_heartbeat: float | None = Field(description="time of the node agent's last heartbeat to its cluster "
                                                     "(as the cluster last reported it)")
    trust: float | None = Field(None, description="the cluster's trust in the node, 0..1 (1: nothing held "
                                                  "against it); null while the cluster agent is lost")
    trust_reason: str | None = Field(None, description="the main evidence against the node, if any")
    components: list[HostedComponent]


class DrainState(BaseModel):
    state: Literal["none", "draining", "stuck"]
    reason: str | None = Field(None, description="why a drain could not complete (undo: PATCH cordoned=false)")


class NodeDetail(NodeSummary):
    description: dict[str, Any]
    drain: DrainState | None = Field(None, description="in `mlsysops up` only: the node's drain, if any")


class NodePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cordoned: Literal[False] = Field(description="false: uncordon (undo a drain; the node keeps what runs)")


class NodeUncordoned(BaseModel):
    name: str
    was: Literal["none", "draining", "stuck"]
    kept: int = Field(description="instances that stay on the node")


class ClusterSummary(BaseModel):
    id: str
    jid: str
    registered: bool
    alive: bool
    joined_at: float | None = None
    last_heartbeat: float | None = None
    lost_reason: str | None = None
    nodes: int
    nodes_alive: int


class ClusterDetail(ClusterSummary):
    description: dict[str, Any] | None
    node_status: list[NodeSummary]


class ContinuumView(BaseModel):
    id: str
    jid: str
    connected: bool
    started_at: float
    description: dict[str, Any]
    clusters: int
    clusters_alive: int
    apps: int


class NodeAdded(BaseModel):
    name: str
    cluster: str
    result: Literal["added"] = "added"


class NodeRemoved(BaseModel):
    name: str
    relocated: int
    result: Literal["removed"] = "removed"


class ModeRequest(BaseModel):
    mode: Literal["heuristic", "ml", "auto", "shadow"]
    agent: str | None = Field(None, description="one agent of this process; omitted: the whole slice")
    app: str | None = Field(None, description="the mode of this app only; omitted: the slice's mode")


class PingRequest(BaseModel):
    agent: str | None = Field(None, description="cluster id; omitted: the API -> continuum agent round trip")


class PingResult(BaseModel):
    agent: str
    transport: Literal["xmpp", "in-process"]
    latency_ms: float


class FaultRequest(BaseModel):
    kind: Literal["crash", "recover", "slow", "spike", "degrade_link", "clear"]
    node: str | None = None
    factor: float | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)
    cpu_cores: float | None = Field(None, ge=0)
    a: str | None = Field(None, description="degrade_link: one end")
    b: str | None = Field(None, description="degrade_link: the other end")
    extra_ms: float | None = Field(None, ge=0)


class FaultResult(BaseModel):
    injected: str


