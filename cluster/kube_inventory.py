"""A cluster's node inventory: Kubernetes Nodes (watched) merged with the MLSysOpsNode descriptions.

Kubernetes says what is there and whether it is healthy (labels, capacity/allocatable, conditions,
nodeInfo); the descriptions say what the operator declared (layer, sensors, power, hardware). `merged()`
joins both per node name and flags where they disagree, as warning strings:

* a described node without a Kubernetes Node (`in_kubernetes` False: nothing can run there);
* a Kubernetes Node without a description: placeable only when labelled `mlsysops.eu/cluster=<id>`
  (then `as_description()` builds a stand-in description from what Kubernetes reports);
* description vs Kubernetes: cores, memory, GPU, architecture, cluster label.

Nodes labelled for another cluster and not described here are left out (several clusters may share
one API server, as sim clusters do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.aio import client as k
from kubernetes.utils import parse_quantity

from mlsysops.agents.descriptions.enums import ContainerRuntime, ContinuumLayer, CpuArchitecture
from mlsysops.agents.descriptions.loader import to_dict
from mlsysops.agents.descriptions.node import MLSysOpsNode
from mlsysops.substrates.kubernetes.client import RetryPolicy
from mlsysops.substrates.kubernetes.manifests import GPU_RESOURCE, LABEL_CLUSTER
from mlsysops.substrates.kubernetes.watch import ResourceWatch

log = logging.getLogger(__name__)

LABEL_LAYER = "mlsysops.eu/layer"
LABEL_PREFIX = "mlsysops.eu/"
# mlsysops.eu/* labels that are bookkeeping, not description labels
RESERVED_LABELS = {LABEL_CLUSTER, LABEL_LAYER, "mlsysops.eu/node", "mlsysops.eu/app", "mlsysops.eu/component",
                   "mlsysops.eu/instance"}
CPU_TOLERANCE = 0.10     # allocatable is capacity minus reserved: only a larger gap is a mismatch
MEMORY_TOLERANCE = 0.10


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: float = 0.0          # cores
    memory: int = 0           # bytes
    pods: int = 0
    gpu: int = 0              # nvidia.com/gpu

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> Resources:
        raw = raw or {}

        def num(key: str) -> float:
            try:
                return float(parse_quantity(raw[key])) if key in raw else 0.0
            except ValueError:
                return 0.0

        return cls(cpu=num("cpu"), memory=int(num("memory")), pods=int(num("pods")), gpu=int(num(GPU_RESOURCE)))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        if self.gpu:
            out[GPU_RESOURCE] = self.gpu
        return out


@dataclass(slots=True)
class NodeView:
    """One node as Kubernetes and the description see it together."""

    name: str
    described: bool
    in_kubernetes: bool
    eligible: bool                      # may be placed on: described, or labelled for this cluster
    ready: bool | None = None           # Ready condition; None: no Node or no Ready condition
    unschedulable: bool = False         # cordoned (spec.unschedulable)
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)   # type -> status/reason/message
    labels: dict[str, str] = field(default_factory=dict)
    capacity: Resources | None = None
    allocatable: Resources | None = None
    architecture: str | None = None
    os: str | None = None
    container_runtime: str | None = None
    description: MLSysOpsNode | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def layer(self) -> str | None:
        """Continuum layer: the description's, else the Node's `mlsysops.eu/layer` label."""
        if self.description is not None:
            return str(self.description.continuum_layer)
        return self.labels.get(LABEL_LAYER)

    @property
    def placeable(self) -> bool:
        """Something may be placed there now."""
        return self.eligible and self.in_kubernetes and self.ready is True and not self.unschedulable

    def why_unplaceable(self) -> str | None:
        """Why nothing new may be placed here now (None: placeable), as the decision log says it."""
        if not self.in_kubernetes:
            return "no Kubernetes Node of this name"
        if not self.eligible:
            return f"Kubernetes Node not labelled {LABEL_CLUSTER} for this cluster"
        if self.ready is not True:
            return "Kubernetes: node not ready"
        if self.unschedulable:
            return "Kubernetes: node cordoned (unschedulable)"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "described": self.described, "in_kubernetes": self.in_kubernetes,
                "eligible": self.eligible, "placeable": self.placeable, "layer": self.layer, "ready": self.ready,
                "unschedulable": self.unschedulable, "conditions": self.conditions, "labels": self.labels,
                "capacity": self.capacity.as_dict() if self.capacity else None,
                "allocatable": self.allocatable.as_dict() if self.allocatable else None,
                "architecture": self.architecture, "os": self.os, "container_runtime": self.container_runtime,
                "description": to_dict(self.description) if self.description else None,
                "warnings": list(self.warnings)}


def _cores(value: float) -> str:
    return f"{value:g}"


def _mismatches(desc: MLSysOpsNode, view: NodeView, cluster_id: str) -> list[str]:
    out = []
    alloc = view.allocatable or Resources()
    cores = desc.cpu_cores
    gap = abs(alloc.cpu - cores)
    if cores and gap >= 1 and gap > CPU_TOLERANCE * cores:   # descriptions only hold whole cores
        out.append(f"description says {cores} cores but Kubernetes allocatable is {_cores(alloc.cpu)}")
    mem = desc.memory_bytes
    if mem and abs(alloc.memory - mem) > MEMORY_TOLERANCE * mem:
        out.append(f"description says {mem / 2**30:.3g} GiB memory but Kubernetes allocatable is "
                   f"{alloc.memory / 2**30:.3g} GiB")
    if desc.gpu_present and not alloc.gpu:
        out.append(f"description has a GPU but Kubernetes allocatable has no {GPU_RESOURCE}")
    if not desc.gpu_present and alloc.gpu:
        out.append(f"Kubernetes allocatable has {alloc.gpu} {GPU_RESOURCE} but the description has no GPU")
    if desc.architecture and view.architecture and desc.architecture != view.architecture:
        out.append(f"description says architecture {desc.architecture} but the node reports "
                   f"{view.architecture}")
    label = view.labels.get(LABEL_CLUSTER)
    if label is not None and label != cluster_id:
        out.append(f"node is labelled {LABEL_CLUSTER}={label}, not {cluster_id}")
    return out


def node_view(name: str, node: dict[str, Any] | None, desc: MLSysOpsNode | None, cluster_id: str) -> NodeView:
    """Merge one Kubernetes Node (a plain dict as the API server sends it) with its description."""
    labels = dict(((node or {}).get("metadata") or {}).get("labels") or {})
    view = NodeView(name=name, described=desc is not None, in_kubernetes=node is not None,
                    eligible=desc is not None or labels.get(LABEL_CLUSTER) == cluster_id,
                    description=desc, labels=labels)
    if node is not None:
        status = node.get("status") or {}
        view.conditions = {c["type"]: {"status": c.get("status", "Unknown"), "reason": c.get("reason") or "",
                                       "message": c.get("message") or ""}
                           for c in status.get("conditions") or [] if c.get("type")}
        ready = view.conditions.get("Ready")
        view.ready = None if ready is None else ready["status"] == "True"
        view.unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
        view.capacity = Resources.parse(status.get("capacity"))
        view.allocatable = Resources.parse(status.get("allocatable") or status.get("capacity"))
        info = status.get("nodeInfo") or {}
        view.architecture = info.get("architecture") or labels.get("kubernetes.io/arch")
        view.os = info.get("operatingSystem") or labels.get("kubernetes.io/os")
        view.container_runtime = info.get("containerRuntimeVersion") or None
    if desc is not None and node is None:
        view.warnings.append("described but there is no Kubernetes Node of that name")
    elif desc is not None:
        view.warnings.extend(_mismatches(desc, view, cluster_id))
    elif not view.eligible:
        view.warnings.append(f"Kubernetes Node not described and not labelled {LABEL_CLUSTER}={cluster_id}: "
                             "ignored for placement")
    return view


def _foreign(node: dict[str, Any], cluster_id: str) -> bool:
    label = ((node.get("metadata") or {}).get("labels") or {}).get(LABEL_CLUSTER)
    return label is not None and label != cluster_id


def merge(nodes: dict[str, dict[str, Any]], descriptions: dict[str, MLSysOpsNode], cluster_id: str
          ) -> dict[str, NodeView]:
    """Every described node and every Kubernetes Node of this cluster, merged (sorted by name)."""
    names = set(descriptions) | {n for n, obj in nodes.items() if not _foreign(obj, cluster_id)}
    return {n: node_view(n, nodes.get(n), descriptions.get(n), cluster_id) for n in sorted(names)}


def _byte_quantity(n: int) -> str:
    """Bytes with a suffix: in a node description a plain number means GiB."""
    for suffix, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n % size == 0:
            return f"{n // size}{suffix}"
    return f"{n / 1000!r}k"


def description_from_node(view: NodeView, cluster_id: str, default_layer: str = "edge") -> MLSysOpsNode:
    """A stand-in MLSysOpsNode for an undescribed Node, from its capacity, labels and nodeInfo."""
    labels = []
    for key, value in sorted(view.labels.items()):
        if key.startswith(LABEL_PREFIX) and key not in RESERVED_LABELS:
            short = key[len(LABEL_PREFIX):]
            labels.append(f"{short}:{value}" if value else short)
    layer = view.labels.get(LABEL_LAYER, default_layer)
    if layer not in ContinuumLayer.__members__.values():
        layer = default_layer
    cap = view.capacity or Resources()
    cpu: dict[str, Any] = {"cores": max(1, int(cap.cpu))}
    if view.architecture in CpuArchitecture.__members__.values():
        cpu["architecture"] = view.architecture
    hardware: dict[str, Any] = {"cpu": cpu}
    if cap.memory:
        hardware["memory"] = _byte_quantity(cap.memory)
    if cap.gpu:
        hardware["gpu"] = {"instances": cap.gpu}
    environment: dict[str, Any] = {}
    runtime = (view.container_runtime or "").split("://", 1)[0]
    if runtime in ContainerRuntime.__members__.values():
        environment["container_runtime"] = [runtime]
    return MLSysOpsNode.model_validate({"name": view.name, "continuum_layer": layer, "cluster_id": cluster_id,
                                        "labels": labels or None, "environment": environment,
                                        "hardware": hardware})


OnChange = Callable[[str, NodeView | None], Awaitable[None]]


class NodeInventory:
    """Kubernetes Nodes of one cluster, kept current by a resumable watch, merged with the descriptions.

    Wiring (cluster agent): `inv = NodeInventory(api, cluster_id, {name: MLSysOpsNode})`, then
    `await inv.start()` once (spawns the watch; waits up to `timeout` for the first list, returns whether
    it synced) and `await inv.stop()` on shutdown. Read `inv.merged()` / `inv.placeable()` when planning;
    `inv.as_description(name)` gives a description for an undescribed but labelled Node. Pass
    `on_change(name, view_or_None)` to react to a node turning NotReady or disappearing (None: neither
    described nor in Kubernetes any more). `set_descriptions()` replaces the descriptions.
    Tests without a server call `apply_list()` / `apply_event()` directly.
    """

    def __init__(self, api: k.ApiClient | None, cluster_id: str, descriptions: dict[str, MLSysOpsNode],
                 *, on_change: OnChange | None = None, label_selector: str | None = None,
                 default_layer: str = "edge", policy: RetryPolicy | None = None) -> None:
        self.api = api
        self.cluster_id = cluster_id
        self.descriptions = dict(descriptions)
        self.on_change = on_change
        self.label_selector = label_selector
        self.default_layer = default_layer
        self.policy = policy
        self.nodes: dict[str, dict[str, Any]] = {}     # Node name -> Node as last seen (plain dict)
        self.version = 0                                # bumped on every change (tests, cheap polling)
        self.watch: ResourceWatch | None = None
        self._task: asyncio.Task | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self, timeout: float | None = 10.0) -> bool:
        if self.api is None:
            raise RuntimeError("NodeInventory without an ApiClient cannot watch")
        if self._task is None:
            core = k.CoreV1Api(self.api)
            self.watch = ResourceWatch(self.api, core.list_node, on_sync=self._on_sync, on_event=self._on_event,
                                       label_selector=self.label_selector, policy=self.policy)
            self._task = asyncio.create_task(self.watch.run(), name=f"node-inventory-{self.cluster_id}")
        assert self.watch is not None
        try:
            async with asyncio.timeout(timeout):
                await self.watch.synced.wait()
        except TimeoutError:
            log.warning("node inventory %s: no node list after %ss (%s); still trying", self.cluster_id,
                        timeout, self.watch.last_error)
            return False
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def synced(self) -> bool:
        return self.watch is not None and self.watch.synced.is_set()

    # -- state --------------------------------------------------------------------------------------
    def set_descriptions(self, descriptions: dict[str, MLSysOpsNode]) -> None:
        self.descriptions = dict(descriptions)
        self.version += 1

    def apply_list(self, items: Iterable[dict[str, Any]]) -> set[str]:
        """Replace the known Nodes by a full list; returns the names that changed."""
        new = {obj["metadata"]["name"]: obj for obj in items}
        changed = {n for n in set(new) | set(self.nodes) if new.get(n) != self.nodes.get(n)}
        self.nodes = new
        self.version += 1
        return changed

    def apply_event(self, kind: str, obj: dict[str, Any]) -> str:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = obj
        self.version += 1
        return name

    async def _on_sync(self, items: list[dict[str, Any]]) -> None:
        for name in sorted(self.apply_list(items)):
            await self._notify(name)

    async def _on_event(self, kind: str, obj: dict[str, Any]) -> None:
        await self._notify(self.apply_event(kind, obj))

    async def _notify(self, name: str) -> None:
        if self.on_change is None:
            return
        node = self.nodes.get(name)
        if name not in self.descriptions and (node is None or _foreign(node, self.cluster_id)):
            view = None
        else:
            view = node_view(name, node, self.descriptions.get(name), self.cluster_id)
        try:
            await self.on_change(name, view)
        except Exception:   # a consumer bug must not stop the watch
            log.exception("node inventory %s: on_change(%s) failed", self.cluster_id, name)

    # -- queries ------------------------------------------------------------------------------------
    def merged(self) -> dict[str, NodeView]:
        return merge(self.nodes, self.descriptions, self.cluster_id)

    def view(self, name: str) -> NodeView | None:
        return self.merged().get(name)

    def placeable(self) -> list[str]:
        return [n for n, v in self.merged().items() if v.placeable]

    def warnings(self) -> dict[str, list[str]]:
        return {n: v.warnings for n, v in self.merged().items() if v.warnings}

    def as_description(self, name: str) -> MLSysOpsNode | None:
        """The description if there is one; else a stand-in built from the Node when it is labelled
        for this cluster; else None (unknown, or not ours)."""
        if name in self.descriptions:
            return self.descriptions[name]
        node = self.nodes.get(name)
        if node is None:
            return None
        view = node_view(name, node, None, self.cluster_id)
        if not view.eligible:
            return None
        return description_from_node(view, self.cluster_id, self.default_layer)
