"""The batch placer's heuristic: regret insertion and scarcity ordering, then local-search repair.

Works on a ``BatchProblem`` (``batch_problem``): feasibility is what the filters allowed, cost is link
latency + score cost, capacity is shared. Two constructions run and the better one (after repair) wins:

- **regret**: repeatedly place the item that would lose the most by waiting (second-best minus best
  cost over the nodes it still fits; an item with one option left has infinite regret), on its best node;
- **scarcity**: repeatedly place the item with the fewest nodes it still fits (ties: larger request);
  only when regret left something unplaced (it is about contention).

Repair then loops until nothing improves or the deadline passes: *insert* an unplaced item by moving one
item out of its way (an ejection chain of length one: more placed always wins), *relocate* one item to
its best node given the others, *swap* the nodes of two items. An item waits for its in-batch
dependencies; one whose dependency stayed unplaced is unplaced at the end (``place_app``'s rule).
Vectorised with numpy over each item's feasible nodes, so a 10-component app at 1,000 nodes takes a few
milliseconds.
"""

from __future__ import annotations

import time

import numpy as np

from mlsysops.policies.batch_problem import UNPLACED, BatchProblem, Objective

INF = float("inf")
MAX_PASSES = 20
EJECT_CANDIDATES = 24
PAIR_CANDIDATES = 8     # nodes per end of a link tried by the pair move   # nodes tried per unplaced item in the insert move, cheapest first


