"""Features of "component C on node N": what the QoS model predicts a response time from.

One feature dict per (component, candidate node), from what a cluster agent sees (node views, the
instance table, latencies) - no simulator internals, so the same code runs on Kubernetes telemetry:

| feature | value |
|---|---|
| `comp=<app>/<component>` | 1 for the component being predicted |
| `kind=<kind>` | 1 for the node's kind: its `node-type:` (or `kind:`) label, else its layer |
| `node=<name>` | 1 for the node itself (lets a retrained model learn one node's own behaviour) |
| `queue` | `1 / (1 - min(u, 0.95))`, u the node's CPU utilisation with this instance on it |
| `coloc=<component>` | instances of other components (by component name, any app) sharing the node (interference) |
| `net_ms` | sum over the peers it calls of the latency to the nearest node running that peer |

`qos_terms` turns the feature names present in the data into the model's terms: per component,
`kind x queue`, `node x queue` and `coloc x queue` interactions; `kind x queue` and `coloc x queue`
shared by all components (what a kind or a neighbour does to anyone); `net_ms`; no constant. So the
model is "response time = per-component work / speed-of-that-kind-or-node x queueing x interference +
network", which is the shape of queueing behaviour, learnt without being told any speed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mlsysops.agents.placement.types import ComponentRequest, NodeView

QOS_OUTPUT = "response_time_ms"
MAX_UTILIZATION = 0.95
DEFAULT_ACTIVITY = 0.6
"""Fraction of its CPU request a newly placed instance is assumed to use (for `queue` on a candidate)."""


def node_kind(view: NodeView) -> str:
    for label in sorted(view.labels):
        key, _, value = label.partition(":")
        if key in ("node-type", "kind") and value:
            return value
    return view.layer or "unknown"


def queue_factor(utilization: float) -> float:
    return 1.0 / (1.0 - min(max(utilization, 0.0), MAX_UTILIZATION))


def candidate_features(request: ComponentRequest, view: NodeView, *, hosting: bool,
                       peer_nodes: Mapping[str, Sequence[str]], nodes: Mapping[str, NodeView],
                       colocated: Mapping[str, int], unknown_latency_ms: float = 100.0,
                       activity: float = DEFAULT_ACTIVITY) -> dict[str, float]:
    """Features of `request` on `view`.

    `hosting`: the node already runs this instance (its load is in the utilisation); otherwise the
    request's expected use is added. `peer_nodes`: component name -> nodes running it (same app).
    `colocated`: `"app/component"` -> instances on this node, other than the one predicted.
    """
    util = view.cpu_utilization
    if not hosting and view.cpu_capacity > 0:
        util += request.cpu_cores * activity / view.cpu_capacity
    feats: dict[str, float] = {
        f"comp={request.app}/{request.name}": 1.0,
        f"kind={node_kind(view)}": 1.0,
        f"node={view.name}": 1.0,
        "queue": queue_factor(util),
        "net_ms": network_ms(request, view, peer_nodes, nodes, unknown_latency_ms),
    }
    for key, count in colocated.items():
        if count > 0:
            name = key.rsplit("/", 1)[-1]
            feats[f"coloc={name}"] = feats.get(f"coloc={name}", 0.0) + float(count)
    return feats


def network_ms(request: ComponentRequest, view: NodeView, peer_nodes: Mapping[str, Sequence[str]],
               nodes: Mapping[str, NodeView], unknown_latency_ms: float) -> float:
    total = 0.0
    for peer in request.interacts_with:
        where = [n for n in peer_nodes.get(peer, ()) if n]
        if not where:
            continue
        total += min(_latency(view, n, nodes, unknown_latency_ms) for n in where)
    return total


def _latency(view: NodeView, other: str, nodes: Mapping[str, NodeView], unknown: float) -> float:
    if other == view.name:
        return 0.05
    if other in view.latency_ms:
        return float(view.latency_ms[other])
    peer = nodes.get(other)
    if peer is not None and view.name in peer.latency_ms:
        return float(peer.latency_ms[view.name])
    return unknown


def qos_terms(feature_names: Sequence[str]) -> list[tuple[int, ...]]:
    """The model's terms over the features present (module docstring)."""
    index = {n: i for i, n in enumerate(feature_names)}
    comps = [n for n in feature_names if n.startswith("comp=")]
    kinds = [n for n in feature_names if n.startswith("kind=")]
    node_ids = [n for n in feature_names if n.startswith("node=")]
    colocs = [n for n in feature_names if n.startswith("coloc=")]
    terms: list[tuple[int, ...]] = []
    q = index.get("queue")
    for c in comps:
        ci = index[c]
        if q is None:
            terms.append((ci,))
            continue
        for group in (kinds, node_ids, colocs):
            terms.extend((ci, index[g], q) for g in group)
    if q is not None:   # shared across components: what a kind or a neighbour does to anyone
        terms.extend((index[g], q) for g in (*kinds, *colocs))
    if "net_ms" in index:
        terms.append((index["net_ms"],))
    return terms
