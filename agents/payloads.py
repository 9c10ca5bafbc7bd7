"""Body schemas of the application-level message kinds (membership ones live in `protocol`).

Work flows down as requests (`app.deploy`, `app.remove`, `app.routes`), facts flow up as informs (`status.report`,
`telemetry.report`) and node proposals (`plan.propose`). Every body is validated on receipt; an invalid
one is answered with FAILURE and the reason (see `agent_base`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlsysops.agents.protocol import Kind, Performative, register_payload

InstanceStatus = Literal["deploying", "starting", "running", "failed", "stopped", "lost", "removed", "unknown"]
ComponentStatus = Literal["pending", "deploying", "running", "failed", "relocating", "removed", "unknown"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppDeploy(_Body):
    """Continuum -> cluster: run these components of this app (the full set for this cluster)."""

    app: str = Field(min_length=1)
    description: dict[str, Any]
    components: list[str]


class AppRemove(_Body):
    app: str = Field(min_length=1)
    components: list[str] | None = None     # None: every component of the app on this cluster


class Endpoint(_Body):
    """Where a serving cluster accepts a component's traffic from other clusters (a NodePort on a node's
    address, or a load balancer's)."""

    address: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    name: str | None = Field(None, max_length=63)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class Route(_Body):
    """Calls to a component with no instance in the receiving cluster go to `cluster`, at `endpoints`."""

    cluster: str = Field(min_length=1)
    endpoints: list[Endpoint] = Field(default_factory=list, max_length=64)


class AppRoutes(_Body):
    """Continuum -> cluster: the full traffic set of this app for this cluster (idempotent): the
    components it must expose to other clusters, and where its callers' traffic to the components it
    does not run must go. The reply's `detail.exposed` maps each exposed component to its endpoints."""

    app: str = Field(min_length=1)
    expose: list[str] = Field(default_factory=list)
    routes: dict[str, Route] = Field(default_factory=dict)


class Accepted(_Body):
    accepted: bool = True
    detail: dict[str, Any] = Field(default_factory=dict)


class InstanceReport(_Body):
    instance_id: str
    app: str
    component: str
    node: str
    status: InstanceStatus
    since: float | None = None
    reason: str | None = None


class ComponentReport(_Body):
    app: str
    component: str
    status: ComponentStatus
    cluster: str | None = None
    nodes: list[str] = Field(default_factory=list)
    instances: int = 0
    since: float | None = None
    reason: str | None = None


class StatusReport(_Body):
    """Node -> cluster (instances) and cluster -> continuum (components). `full` replaces what the
    receiver knew from this sender (reconciliation); otherwise it is a delta."""

    source: str
    full: bool = False
    instances: list[InstanceReport] = Field(default_factory=list)
    components: list[ComponentReport] = Field(default_factory=list)


DigestRow = tuple[str, dict[str, str], float, float, float, float, int]


class TelemetryReport(_Body):
    """Node -> cluster and cluster -> continuum: a digest of the sender's telemetry windows
    (`agents/telemetry/digest.py`): one row `[metric, labels, last, min, max, mean, count]` per series
    over the last `window` seconds. Large digests come in `parts` (each applied on its own)."""

    v: Literal[1] = 1
    source: str
    node: str | None = None
    cluster: str | None = None
    t: float
    window: float = Field(gt=0)
    part: int = Field(0, ge=0)
    parts: int = Field(1, ge=1)
    series: list[DigestRow] = Field(default_factory=list)


class PlanProposal(_Body):
    """Node -> cluster: please relocate this instance (the cluster decides)."""

    app: str
    component: str
    instance_id: str
    node: str
    reason: str


class KnobCommand(_Body):
    """Cluster -> node: drive one of the node's knobs (`cpu_frequency`, `gpu_frequency`, ...) with the
    command its mechanism takes. The node refuses a knob its `permitted_actions` do not list."""

    knob: str = Field(min_length=1, max_length=64)
    command: dict[str, Any] = Field(default_factory=dict)


class KnobResult(_Body):
    ok: bool
    detail: Any = None
    state: dict[str, Any] = Field(default_factory=dict)


register_payload(Kind.APP_DEPLOY, Performative.REQUEST, AppDeploy)
register_payload(Kind.APP_DEPLOY, Performative.INFORM, Accepted)
register_payload(Kind.APP_REMOVE, Performative.REQUEST, AppRemove)
register_payload(Kind.APP_REMOVE, Performative.INFORM, Accepted)
register_payload(Kind.APP_ROUTES, Performative.REQUEST, AppRoutes)
register_payload(Kind.APP_ROUTES, Performative.INFORM, Accepted)
register_payload(Kind.STATUS_REPORT, Performative.INFORM, StatusReport)
register_payload(Kind.TELEMETRY_REPORT, Performative.INFORM, TelemetryReport)
register_payload(Kind.PLAN_PROPOSE, Performative.REQUEST, PlanProposal)
register_payload(Kind.PLAN_PROPOSE, Performative.INFORM, Accepted)
register_payload(Kind.NODE_KNOB, Performative.REQUEST, KnobCommand)
register_payload(Kind.NODE_KNOB, Performative.INFORM, KnobResult)
