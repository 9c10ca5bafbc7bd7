"""The batch placer's exact model: a mixed-integer program solved by HiGHS (``highspy``).

Variables, on a ``BatchProblem`` (``batch_problem``):

- ``x[u, k]`` binary: item ``u`` runs on node ``k``, for the nodes its filters allowed;
- ``y[e, p, q]`` in [0, 1]: the two items of link ``e`` run on ``p`` and ``q`` (the standard
  linearisation of the product ``x[a, p] x[b, q]``: ``sum_q y[e, p, q] <= x[a, p]``,
  ``sum_p y[e, p, q] <= x[b, q]``, ``sum y[e] >= sum x[a] + sum x[b] - 1``; with latency >= 0 the
  cheapest ``y`` is exactly the product).

Constraints: an item on at most one node; cpu and memory per node within what is free (rows only where
the items that may go there could overflow it); an item only with every item of its in-batch
dependencies. Objective: minimise ``sum (static cost - R) x + sum latency y`` with one reward ``R``
per placed item larger than any cost, so the placed count is maximised first, then the cost.

The model grows with the product of the feasible node sets of linked components; above
``max_variables`` it is not built (the heuristic answers alone). HiGHS stops at ``time_limit_s``
and returns its best solution so far (``status`` says so). The heuristic's answer is given as a start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlsysops.policies.batch_problem import UNPLACED, BatchProblem

DEFAULT_MAX_VARIABLES = 60_000

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
    sizes = [len(f) for f in problem.feasible]
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
    """Solve the exact model within ``time_limit_s``; ``start`` is a known assignment to begin from."""
    variables = count_variables(problem)
    if variables > max_variables:
        return IlpResult("too_large", None, variables)
    if problem.size == 0:
        return IlpResult("optimal", [], 0)
    import highspy

    model = _Model(problem)
    highs = _new_highs()
    for name, value in (("time_limit", max(time_limit_s, 1e-3)), ("mip_rel_gap", 1e-9),
                        ("mip_abs_gap", 1e-7), ("threads", threads), ("random_seed", 0)):
        highs.setOptionValue(name, value)
    lp = model.lp(highspy)
    if highs.passModel(lp) != highspy.HighsStatus.kOk:
        return IlpResult("error: model rejected by HiGHS", None, variables)
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = model.columns_of(start)
        highs.setSolution(sol)
    highs.run()
    status = highs.getModelStatus()
    info = highs.getInfo()
    seconds = highs.getRunTime()
    has_solution = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    if status == highspy.HighsModelStatus.kOptimal:
        label = "optimal"
    elif status == highspy.HighsModelStatus.kTimeLimit:
        label = "time_limit"
    else:
        label = f"error: {highs.modelStatusToString(status)}"
    if not has_solution:
        return IlpResult(label if label != "optimal" else "no_solution", None, variables, None, seconds)
    values = np.asarray(highs.getSolution().col_value)
    gap = float(info.mip_gap) if label != "optimal" else 0.0
    return IlpResult(label, model.assignment(values), variables, gap, seconds)


class _Model:
    """Column and row layout of the program for one problem."""

    def __init__(self, problem: BatchProblem) -> None:
        self.p = problem
        self.x_start: list[int] = []
        col = 0
        for comp in problem.item_comp:
            self.x_start.append(col)
            col += len(problem.feasible[comp])
        self.y_start: list[int] = []
        self.lat: list[np.ndarray] = []
        for a, b in problem.item_edges:
            fa, fb = problem.feasible[problem.item_comp[a]], problem.feasible[problem.item_comp[b]]
            self.y_start.append(col)
            block = np.stack([problem.latency_row(int(k))[fb] for k in fa]) if len(fa) and len(fb) else (
                np.zeros((len(fa), len(fb))))
            self.lat.append(block)
            col += block.size
        self.num_col = col

    def lp(self, highspy):
        p = self.p
        cost = np.zeros(self.num_col)
        reward = 1.0 + sum(float(p.static_cost[c].max()) for c in p.item_comp if len(p.static_cost[c]))
        reward += sum(float(block.max()) for block in self.lat if block.size)
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

        for item, comp in enumerate(p.item_comp):
            span = np.arange(self.x_start[item], self.x_start[item] + len(p.feasible[comp]))
            cost[span] = p.static_cost[comp] - reward
            add_row(span, np.ones(len(span)), -inf, 1.0)
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
        # links
        for e, (a, b) in enumerate(p.item_edges):
            block = self.lat[e]
            na, nb = block.shape
            start = self.y_start[e]
            cost[start:start + block.size] = block.ravel()
            ys = np.arange(start, start + block.size).reshape(na, nb)
            for i in range(na):
                add_row(np.append(ys[i], self.x_start[a] + i), np.append(np.ones(nb), -1.0), -inf, 0.0)
            for j in range(nb):
                add_row(np.append(ys[:, j], self.x_start[b] + j), np.append(np.ones(na), -1.0), -inf, 0.0)
            xa = np.arange(self.x_start[a], self.x_start[a] + na)
            xb = np.arange(self.x_start[b], self.x_start[b] + nb)
            add_row(np.concatenate([ys.ravel(), xa, xb]),
                    np.concatenate([np.ones(block.size), -np.ones(na), -np.ones(nb)]), -1.0, inf)
        # dependencies: an item only with every item it depends on
        for item, deps in enumerate(p.item_deps):
            mine = np.arange(self.x_start[item], self.x_start[item] + len(p.feasible[p.item_comp[item]]))
            for dep in deps:
                theirs = np.arange(self.x_start[dep], self.x_start[dep] + len(p.feasible[p.item_comp[dep]]))
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
        for item, comp in enumerate(p.item_comp):
            for col in range(self.x_start[item], self.x_start[item] + len(p.feasible[comp])):
                integrality[col] = highspy.HighsVarType.kInteger
        lp.integrality_ = integrality
        return lp

    def columns_of(self, assign: Sequence[int]) -> list[float]:
        values = np.zeros(self.num_col)
        p = self.p
        for item, node in enumerate(assign):
            if node != UNPLACED:
                values[self.x_start[item] + p.position(p.item_comp[item], node)] = 1.0
        for e, (a, b) in enumerate(p.item_edges):
            if assign[a] != UNPLACED and assign[b] != UNPLACED:
                i = p.position(p.item_comp[a], assign[a])
                j = p.position(p.item_comp[b], assign[b])
                values[self.y_start[e] + i * self.lat[e].shape[1] + j] = 1.0
        return values.tolist()

    def assignment(self, values: np.ndarray) -> list[int]:
        p = self.p
        out = []
        for item, comp in enumerate(p.item_comp):
            span = values[self.x_start[item]:self.x_start[item] + len(p.feasible[comp])]
            best = int(span.argmax()) if len(span) else -1
            out.append(int(p.feasible[comp][best]) if best >= 0 and span[best] > 0.5 else UNPLACED)
        return out
