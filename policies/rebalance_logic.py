"""When a running app is worth moving: the descheduler idea, on the batch placer's objective.

Placements age: a node that was full frees up, a data source moves, the app was placed one component at
a time. ``plan_rebalance`` looks at one app whose instances all run and asks the batch placer what it
would do now (``batch_problem`` objective: link latency + score cost, with the app's own instances
taken off the nodes). It then takes steps, each the candidate with the largest gain per moved
instance: one instance to its best node given the others, or both ends of a link to where the batch
placer would put them (a chain often gains only as a whole), and only while

- the gain per moved instance is at least ``min_gain_ms`` **and** at least ``min_gain_ratio`` of the
  app's current cost (a move disrupts: a restart, a cold cache; small gains are not worth it),
- the moves of this plan stay within ``max_moves``,
- the component has not moved in the last ``cooldown_s``,
- the target has room with the instance still running where it is (make before break).

Never fewer instances: a move keeps every item placed. Nothing moves while the app is not fully running
(placement and relocation have that job). Pure: the caller records the moves it executes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlsysops.agents.placement.framework import PlacementConfigError
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies.batch_heuristic import PlacedState
from mlsysops.policies.batch_placement import BatchOptions, solve_assignment
from mlsysops.policies.batch_problem import UNPLACED, BatchProblem, build_problem
from mlsysops.policies.placement_engine import PlacementConfig


@dataclass(frozen=True, slots=True)
class RebalanceOptions:
    min_gain_ms: float = 10.0
    min_gain_ratio: float = 0.2
    max_moves: int = 2
    cooldown_s: float = 600.0

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | None, field: str = "rebalance") -> RebalanceOptions:
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise PlacementConfigError(field, f"must be a mapping, got {type(spec).__name__}")
        known = ("min_gain_ms", "min_gain_ratio", "max_moves", "cooldown_s")
        if unknown := sorted(set(spec) - set(known)):
            raise PlacementConfigError(f"{field}.{unknown[0]}", f"unknown key; expected one of {list(known)}")
        values: dict[str, Any] = {}
        for key in known:
            if key not in spec:
                continue
            v = spec[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != v:
                raise PlacementConfigError(f"{field}.{key}", f"must be a number >= 0, got {v!r}")
            if key == "max_moves" and not isinstance(v, int):
                raise PlacementConfigError(f"{field}.{key}", f"must be an integer >= 0, got {v!r}")
            values[key] = v
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Move:
    component: str
    from_node: str
    to_node: str
    before: float
    after: float
    step: int = 1
    """Moves of one step go together (a linked pair); ``before``/``after`` are the step's."""

    @property
    def gain(self) -> float:
        return self.before - self.after

    def explain(self) -> str:
        return (f"{self.component} {self.from_node} -> {self.to_node}: app cost {self.before:.1f} -> "
                f"{self.after:.1f} ms (gain {self.gain:.1f})")


@dataclass(slots=True)
class RebalancePlan:
    moves: list[Move] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    """Moves that would gain something but were not made, each with why."""
    reason: str = ""
    before: float | None = None
    after: float | None = None
    threshold: float | None = None
    whole: float | None = None
    """The cost of the batch placer's answer for the whole app now (what every move at once could reach)."""

    def explain(self) -> str:
        if self.reason:
            return self.reason
        head = (f"app cost {self.before:.1f} ms (re-placed whole: {self.whole:.1f}), threshold "
                f"{self.threshold:.1f} ms per move")
        body = [m.explain() for m in self.moves] or ["no move gains enough"]
        return "; ".join([head, *body, *self.declined[:5]])


