"""Filter plugins: yes/no per (component, node), with a human reason on no.

A filter is prepared once per request (``FilterPlugin.prepare``): it returns ``None`` when it has
nothing to check for that request (no labels required, no pin, ...), otherwise a node check that returns
``None`` when the node passes and the rejection reason otherwise. Preparing once keeps the per-node work
of a 1,000-node decision to a set lookup or a comparison. ``filter_*`` functions are the same checks in
the plain ``(request, node) -> FilterResult`` form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mlsysops.agents.placement.types import PASS, ComponentRequest, FilterResult, NodeView, format_bytes

NodeCheck = Callable[[NodeView], str | None]
"""Prepared check: ``None`` if the node passes, else the rejection reason."""

Prepare = Callable[[ComponentRequest], NodeCheck | None]


@dataclass(frozen=True, slots=True)
class FilterPlugin:
    """A named filter; ``prepare(request)`` is None when the filter does not apply to the request."""

    name: str
    prepare: Prepare


def _fmt_set(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _alive(request: ComponentRequest) -> NodeCheck:
    return lambda node: None if node.alive else "node down"


def _schedulable(request: ComponentRequest) -> NodeCheck:
    return lambda node: node.unschedulable


def _pinned(request: ComponentRequest) -> NodeCheck | None:
    pinned = request.node
    if pinned is None:
        return None
    reason = f"pinned to {pinned}"
    return lambda node: None if node.name == pinned else reason


def _layer(request: ComponentRequest) -> NodeCheck | None:
    if request.any_layer:
        return None
    layers = frozenset(request.layers)
    tail = f" not in {_fmt_set(layers)}"
    return lambda node: None if node.layer in layers else f"layer {node.layer or '?'}{tail}"


def _labels(request: ComponentRequest) -> NodeCheck | None:
    if not request.labels:
        return None
    # "key:value" must match exactly; a bare "key" matches any value (or a bare label of that name).
    wanted = [(label, ":" in label) for label in dict.fromkeys(request.labels)]

    def check(node: NodeView) -> str | None:
        missing = [
            lbl for lbl, exact in wanted if lbl not in node.labels and (exact or lbl not in node.label_keys)
        ]
        return "missing label " + ", ".join(missing) if missing else None

    return check


def _mobility(request: ComponentRequest) -> NodeCheck | None:
    wanted = request.mobile
    if wanted is None:
        return None
    reason = "not mobile" if wanted else "node is mobile"
    return lambda node: None if node.mobile == wanted else reason


def _sensors(request: ComponentRequest) -> NodeCheck | None:
    if not request.sensors:
        return None
    wanted = list(dict.fromkeys(request.sensors))

    def check(node: NodeView) -> str | None:
        missing = [s for s in wanted if s not in node.sensors]
        return "no sensor " + ", ".join(missing) if missing else None

    return check


def _architecture(request: ComponentRequest) -> NodeCheck | None:
    if not request.architectures:
        return None
    archs = frozenset(request.architectures)
    tail = f" not in {_fmt_set(archs)}"
    return lambda node: (
        None if node.architecture in archs else f"architecture {node.architecture or '?'}{tail}"
    )


def _gpu(request: ComponentRequest) -> NodeCheck | None:
    if not request.gpu:
        return None
    return lambda node: None if node.gpu else "no gpu"


def _cpu(request: ComponentRequest) -> NodeCheck | None:
    cpu = request.cpu_cores
    if cpu <= 0:
        return None
    # Small epsilon: requests summed from millicores must not fail on float noise.
    limit = cpu - 1e-9

    def check(node: NodeView) -> str | None:
        free = node.cpu_capacity - node.cpu_allocated
        if free >= limit:
            return None
        return f"insufficient cpu: requests {cpu:g}, free {max(free, 0.0):.3g}"

    return check


def _memory(request: ComponentRequest) -> NodeCheck | None:
    mem = request.memory_bytes
    if mem <= 0:
        return None

    def check(node: NodeView) -> str | None:
        free = node.memory_capacity - node.memory_allocated
        if free >= mem:
            return None
        return f"insufficient memory: requests {format_bytes(mem)}, free {format_bytes(max(free, 0))}"

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


def run_filters(
    request: ComponentRequest, node: NodeView, checks: Sequence[NodeCheck] | None = None
) -> list[str]:
    """All rejection reasons of ``node`` for ``request``; empty means the node is feasible."""
    if checks is None:
        checks = applicable_filters(request)
    return [reason for check in checks if (reason := check(node)) is not None]


def _as_filter(prepare: Prepare) -> Callable[[ComponentRequest, NodeView], FilterResult]:
    def filter_fn(request: ComponentRequest, node: NodeView) -> FilterResult:
        check = prepare(request)
        reason = check(node) if check is not None else None
        return PASS if reason is None else FilterResult(False, reason)

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
