"""The built-in placement plugin registries, and how a policy's context configures them.

``NODE_PLUGINS`` holds the node filters (``placement_filters``) and scorers (``placement_scorers``) that
``placement_engine`` runs on a cluster; ``CLUSTER_PLUGINS`` the cluster filters and scorers that
``cluster_selection`` runs on the continuum. A policy configures them through ``context["placement"]``
(shape in ``mlsysops.agents.placement.framework``; guide in ``docs/placement.md``); the older
``context["weights"]`` still overrides scorer weights on top of it. A policy with plugins of its own
registers them on a ``copy()`` of the registry and passes that copy here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlsysops.agents.placement.framework import (
    PlacementConfigError,
    PluginRegistry,
    Profile,
    check_weight,
    no_args,
)
from mlsysops.policies.cluster_filters import DEFAULT_CLUSTER_FILTERS
from mlsysops.policies.cluster_scorers import DEFAULT_CLUSTER_SCORERS, DEFAULT_CLUSTER_WEIGHTS
from mlsysops.policies.cluster_scorers import proximity_scorer as cluster_proximity_scorer
from mlsysops.policies.cluster_selection import ClusterSelectionConfig
from mlsysops.policies.placement_engine import PlacementConfig
from mlsysops.policies.placement_filters import DEFAULT_FILTERS
from mlsysops.policies.placement_scorers import (
    DEFAULT_SCORERS,
    DEFAULT_WEIGHTS,
    layer_scorer,
    proximity_scorer,
)
from mlsysops.policies.trust_plugins import DEFAULT_WEIGHT as TRUST_WEIGHT
from mlsysops.policies.trust_plugins import TRUST_SCORER, trust_filter

_WITH_ARGS = {"layer": layer_scorer, "proximity": proximity_scorer}


def _node_registry() -> PluginRegistry:
    registry = PluginRegistry()
    for plugin in DEFAULT_FILTERS:
        registry.register_filter(plugin.name, no_args(plugin))
    registry.register_filter("trust", trust_filter)
    for scorer in DEFAULT_SCORERS:
        registry.register_scorer(
            scorer.name, _WITH_ARGS.get(scorer.name, no_args(scorer)), weight=DEFAULT_WEIGHTS[scorer.name]
        )
    registry.register_scorer("trust", no_args(TRUST_SCORER), weight=TRUST_WEIGHT)
    return registry


def _cluster_registry() -> PluginRegistry:
    registry = PluginRegistry("cluster ")
    for plugin in DEFAULT_CLUSTER_FILTERS:
        registry.register_filter(plugin.name, no_args(plugin))
    for scorer in DEFAULT_CLUSTER_SCORERS:
        factory = cluster_proximity_scorer if scorer.name == "proximity" else no_args(scorer)
        registry.register_scorer(scorer.name, factory, weight=DEFAULT_CLUSTER_WEIGHTS[scorer.name])
    return registry


NODE_PLUGINS = _node_registry()
CLUSTER_PLUGINS = _cluster_registry()


def _legacy_weights(context: Mapping[str, Any], registry: PluginRegistry) -> dict[str, float] | None:
    weights = context.get("weights")
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise PlacementConfigError("weights", f"must map scorer names to numbers, got {weights!r}")
    known = registry.names("scorers")
    for name, value in weights.items():
        if name not in known:
            raise PlacementConfigError(f"weights.{name}", f"unknown {registry.label}scorer {name!r}; known: "
                                       f"{sorted(known)}")
        check_weight(f"weights.{name}", value)
    return {name: float(value) for name, value in weights.items()}


def _profile_and_weights(
    context: Mapping[str, Any], registry: PluginRegistry
) -> tuple[Profile, dict[str, float] | None]:
    profile = registry.profile(context.get("placement"))
    weights = _legacy_weights(context, registry)
    if weights is not None:  # a weight for a scorer the profile disabled has nothing to weigh
        weights = {name: w for name, w in weights.items() if name in profile.weights}
    return profile, weights


def placement_config(context: Mapping[str, Any], registry: PluginRegistry = NODE_PLUGINS) -> PlacementConfig:
    """Node placement configuration of a policy: ``context["placement"]`` then ``context["weights"]``.
    Raises ``PlacementConfigError`` naming the wrong field."""
    profile, weights = _profile_and_weights(context, registry)
    return PlacementConfig.from_profile(profile, weights=weights)


def cluster_selection_config(
    context: Mapping[str, Any], registry: PluginRegistry = CLUSTER_PLUGINS
) -> tuple[ClusterSelectionConfig, dict[str, float] | None]:
    """Cluster selection configuration of a policy, and the legacy ``context["weights"]`` overrides
    (validated) that ``select_clusters`` takes separately."""
    profile, weights = _profile_and_weights(context, registry)
    return ClusterSelectionConfig.from_profile(profile), weights
