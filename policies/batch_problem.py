"""The placement of a batch as one problem: items, feasibility, costs and the objective.

The batch placer (``batch_placement``) and the rebalancer (``rebalancer``) solve the same problem, built
here from the *same* filter and score plugins as a per-instance decision:

- **items**: every missing instance of every component of the batch (a component with 3 missing
  instances is 3 items).
- **feasibility**: the node set of an item is the candidate list of ``placement_engine.schedule`` for its
  component on the snapshot, i.e. every configured filter passed (capacity for one instance included).
  Capacity shared by the batch is the one thing modelled outside the filters: the cpu and memory a node
  has free is split among the items placed on it.
- **objective** (lexicographic): first place as many items as possible, then cover as many components
  as possible (at least one instance each: a component left out entirely costs an app more than a
  missing replica), then minimise ``link latency + score cost``:
  * *link latency*: for every interaction (``interacts_with`` / ``depends_on``) between two components
    of the batch, the latency between the nodes of the paired items (0 on the same node); for every
    peer that already runs (a data source, a service of another batch), the latency to its nearest
    alive host. Latency is what the ``proximity`` scorer reads: ``NodeView.latency_ms`` either way,
    ``unknown_latency_ms`` when neither node knows the link.
  * *score cost*: ``score_weight_ms x (100 - S)`` where ``S`` is the weighted total of the other
    scorers (all but ``proximity``, whose job the link latency does exactly) for that node, as the
    per-instance decision computed it. So a policy's weights, disabled scorers and its own scorers
    (an ML scorer, say) steer the batch placer too.
- **pairing**: the items of two interacting components are paired index by index (item ``k`` of the
  larger component with item ``k mod n`` of the smaller), so a replicated component talks to one partner
  instance; one pair is one link.
- **dependencies**: an item of a component is placed only when every item of its in-batch
  dependencies is (``place_app``'s rule: a component whose dependency could not be fully placed is
  itself unplaceable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies.placement_engine import PlacementConfig, PlacementDecision, schedule

PROXIMITY = "proximity"
DEFAULT_SCORE_WEIGHT_MS = 0.02
"""ms of link latency one score point is worth: 100 points (the whole range) = 2 ms. Latency decides,
the scorers break near-ties (a node with more room, less load, a preferred layer)."""

CPU_EPS = 1e-9   # as the cpu filter: requests summed from millicores must not fail on float noise

UNPLACED = -1


@dataclass(slots=True)
class BatchProblem:
    """One batch, ready for a solver. Node indices refer to ``nodes``; ``feasible[c]`` is an array of
    them per component, ``static_cost[c]`` the per-node cost (data-source latency + score cost) aligned
    with it."""

    requests: list[ComponentRequest]
    nodes: list[NodeView]
    decisions: list[PlacementDecision]
    item_comp: list[int]
    feasible: list[np.ndarray]
    static_cost: list[np.ndarray]
    source_latency: list[np.ndarray]
    item_edges: list[tuple[int, int]]
    item_deps: list[list[int]]
    cpu: np.ndarray
    mem: np.ndarray
    cpu_free: np.ndarray
    mem_free: np.ndarray
    unknown_latency_ms: float
    score_weight_ms: float
    _rows: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _pos: list[dict[int, int]] = field(default_factory=list, repr=False)
    _partners: list[list[int]] = field(default_factory=list, repr=False)

    @property
    def size(self) -> int:
        return len(self.item_comp)

    def latency_row(self, node: int) -> np.ndarray:
        """Latency from ``node`` to every node (0 to itself), cached; the same lookup as ``proximity``."""
        row = self._rows.get(node)
        if row is None:
            src = self.nodes[node]
            own, name, unknown = src.latency_ms, src.name, self.unknown_latency_ms
            row = np.fromiter(
                (own.get(n.name, n.latency_ms.get(name, unknown)) for n in self.nodes),
                dtype=float, count=len(self.nodes),
            )
            row[node] = 0.0
            self._rows[node] = row
        return row

    def latency(self, a: int, b: int) -> float:
        if a == b:
            return 0.0
        row = self._rows.get(a)
        if row is not None:
            return float(row[b])
        src, dst = self.nodes[a], self.nodes[b]
        return src.latency_ms.get(dst.name, dst.latency_ms.get(src.name, self.unknown_latency_ms))

    def position(self, comp: int, node: int) -> int | None:
        """Index of ``node`` in ``feasible[comp]`` (None when infeasible)."""
        return self._pos[comp].get(node)

    def partners(self, item: int) -> list[int]:
        return self._partners[item]

    def item_static(self, item: int, node: int) -> float:
        comp = self.item_comp[item]
        return float(self.static_cost[comp][self._pos[comp][node]])

    def evaluate(self, assign: Sequence[int]) -> Objective:
        """The objective of a complete assignment (item -> node index or ``UNPLACED``)."""
        placed = sum(1 for n in assign if n != UNPLACED)
        static = 0.0
        links = 0
        link_ms = 0.0
        for item, node in enumerate(assign):
            if node == UNPLACED:
                continue
            comp = self.item_comp[item]
            pos = self._pos[comp][node]
            static += float(self.static_cost[comp][pos])
            link_ms += float(self.source_latency[comp][pos])
            links += self.source_links[comp]
        for a, b in self.item_edges:
            if assign[a] != UNPLACED and assign[b] != UNPLACED:
                latency = self.latency(assign[a], assign[b])
                static += latency
                link_ms += latency
                links += 1
        covered = len({self.item_comp[item] for item, node in enumerate(assign) if node != UNPLACED})
        return Objective(placed, static, link_ms, links, covered)

    source_links: list[int] = field(default_factory=list)
    """Per component, how many running peers outside the batch it talks to (one link each)."""


@dataclass(frozen=True, slots=True)
class Objective:
    """``placed`` items (more is better), then ``covered`` components (with at least one instance: an
    app with every component running beats one with a third replica), then ``cost`` (link latency +
    score cost, lower is better); ``link_ms`` / ``links`` is the latency part alone (for reports)."""

    placed: int
    cost: float
    link_ms: float
    links: int
    covered: int = 0

    def better_than(self, other: Objective, tol: float = 1e-6) -> bool:
        if self.placed != other.placed:
            return self.placed > other.placed
        if self.covered != other.covered:
            return self.covered > other.covered
        return self.cost < other.cost - tol

    @property
    def mean_link_ms(self) -> float:
        return self.link_ms / self.links if self.links else 0.0


def _score_totals(decision: PlacementDecision) -> list[float]:
    """Weighted total of every scorer column but ``proximity``, renormalised (0 when none spoke)."""
    names = [name for name in decision.weights if name != PROXIMITY]
    weight = sum(decision.weights[name] for name in names)
    if weight <= 0:
        return [0.0] * len(decision.candidates)
    totals = [0.0] * len(decision.candidates)
    for name in names:
        w = decision.weights[name] / weight
        totals = [t + w * v for t, v in zip(totals, decision.columns[name], strict=True)]
    return totals


def _source_hosts(request: ComponentRequest, nodes: Sequence[NodeView], batch: set[str]) -> list[list[int]]:
    """Per running peer outside the batch (a data source), the alive nodes hosting it."""
    hosts: list[list[int]] = []
    for peer in request.peers:
        if peer in batch:
            continue
        key = (request.app, peer)
        found = [i for i, n in enumerate(nodes) if n.alive and n.hosted.get(key, 0) > 0]
        if found:
            hosts.append(found)
    return hosts


def build_problem(
    requests: Sequence[ComponentRequest],
    needed: Mapping[str, int],
    nodes: Sequence[NodeView],
    *,
    config: PlacementConfig | None = None,
    weights: Mapping[str, float] | None = None,
    score_weight_ms: float = DEFAULT_SCORE_WEIGHT_MS,
) -> BatchProblem:
    """The problem of placing ``needed[name]`` instances of each request on ``nodes`` (a snapshot).

    ``requests`` are in dependency order; names with nothing needed take no items but still count as
    batch peers (their running instances are data sources through ``NodeView.hosted``).
    """
    cfg = config or PlacementConfig()
    nodes = list(nodes)
    index = {n.name: i for i, n in enumerate(nodes)}
    comps = [r for r in requests if needed.get(r.name, 0) > 0]
    batch_names = {r.name for r in comps}
    decisions: list[PlacementDecision] = []
    feasible: list[np.ndarray] = []
    static_cost: list[np.ndarray] = []
    source_latency: list[np.ndarray] = []
    pos: list[dict[int, int]] = []
    problem = BatchProblem(
        requests=comps, nodes=nodes, decisions=decisions, item_comp=[], feasible=feasible,
        static_cost=static_cost, source_latency=source_latency, item_edges=[], item_deps=[],
        cpu=np.array([r.cpu_cores for r in comps], dtype=float),
        mem=np.array([r.memory_bytes for r in comps], dtype=float),
        cpu_free=np.array([n.cpu_capacity - n.cpu_allocated for n in nodes], dtype=float) + CPU_EPS,
        mem_free=np.array([n.memory_capacity - n.memory_allocated for n in nodes], dtype=float),
        unknown_latency_ms=cfg.unknown_latency_ms, score_weight_ms=score_weight_ms,
    )
    for request in comps:
        decision = schedule(request, nodes, weights, config=cfg)
        decisions.append(decision)
        cand = np.array([index[name] for name in decision.candidates], dtype=np.int64)
        feasible.append(cand)
        pos.append({int(k): p for p, k in enumerate(cand)})
        sources = np.zeros(len(cand))
        source_hosts = _source_hosts(request, nodes, batch_names)
        problem.source_links.append(len(source_hosts))
        for hosts in source_hosts:
            rows = np.stack([problem.latency_row(h)[cand] for h in hosts])
            sources += rows.min(axis=0)
        source_latency.append(sources)
        score = np.array(_score_totals(decision), dtype=float)
        static_cost.append(sources + score_weight_ms * (100.0 - score))
    problem._pos = pos

    # items, in dependency order of their components
    comp_index = {r.name: c for c, r in enumerate(comps)}
    items_of: list[list[int]] = []
    for c, request in enumerate(comps):
        start = len(problem.item_comp)
        problem.item_comp.extend([c] * needed[request.name])
        items_of.append(list(range(start, len(problem.item_comp))))
    # links between batch components, each pair once, items paired index by index
    seen: set[tuple[int, int]] = set()
    for c, request in enumerate(comps):
        for peer in request.peers:
            d = comp_index.get(peer)
            if d is None or (min(c, d), max(c, d)) in seen:
                continue
            seen.add((min(c, d), max(c, d)))
            big, small = (items_of[c], items_of[d]) if len(items_of[c]) >= len(items_of[d]) else (
                items_of[d], items_of[c])
            for k, item in enumerate(big):
                problem.item_edges.append((item, small[k % len(small)]))
    problem.item_deps = [
        [w for dep in comps[c].depends_on if dep in comp_index and dep != comps[c].name
         for w in items_of[comp_index[dep]]]
        for c in problem.item_comp
    ]
    partners: list[list[int]] = [[] for _ in problem.item_comp]
    for a, b in problem.item_edges:
        partners[a].append(b)
        partners[b].append(a)
    problem._partners = partners
    return problem
