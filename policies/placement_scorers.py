"""Score plugins: a 0..100 number per feasible node, normalised across the candidates.

Normalisation follows kube-scheduler's default: a "higher is better" raw value is scaled so the best
candidate gets 100 (``100 * x / max``); a "lower is better" cost is reversed (``100 * (1 - x / max)``).
A scorer returns ``None`` when it has nothing to say for this request (no placed peers, no layer
preference, no instances of the app anywhere); the engine then re-spreads its weight over the others,
so the reported weights always sum to 1 and the total stays in 0..100.

Default weights (``DEFAULT_WEIGHTS``), overridable per call with a dict:
- ``least_allocated`` 0.3: free cpu and memory after placing the request (balanced mean of both).
- ``utilization`` 0.2: low observed cpu utilisation.
- ``proximity`` 0.3: low latency to nodes hosting the components it interacts with / depends on.
- ``spread`` 0.2: few instances of the same app (same component counts double) already on the node.
- ``layer`` 0.2: configured layer preference (only active when a preference is given).

Args (``placement.scorers.<name>.args`` in a policy context): ``layer`` takes ``preference`` (layer ->
number >= 0), ``proximity`` takes ``unknown_latency_ms`` (> 0); they win over the same options of the
call's ``PlacementConfig``. The others take none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.placement import framework
from mlsysops.agents.placement.types import ComponentRequest, NodeView

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "least_allocated": 0.3,
    "utilization": 0.2,
    "proximity": 0.3,
    "spread": 0.2,
    "layer": 0.2,
}

DEFAULT_UNKNOWN_LATENCY_MS = 100.0
"""Latency assumed between two nodes when neither reports it (a pessimistic wide-area figure)."""


@dataclass(slots=True)
class ScoringContext:
    """What scorers may look at besides the candidates: the whole node set and scoring options."""

    nodes: Sequence[NodeView]
    layer_preference: Mapping[str, float] | None = None
    unknown_latency_ms: float = DEFAULT_UNKNOWN_LATENCY_MS
    _by_name: dict[str, NodeView] | None = field(default=None, repr=False)

    @property
    def by_name(self) -> dict[str, NodeView]:
        if self._by_name is None:
            self._by_name = {n.name: n for n in self.nodes}
        return self._by_name


ScoreFn = Callable[[ComponentRequest, Sequence[NodeView], ScoringContext], list[float] | None]


@dataclass(frozen=True, slots=True)
class ScorerPlugin:
    """A named scorer; satisfies ``mlsysops.agents.placement.framework.Scorer``."""

    name: str
    score: ScoreFn


def normalize_max(raw: Sequence[float]) -> list[float]:
    """Higher-is-better raw values to 0..100 with the best at 100 (all zero stays zero)."""
    top = max(raw, default=0.0)
    if top <= 0:
        return [0.0] * len(raw)
    # x / top * 100 (not x * (100 / top)) so the best lands exactly on 100.0.
    return [x / top * 100.0 if x > 0 else 0.0 for x in raw]


def normalize_reverse(raw: Sequence[float]) -> list[float]:
    """Lower-is-better costs to 0..100: the costliest gets 0; all-zero costs all get 100."""
    top = max(raw, default=0.0)
    if top <= 0:
        return [100.0] * len(raw)
    return [(1.0 - x / top) * 100.0 if x > 0 else 100.0 for x in raw]


def score_least_allocated(
    request: ComponentRequest, candidates: Sequence[NodeView], ctx: ScoringContext
) -> list[float]:
    """Mean free fraction of cpu and memory after the request lands, penalising imbalance between them."""
    cpu_req = request.cpu_cores
    mem_req = request.memory_bytes
    raw: list[float] = []
    for n in candidates:
        cpu = (n.cpu_capacity - n.cpu_allocated - cpu_req) / n.cpu_capacity if n.cpu_capacity > 0 else 0.0
        mem = (
            (n.memory_capacity - n.memory_allocated - mem_req) / n.memory_capacity
            if n.memory_capacity > 0
            else 0.0
        )
        raw.append((cpu + mem) / 2.0 - abs(cpu - mem) / 4.0)
    return normalize_max(raw)


def score_utilization(
    request: ComponentRequest, candidates: Sequence[NodeView], ctx: ScoringContext
) -> list[float]:
    """Prefer nodes observed idle: raw is ``1 - cpu_utilization``."""
    raw = []
    for n in candidates:
        u = n.cpu_utilization
        raw.append(1.0 if u <= 0.0 else 0.0 if u >= 1.0 else 1.0 - u)
    return normalize_max(raw)


def _latency(a: NodeView, b: NodeView, unknown: float) -> float:
    if a.name == b.name:
        return 0.0
    value = a.latency_ms.get(b.name)
    if value is None:
        value = b.latency_ms.get(a.name, unknown)
    return value


def score_proximity(
    request: ComponentRequest, candidates: Sequence[NodeView], ctx: ScoringContext
) -> list[float] | None:
    """Mean over peers of the latency to the closest node hosting that peer; lower is better."""
    return _proximity(request, candidates, ctx, ctx.unknown_latency_ms)


def _proximity(
    request: ComponentRequest, candidates: Sequence[NodeView], ctx: ScoringContext, unknown: float
) -> list[float] | None:
    peers = request.peers
    if not peers:
        return None
    app = request.app
    peer_keys = [(app, p) for p in peers]
    hosts: list[list[NodeView]] = [[] for _ in peer_keys]
    for node in ctx.nodes:
        if not node.hosted or not node.alive:
            continue
        for i, key in enumerate(peer_keys):
            if node.hosted.get(key, 0) > 0:
                hosts[i].append(node)
    hosts = [h for h in hosts if h]
    if not hosts:
        return None
    raw: list[float] = []
    for cand in candidates:
        total = 0.0
        for peer_hosts in hosts:
            total += min(_latency(cand, h, unknown) for h in peer_hosts)
        raw.append(total / len(hosts))
    return normalize_reverse(raw)


def score_spread(
    request: ComponentRequest, candidates: Sequence[NodeView], ctx: ScoringContext
) -> list[float] | None:
    """Fewer instances of the same app on the node; instances of this very component count double."""
    app = request.app
    key = request.key
    raw: list[float] = []
    any_hosted = False
    for n in candidates:
        cost = 0.0
        if n.hosted:
            for (h_app, _), count in n.hosted.items():
                if h_app == app:
                    cost += count
            cost += n.hosted.get(key, 0)
        any_hosted = any_hosted or cost > 0
        raw.append(cost)
    if not any_hosted:
        return None
    return normalize_reverse(raw)


def score_layer(
    request: ComponentRequest, candidates: Sequence[NodeView], ctx: ScoringContext
) -> list[float] | None:
    """Configured preference per layer (e.g. ``{"edge": 2, "cloud": 1}``); unlisted layers score 0."""
    return _layer(ctx.layer_preference, candidates)


def _layer(pref: Mapping[str, float] | None, candidates: Sequence[NodeView]) -> list[float] | None:
    if not pref:
        return None
    return normalize_max([pref.get(n.layer, 0.0) for n in candidates])


def layer_scorer(args: Mapping[str, Any]) -> ScorerPlugin:
    """The ``layer`` scorer; ``args.preference`` binds a layer preference into the plugin."""
    if unknown := sorted(set(args) - {"preference"}):
        raise ValueError(f"unknown arg {unknown[0]!r}; expected 'preference'")
    if "preference" not in args:
        return ScorerPlugin("layer", score_layer)
    pref = args["preference"]
    if not isinstance(pref, Mapping) or not all(
        isinstance(k, str) and _is_number(v) and v >= 0 for k, v in pref.items()
    ):
        raise ValueError(f"preference must map layer names to numbers >= 0, got {pref!r}")
    bound = {k: float(v) for k, v in pref.items()}
    return ScorerPlugin("layer", lambda request, candidates, ctx: _layer(bound, candidates))


def proximity_scorer(args: Mapping[str, Any]) -> ScorerPlugin:
    """The ``proximity`` scorer; ``args.unknown_latency_ms`` replaces the assumed latency of unknown links."""
    if unknown := sorted(set(args) - {"unknown_latency_ms"}):
        raise ValueError(f"unknown arg {unknown[0]!r}; expected 'unknown_latency_ms'")
    if "unknown_latency_ms" not in args:
        return ScorerPlugin("proximity", score_proximity)
    value = args["unknown_latency_ms"]
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"unknown_latency_ms must be a number > 0, got {value!r}")
    latency = float(value)
    return ScorerPlugin(
        "proximity", lambda request, candidates, ctx: _proximity(request, candidates, ctx, latency)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


DEFAULT_SCORERS: tuple[ScorerPlugin, ...] = (
    ScorerPlugin("least_allocated", score_least_allocated),
    ScorerPlugin("utilization", score_utilization),
    ScorerPlugin("proximity", score_proximity),
    ScorerPlugin("spread", score_spread),
    ScorerPlugin("layer", score_layer),
)


def resolve_weights(
    weights: Mapping[str, float] | None,
    scorers: Sequence[framework.Scorer] = DEFAULT_SCORERS,
    defaults: Mapping[str, float] = DEFAULT_WEIGHTS,
) -> dict[str, float]:
    """``defaults`` overlaid with ``weights``; rejects unknown scorer names and negative weights."""
    return framework.resolve_weights(weights, (s.name for s in scorers), defaults)
