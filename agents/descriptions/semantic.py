"""Checks that need more than one field: names that must refer to something, cycles, requests <= limits.

``check(description, inventory)`` returns issues (errors and warnings) with paths relative to the
description body; the loader adds file and document index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.agents.descriptions.base import Description
from mlsysops.agents.descriptions.errors import PathPart, ValidationIssue, did_you_mean, format_path
from mlsysops.agents.descriptions.infra import MLSysOpsCluster, MLSysOpsContinuum, MLSysOpsDatacenter
from mlsysops.agents.descriptions.node import MLSysOpsNode
from mlsysops.agents.descriptions.storage_intents import StorageSite, bucket_intents, placement_problem

_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class Inventory:
    """Names the app checks may refer to: known nodes and clusters (e.g. of one slice)."""

    nodes: frozenset[str] = field(default_factory=frozenset)
    clusters: frozenset[str] = field(default_factory=frozenset)
    # the slice's storage sites (slice config `storage.sites`); empty: no storage service, no bucket check
    storage_sites: tuple[StorageSite, ...] = ()

    @classmethod
    def from_descriptions(cls, descriptions: Iterable[Description]) -> Inventory:
        nodes: set[str] = set()
        clusters: set[str] = set()
        for desc in descriptions:
            if isinstance(desc, MLSysOpsNode):
                nodes.add(desc.name)
            elif isinstance(desc, MLSysOpsCluster):
                clusters.add(desc.cluster_id)
                nodes.update(desc.nodes)
            elif isinstance(desc, MLSysOpsContinuum):
                clusters.update(desc.clusters)
        return cls(frozenset(nodes), frozenset(clusters))


class _Checker:
    def __init__(self) -> None:
        self.issues: list[ValidationIssue] = []

    def add(self, path: tuple[PathPart, ...], message: str, severity: str = "error", **kw: object) -> None:
        self.issues.append(ValidationIssue(message, path=format_path(path), severity=severity, **kw))  # type: ignore[arg-type]

    def ref(self, path: tuple[PathPart, ...], name: str, known: Iterable[str], what: str) -> None:
        known = sorted(known)
        self.add(
            path,
            f"{what} {name!r} does not exist",
            value=name,
            expected=f"one of: {', '.join(known)}" if known else f"a known {what}",
            suggestion=did_you_mean(name, known),
        )

    def unique(
        self, path: tuple[PathPart, ...], names: list[str], what: str, suffix: tuple[PathPart, ...] = ()
    ) -> None:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                self.add(
                    (*path, i, *suffix), f"duplicate {what} {name!r}", value=name, expected=f"unique {what}s"
                )
            seen.add(name)


def check(desc: Description, inventory: Inventory | None = None) -> list[ValidationIssue]:
    """All semantic problems of one description."""
    checker = _Checker()
    if not _K8S_NAME.match(desc.id):
        checker.add(
            (desc.id_field,),
            f"{desc.id!r} cannot be used as a Kubernetes object name "
            "(lowercase letters, digits, '-' and '.')",
            severity="warning",
            value=desc.id,
        )
    if isinstance(desc, MLSysOpsApp):
        _check_app(desc, inventory, checker)
    elif isinstance(desc, MLSysOpsNode):
        _check_node(desc, checker)
    elif isinstance(desc, (MLSysOpsCluster, MLSysOpsDatacenter)):
        checker.unique(("nodes",), desc.nodes, "node")
    elif isinstance(desc, MLSysOpsContinuum):
        checker.unique(("clusters",), desc.clusters, "cluster")
    return checker.issues


def _check_app(app: MLSysOpsApp, inventory: Inventory | None, c: _Checker) -> None:
    names = [comp.name for comp in app.components]
    c.unique(("components",), names, "component name", ("metadata", "name"))
    known = set(names)
    for i, comp in enumerate(app.components):
        base: tuple[PathPart, ...] = ("components", i)
        for j, dep in enumerate(comp.depends_on or []):
            if dep == comp.name:
                c.add((*base, "depends_on", j), "a component cannot depend on itself", value=dep)
            elif dep not in known:
                c.ref((*base, "depends_on", j), dep, known, "component")
        placement = comp.node_placement
        if placement and placement.node and inventory is not None and placement.node not in inventory.nodes:
            c.ref((*base, "node_placement", "node"), placement.node, inventory.nodes, "node")
        for k, sensor in enumerate(comp.sensors or []):
            if not sensor.refs():
                c.add(
                    (*base, "sensors", k),
                    "sensor entry names no sensor kind",
                    expected="one of camera, temperature, accelerometer, barometer, air_quality",
                )
        for k, container in enumerate(comp.containers):
            _check_limits(
                container.platform_requirements, (*base, "containers", k, "platform_requirements"), c
            )
    _check_cycles(app, c)
    _check_buckets(app, known, c)
    if inventory is not None and inventory.storage_sites:
        for intent in bucket_intents(app):
            problem = placement_problem(intent, inventory.storage_sites)
            if problem:
                c.add(_path_parts(intent.path), problem, value=intent.bucket_id,
                      expected=f"constraints some of the sites {[s.name for s in inventory.storage_sites]} satisfy")
    for i, inter in enumerate(app.component_interactions or []):
        for key in ("component_name1", "component_name2"):
            name = getattr(inter, key)
            if name is not None and name not in known:
                c.ref(("component_interactions", i, key), name, known, "component")
    for i, group in enumerate(app.single_node or []):
        for j, name in enumerate(group.components or []):
            if name not in known:
                c.ref(("single_node", i, "components", j), name, known, "component")
        if group.node and inventory is not None and group.node not in inventory.nodes:
            c.ref(("single_node", i, "node"), group.node, inventory.nodes, "node")
    if app.cluster_placement and inventory is not None:
        for i, cid in enumerate(app.cluster_placement.cluster_id or []):
            if cid not in inventory.clusters:
                c.ref(("cluster_placement", "cluster_id", i), cid, inventory.clusters, "cluster")
    sat = app.global_satisfaction
    if sat is not None:
        if sat.threshold is not None and not 0 < sat.threshold <= 1:
            c.add(
                ("global_satisfaction", "threshold"),
                "threshold out of range",
                value=sat.threshold,
                expected="a number in (0, 1]",
            )
        metric_ids = {q.application_metric_id for comp in app.components for q in comp.qos_metrics or []}
        for i, weight in enumerate(sat.achievement_weights or []):
            if weight.metric_id is not None and weight.metric_id not in metric_ids:
                c.add(
                    ("global_satisfaction", "achievement_weights", i, "metric_id"),
                    f"metric {weight.metric_id!r} is not a qos_metrics application_metric_id of any "
                    "component",
                    severity="warning",
                    value=weight.metric_id,
                    suggestion=did_you_mean(weight.metric_id, [m for m in metric_ids if m]),
                )


def _check_buckets(app: MLSysOpsApp, known: set[str], c: _Checker) -> None:
    """A bucket is one per app (the storage service keys it by app and bucket_id), and its access
    targets name components of the app."""
    seen: dict[str, str] = {}
    for i, comp in enumerate(app.components):
        for j, bucket in enumerate((comp.storage.buckets if comp.storage else None) or []):
            path: tuple[PathPart, ...] = ("components", i, "storage", "buckets", j)
            if bucket.bucket_id in seen:
                c.add((*path, "bucket_id"), f"bucket {bucket.bucket_id!r} is already declared by component "
                      f"{seen[bucket.bucket_id]!r}", value=bucket.bucket_id,
                      expected="one declaration per bucket; list other users under access_latency")
            seen.setdefault(bucket.bucket_id, comp.name)
            for k, target in enumerate(bucket.access_latency or []):
                if target.component not in known:
                    c.ref((*path, "access_latency", k, "component"), target.component, known, "component")


def _path_parts(dotted: str) -> tuple[PathPart, ...]:
    """`components[0].storage.buckets[1]` -> ("components", 0, "storage", "buckets", 1)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", dotted) if p)


