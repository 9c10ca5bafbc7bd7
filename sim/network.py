"""Network latency model: a deterministic round-trip time between any two nodes.

RTT (ms) =
  * same node:                       `same_node_ms`
  * same cluster:                    `intra_cluster_ms + layer_step_ms * |rank(a) - rank(b)|`
  * different clusters:              `inter_cluster_ms + access_ms[layer a] + access_ms[layer b]`
  plus, when both nodes have a location, `ms_per_km * great-circle distance` (not for the same node),
  plus any active link degradation (see `faults.FaultBook.link_extra_ms`).
The base part is cached per pair; degradations are added on every read because they expire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .config import SimConfig
from .model import LAYERS, SimNodeSpec

_RANK = {layer: i for i, layer in enumerate(LAYERS)}
_EARTH_RADIUS_KM = 6371.0


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between two (lon, lat) points in degrees."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


class NetworkModel:
    """Base (fault-free) latency between nodes; nodes are looked up in the live `specs` mapping."""

    def __init__(self, config: SimConfig, specs: Mapping[str, SimNodeSpec]) -> None:
        self._cfg = config
        self._specs = specs
        self._cache: dict[tuple[str, str], float] = {}

    def base_latency_ms(self, a: str, b: str) -> float:
        key = (a, b) if a <= b else (b, a)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._compute(self._specs[key[0]], self._specs[key[1]])
            self._cache[key] = cached
        return cached

    def _compute(self, a: SimNodeSpec, b: SimNodeSpec) -> float:
        cfg = self._cfg
        if a.name == b.name:
            return cfg.same_node_ms
        if a.cluster == b.cluster:
            rtt = cfg.intra_cluster_ms + cfg.layer_step_ms * abs(_RANK[a.layer] - _RANK[b.layer])
        else:
            rtt = cfg.inter_cluster_ms + cfg.access_ms[a.layer] + cfg.access_ms[b.layer]
        if a.location is not None and b.location is not None:
            rtt += cfg.ms_per_km * great_circle_km(a.location, b.location)
        return rtt


def selector_matches(selector: str, spec: SimNodeSpec) -> bool:
    """A link endpoint selector is a node name, a layer name, or '*' (any node)."""
    return selector == "*" or selector == spec.name or selector == spec.layer
