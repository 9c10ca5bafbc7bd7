"""Place a batch (an app, or several) as a whole: exact within a time budget, a strong heuristic beyond.

``place_batch`` takes what ``place_app`` takes and returns the same ``AppPlacement``; the cluster's
``filter_score_placement`` uses it by default (``context["placer"] = "instance"`` selects the old
one-instance-at-a-time path). The problem (``batch_problem``) comes from the same filter and score
plugins: filters define where an instance may go, scorers and link latency what is better. Then:

1. the heuristic (``batch_heuristic``: regret / scarcity construction, local-search repair) answers in
   milliseconds; that answer is the fallback whatever happens next;
2. the exact model (``batch_ilp``, HiGHS) gets what is left of ``time_budget_s`` and starts from the
   heuristic's answer; its solution wins when it is optimal or better. A model above
   ``max_variables`` is not built (large clusters: the heuristic alone);
3. the chosen assignment is replayed instance by instance through the filters on the node views as they
   fill up: a node a filter refuses at that point (a plugin the model cannot see, such as one that
   depends on what else landed) is replaced by the per-instance choice, and an instance left out with
   room still free for it is placed per instance too, so nothing placeable is dropped.

Every placed instance carries the per-instance ``PlacementDecision`` of its component (all candidates,
scores, rejections) with the batch's choice and a note saying why when that is not the best node alone;
``AppPlacement.batch`` records the method, solver status, objective and time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mlsysops.agents.placement.framework import PlacementConfigError
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies import batch_heuristic, batch_ilp
from mlsysops.policies.batch_problem import DEFAULT_SCORE_WEIGHT_MS, UNPLACED, BatchProblem, build_problem
from mlsysops.policies.placement_engine import (
    AppPlacement,
    PlacementConfig,
    PlacementDecision,
    _prepare,
    dependency_order,
    place_app,
    schedule,
)

PLACERS = ("batch", "instance")
SCOPES = ("cluster", "app")
DEFAULT_PLACER = "batch"


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """``time_budget_s``: wall time for the whole batch decision (the exact model gets what the
    heuristic left); ``exact``: try the exact model at all; ``max_variables``: largest model built;
    ``score_weight_ms``: ms of latency one score point is worth (``batch_problem``); ``scope``: what a
    cluster's policy places together, ``cluster`` (the app with every other app pending placement on the
    cluster, ``place_apps``; the app takes its share) or ``app`` (the app alone)."""

    time_budget_s: float = 0.2
    exact: bool = True
    max_variables: int = batch_ilp.DEFAULT_MAX_VARIABLES
    score_weight_ms: float = DEFAULT_SCORE_WEIGHT_MS
    scope: str = "cluster"

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any] | None, field: str = "batch") -> BatchOptions:
        """From a policy context's ``batch`` entry; ``PlacementConfigError`` names a wrong field."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise PlacementConfigError(field, f"must be a mapping, got {type(spec).__name__}")
        known = ("time_budget_s", "exact", "max_variables", "score_weight_ms", "scope")
        if unknown := sorted(set(spec) - set(known)):
            raise PlacementConfigError(f"{field}.{unknown[0]}", f"unknown key; expected one of {list(known)}")
        values: dict[str, Any] = {}
        for key in ("time_budget_s", "score_weight_ms"):
            if key in spec:
                v = spec[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise PlacementConfigError(f"{field}.{key}", f"must be a finite number >= 0, got {v!r}")
                values[key] = float(v)
        if "exact" in spec:
            if not isinstance(spec["exact"], bool):
                raise PlacementConfigError(f"{field}.exact", f"must be true or false, got {spec['exact']!r}")
            values["exact"] = spec["exact"]
        if "max_variables" in spec:
            v = spec["max_variables"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise PlacementConfigError(f"{field}.max_variables", f"must be an integer >= 0, got {v!r}")
            values["max_variables"] = v
        if "scope" in spec:
            if spec["scope"] not in SCOPES:
                raise PlacementConfigError(f"{field}.scope", f"expected one of {list(SCOPES)}, got {spec['scope']!r}")
            values["scope"] = spec["scope"]
        return cls(**values)


def placer_of(context: Mapping[str, Any]) -> str:
    """``context["placer"]``: ``batch`` (default) or ``instance``."""
    placer = context.get("placer") or DEFAULT_PLACER
    if placer not in PLACERS:
        raise PlacementConfigError("placer", f"expected one of {list(PLACERS)}, got {placer!r}")
    return placer


def _needed(requests: Sequence[ComponentRequest], nodes: Sequence[NodeView],
            placed: Mapping[str, Sequence[str]] | None) -> dict[str, int]:
    hosted: dict[tuple[str, str], int] = {}
    if placed is None:   # one pass over the nodes, not one per component
        for n in nodes:
            for key, count in n.hosted.items():
                hosted[key] = hosted.get(key, 0) + count
    out = {}
    for r in requests:
        running = len(placed.get(r.name, ())) if placed is not None else hosted.get(r.key, 0)
        out[r.name] = r.instances - running
    return out


def solve_assignment(problem: BatchProblem, options: BatchOptions, started: float) -> tuple[list[int], dict]:
    """Heuristic first (the fallback), then the exact model on what remains of the budget."""
    deadline = started + options.time_budget_s
    assign, objective, rule = batch_heuristic.solve(problem, deadline)
    info: dict[str, Any] = {"method": f"heuristic ({rule})", "heuristic": _objective_dict(objective)}
    heuristic_ms = (time.perf_counter() - started) * 1e3
    info["heuristic_ms"] = round(heuristic_ms, 2)
    remaining = deadline - time.perf_counter()
    if not options.exact:
        info["exact"] = "off"
    elif problem.size == 0:
        info["exact"] = "optimal"
        info["method"] = "exact"
    elif remaining <= 0:
        info["exact"] = "no time left in the budget"
    else:
        # keep a fifth of the budget to repair a time-limited answer (the count phase's assignment places
        # more, but its latency is whatever HiGHS had when time ran out)
        reserve = 0.2 * options.time_budget_s
        ilp = batch_ilp.solve(problem, time_limit_s=max(remaining - reserve, 1e-3), start=assign,
                              max_variables=options.max_variables)
        info["exact"] = ilp.status
        info["variables"] = ilp.variables
        if ilp.status == "too_large":
            info["exact"] = f"not built: {ilp.variables} variables > max_variables {options.max_variables}"
        if ilp.assign is not None:
            exact = problem.evaluate(ilp.assign)
            info["exact_objective"] = _objective_dict(exact)
            if ilp.gap is not None:
                info["gap"] = ilp.gap
            if ilp.status != "optimal":
                repaired, better = batch_heuristic.improve(problem, ilp.assign, deadline)
                if better.better_than(exact):
                    ilp_assign, exact = repaired, better
                    info["repaired"] = _objective_dict(better)
                else:
                    ilp_assign = ilp.assign
            else:
                ilp_assign = ilp.assign
            if ilp.status == "optimal" or exact.better_than(objective):
                assign, objective = ilp_assign, exact
                info["method"] = "exact" if ilp.status == "optimal" else (
                    "exact (time limit, best found" + (", repaired)" if "repaired" in info else ")"))
    info["objective"] = _objective_dict(objective)
    return assign, info


def _objective_dict(obj) -> dict[str, Any]:
    return {"placed": obj.placed, "cost": round(obj.cost, 3), "link_ms_mean": round(obj.mean_link_ms, 3),
            "links": obj.links}


def place_batch(
    requests: Sequence[ComponentRequest],
    nodes: Sequence[NodeView],
    weights: Mapping[str, float] | None = None,
    *,
    placed: Mapping[str, Sequence[str]] | None = None,
    config: PlacementConfig | None = None,
    options: BatchOptions | None = None,
) -> AppPlacement:
    """Place every missing instance of a batch as a whole; pure (inputs are not mutated).

    Same contract as ``place_app`` (``placed``, skipped components, dependency rule, ``AppPlacement``);
    requests of several apps may be mixed (names must be unique within the batch).
    """
    started = time.perf_counter()
    opts = options or BatchOptions()
    cfg = config or PlacementConfig()
    by_name = {r.name: r for r in requests}
    order = dependency_order(requests)
    needed = _needed(requests, nodes, placed)
    problem = build_problem([by_name[n] for n in order], needed, nodes, config=cfg, weights=weights,
                            score_weight_ms=opts.score_weight_ms)
    assign, info = solve_assignment(problem, opts, started)
    result = _replay(problem, assign, order, by_name, needed, nodes, weights, cfg, info["method"])
    # A budget cut short (a loaded machine) may leave the search worse than one instance at a time: never
    # place fewer instances than the per-instance path would.
    greedy = place_app(requests, nodes, weights, placed=placed, config=cfg)
    if _count(greedy) > _count(result):
        info["method"] = f"per-instance (the batch answer placed {_count(result)} < {_count(greedy)})"
        result = greedy
    info["fixed_up"] = (result.batch or {}).get("fixed_up", 0)
    info["ms"] = round((time.perf_counter() - started) * 1e3, 2)
    info["summary"] = _summary(info, result)
    result.batch = info
    return result


def _count(placement: AppPlacement) -> int:
    return sum(len(nodes) for nodes in placement.placements.values())


def place_apps(
    apps: Mapping[str, Sequence[ComponentRequest]],
    nodes: Sequence[NodeView],
    weights: Mapping[str, float] | None = None,
    *,
    placed: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    config: PlacementConfig | None = None,
    options: BatchOptions | None = None,
) -> dict[str, AppPlacement]:
    """Several apps placed as one batch (what they need competes for the same nodes); each app's
    ``AppPlacement`` under its own component names. ``placed`` is per app as in ``place_batch``.

    For the solve, components are renamed ``app/component`` (names must be unique in a batch; peers and
    dependencies are renamed within their app, a running peer outside the batch keeps its name and is
    found through ``NodeView.hosted``). One consequence: the ``spread`` scorer's "same component counts
    double" does not see running instances of a component being completed in such a batch."""
    flat: list[ComponentRequest] = []
    owner: dict[str, tuple[str, str]] = {}
    flat_placed: dict[str, Sequence[str]] = {}
    for app, requests in apps.items():
        names = {r.name for r in requests}
        for r in requests:
            key = f"{app}/{r.name}"
            owner[key] = (app, r.name)
            flat.append(replace(
                r, name=key, interacts_with=[f"{app}/{p}" if p in names else p for p in r.interacts_with],
                depends_on=[f"{app}/{d}" for d in r.depends_on if d in names]))
            if placed is not None:
                flat_placed[key] = placed.get(app, {}).get(r.name, ())
            else:
                flat_placed[key] = [n.name for n in nodes for _ in range(n.hosted.get(r.key, 0))]
    joint = place_batch(flat, nodes, weights, placed=flat_placed, config=config, options=options)
    out = {app: AppPlacement(order=[], nodes=joint.nodes, batch=dict(joint.batch or {}, apps=sorted(apps)))
           for app in apps}
    for key in joint.order:
        app, name = owner[key]
        result = out[app]
        result.order.append(name)
        if key in joint.placements:
            result.placements[name] = joint.placements[key]
        if key in joint.decisions:
            result.decisions[name] = [replace(d, component=name) for d in joint.decisions[key]]
        if key in joint.unplaceable:
            result.unplaceable[name] = [reason.replace(f"{app}/", "") for reason in joint.unplaceable[key]]
        if key in joint.skipped:
            result.skipped.append(name)
    return out


def _replay(problem: BatchProblem, assign: Sequence[int], order: Sequence[str],
            by_name: Mapping[str, ComponentRequest], needed: Mapping[str, int], nodes: Sequence[NodeView],
            weights: Mapping[str, float] | None, cfg: PlacementConfig, method: str) -> AppPlacement:
    """Land the assignment through the filters (module docstring, step 3): first every instance the
    solver placed, in dependency order, then, on what capacity is left, the ones it left out or a filter
    refused, per instance (so a fix-up never takes the room of an instance the solver placed)."""
    current = list(nodes)
    position = {n.name: i for i, n in enumerate(current)}
    result = AppPlacement(order=list(order))
    comp_of = {r.name: c for c, r in enumerate(problem.requests)}
    items_of: dict[int, list[int]] = {}
    for item, comp in enumerate(problem.item_comp):
        items_of.setdefault(comp, []).append(item)
    landed: dict[str, list[tuple[int, PlacementDecision]]] = {}
    # pass 1: the solver's choices, each checked by every filter on the views as they fill
    for name in order:
        if needed[name] <= 0:
            continue
        request = by_name[name]
        comp = comp_of[name]
        snapshot = problem.decisions[comp]
        best_alone = snapshot.ranking()[0] if snapshot.candidates else None
        _, checks, broken = _prepare(request, cfg.filters)
        for item in items_of[comp]:
            node = assign[item]
            if node == UNPLACED or broken:
                continue
            view = current[node]
            if any(check(view) is not None for check in checks):
                continue
            note = None
            if view.name != best_alone:
                note = f"chosen by the batch placer ({method}) for the app as a whole; best alone: {best_alone}"
            landed.setdefault(name, []).append((item, replace(snapshot, node=view.name, note=note)))
            current[node] = view.with_placed(request)
    # pass 2: in dependency order, the dependency rule, then per instance what is still missing
    fixed_up = 0
    for name in order:
        request = by_name[name]
        mine = landed.get(name, [])
        failed = [d for d in request.depends_on if d in result.unplaceable]
        if failed and not mine:
            result.unplaceable[name] = [f"dependency {d} unplaceable" for d in failed]
            continue
        if needed[name] <= 0:
            result.skipped.append(name)
            continue
        decisions = [d for _, d in mine]
        hosts = [d.node for d in decisions]
        snapshot = problem.decisions[comp_of[name]]
        while len(hosts) < needed[name] and not failed:
            # no candidate on the snapshot: none now either (capacity only shrinks), its reasons hold
            decision = snapshot if not snapshot.candidates else schedule(request, current, weights, config=cfg)
            decisions.append(decision)
            if decision.node is None:
                break
            fixed_up += 1
            decision.note = "placed per instance after the batch"
            idx = position[decision.node]
            current[idx] = current[idx].with_placed(request)
            hosts.append(decision.node)
        result.decisions[name] = decisions
        if hosts:
            result.placements[name] = hosts
        if len(hosts) < needed[name]:
            reasons = (decisions[-1].reason_summary() if decisions and decisions[-1].node is None else []) or [
                f"dependency {d} unplaceable" for d in failed] or ["no nodes"]
            if needed[name] > 1:
                reasons.insert(0, f"placed {len(hosts)} of {needed[name]} instances")
            result.unplaceable[name] = reasons
    result.nodes = current
    if fixed_up:
        result.batch = {"fixed_up": fixed_up}
    return result


def _summary(info: Mapping[str, Any], result: AppPlacement) -> str:
    obj = info["objective"]
    placed = sum(len(v) for v in result.placements.values())
    text = (f"batch placer: {info['method']} in {info['ms']:.1f} ms (exact model: {info['exact']}); "
            f"{placed} instances placed, mean link latency {obj['link_ms_mean']:.1f} ms over {obj['links']} "
            f"links")
    heuristic = info["heuristic"]
    if info["method"].startswith("exact"):
        text += (f"; heuristic alone: {heuristic['placed']} placed, "
                 f"{heuristic['link_ms_mean']:.1f} ms mean link latency")
    return text
