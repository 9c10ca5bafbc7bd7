"""Filter plugins: yes/no per (component, node); a no is a ``Status`` (code, reason, plugin name).

A filter is prepared once per request (``FilterPlugin.prepare``): it returns ``None`` when it has
nothing to check for that request (no labels required, no pin, ...), otherwise a node check that returns
``None`` when the node passes and the rejection ``Status`` otherwise. Preparing once keeps the per-node
work of a 1,000-node decision to a set lookup or a comparison; constant rejections are built once per
request, not per node. ``filter_*`` functions are the same checks in the plain
``(request, node) -> Status`` form (``SUCCESS`` when the node passes).

Codes: ``cpu`` and ``memory`` say ``Unschedulable`` (the node may fit once capacity is freed); every
other filter says ``UnschedulableAndUnresolvable`` (what the node *is* does not change by moving work).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mlsysops.agents.placement.framework import SUCCESS, Code, Status
from mlsysops.agents.placement.types import ComponentRequest, NodeView, format_bytes

NodeCheck = Callable[[NodeView], Status | None]
"""Prepared check: ``None`` if the node passes, else the rejection status."""

Prepare = Callable[[ComponentRequest], NodeCheck | None]

UNRESOLVABLE = Code.UNSCHEDULABLE_AND_UNRESOLVABLE

_new = tuple.__new__
"""``_new(Status, (code, reason, plugin))`` builds a Status without NamedTuple's Python-level ``__new__``:
the per-node rejections below are the hot path of a 1,000-node decision."""


class _StatusCache(dict):
    """Per-request cache of the status for one distinct rejection key (a layer, a missing-label tuple):
    most rejected nodes repeat a handful of reasons, so each is formatted once. ``cache[key]`` is a
    plain dict lookup; ``build`` runs on a miss only."""

    __slots__ = ("build",)

    def __init__(self, build: Callable[[Any], Status]) -> None:
        super().__init__()
        self.build = build

    def __missing__(self, key: Any) -> Status:
        status = self[key] = self.build(key)
        return status


@dataclass(frozen=True, slots=True)
class FilterPlugin:
    """A named filter; ``prepare(request)`` is None when the filter does not apply to the request.
    Satisfies ``mlsysops.agents.placement.framework.Filter``."""

    name: str
    prepare: Prepare


def _fmt_set(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _alive(request: ComponentRequest) -> NodeCheck:
    down = Status(UNRESOLVABLE, "node down", "alive")
    return lambda node: None if node.alive else down


def _schedulable(request: ComponentRequest) -> NodeCheck:
    status_of = _StatusCache(lambda why: _new(Status, (UNRESOLVABLE, why, "schedulable")))
    return lambda node: None if node.unschedulable is None else status_of[node.unschedulable]


def _pinned(request: ComponentRequest) -> NodeCheck | None:
    pinned = request.node
    if pinned is None:
        return None
    elsewhere = Status(UNRESOLVABLE, f"pinned to {pinned}", "pinned")
    return lambda node: None if node.name == pinned else elsewhere


def _layer(request: ComponentRequest) -> NodeCheck | None:
    if request.any_layer:
        return None
    layers = frozenset(request.layers)
    tail = f" not in {_fmt_set(layers)}"
    status_of = _StatusCache(lambda layer: _new(Status, (UNRESOLVABLE, f"layer {layer or '?'}{tail}", "layer")))
    return lambda node: None if node.layer in layers else status_of[node.layer]


def _labels(request: ComponentRequest) -> NodeCheck | None:
    if not request.labels:
        return None
    # "key:value" must match exactly; a bare "key" matches any value (or a bare label of that name).
    wanted = [(label, ":" in label) for label in dict.fromkeys(request.labels)]
    status_of = _StatusCache(
        lambda missing: _new(Status, (UNRESOLVABLE, "missing label " + ", ".join(missing), "labels"))
    )
    if len(wanted) == 1:  # the common case: one label, one prebuilt status
        (label, exact), = wanted
        only = status_of[(label,)]
        if exact:
            return lambda node: None if label in node.labels else only
        return lambda node: None if label in node.labels or label in node.label_keys else only

    def check(node: NodeView) -> Status | None:
        missing = [
            lbl for lbl, exact in wanted if lbl not in node.labels and (exact or lbl not in node.label_keys)
        ]
        return status_of[tuple(missing)] if missing else None

    return check


def _mobility(request: ComponentRequest) -> NodeCheck | None:
    wanted = request.mobile
    if wanted is None:
        return None
    refused = Status(UNRESOLVABLE, "not mobile" if wanted else "node is mobile", "mobility")
    return lambda node: None if node.mobile == wanted else refused


def _sensors(request: ComponentRequest) -> NodeCheck | None:
    if not request.sensors:
        return None
    wanted = list(dict.fromkeys(request.sensors))
    status_of = _StatusCache(
        lambda missing: _new(Status, (UNRESOLVABLE, "no sensor " + ", ".join(missing), "sensors"))
    )
    if len(wanted) == 1:  # the common case: one sensor, one prebuilt status
        sensor = wanted[0]
        only = status_of[(sensor,)]
        return lambda node: None if sensor in node.sensors else only

    def check(node: NodeView) -> Status | None:
        missing = [s for s in wanted if s not in node.sensors]
        return status_of[tuple(missing)] if missing else None

    return check


def _architecture(request: ComponentRequest) -> NodeCheck | None:
    if not request.architectures:
        return None
    archs = frozenset(request.architectures)
    tail = f" not in {_fmt_set(archs)}"
    status_of = _StatusCache(
        lambda arch: _new(Status, (UNRESOLVABLE, f"architecture {arch or '?'}{tail}", "architecture"))
    )
    return lambda node: None if node.architecture in archs else status_of[node.architecture]


def _gpu(request: ComponentRequest) -> NodeCheck | None:
    if not request.gpu:
        return None
    no_gpu = Status(UNRESOLVABLE, "no gpu", "gpu")
    return lambda node: None if node.gpu else no_gpu


def _cpu(request: ComponentRequest) -> NodeCheck | None:
    cpu = request.cpu_cores
    if cpu <= 0:
        return None
    # Small epsilon: requests summed from millicores must not fail on float noise.
    limit = cpu - 1e-9

    def check(node: NodeView) -> Status | None:
        free = node.cpu_capacity - node.cpu_allocated
        if free >= limit or SLOTS in node.label_keys:   # a device's capacity is its service slots
            return None
        return _new(
            Status, (Code.UNSCHEDULABLE, f"insufficient cpu: requests {cpu:g}, free {max(free, 0.0):.3g}", "cpu")
        )

    return check


def _memory(request: ComponentRequest) -> NodeCheck | None:
    mem = request.memory_bytes
    if mem <= 0:
        return None

    def check(node: NodeView) -> Status | None:
        if SLOTS in node.label_keys:   # a device's capacity is its service slots
            return None
        free = node.memory_capacity - node.memory_allocated
        if free >= mem:
            return None
        return _new(Status, (
            Code.UNSCHEDULABLE,
            f"insufficient memory: requests {format_bytes(mem)}, free {format_bytes(max(free, 0))}",
            "memory",
        ))

    return check


SLOTS = "service-slots"
"""Label of a device behind a gateway (``service-slots:N``): it runs at most N services, whatever their cpu
and memory requests (a microcontroller's firmware slots, not a share of cores)."""


def _slots(request: ComponentRequest) -> NodeCheck | None:
    def check(node: NodeView) -> Status | None:
        if SLOTS not in node.label_keys:
            return None
        slots = next((label.split(":", 1)[1] for label in node.labels if label.startswith(SLOTS + ":")), "0")
        total = int(slots) if slots.isdigit() else 0
        used = sum(node.hosted.values())
        if used < total:
            return None
        return _new(Status, (Code.UNSCHEDULABLE, f"all {total} service slots of the device are taken", "service_slots"))

    return check


DEFAULT_FILTERS: tuple[FilterPlugin, ...] = (
    FilterPlugin("alive", _alive),
    FilterPlugin("schedulable", _schedulable),
    FilterPlugin("pinned", _pinned),
    FilterPlugin("layer", _layer),
    FilterPlugin("labels", _labels),
    FilterPlugin("mobility", _mobility),
    FilterPlugin("sensors", _sensors),
    FilterPlugin("architecture", _architecture),
    FilterPlugin("gpu", _gpu),
    FilterPlugin("cpu", _cpu),
    FilterPlugin("memory", _memory),
    FilterPlugin("service_slots", _slots),
)
"""Filters in evaluation (and reason) order."""


def applicable_filters(
    request: ComponentRequest, filters: Sequence[FilterPlugin] = DEFAULT_FILTERS
) -> list[NodeCheck]:
    """The prepared checks that have something to verify for ``request``."""
    checks = []
    for plugin in filters:
        check = plugin.prepare(request)
        if check is not None:
            checks.append(check)
    return checks


def filter_statuses(
    request: ComponentRequest, node: NodeView, checks: Sequence[NodeCheck] | None = None
) -> list[Status]:
    """Every rejection status of ``node`` for ``request`` in filter order; empty means feasible."""
    if checks is None:
        checks = applicable_filters(request)
    return [status for check in checks if (status := check(node)) is not None]


def run_filters(
    request: ComponentRequest, node: NodeView, checks: Sequence[NodeCheck] | None = None
) -> list[str]:
    """All rejection reasons of ``node`` for ``request``; empty means the node is feasible."""
    return [status.reason for status in filter_statuses(request, node, checks)]


def _as_filter(prepare: Prepare) -> Callable[[ComponentRequest, NodeView], Status]:
    def filter_fn(request: ComponentRequest, node: NodeView) -> Status:
        check = prepare(request)
        status = check(node) if check is not None else None
        return SUCCESS if status is None else status

    filter_fn.__doc__ = f"One-shot form of the {prepare.__name__.lstrip('_')} filter."
    return filter_fn


filter_alive = _as_filter(_alive)
filter_pinned = _as_filter(_pinned)
filter_layer = _as_filter(_layer)
filter_labels = _as_filter(_labels)
filter_mobility = _as_filter(_mobility)
filter_sensors = _as_filter(_sensors)
filter_architecture = _as_filter(_architecture)
filter_gpu = _as_filter(_gpu)
filter_cpu = _as_filter(_cpu)
filter_memory = _as_filter(_memory)