class PlacedState:
    """An assignment with the capacity it leaves."""

    def __init__(self, problem: BatchProblem) -> None:
        self.p = problem
        self.assign = [UNPLACED] * problem.size
        self.cpu_left = problem.cpu_free.copy()
        self.mem_left = problem.mem_free.copy()
        self.on_node: dict[int, set[int]] = {}
        self.placed_of: dict[int, int] = {}

    def place(self, item: int, node: int) -> None:
        comp = self.p.item_comp[item]
        self.assign[item] = node
        self.placed_of[comp] = self.placed_of.get(comp, 0) + 1
        self.cpu_left[node] -= self.p.cpu[comp]
        self.mem_left[node] -= self.p.mem[comp]
        self.on_node.setdefault(node, set()).add(item)

    def remove(self, item: int) -> int:
        node = self.assign[item]
        comp = self.p.item_comp[item]
        self.assign[item] = UNPLACED
        self.placed_of[comp] -= 1
        self.cpu_left[node] += self.p.cpu[comp]
        self.mem_left[node] += self.p.mem[comp]
        self.on_node[node].discard(item)
        return node

    def count(self, comp: int) -> int:
        """Placed items of component ``comp``."""
        return self.placed_of.get(comp, 0)

    def fits(self, item: int, node: int) -> bool:
        comp = self.p.item_comp[item]
        return self.cpu_left[node] >= self.p.cpu[comp] and self.mem_left[node] >= self.p.mem[comp]

    def costs(self, item: int, without: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Cost of ``item`` on each of its feasible nodes given the placed others (but ``without``), and
        where it fits."""
        p = self.p
        comp = p.item_comp[item]
        cand = p.feasible[comp]
        cost = p.static_cost[comp].copy()
        for other in p.partners(item):
            node = self.assign[other]
            if node != UNPLACED and other != without:
                cost += p.latency_row(node)[cand]
        fit = (self.cpu_left[cand] >= p.cpu[comp]) & (self.mem_left[cand] >= p.mem[comp])
        return cost, fit

    def cost_at(self, item: int, node: int) -> float:
        p = self.p
        cost = p.item_static(item, node)
        for other in p.partners(item):
            if self.assign[other] != UNPLACED:
                cost += p.latency(self.assign[other], node)
        return cost

    def ready(self, item: int) -> bool:
        return all(self.assign[w] != UNPLACED for w in self.p.item_deps[item])


def solve(problem: BatchProblem, deadline: float | None = None) -> tuple[list[int], Objective, str]:
    """The best assignment found before ``deadline`` (``time.perf_counter()`` value), its objective, and
    which construction it came from."""
    best: tuple[list[int], Objective, str] | None = None
    for rule in ("regret", "scarcity"):
        state = _construct(problem, rule, deadline)
        _repair(state, deadline)
        _drop_orphans(state)
        objective = problem.evaluate(state.assign)
        if best is None or objective.better_than(best[1]):
            best = (list(state.assign), objective, rule)
        if objective.placed == problem.size or (deadline is not None and time.perf_counter() > deadline):
            break   # scarcity ordering is for contention: with everything placed, regret is enough
    assert best is not None
    return best


def improve(problem: BatchProblem, assign: list[int], deadline: float | None = None) -> tuple[list[int], Objective]:
    """The local-search repair from a given assignment (e.g. the exact model's when it ran out of time)."""
    state = PlacedState(problem)
    for item, node in enumerate(assign):
        if node != UNPLACED:
            state.place(item, node)
    _repair(state, deadline)
    _drop_orphans(state)
    return list(state.assign), problem.evaluate(state.assign)


def _construct(problem: BatchProblem, rule: str, deadline: float | None = None) -> PlacedState:
    """One construction; past ``deadline`` the rest is placed in dependency order, each item on its
    cheapest node with room (one cost vector per item instead of one per item and step)."""
    state = PlacedState(problem)
    open_items = set(range(problem.size))
    dead: set[int] = set()
    while open_items:
        if deadline is not None and time.perf_counter() > deadline:
            for item in sorted(open_items):
                if state.ready(item):
                    cost, fit = state.costs(item)
                    if fit.any():
                        state.place(item, int(problem.feasible[problem.item_comp[item]][
                            int(np.where(fit, cost, INF).argmin())]))
            return state
        pick: tuple[tuple[float, float], int, int] | None = None
        for item in sorted(open_items):
            if not state.ready(item):
                if any(w in dead for w in problem.item_deps[item]):
                    dead.add(item)
                continue
            cost, fit = state.costs(item)
            options = int(fit.sum())
            if options == 0:
                dead.add(item)
                continue
            masked = np.where(fit, cost, INF)
            best_pos = int(masked.argmin())
            if rule == "regret":
                if options == 1:
                    regret = INF
                else:
                    masked[best_pos] = INF
                    regret = float(masked.min()) - float(cost[best_pos])
                key = (regret, -options)
            else:
                comp = problem.item_comp[item]
                key = (-float(options), float(problem.cpu[comp]))
            if pick is None or key > pick[0]:
                pick = (key, item, int(problem.feasible[problem.item_comp[item]][best_pos]))
        open_items -= dead
        if pick is None:
            break
        _, item, node = pick
        state.place(item, node)
        open_items.discard(item)
    return state


def _repair(state: PlacedState, deadline: float | None) -> None:
    for _ in range(MAX_PASSES):
        if deadline is not None and time.perf_counter() > deadline:
            return
        changed = _insert(state)
        changed |= _relocate(state)
        changed |= _swap(state, deadline)
        changed |= _exchange(state, deadline)
        # the pair move and the group re-insertion are the costly ones: only once the single moves are stuck
        if not changed and not _move_pairs(state, deadline) and not _reinsert_groups(state, deadline):
            return


def _groups(problem: BatchProblem) -> list[list[int]]:
    """Items connected by links (an app's pipeline, say), largest first."""
    parent = list(range(problem.size))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in problem.item_edges:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for item in range(problem.size):
        groups.setdefault(find(item), []).append(item)
    return sorted((g for g in groups.values() if len(g) > 1), key=len, reverse=True)


def _reinsert_groups(state: PlacedState, deadline: float | None) -> bool:
    """Take a whole linked group out and put it back by regret with everything else fixed; kept when
    the batch is better (a chain sitting in the wrong place moves as a whole, which no move of one or
    two instances can do)."""
    p = state.p
    changed = False
    for group in _groups(p):
        if deadline is not None and time.perf_counter() > deadline:
            break
        before = p.evaluate(state.assign)
        saved = [(item, state.assign[item]) for item in group]
        for item, node in saved:
            if node != UNPLACED:
                state.remove(item)
        _regret_fill(state, group)
        if p.evaluate(state.assign).better_than(before):
            changed = True
            continue
        for item in group:
            if state.assign[item] != UNPLACED:
                state.remove(item)
        for item, node in saved:
            if node != UNPLACED:
                state.place(item, node)
    return changed


def _regret_fill(state: PlacedState, items: list[int]) -> None:
    """Place ``items`` (all unplaced) by regret, as the construction does, among the rest fixed."""
    p = state.p
    open_items = set(items)
    while open_items:
        pick: tuple[float, int, int] | None = None
        for item in sorted(open_items):
            if not state.ready(item):
                continue
            cost, fit = state.costs(item)
            options = int(fit.sum())
            if options == 0:
                continue
            masked = np.where(fit, cost, INF)
            best_pos = int(masked.argmin())
            if options == 1:
                regret = INF
            else:
                best_cost = float(masked[best_pos])
                masked[best_pos] = INF
                regret = float(masked.min()) - best_cost
            if pick is None or regret > pick[0]:
                pick = (regret, item, int(p.feasible[p.item_comp[item]][best_pos]))
        if pick is None:
            return
        state.place(pick[1], pick[2])
        open_items.discard(pick[1])


def _move_pairs(state: PlacedState, deadline: float | None) -> bool:
    """Move both ends of a link at once to their best pair of nodes (a chain that should sit elsewhere
    gains nothing from moving one end alone). Pairs among each end's ``PAIR_CANDIDATES`` cheapest nodes
    (and the other end's, for sharing a node): a full block would cost |F|^2 latency lookups."""
    p = state.p
    changed = False
    for a, b in p.item_edges:
        if deadline is not None and time.perf_counter() > deadline:
            break
        na, nb = state.assign[a], state.assign[b]
        if na == UNPLACED or nb == UNPLACED:
            continue
        current = state.cost_at(a, na) + state.cost_at(b, nb) - p.latency(nb, na)
        state.remove(a)
        state.remove(b)
        ca, cb = p.item_comp[a], p.item_comp[b]
        cost_a, fit_a = state.costs(a, without=b)
        cost_b, fit_b = state.costs(b, without=a)
        top_a = _cheapest(p.feasible[ca], cost_a, fit_a)
        top_b = _cheapest(p.feasible[cb], cost_b, fit_b)
        nodes_a = sorted(top_a | {k for k in top_b if p.position(ca, k) is not None and fit_a[p.position(ca, k)]})
        nodes_b = sorted(top_b | {k for k in top_a if p.position(cb, k) is not None and fit_b[p.position(cb, k)]})
        best: tuple[float, int, int] | None = None
        for ka in nodes_a:
            base = float(cost_a[p.position(ca, ka)])
            for kb in nodes_b:
                if ka == kb and (state.cpu_left[ka] < p.cpu[ca] + p.cpu[cb]
                                 or state.mem_left[ka] < p.mem[ca] + p.mem[cb]):
                    continue
                total = base + float(cost_b[p.position(cb, kb)]) + p.latency(ka, kb)
                if best is None or total < best[0]:
                    best = (total, ka, kb)
        if best is not None and best[0] < current - 1e-9:
            state.place(a, best[1])
            state.place(b, best[2])
            changed = True
        else:
            state.place(a, na)
            state.place(b, nb)
    return changed


def _cheapest(cand: np.ndarray, cost: np.ndarray, fit: np.ndarray) -> set[int]:
    masked = np.where(fit, cost, INF)
    k = min(PAIR_CANDIDATES, int(fit.sum()))
    if k == 0:
        return set()
    idx = np.argpartition(masked, k - 1)[:k]
    return {int(cand[i]) for i in idx}


def _exchange(state: PlacedState, deadline: float | None) -> bool:
    """Same count, more components covered or a lower cost: leave out a placed item and place an
    unplaced one on its node instead (which instances to place is part of the choice when not all fit). An unplaced item fits nowhere
    (``_insert`` ran first), so only the node of the item it replaces can take it. Never drops a
    dependency."""
    p = state.p
    changed = False
    needed = {w for deps in p.item_deps for w in deps}
    for item in range(p.size):
        if deadline is not None and time.perf_counter() > deadline:
            break
        if state.assign[item] != UNPLACED or not state.ready(item):
            continue
        comp = p.item_comp[item]
        cost, _ = state.costs(item)
        gains = 0 if state.count(comp) else 1   # covering a component beats any cost
        best: tuple[int, float, int, int] | None = None
        for out in range(p.size):
            node = state.assign[out]
            if node == UNPLACED or out in needed or out in p.item_deps[item]:
                continue
            pos = p.position(comp, node)
            o_comp = p.item_comp[out]
            if pos is None or o_comp == comp:
                continue
            if (state.cpu_left[node] + p.cpu[o_comp] < p.cpu[comp]
                    or state.mem_left[node] + p.mem[o_comp] < p.mem[comp]):
                continue
            coverage = gains - (1 if state.count(o_comp) == 1 else 0)
            delta = float(cost[pos]) - state.cost_at(out, node)
            if coverage < 0 or (coverage == 0 and delta >= -1e-9):
                continue
            if best is None or (-coverage, delta) < (-best[0], best[1]):
                best = (coverage, delta, out, node)
        if best is not None:
            _, _, out, node = best
            state.remove(out)
            state.place(item, node)
            changed = True
    return changed


def _insert(state: PlacedState) -> bool:
    """Place unplaced items, directly or by moving one placed item out of the way."""
    p = state.p
    changed = False
    for item in range(p.size):
        if state.assign[item] != UNPLACED or not state.ready(item):
            continue
        cost, fit = state.costs(item)
        cand = p.feasible[p.item_comp[item]]
        if fit.any():
            state.place(item, int(cand[int(np.where(fit, cost, INF).argmin())]))
            changed = True
            continue
        comp = p.item_comp[item]
        for pos in np.argsort(cost, kind="stable")[:EJECT_CANDIDATES]:
            node = int(cand[pos])
            if _eject_for(state, item, node, comp):
                changed = True
                break
    return changed


def _eject_for(state: PlacedState, item: int, node: int, comp: int) -> bool:
    """Move one item off ``node`` (to its cheapest other node with room) so that ``item`` fits there."""
    p = state.p
    short_cpu = p.cpu[comp] - state.cpu_left[node]
    short_mem = p.mem[comp] - state.mem_left[node]
    for other in sorted(state.on_node.get(node, ())):
        o_comp = p.item_comp[other]
        if p.cpu[o_comp] < short_cpu or p.mem[o_comp] < short_mem:
            continue
        state.remove(other)
        if state.fits(item, node):
            state.place(item, node)
            cost, fit = state.costs(other)
            o_cand = p.feasible[o_comp]
            fit &= o_cand != node
            if fit.any():
                state.place(other, int(o_cand[int(np.where(fit, cost, INF).argmin())]))
                return True
            state.remove(item)
        state.place(other, node)
    return False


def _relocate(state: PlacedState) -> bool:
    p = state.p
    changed = False
    for item in range(p.size):
        node = state.assign[item]
        if node == UNPLACED:
            continue
        current = state.cost_at(item, node)
        state.remove(item)
        cost, fit = state.costs(item)
        masked = np.where(fit, cost, INF)
        best = int(masked.argmin())
        if masked[best] < current - 1e-9:
            state.place(item, int(p.feasible[p.item_comp[item]][best]))
            changed = True
        else:
            state.place(item, node)
    return changed


def _swap(state: PlacedState, deadline: float | None) -> bool:
    p = state.p
    changed = False
    placed = [i for i in range(p.size) if state.assign[i] != UNPLACED]
    for x, a in enumerate(placed):
        if deadline is not None and time.perf_counter() > deadline:
            break
        for b in placed[x + 1:]:
            na, nb = state.assign[a], state.assign[b]
            ca, cb = p.item_comp[a], p.item_comp[b]
            if na == nb or ca == cb or p.position(ca, nb) is None or p.position(cb, na) is None:
                continue
            if (state.cpu_left[nb] + p.cpu[cb] < p.cpu[ca] or state.mem_left[nb] + p.mem[cb] < p.mem[ca]
                    or state.cpu_left[na] + p.cpu[ca] < p.cpu[cb] or state.mem_left[na] + p.mem[ca] < p.mem[cb]):
                continue
            before = state.cost_at(a, na) + state.cost_at(b, nb)
            state.remove(a)
            state.remove(b)
            state.place(a, nb)
            state.place(b, na)
            after = state.cost_at(a, nb) + state.cost_at(b, na)
            if after < before - 1e-9:
                changed = True
            else:
                state.remove(a)
                state.remove(b)
                state.place(a, na)
                state.place(b, nb)
    return changed


def _drop_orphans(state: PlacedState) -> None:
    """Unplace items whose in-batch dependency is unplaced (until none is left)."""
    p = state.p
    changed = True
    while changed:
        changed = False
        for item in range(p.size):
            if state.assign[item] != UNPLACED and not state.ready(item):
                state.remove(item)
                changed = True