def plan_rebalance(
    requests: Sequence[ComponentRequest],
    running: Mapping[str, Sequence[str]],
    nodes: Sequence[NodeView],
    *,
    config: PlacementConfig | None = None,
    options: RebalanceOptions | None = None,
    batch: BatchOptions | None = None,
    now: float | None = None,
    last_moved: Mapping[str, float] | None = None,
) -> RebalancePlan:
    """Moves for one app: ``running`` maps component -> nodes of its running instances (all wanted
    instances must be there); ``nodes`` are the cluster's views with those instances on them."""
    opts = options or RebalanceOptions()
    now = time.time() if now is None else now
    last_moved = last_moved or {}
    plan = RebalancePlan()
    short = [r.name for r in requests if len(running.get(r.name, ())) < r.instances]
    if short or not requests:
        plan.reason = f"not rebalanced: not fully running ({', '.join(short)})" if short else "nothing runs"
        return plan
    freed = {n.name: n for n in nodes}
    for r in requests:
        for host in running[r.name]:
            if host not in freed:
                plan.reason = f"not rebalanced: {r.name} runs on unknown node {host}"
                return plan
            freed[host] = freed[host].with_placed(r, -1)
    views = [freed[n.name] for n in nodes]
    problem = build_problem(requests, {r.name: len(running[r.name]) for r in requests}, views, config=config)
    current = _current_assignment(problem, running, {n.name: i for i, n in enumerate(views)})
    if current is None:
        plan.reason = "not rebalanced: an instance runs where its filters refuse it now (relocation's job)"
        return plan
    before = problem.evaluate(current)
    proposed, _ = solve_assignment(problem, batch or BatchOptions(), time.perf_counter())
    plan.whole = problem.evaluate(proposed).cost
    plan.before = before.cost
    plan.threshold = max(opts.min_gain_ms, opts.min_gain_ratio * before.cost)
    state = list(current)
    moved: set[str] = set()
    step = 0
    while True:
        cost = problem.evaluate(state).cost
        candidates = _candidates(problem, state, proposed)
        best = None
        for group, after in candidates:
            names = {problem.requests[problem.item_comp[item]].name for item, _ in group}
            blocked = [n for n in names if n in moved or (n in last_moved and now - last_moved[n] < opts.cooldown_s)]
            per_move = (cost - after) / len(group)
            if blocked:
                if per_move >= plan.threshold:
                    plan.declined.append(f"{_describe(problem, views, state, group)} gain {cost - after:.1f}: "
                                         f"{', '.join(sorted(blocked))} in cooldown")
                continue
            if best is None or per_move > best[2]:
                best = (group, after, per_move)
        if best is None:
            break
        group, after, per_move = best
        text = f"{_describe(problem, views, state, group)}: app cost {cost:.1f} -> {after:.1f} ms"
        if per_move < plan.threshold:
            plan.declined.append(f"{text}, {per_move:.1f} per move below threshold {plan.threshold:.1f}")
            break
        if len(plan.moves) + len(group) > opts.max_moves:
            plan.declined.append(f"{text}, over the budget of {opts.max_moves} move(s)")
            break
        step += 1
        for item, node in group:
            comp = problem.requests[problem.item_comp[item]].name
            plan.moves.append(Move(comp, views[state[item]].name, views[node].name, cost, after, step))
            moved.add(comp)
            state[item] = node
    plan.after = problem.evaluate(state).cost
    return plan


def _describe(problem: BatchProblem, views: Sequence[NodeView], state: Sequence[int],
              group: Sequence[tuple[int, int]]) -> str:
    return " + ".join(f"{problem.requests[problem.item_comp[item]].name} {views[state[item]].name} -> "
                      f"{views[node].name}" for item, node in group)


def _current_assignment(problem: BatchProblem, running: Mapping[str, Sequence[str]],
                        index: Mapping[str, int]) -> list[int] | None:
    assign = [UNPLACED] * problem.size
    seen: dict[int, int] = {}
    for item, comp in enumerate(problem.item_comp):
        k = seen.get(comp, 0)
        seen[comp] = k + 1
        node = index[running[problem.requests[comp].name][k]]
        if problem.position(comp, node) is None:
            return None
        assign[item] = node
    return assign


def _candidates(problem: BatchProblem, state: list[int],
                proposed: Sequence[int]) -> list[tuple[list[tuple[int, int]], float]]:
    """Moves that lower the cost, each with the cost after it: per instance its best other node, and
    per link whose two ends the batch placer would put elsewhere, both moved together (a chain often
    gains only as a whole). A target must have room while the instances still run where they are."""
    placed = PlacedState(problem)
    for item, node in enumerate(state):
        placed.place(item, node)
    base = problem.evaluate(state).cost
    out: list[tuple[list[tuple[int, int]], float]] = []
    for item, node in enumerate(state):
        comp = problem.item_comp[item]
        cost, fit = placed.costs(item)
        here = problem.position(comp, node)
        fit[here] = False
        if not fit.any():
            continue
        pos = int(np.where(fit, cost, np.inf).argmin())
        if cost[pos] < cost[here] - 1e-9:
            group = [(item, int(problem.feasible[comp][pos]))]
            out.append((group, _after(problem, state, group)))
    for a, b in problem.item_edges:
        group = [(i, proposed[i]) for i in (a, b) if proposed[i] not in (UNPLACED, state[i])]
        if len(group) == 2 and _room(problem, placed, group):
            after = _after(problem, state, group)
            if after < base - 1e-9:
                out.append((group, after))
    return out


def _after(problem: BatchProblem, state: Sequence[int], group: Sequence[tuple[int, int]]) -> float:
    trial = list(state)
    for item, node in group:
        trial[item] = node
    return problem.evaluate(trial).cost


def _room(problem: BatchProblem, placed: PlacedState, group: Sequence[tuple[int, int]]) -> bool:
    need: dict[int, tuple[float, float]] = {}
    for item, node in group:
        comp = problem.item_comp[item]
        cpu, mem = need.get(node, (0.0, 0.0))
        need[node] = (cpu + problem.cpu[comp], mem + problem.mem[comp])
    return all(placed.cpu_left[n] >= c and placed.mem_left[n] >= m for n, (c, m) in need.items())
