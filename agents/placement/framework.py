"""The placement framework: filter/score plugin contracts, ``Status`` and the plugin registry.

Modelled on kube-scheduler's framework. A *filter* says yes/no per candidate (a node, or a cluster at the
continuum) and says no with a ``Status``: a code, a human reason and its own name. A *scorer* returns one
0..100 number per feasible candidate (or ``None`` when it has nothing to say), weighted against the
others. The candidate type is the layer's business (``NodeView`` for node placement, the continuum's
cluster view for cluster selection); this module only fixes the shapes.

A ``PluginRegistry`` knows the plugins of one kind of placement with their default order, enablement and
weight, and turns a policy's ``placement`` configuration into a ``Profile`` (the plugins to run, built
with their args, and the scorer weights), like a kube-scheduler profile's ``plugins`` and
``pluginConfig``::

    {"filters": {"disable": ["labels"], "enable": ["battery"], "cpu": {"args": {...}}},
     "scorers": {"proximity": {"weight": 2, "args": {"unknown_latency_ms": 50}},
                 "utilization": {"enabled": False}}}

Every mistake (unknown plugin, bad weight, bad args) is a ``PlacementConfigError`` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable


class Code(StrEnum):
    """Why a candidate was refused, as kube-scheduler's ``framework.Code``."""

    SUCCESS = "Success"
    UNSCHEDULABLE = "Unschedulable"
    """Refused now, may fit once something changes on the candidate (capacity freed, load dropped)."""
    UNSCHEDULABLE_AND_UNRESOLVABLE = "UnschedulableAndUnresolvable"
    """Refused for what the candidate *is* (layer, labels, sensors, pin): moving work off it will not help."""
    ERROR = "Error"
    """The plugin itself failed (raised, returned garbage); the candidate is refused to stay safe."""


class Status(NamedTuple):
    """One plugin's verdict on one candidate; ``str(status)`` is the human reason.

    A tuple on purpose: a 1,000-node decision builds hundreds of these and a tuple is the cheapest
    immutable record Python has.
    """

    code: Code
    reason: str = ""
    plugin: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS

    def __str__(self) -> str:
        return self.reason

    def to_dict(self) -> dict[str, str]:
        return {"plugin": self.plugin, "code": self.code.value, "reason": self.reason}

    @classmethod
    def unschedulable(cls, plugin: str, reason: str) -> Status:
        return cls(Code.UNSCHEDULABLE, reason, plugin)

    @classmethod
    def unresolvable(cls, plugin: str, reason: str) -> Status:
        return cls(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, reason, plugin)

    @classmethod
    def error(cls, plugin: str, reason: str) -> Status:
        return cls(Code.ERROR, reason, plugin)


SUCCESS = Status(Code.SUCCESS)

RequestT = TypeVar("RequestT", contravariant=True)
CandidateT = TypeVar("CandidateT")

Check = Callable[[CandidateT], Status | None]
"""A filter prepared for one request: ``None`` when the candidate passes, its ``Status`` otherwise."""


@runtime_checkable
class Filter(Protocol[RequestT]):
    """A filter plugin. ``prepare`` runs once per request and returns ``None`` when the filter has
    nothing to check for it; the returned check then runs per candidate and must stay cheap."""

    name: str

    def prepare(self, request: RequestT) -> Check[Any] | None: ...


@runtime_checkable
class Scorer(Protocol):
    """A score plugin: one 0..100 value per candidate, same order, or ``None`` (no opinion, its weight
    is spread over the others). ``ctx`` is the layer's scoring context (all candidates, options)."""

    name: str

    def score(self, request: Any, candidates: Sequence[Any], ctx: Any) -> list[float] | None: ...


PluginFactory = Callable[[Mapping[str, Any]], Any]
"""Builds a plugin from its args (``{}`` when none are configured); raises ValueError/TypeError on bad args."""


