"""The batch placer: optimal on small known cases, every filter respected, falls back within its budget."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
from pathlib import Path

import pytest

from mlsysops.agents.placement.framework import PlacementConfigError, Status
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies import filter_score_placement
from mlsysops.policies.batch_placement import BatchOptions, place_batch
from mlsysops.policies.batch_problem import UNPLACED, build_problem
from mlsysops.policies.placement_engine import PlacementConfig, dependency_order, place_app
from mlsysops.policies.placement_filters import DEFAULT_FILTERS, FilterPlugin, filter_statuses

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import placement_quality  # noqa: E402  - the benchmark's seeded scenario generator

GI = 1 << 30
EXACT = BatchOptions(time_budget_s=30.0)   # generous: these small models solve in milliseconds


def node(name: str, cpu: float, layer: str = "edge", **kw) -> NodeView:
    return NodeView(name=name, layer=layer, cpu_capacity=cpu, memory_capacity=8 * GI, **kw)


def link(nodes: list[NodeView], a: str, b: str, ms: float) -> None:
    by = {n.name: n for n in nodes}
    by[a].latency_ms[b] = by[b].latency_ms[a] = ms


def test_places_what_one_instance_at_a_time_cannot() -> None:
    # the big node looks best to the small component alone; then the big one has nowhere to go
    nodes = [node("big", 2.0), node("small", 1.0)]
    reqs = [ComponentRequest("app", "light", cpu_cores=1.0), ComponentRequest("app", "heavy", cpu_cores=2.0)]
    greedy = place_app(reqs, nodes)
    assert "heavy" in greedy.unplaceable
    batch = place_batch(reqs, nodes, options=EXACT)
    assert batch.ok and batch.placements == {"light": ["small"], "heavy": ["big"]}
    assert batch.batch["method"] == "exact"
    (light,) = batch.decisions["light"]
    assert light.node == "small" and "batch placer" in light.explain()   # why not the best node alone


def test_follows_the_data_source_under_capacity() -> None:
    # source on s; near and far hold one component each: the one that talks to the source goes near
    nodes = [node("s", 0.5, "far_edge"), node("near", 1.0), node("far", 1.0)]
    nodes[0].hosted[("app", "source")] = 1
    link(nodes, "s", "near", 1.0)
    link(nodes, "s", "far", 30.0)
    link(nodes, "near", "far", 30.0)
    reqs = [ComponentRequest("app", "ingest", cpu_cores=1.0, layers={"edge"}, interacts_with=["source"]),
            ComponentRequest("app", "store", cpu_cores=1.0, layers={"edge"}, interacts_with=["ingest"])]
    result = place_batch(reqs, nodes, options=EXACT)
    assert result.placements == {"ingest": ["near"], "store": ["far"]}


def _brute_force(problem):
    """Every assignment of every item to one of its nodes or none: the true optimum."""
    choices = [[UNPLACED, *map(int, problem.feasible[c])] for c in problem.item_comp]
    best = None
    for assign in itertools.product(*choices):
        cpu = problem.cpu_free.copy()
        mem = problem.mem_free.copy()
        ok = True
        for item, k in enumerate(assign):
            if k != UNPLACED:
                cpu[k] -= problem.cpu[problem.item_comp[item]]
                mem[k] -= problem.mem[problem.item_comp[item]]
                ok = ok and cpu[k] >= 0 and mem[k] >= 0
                ok = ok and all(assign[w] != UNPLACED for w in problem.item_deps[item])
        if ok:
            obj = problem.evaluate(list(assign))
            if best is None or obj.better_than(best):
                best = obj
    return best


@pytest.mark.parametrize("seed", range(8))
def test_exact_on_random_small_cases_equals_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [node(f"n{i}", rng.choice((1.0, 2.0, 3.0)), rng.choice(("edge", "cloud"))) for i in range(4)]
    for a, b in itertools.combinations(nodes, 2):
        link(nodes, a.name, b.name, round(rng.uniform(1, 50), 1))
    nodes[rng.randrange(4)].hosted[("app", "src")] = 1
    reqs = []
    for i in range(4):
        reqs.append(ComponentRequest("app", f"c{i}", cpu_cores=rng.choice((0.5, 1.0, 1.5)),
                                     layers=rng.choice(({"edge"}, {"cloud"}, set())),
                                     interacts_with=[f"c{i - 1}" if i else "src"],
                                     depends_on=["c0"] if i == 3 else []))
    result = place_batch(reqs, nodes, options=EXACT)
    order = dependency_order(reqs)
    by = {r.name: r for r in reqs}
    problem = build_problem([by[n] for n in order], {r.name: 1 for r in reqs}, nodes)
    best = _brute_force(problem)
    assert result.batch["method"] == "exact"
    got = result.batch["objective"]
    assert got["placed"] == best.placed
    assert got["cost"] == pytest.approx(best.cost, abs=1e-3)


def _assert_respects_filters(reqs, nodes, result, filters=DEFAULT_FILTERS) -> None:
    """Replay the result in its order: every instance passes every filter on the views as they fill."""
    by = {r.name: r for r in reqs}
    current = {n.name: n for n in nodes}
    for name in result.order:
        for host in result.placements.get(name, []):
            statuses = filter_statuses(by[name], current[host],
                                       [c for f in filters if (c := f.prepare(by[name])) is not None])
            assert statuses == [], (name, host, statuses)
            current[host] = current[host].with_placed(by[name])
    for view in current.values():
        assert view.cpu_allocated <= view.cpu_capacity + 1e-6 and view.memory_allocated <= view.memory_capacity


@pytest.mark.parametrize("size", [20, 100])
def test_respects_every_filter_on_generated_continua(size: int) -> None:
    nodes, apps = placement_quality.make_scenario(size, seed=3, load=1.5)
    flat, _ = placement_quality._flatten(apps)
    result = place_batch(flat, nodes, options=BatchOptions(time_budget_s=0.5))
    _assert_respects_filters(flat, nodes, result)
    assert result.unplaceable   # load 1.5x: not everything fits, and each left-out one says why
    assert all(reasons for reasons in result.unplaceable.values())
    greedy = place_app(flat, nodes)
    placed = sum(map(len, result.placements.values()))
    assert placed >= sum(map(len, greedy.placements.values()))
    # what landed is what the solver chose: the landed placement scores the solver's objective
    problem = build_problem([{r.name: r for r in flat}[n] for n in dependency_order(flat)],
                            {r.name: r.instances for r in flat}, nodes)
    index = {n.name: i for i, n in enumerate(nodes)}
    hosts = {name: list(where) for name, where in result.placements.items()}
    landed = [index[hosts[problem.requests[c].name].pop(0)] if hosts.get(problem.requests[c].name) else UNPLACED
              for c in problem.item_comp]
    if result.batch["fixed_up"] == 0:
        assert problem.evaluate(landed).cost == pytest.approx(result.batch["objective"]["cost"], abs=1e-2)


def test_a_filter_the_model_cannot_see_still_holds() -> None:
    # "one instance of an app per node": depends on what landed, so only the replay can enforce it
    def one_per_node(request):
        busy = Status.unschedulable("one_per_node", "app already here")
        return lambda n: busy if any(app == request.app for app, _ in n.hosted) else None

    filters = (*DEFAULT_FILTERS, FilterPlugin("one_per_node", one_per_node))
    nodes = [node("a", 8.0), node("b", 8.0), node("c", 8.0)]
    link(nodes, "a", "b", 5.0)
    link(nodes, "b", "c", 5.0)
    link(nodes, "a", "c", 5.0)
    reqs = [ComponentRequest("app", f"c{i}", cpu_cores=1.0, interacts_with=[f"c{i - 1}"] if i else [])
            for i in range(3)]
    config = PlacementConfig(filters=filters)
    result = place_batch(reqs, nodes, config=config, options=EXACT)
    _assert_respects_filters(reqs, nodes, result, filters)
    assert sorted(h for hs in result.placements.values() for h in hs) == ["a", "b", "c"]
    assert result.batch["fixed_up"] >= 1   # the model co-located them (0 ms), the filter said no


def test_falls_back_to_the_heuristic_within_its_budget() -> None:
    nodes, apps = placement_quality.make_scenario(100, seed=1, load=1.5)
    flat, _ = placement_quality._flatten(apps)
    # no time for the exact model at all
    none_left = place_batch(flat, nodes, options=BatchOptions(time_budget_s=0.0))
    assert none_left.batch["method"].startswith("heuristic")
    assert none_left.batch["exact"] == "no time left in the budget"
    _assert_respects_filters(flat, nodes, none_left)
    # a model too large to build
    too_large = place_batch(flat, nodes, options=BatchOptions(max_variables=100, time_budget_s=30.0))
    assert too_large.batch["exact"].startswith("not built")
    assert too_large.placements == none_left.placements or too_large.batch["method"].startswith("heuristic")
    # HiGHS stopped by the budget (this model needs seconds to prove optimal): the better answer is kept
    stopped = place_batch(flat, nodes, options=BatchOptions(time_budget_s=0.05))
    assert stopped.batch["exact"] in ("time_limit", "no time left in the budget")
    assert stopped.batch["objective"]["placed"] >= none_left.batch["heuristic"]["placed"]
    _assert_respects_filters(flat, nodes, stopped)


def test_same_contract_as_place_app_for_running_and_dependencies() -> None:
    nodes = [node("a", 2.0), node("b", 1.0)]
    nodes[0].hosted[("app", "db")] = 1
    reqs = [ComponentRequest("app", "db", cpu_cores=1.0),
            ComponentRequest("app", "gpu-job", gpu=True),
            ComponentRequest("app", "api", cpu_cores=0.5, depends_on=["gpu-job"]),
            ComponentRequest("app", "web", cpu_cores=0.5, depends_on=["db"], instances=2)]
    result = place_batch(reqs, nodes, options=EXACT)
    assert result.skipped == ["db"]
    assert result.unplaceable["gpu-job"] == ["no gpu (2 nodes)"]
    assert result.unplaceable["api"] == ["dependency gpu-job unplaceable"]
    assert len(result.placements["web"]) == 2
    assert result.batch["summary"].startswith("batch placer: exact")


def test_options_are_validated_naming_the_field() -> None:
    with pytest.raises(PlacementConfigError, match=r"^batch.time_budget_s: must be a finite number"):
        BatchOptions.from_mapping({"time_budget_s": -1})
    with pytest.raises(PlacementConfigError, match=r"^batch.budget: unknown key"):
        BatchOptions.from_mapping({"budget": 1})
    with pytest.raises(PlacementConfigError, match=r"^batch.exact: must be true or false"):
        BatchOptions.from_mapping({"exact": "yes"})


def test_policy_uses_the_batch_placer_and_keeps_the_old_path_selectable() -> None:
    from tests.test_placement_policy_config import APP_DESC, cluster_system

    def plan(context):
        return asyncio.run(filter_score_placement.plan(context, APP_DESC, cluster_system(), {}, {}, None))

    context = filter_score_placement.initialize()
    commands, context = plan(context)
    (batch_action,) = commands["component_placement"]["actions"]
    assert context["explanation"]["placer"]["method"] == "exact"
    assert context["explanation"]["summary"].startswith("batch placer:")
    context["placer"] = "instance"
    commands, context = plan(context)
    assert context["explanation"]["placer"] == "instance"
    assert commands["component_placement"]["actions"][0]["node"] == batch_action["node"]
    context["placer"] = "ilp"
    with pytest.raises(PlacementConfigError, match=r"^placer: expected one of"):
        plan(context)


def test_apps_pending_together_are_placed_together() -> None:
    from mlsysops.policies.batch_placement import place_apps

    nodes = [node("big", 2.0), node("small", 1.0)]
    first = [ComponentRequest("a", "light", cpu_cores=1.0)]
    second = [ComponentRequest("b", "heavy", cpu_cores=2.0)]
    alone = place_batch(first, nodes, options=EXACT)   # the app alone takes the roomier node
    assert alone.placements == {"light": ["big"]}
    assert "heavy" in place_batch(second, alone.nodes, options=EXACT).unplaceable
    both = place_apps({"a": first, "b": second}, nodes, options=EXACT)
    assert both["a"].placements == {"light": ["small"]} and both["b"].placements == {"heavy": ["big"]}
    assert both["a"].decisions["light"][0].component == "light"
    assert both["a"].batch["apps"] == ["a", "b"]


def test_policy_places_with_the_other_pending_apps_of_its_cluster() -> None:
    from tests.test_placement_policy_config import APP, APP_DESC, cluster_system

    system = cluster_system()
    system["app_models"]["other"] = APP.model_copy(update={"name": "other"})
    system["assigned"]["other"] = ["aggregator"]
    context = filter_score_placement.initialize()
    commands, context = asyncio.run(filter_score_placement.plan(context, APP_DESC, system, {}, {}, None))
    (action,) = commands["component_placement"]["actions"]
    assert action["component"] == "aggregator"
    assert context["explanation"]["placer"]["apps"] == ["env-monitor", "other"]
    context["batch"] = {"scope": "app"}
    _, context = asyncio.run(filter_score_placement.plan(context, APP_DESC, system, {}, {}, None))
    assert "apps" not in context["explanation"]["placer"]


@pytest.mark.parametrize("exact", [True, False])
def test_covers_every_component_before_a_replica(exact: bool) -> None:
    # room for 3 of the 4 instances: a third replica of c, or d at all? same count, d runs
    nodes = [node("a", 4.0)]
    reqs = [ComponentRequest("app", "c", cpu_cores=1.0, instances=3),
            ComponentRequest("app", "d", cpu_cores=2.0, interacts_with=["c"])]
    result = place_batch(reqs, nodes, options=BatchOptions(time_budget_s=30.0, exact=exact))
    assert result.placements == {"c": ["a", "a"], "d": ["a"]}
    assert result.unplaceable["c"][0] == "placed 2 of 3 instances"
