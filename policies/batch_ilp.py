"""The batch placer's exact model: a mixed-integer program solved by HiGHS (``highspy``).

Variables, on a ``BatchProblem`` (``batch_problem``):

- ``x[u, k]`` binary: item ``u`` runs on node ``k``, for the nodes its filters allowed;
  plus ``x[u, none]`` (not placed), one per item, so that every item's columns sum to 1;
- ``y[e, p, q]`` in [0, 1]: the two items of link ``e`` run on ``p`` and ``q`` (``none`` included), the
  linearisation of the product ``x[a, p] x[b, q]`` in transportation form: ``sum_q y[e, p, q] =
  x[a, p]`` and ``sum_p y[e, p, q] = x[b, q]`` (tight in the LP relaxation where inequalities are weak).

Constraints: an item on at most one node; cpu and memory per node within what is free (rows only where
the items that may go there could overflow it); an item only with every item of its in-batch
dependencies. Objective, lexicographic in two solves: the most items placed (``x`` only), then the
lowest ``sum static cost x + sum latency y`` among assignments placing that many.

The model grows with the product of the feasible node sets of linked components; above
``max_variables`` it is not built (the heuristic answers alone). HiGHS stops at ``time_limit_s``
and returns its best solution so far (``status`` says so). The heuristic's answer is given as a start.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlsysops.policies.batch_problem import UNPLACED, BatchProblem

DEFAULT_MAX_VARIABLES = 20_000

_banner_lock = threading.Lock()
_banner_done = False


@dataclass(frozen=True, slots=True)
class IlpResult:
    """``status`` is ``optimal``, ``time_limit`` (best found so far), ``too_large`` (not built: see
    ``variables``), ``no_solution`` or ``error: ...``; ``assign`` is None without a solution."""

    status: str
    assign: list[int] | None
    variables: int
    gap: float | None = None
    seconds: float = 0.0


def count_variables(problem: BatchProblem) -> int:
    sizes = [len(f) + 1 for f in problem.feasible]   # + "not placed"
    x = sum(sizes[c] for c in problem.item_comp)
    y = sum(sizes[problem.item_comp[a]] * sizes[problem.item_comp[b]] for a, b in problem.item_edges)
    return x + y


def _new_highs():
    """A silent ``highspy.Highs``. HiGHS prints its banner to fd 1 on the first construction in a
    process, before any option can be set; that would land in an agent's (or a live view's) stdout, so
    the first construction runs with fd 1 pointed at /dev/null."""
    global _banner_done
    import highspy

    with _banner_lock:
        if _banner_done:
            highs = highspy.Highs()
        else:
            saved = os.dup(1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 1)
                highs = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(devnull)
                _banner_done = True
    highs.setOptionValue("output_flag", False)
    return highs


def solve(
    problem: BatchProblem,
    *,
    time_limit_s: float,
    start: Sequence[int] | None = None,
    max_variables: int = DEFAULT_MAX_VARIABLES,
    threads: int = 1,
) -> IlpResult:
    """Solve the exact model within ``time_limit_s``; ``start`` is a known assignment to begin from.

    Two phases, lexicographic: the most items that fit (no links: a small model whose bound is what
    makes the count hard to prove), then the lowest cost among assignments placing that many. The
    count phase may use up to half of the time."""
    variables = count_variables(problem)
    if variables > max_variables:
        return IlpResult("too_large", None, variables)
    if problem.size == 0:
        return IlpResult("optimal", [], 0)
    import highspy

    began = time.perf_counter()
    model = _Model(problem)
    counted = _run(model, highspy, "count", time_limit_s / 2, start, threads)
    if counted.error:
        return IlpResult(counted.error, None, variables, None, time.perf_counter() - began)
    floor, covered = counted.placed, counted.covered
    begin_from = counted.assign
    if start is not None:
        given = problem.evaluate(start)
        if counted.assign is None or (given.placed, given.covered) >= (floor, covered):
            floor, covered, begin_from = given.placed, given.covered, list(start)
    left = time_limit_s - (time.perf_counter() - began)
    if left <= 0:
        return IlpResult("time_limit", begin_from, variables, None, time.perf_counter() - began)
    costed = _run(model, highspy, "cost", left, begin_from, threads, min_count=floor, min_covered=covered)
    seconds = time.perf_counter() - began
    if costed.error:
        return IlpResult(costed.error, begin_from, variables, None, seconds)
    label = "optimal" if counted.optimal and costed.optimal else "time_limit"
    if costed.assign is None:
        return IlpResult(label if begin_from is not None else "no_solution", begin_from, variables, None, seconds)
    return IlpResult(label, costed.assign, variables, 0.0 if label == "optimal" else costed.gap, seconds)


@dataclass(slots=True)
class _Phase:
    assign: list[int] | None = None
    placed: int = 0
    optimal: bool = False
    gap: float | None = None
    covered: int = 0
    error: str | None = None


def _run(model: _Model, highspy, phase: str, limit_s: float, start: Sequence[int] | None, threads: int,
         min_count: int = 0, min_covered: int = 0) -> _Phase:
    highs = _new_highs()
    for name, value in (("time_limit", max(limit_s, 1e-3)), ("mip_rel_gap", 1e-9), ("mip_abs_gap", 1e-7),
                        ("threads", threads), ("random_seed", 0)):
        highs.setOptionValue(name, value)
    if highs.passModel(model.lp(highspy, phase, min_count, min_covered)) != highspy.HighsStatus.kOk:
        return _Phase(error="error: model rejected by HiGHS")
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = model.columns_of(model.first_items_first(start))
        highs.setSolution(sol)
    highs.run()
    status = highs.getModelStatus()
    info = highs.getInfo()
    if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit):
        return _Phase(error=f"error: {highs.modelStatusToString(status)}")
    if info.primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return _Phase()
    assign = model.assignment(np.asarray(highs.getSolution().col_value))
    return _Phase(assign, sum(1 for n in assign if n != UNPLACED), status == highspy.HighsModelStatus.kOptimal,
                  float(info.mip_gap), model.p.evaluate(assign).covered)


class _Model:
    """Column and row layout of the program for one problem.

    Each item has one column per feasible node and one for "not placed" (``none``), summing to 1; each
    link a block of ``y`` over (nodes of one end + none) x (nodes of the other + none) whose rows and
    columns sum to the ends' ``x`` (equalities: the transportation form of the product, much tighter in
    the LP relaxation than inequalities). Pairs with an end not placed cost 0, as in ``evaluate``.
    """

    def __init__(self, problem: BatchProblem) -> None:
        self.p = problem
        self.x_start: list[int] = []
        col = 0
        for comp in problem.item_comp:
            self.x_start.append(col)
            col += len(problem.feasible[comp]) + 1
        self.y_start: list[int] = []
        self.lat: list[np.ndarray] = []
        for a, b in problem.item_edges:
            fa, fb = problem.feasible[problem.item_comp[a]], problem.feasible[problem.item_comp[b]]
            self.y_start.append(col)
            block = np.zeros((len(fa) + 1, len(fb) + 1))
            for i, k in enumerate(fa):
                block[i, :len(fb)] = problem.latency_row(int(k))[fb]
            self.lat.append(block)
            col += block.size
        self.num_col = col

    def _width(self, item: int) -> int:
        return len(self.p.feasible[self.p.item_comp[item]])

    def lp(self, highspy, phase: str, min_count: int = 0, min_covered: int = 0):
        """``count``: maximise placed items, then covered components (no link rows); ``cost``: minimise
        the cost with at least ``min_count`` items placed and ``min_covered`` components covered."""
        p = self.p
        cost = np.zeros(self.num_col)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        lower: list[float] = []
        upper: list[float] = []
        inf = highspy.kHighsInf

        def add_row(c: np.ndarray, v: np.ndarray, lo: float, hi: float) -> None:
            rows.append(np.full(len(c), len(lower), dtype=np.int64))
            cols.append(np.asarray(c, dtype=np.int64))
            vals.append(np.asarray(v, dtype=float))
            lower.append(lo)
            upper.append(hi)

        real = []
        firsts = []   # the first item of each component: placing it covers the component
        # worth less than one item in total, so the count stays first and coverage breaks its ties
        bonus = 1.0 / (2.0 * (len(p.requests) + 1))
        seen: set[int] = set()
        for item, comp in enumerate(p.item_comp):
            width = self._width(item)
            first = comp not in seen
            seen.add(comp)
            span = np.arange(self.x_start[item], self.x_start[item] + width + 1)
            if phase == "count":
                cost[span[:-1]] = -1.0 - (bonus if first else 0.0)
            else:
                cost[span[:-1]] = p.static_cost[comp]
            add_row(span, np.ones(len(span)), 1.0, 1.0)
            real.append(span[:-1])
            if first:
                firsts.append(span[:-1])
        if phase == "cost" and min_count > 0:
            columns = np.concatenate(real)
            add_row(columns, np.ones(len(columns)), float(min_count), inf)
        if phase == "cost" and min_covered > 0:
            columns = np.concatenate(firsts)
            add_row(columns, np.ones(len(columns)), float(min_covered), inf)
        # capacity: per node, the columns of every item that may go there
        by_node: dict[int, list[tuple[int, int]]] = {}
        for item, comp in enumerate(p.item_comp):
            for pos, node in enumerate(p.feasible[comp]):
                by_node.setdefault(int(node), []).append((self.x_start[item] + pos, comp))
        for node, entries in by_node.items():
            c = np.array([col for col, _ in entries])
            comps = np.array([comp for _, comp in entries])
            for demand, free in ((p.cpu[comps], p.cpu_free[node]), (p.mem[comps], p.mem_free[node])):
                if demand.sum() > free:
                    add_row(c, demand, -inf, float(free))
        # links: rows and columns of each block sum to the ends' columns (none included)
        for e, (a, b) in enumerate(p.item_edges if phase == "cost" else ()):
            block = self.lat[e]
            na, nb = block.shape
            start = self.y_start[e]
            cost[start:start + block.size] = block.ravel()
            ys = np.arange(start, start + block.size).reshape(na, nb)
            for i in range(na):
                add_row(np.append(ys[i], self.x_start[a] + i), np.append(np.ones(nb), -1.0), 0.0, 0.0)
            for j in range(nb):
                add_row(np.append(ys[:, j], self.x_start[b] + j), np.append(np.ones(na), -1.0), 0.0, 0.0)
        # dependencies: an item only with every item it depends on
        for item, deps in enumerate(p.item_deps):
            mine = np.arange(self.x_start[item], self.x_start[item] + self._width(item))
            for dep in deps:
                theirs = np.arange(self.x_start[dep], self.x_start[dep] + self._width(dep))
                add_row(np.concatenate([mine, theirs]),
                        np.concatenate([np.ones(len(mine)), -np.ones(len(theirs))]), -inf, 0.0)

        r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        v = np.concatenate(vals) if vals else np.zeros(0)
        order = np.argsort(c, kind="stable")
        starts = np.zeros(self.num_col + 1, dtype=np.int64)
        np.cumsum(np.bincount(c, minlength=self.num_col), out=starts[1:])

        lp = highspy.HighsLp()
        lp.num_col_ = self.num_col
        lp.num_row_ = len(lower)
        lp.col_cost_ = cost
        lp.col_lower_ = np.zeros(self.num_col)
        lp.col_upper_ = np.ones(self.num_col)
        lp.row_lower_ = np.array(lower)
        lp.row_upper_ = np.array(upper)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = starts
        lp.a_matrix_.index_ = r[order]
        lp.a_matrix_.value_ = v[order]
        integrality = [highspy.HighsVarType.kContinuous] * self.num_col
        for item in range(p.size):
            for col in range(self.x_start[item], self.x_start[item] + self._width(item) + 1):
                integrality[col] = highspy.HighsVarType.kInteger
        lp.integrality_ = integrality
        return lp

    def first_items_first(self, assign: Sequence[int]) -> list[int]:
        """The same placement with each component's placed nodes on its first items (items of one
        component are interchangeable; the model counts coverage on the first)."""
        p = self.p
        out = list(assign)
        by_comp: dict[int, list[int]] = {}
        for item, comp in enumerate(p.item_comp):
            by_comp.setdefault(comp, []).append(item)
        for items in by_comp.values():
            nodes = [assign[i] for i in items if assign[i] != UNPLACED]
            nodes += [UNPLACED] * (len(items) - len(nodes))
            for item, node in zip(items, nodes, strict=True):
                out[item] = node
        return out

    def columns_of(self, assign: Sequence[int]) -> list[float]:
        values = np.zeros(self.num_col)
        p = self.p
        where = []
        for item, node in enumerate(assign):
            pos = self._width(item) if node == UNPLACED else p.position(p.item_comp[item], node)
            values[self.x_start[item] + pos] = 1.0
            where.append(pos)
        for e, (a, b) in enumerate(p.item_edges):
            values[self.y_start[e] + where[a] * self.lat[e].shape[1] + where[b]] = 1.0
        return values.tolist()

    def assignment(self, values: np.ndarray) -> list[int]:
        p = self.p
        out = []
        for item, comp in enumerate(p.item_comp):
            span = values[self.x_start[item]:self.x_start[item] + self._width(item)]
            best = int(span.argmax()) if len(span) else -1
            out.append(int(p.feasible[comp][best]) if best >= 0 and span[best] > 0.5 else UNPLACED)
        return out