class PlacementConfigError(ValueError):
    """A placement configuration is wrong; ``field`` is the dotted path of the offending entry."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class Registration:
    """A plugin known to a registry: how to build it, and whether/how much it counts by default."""

    name: str
    kind: str  # "filters" or "scorers"
    factory: PluginFactory
    enabled: bool = True
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Profile:
    """The resolved configuration of one placement: plugins in evaluation order, weight per scorer."""

    filters: tuple[Any, ...]
    scorers: tuple[Any, ...]
    weights: Mapping[str, float] = field(default_factory=dict)


KINDS = ("filters", "scorers")
_LIST_KEYS = ("enable", "disable")
_ENTRY_KEYS = {"filters": {"enabled", "args"}, "scorers": {"enabled", "weight", "args"}}


def no_args(plugin: Any) -> PluginFactory:
    """Factory for a plugin that takes no args: hands out ``plugin`` and refuses any args given."""

    def factory(args: Mapping[str, Any]) -> Any:
        if args:
            raise ValueError(f"takes no args, got {sorted(args)}")
        return plugin

    return factory


def check_weight(field: str, value: Any) -> float:
    """A weight is a finite number >= 0 (0 keeps the scorer but stops it counting)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlacementConfigError(field, f"weight must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise PlacementConfigError(field, f"weight must be a finite number >= 0, got {value}")
    return float(value)


class PluginRegistry:
    """The filters and scorers one kind of placement can use, in registration (= evaluation) order.

    ``label`` names the placement kind in error messages ("" for nodes, "cluster " for clusters).
    A policy that brings its own plugins registers them on a ``copy()`` so that reloading the policy
    never collides with its previous registration; registering on a shared registry is for packages.
    """

    def __init__(self, label: str = "") -> None:
        self.label = label
        self._plugins: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}

    def copy(self) -> PluginRegistry:
        clone = PluginRegistry(self.label)
        for kind in KINDS:
            clone._plugins[kind] = dict(self._plugins[kind])
        return clone

    def register_filter(self, name: str, factory: PluginFactory, *, enabled: bool = True) -> None:
        self._register(Registration(name, "filters", factory, enabled))

    def register_scorer(
        self, name: str, factory: PluginFactory, *, weight: float = 1.0, enabled: bool = True
    ) -> None:
        check_weight(f"{self.label}scorer {name}", weight)
        self._register(Registration(name, "scorers", factory, enabled, float(weight)))

    def _register(self, reg: Registration) -> None:
        if not reg.name or not isinstance(reg.name, str) or reg.name in _LIST_KEYS or reg.name == "*":
            raise ValueError(f"invalid {self.label}{reg.kind[:-1]} name {reg.name!r}")
        if reg.name in self._plugins[reg.kind]:
            raise ValueError(f"{self.label}{reg.kind[:-1]} {reg.name!r} is already registered")
        self._plugins[reg.kind][reg.name] = reg

    def names(self, kind: str) -> list[str]:
        return list(self._plugins[kind])

    def default_weights(self) -> dict[str, float]:
        return {name: reg.weight for name, reg in self._plugins["scorers"].items()}

    def profile(self, spec: Mapping[str, Any] | None = None, *, field: str = "placement") -> Profile:
        """Resolve a ``placement`` configuration (module docstring) against this registry."""
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise PlacementConfigError(field, f"must be a mapping, got {type(spec).__name__}")
        if unknown := sorted(set(spec) - set(KINDS)):
            raise PlacementConfigError(f"{field}.{unknown[0]}", f"unknown key; expected {' or '.join(KINDS)}")
        built: dict[str, list[Any]] = {}
        weights: dict[str, float] = {}
        for kind in KINDS:
            section = spec.get(kind) or {}
            path = f"{field}.{kind}"
            if not isinstance(section, Mapping):
                raise PlacementConfigError(path, f"must be a mapping, got {type(section).__name__}")
            enabled, args, kind_weights = self._resolve_section(kind, section, path)
            plugins = []
            for name, reg in self._plugins[kind].items():
                if not enabled[name]:
                    continue
                try:
                    plugin = reg.factory(args.get(name, {}))
                except (TypeError, ValueError) as exc:
                    raise PlacementConfigError(f"{path}.{name}.args", str(exc)) from None
                plugins.append(plugin)
                if kind == "scorers":
                    weights[name] = kind_weights.get(name, reg.weight)
            built[kind] = plugins
        return Profile(tuple(built["filters"]), tuple(built["scorers"]), weights)

    def _resolve_section(
        self, kind: str, section: Mapping[str, Any], path: str
    ) -> tuple[dict[str, bool], dict[str, Mapping[str, Any]], dict[str, float]]:
        known = self._plugins[kind]
        enabled = {name: reg.enabled for name, reg in known.items()}
        listed: dict[str, str] = {}
        for key in _LIST_KEYS:
            names = section.get(key) or []
            if isinstance(names, str) or not isinstance(names, Iterable):
                raise PlacementConfigError(f"{path}.{key}", f"must be a list of names, got {names!r}")
            for name in names:
                if key == "disable" and name == "*":
                    enabled = dict.fromkeys(enabled, False)
                    continue
                self._known(kind, name, f"{path}.{key}")
                if listed.get(name, key) != key:
                    raise PlacementConfigError(f"{path}.{key}", f"{name!r} is both enabled and disabled")
                listed[name] = key
        for name, key in listed.items():
            enabled[name] = key == "enable"
        args: dict[str, Mapping[str, Any]] = {}
        kind_weights: dict[str, float] = {}
        for name, entry in section.items():
            if name in _LIST_KEYS:
                continue
            entry_path = f"{path}.{name}"
            self._known(kind, name, path)
            if not isinstance(entry, Mapping):
                raise PlacementConfigError(entry_path, f"must be a mapping, got {entry!r}")
            if unknown := sorted(set(entry) - _ENTRY_KEYS[kind]):
                raise PlacementConfigError(
                    f"{entry_path}.{unknown[0]}", f"unknown key; expected one of {sorted(_ENTRY_KEYS[kind])}"
                )
            if "enabled" in entry:
                if not isinstance(entry["enabled"], bool):
                    raise PlacementConfigError(f"{entry_path}.enabled", f"must be true or false, got "
                                               f"{entry['enabled']!r}")
                if name in listed and (listed[name] == "enable") != entry["enabled"]:
                    raise PlacementConfigError(f"{entry_path}.enabled", f"contradicts {path}.{listed[name]}")
                enabled[name] = entry["enabled"]
            if "weight" in entry:
                kind_weights[name] = check_weight(f"{entry_path}.weight", entry["weight"])
            if "args" in entry:
                if not isinstance(entry["args"], Mapping):
                    raise PlacementConfigError(f"{entry_path}.args", f"must be a mapping, got {entry['args']!r}")
                args[name] = entry["args"]
        return enabled, args, kind_weights

    def _known(self, kind: str, name: Any, path: str) -> None:
        if name not in self._plugins[kind]:
            raise PlacementConfigError(
                f"{path}.{name}" if isinstance(name, str) else path,
                f"unknown {self.label}{kind[:-1]} {name!r}; known: {sorted(self._plugins[kind])}",
            )


