"""Adapters from description models (and observed state) to the placement value types.

Placement logic works on `ComponentRequest` / `NodeView` snapshots; this module is the one place that
knows how descriptions map onto them, so filters never parse quantities or YAML shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlsysops.agents.descriptions import MLSysOpsApp, MLSysOpsNode
from mlsysops.agents.placement.types import ComponentKey, ComponentRequest, NodeView

QOS_METRIC = "response_time_ms"
"""Application metric id that the simulated continuum (and our QoS relocation) observes."""


def _callers_and_callees(app: MLSysOpsApp) -> dict[str, set[str]]:
    """Who talks to whom; direction does not matter for proximity."""
    peers: dict[str, set[str]] = {c.name: set() for c in app.components}
    for inter in app.component_interactions or []:
        a, b = inter.component_name1, inter.component_name2
        if a in peers and b in peers:
            peers[a].add(b)
            peers[b].add(a)
    return peers


def calls(app: MLSysOpsApp, component: str) -> list[str]:
    """Components that `component` sends requests to (egress: name1 -> name2; ingress: name2 -> name1)."""
    out = set()
    for inter in app.component_interactions or []:
        kind = str(inter.type) if inter.type is not None else "egress"
        src, dst = (inter.component_name1, inter.component_name2)
        if kind == "ingress":
            src, dst = dst, src
        if src == component and dst:
            out.add(dst)
    return sorted(out)


def callees(app: MLSysOpsApp, component: str) -> list[str]:
    """Every component `component` sends requests to: its interactions and what it depends on (the
    components whose traffic must reach it wherever they run)."""
    comp = app.component(component)
    deps = list(comp.depends_on or []) if comp is not None else []
    return sorted({*calls(app, component), *deps} - {component})


def instances_wanted(app: MLSysOpsApp, component: str) -> int:
    comp = app.component(component)
    scaling = comp.node_placement.scaling if comp and comp.node_placement else None
    if scaling is not None and scaling.instances:
        return max(1, int(scaling.instances))
    return 1


def qos_target(app: MLSysOpsApp, component: str) -> tuple[float, str] | None:
    comp = app.component(component)
    for metric in (comp.qos_metrics or []) if comp else []:
        if metric.application_metric_id == QOS_METRIC and metric.target is not None:
            return float(metric.target), str(metric.relation or "lower_or_equal")
    return None


def component_requests(app: MLSysOpsApp, only: Iterable[str] | None = None) -> list[ComponentRequest]:
    wanted = set(only) if only is not None else None
    peers = _callers_and_callees(app)
    out = []
    for comp in app.components:
        if wanted is not None and comp.name not in wanted:
            continue
        np = comp.node_placement
        layers = {str(layer) for layer in (np.continuum_layer or [])} if np else set()
        target = qos_target(app, comp.name)
        out.append(ComponentRequest(
            app=app.name,
            name=comp.name,
            layers=layers,
            labels=list(np.labels or []) if np else [],
            node=np.node if np else None,
            mobile=np.mobile if np else None,
            sensors=[f"{s.type}:{s.model}" if s.model else s.type for s in comp.required_sensors],
            cpu_cores=comp.cpu_request_cores,
            memory_bytes=comp.memory_request_bytes,
            gpu=comp.gpu_required,
            architectures=set(comp.architectures or []),
            depends_on=list(comp.depends_on or []),
            instances=instances_wanted(app, comp.name),
            interacts_with=sorted(peers.get(comp.name, ())),
            qos_target_ms=target[0] if target else None,
            qos_relation=target[1] if target else "lower_or_equal",
        ))
    return out


def node_view(node: MLSysOpsNode, *, alive: bool = True, cpu_utilization: float = 0.0,
              instances: Iterable[Mapping[str, Any]] = (),
              latency_ms: Mapping[str, float] | None = None, unschedulable: str | None = None,
              trust: Mapping[str, Any] | None = None) -> NodeView:
    """A node's scheduling snapshot: capacity from its description, allocation from what it hosts."""
    hosted: dict[ComponentKey, int] = {}
    cpu = 0.0
    mem = 0
    for inst in instances:
        key = (inst["app"], inst["component"])
        hosted[key] = hosted.get(key, 0) + 1
        cpu += float(inst.get("cpu_request_cores", 0.0))
        mem += int(inst.get("memory_request_bytes", 0))
    loc = tuple(node.location[:2]) if node.location and len(node.location) >= 2 else None
    return NodeView(
        name=node.name,
        cluster=node.cluster_id or "",
        layer=str(node.continuum_layer),
        labels=set(node.labels or []),
        mobile=bool(node.mobile),
        sensors={f"{s.type}:{s.model}" if s.model else s.type for s in node.sensor_refs},
        architecture=node.architecture or "amd64",
        gpu=node.gpu_present,
        cpu_capacity=float(node.cpu_cores),
        memory_capacity=node.memory_bytes,
        cpu_allocated=cpu,
        memory_allocated=mem,
        cpu_utilization=cpu_utilization,
        alive=alive,
        unschedulable=unschedulable,
        trust=float(trust["score"]) if trust else 1.0,
        trust_reasons=tuple(trust.get("reasons", ())) if trust else (),
        location=loc,  # type: ignore[arg-type]
        latency_ms=dict(latency_ms or {}),
        hosted=hosted,
    )