def _check_limits(reqs: object, path: tuple[PathPart, ...], c: _Checker) -> None:
    if reqs is None:
        return
    for part in ("cpu", "memory", "gpu"):
        res = getattr(reqs, part, None)
        if res is None or res.requests is None or res.limits is None:
            continue
        if res.requests > res.limits:
            c.add(
                (*path, part, "requests"),
                f"{part} request is above its limit ({res.limits})",
                value=getattr(res.requests, "raw", res.requests),
                expected=f"<= limits ({res.limits})",
            )


def _check_cycles(app: MLSysOpsApp, c: _Checker) -> None:
    graph = {comp.name: [d for d in comp.depends_on or [] if d != comp.name] for comp in app.components}
    index = {comp.name: i for i, comp in enumerate(app.components)}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    reported: set[frozenset[str]] = set()

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for dep in graph.get(name, []):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    c.add(
                        ("components", index[dep], "depends_on"),
                        "dependency cycle: " + " -> ".join(cycle),
                        value=cycle,
                        expected="depends_on without cycles",
                    )
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def _check_node(node: MLSysOpsNode, c: _Checker) -> None:
    if node.location is not None:
        if len(node.location) != 2:
            c.add(
                ("location",),
                "location must be [longitude, latitude]",
                value=node.location,
                expected="two numbers",
            )
        elif not (-180 <= node.location[0] <= 180 and -90 <= node.location[1] <= 90):
            c.add(
                ("location",),
                "location is outside [-180..180, -90..90]; the order is [longitude, latitude]",
                severity="warning",
                value=node.location,
            )
    for k, sensor in enumerate(node.sensors or []):
        if not sensor.refs():
            c.add(
                ("sensors", k),
                "sensor entry names no sensor kind",
                expected="one of camera, temperature, accelerometer, humidity, sound, co2, barometer, "
                "air_quality",
            )