def resolve_weights(
    overrides: Mapping[str, float] | None,
    names: Iterable[str],
    defaults: Mapping[str, float],
    *,
    label: str = "",
) -> dict[str, float]:
    """``defaults`` (missing names weigh 1) overlaid with ``overrides``; unknown names and negative
    weights are errors naming the scorer."""
    known = list(names)
    merged = {name: float(defaults.get(name, 1.0)) for name in known}
    for name, value in (overrides or {}).items():
        if name not in merged:
            raise ValueError(f"unknown {label}scorer {name!r} in weights; known: {sorted(known)}")
        if value < 0:
            raise ValueError(f"weight of {label}scorer {name!r} must be >= 0, got {value}")
        merged[name] = float(value)
    return merged


def weighted_totals(
    columns: Mapping[str, Sequence[float]], weights: Mapping[str, float], size: int
) -> tuple[dict[str, float], list[float]]:
    """Normalise the weights of the scorers that spoke so they sum to 1, and the weighted total per
    candidate (0..100 when every column is)."""
    weight_sum = sum(weights[name] for name in columns)
    norm = {name: weights[name] / weight_sum for name in columns} if weight_sum > 0 else {}
    totals = [0.0] * size
    for name, w in norm.items():
        totals = [t + w * c for t, c in zip(totals, columns[name], strict=True)]
    return norm, totals


def run_scorer(scorer: Scorer, request: Any, candidates: Sequence[Any], ctx: Any) -> list[float] | Status | None:
    """One scorer's column, or an ``Error`` status when it raised or returned garbage (kube-scheduler
    fails the cycle on a score error; we drop the column and keep the reason so the others decide)."""
    try:
        column = scorer.score(request, candidates, ctx)
    except Exception as exc:  # noqa: BLE001 - a third-party scorer must not take the decision down
        return Status.error(scorer.name, f"scorer failed: {type(exc).__name__}: {exc}")
    if column is None:
        return None
    # Cheap shape check only (length, first value a number): a full range scan would cost a 1,000-node
    # decision more than some scorers do. Values are trusted to be 0..100 (normalise_* guarantee it).
    if len(column) != len(candidates) or (
        len(column) and (isinstance(column[0], bool) or not isinstance(column[0], (int, float)))
    ):
        return Status.error(scorer.name, "scorer returned garbage: want one 0..100 number per candidate")
    return column if isinstance(column, list) else list(column)
