"""Placement benchmark: per-decision latency and batch throughput on synthetic continua.

Run: ``.venv/bin/python benchmarks/placement.py [--decisions N] [--seed S]``

Synthetic continuum: clusters of 50 nodes (1 cloud-heavy, the rest edge/far-edge), varied labels,
sensors, architectures, GPUs and capacities, partial latency maps (intra-cluster plus a few cross-cluster
links), some nodes down and background apps already running (so proximity and spread have work to do).
Requests mix unconstrained and constrained components, some interacting with running ones.

Measured in one process, same requests and node sets:
- ``schedule`` latency per decision (p50/p95/p99 ms) at 100 and 1,000 nodes;
- a first-fit baseline (filters only, first feasible node in name order) for the latency ratio and a
  quality comparison (mean latency to peers of the chosen node);
- ``place_app`` throughput (component instances placed per second) on 1,000 nodes;
- building a placement configuration from a policy context (``placement_plugins.placement_config``,
  done once per plan), in microseconds.
The last printed line is ``key=value`` pairs for scripts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlsysops.agents.placement.types import ComponentRequest, NodeView  # noqa: E402
from mlsysops.policies.placement_engine import place_app, schedule  # noqa: E402
from mlsysops.policies.placement_filters import applicable_filters  # noqa: E402
from mlsysops.policies.placement_plugins import placement_config  # noqa: E402

GI = 1 << 30
MI = 1 << 20
CLUSTER_SIZE = 50
LAYERS = ("cloud", "edge", "edge", "far_edge")
SENSORS = ("camera:d455", "camera:d435", "temperature:sdc30", "lidar", "gps")
NODE_TYPES = ("rpi", "jetson", "server", "vm")


def make_nodes(count: int, rng: random.Random) -> list[NodeView]:
    """A continuum of ``count`` nodes in clusters of ``CLUSTER_SIZE``."""
    names = [f"n{i:04d}" for i in range(count)]
    nodes: list[NodeView] = []
    for i, name in enumerate(names):
        cluster = i // CLUSTER_SIZE
        layer = rng.choice(LAYERS)
        big = layer == "cloud"
        cpu = rng.choice((16.0, 32.0, 64.0)) if big else rng.choice((1.0, 2.0, 4.0, 8.0))
        mem = int(cpu * rng.choice((2, 4)) * GI)
        base = cluster * CLUSTER_SIZE
        peers = names[base : base + CLUSTER_SIZE]
        latency = {p: rng.uniform(0.5, 5.0) for p in peers if p != name}
        for p in rng.sample(names, k=min(5, count)):
            latency.setdefault(p, rng.uniform(10.0, 80.0))
        nodes.append(
            NodeView(
                name=name,
                cluster=f"c{cluster}",
                layer=layer,
                labels={f"node-type:{rng.choice(NODE_TYPES)}", f"zone:z{cluster % 4}"}
                | ({"accelerator"} if rng.random() < 0.1 else set()),
                mobile=layer == "far_edge" and rng.random() < 0.3,
                sensors=set(rng.sample(SENSORS, k=rng.randint(0, 2))) if not big else set(),
                architecture="amd64" if big or rng.random() < 0.5 else "arm64",
                gpu=rng.random() < (0.3 if big else 0.05),
                cpu_capacity=cpu,
                memory_capacity=mem,
                cpu_allocated=round(cpu * rng.uniform(0.0, 0.7), 2),
                memory_allocated=int(mem * rng.uniform(0.0, 0.7)),
                cpu_utilization=rng.uniform(0.0, 1.0),
                alive=rng.random() > 0.02,
                latency_ms=latency,
            )
        )
    # Background apps already running: give proximity and spread something to look at.
    for a in range(max(1, count // 20)):
        for c in range(3):
            host = rng.choice(nodes)
            host.hosted[(f"bg{a}", f"svc{c}")] = 1
    return nodes


def make_request(i: int, rng: random.Random, background_apps: int) -> ComponentRequest:
    """A mix: 40% unconstrained, the rest with one or more constraints; half talk to a running peer."""
    app = f"bg{rng.randrange(background_apps)}"
    r = ComponentRequest(
        app=app,
        name=f"req{i}",
        cpu_cores=rng.choice((0.1, 0.25, 0.5, 1.0)),
        memory_bytes=rng.choice((64, 128, 256, 512)) * MI,
    )
    kind = rng.random()
    if kind < 0.4:
        pass
    elif kind < 0.6:
        r.layers = {"edge", "far_edge"}
        r.sensors = [rng.choice(("camera", "camera:d455", "temperature"))]
    elif kind < 0.75:
        r.labels = [f"node-type:{rng.choice(NODE_TYPES)}"]
        r.architectures = {"arm64"}
    elif kind < 0.85:
        r.gpu = True
        r.layers = {"cloud"}
    else:
        r.mobile = True
        r.layers = {"far_edge"}
    if rng.random() < 0.5:
        r.interacts_with = [f"svc{rng.randrange(3)}"]
    return r


def first_fit(request: ComponentRequest, nodes: Sequence[NodeView]) -> str | None:
    """Baseline: filters only, the first feasible node in name order (nodes are generated sorted)."""
    checks = applicable_filters(request)
    for node in nodes:
        if all(check(node) is None for check in checks):
            return node.name
    return None


def random_eligible(request: ComponentRequest, nodes: Sequence[NodeView], rng: random.Random) -> str | None:
    """Baseline: filters on every node (the same full scan ``schedule`` does), a random feasible one."""
    checks = applicable_filters(request)
    feasible = [node.name for node in nodes if all(check(node) is None for check in checks)]
    return rng.choice(feasible) if feasible else None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def peer_latency(request: ComponentRequest, chosen: str | None, nodes: dict[str, NodeView]) -> float | None:
    """Mean latency from the chosen node to the nearest host of each peer (quality metric)."""
    if chosen is None or not request.interacts_with:
        return None
    node = nodes[chosen]
    values = []
    for peer in request.interacts_with:
        hosts = [n for n in nodes.values() if n.hosted.get((request.app, peer))]
        if not hosts:
            continue
        values.append(
            min(
                0.0 if h.name == chosen else node.latency_ms.get(h.name, h.latency_ms.get(chosen, 100.0))
                for h in hosts
            )
        )
    return statistics.fmean(values) if values else None


def bench_decisions(size: int, decisions: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed + size)
    nodes = make_nodes(size, rng)
    by_name = {n.name: n for n in nodes}
    apps = max(1, size // 20)
    requests = [make_request(i, rng, apps) for i in range(decisions)]
    for r in requests[:20]:  # warm-up
        schedule(r, nodes)

    lat_ms: list[float] = []
    chosen: list[str | None] = []
    for r in requests:
        t0 = time.perf_counter()
        d = schedule(r, nodes)
        lat_ms.append((time.perf_counter() - t0) * 1e3)
        chosen.append(d.node)

    base_ms: list[float] = []
    base_chosen: list[str | None] = []
    for r in requests:
        t0 = time.perf_counter()
        n = first_fit(r, nodes)
        base_ms.append((time.perf_counter() - t0) * 1e3)
        base_chosen.append(n)

    rand_ms: list[float] = []
    rand_chosen: list[str | None] = []
    pick = random.Random(seed)
    for r in requests:
        t0 = time.perf_counter()
        n = random_eligible(r, nodes, pick)
        rand_ms.append((time.perf_counter() - t0) * 1e3)
        rand_chosen.append(n)

    feasible = [c is None for c in chosen]
    assert feasible == [c is None for c in base_chosen] == [c is None for c in rand_chosen], "feasibility"
    q_sched = [v for r, c in zip(requests, chosen) if (v := peer_latency(r, c, by_name)) is not None]
    q_base = [v for r, c in zip(requests, base_chosen) if (v := peer_latency(r, c, by_name)) is not None]
    q_rand = [v for r, c in zip(requests, rand_chosen) if (v := peer_latency(r, c, by_name)) is not None]
    util_sched = [by_name[c].cpu_utilization for c in chosen if c]
    util_base = [by_name[c].cpu_utilization for c in base_chosen if c]
    util_rand = [by_name[c].cpu_utilization for c in rand_chosen if c]
    return {
        "p50": percentile(lat_ms, 50),
        "p95": percentile(lat_ms, 95),
        "p99": percentile(lat_ms, 99),
        "base_p50": percentile(base_ms, 50),
        "base_p99": percentile(base_ms, 99),
        "rand_p50": percentile(rand_ms, 50),
        "rand_p99": percentile(rand_ms, 99),
        "rand_peer_ms": statistics.fmean(q_rand) if q_rand else float("nan"),
        "rand_util": statistics.fmean(util_rand) if util_rand else float("nan"),
        "placed": sum(c is not None for c in chosen) / len(chosen),
        "peer_ms": statistics.fmean(q_sched) if q_sched else float("nan"),
        "base_peer_ms": statistics.fmean(q_base) if q_base else float("nan"),
        "util": statistics.fmean(util_sched) if util_sched else float("nan"),
        "base_util": statistics.fmean(util_base) if util_base else float("nan"),
    }


def bench_batches(size: int, batches: int, seed: int) -> float:
    """Component instances placed per second by ``place_app`` (10-component apps with a dependency
    chain, some replicated) on ``size`` nodes; each batch starts from the previous batch's nodes."""
    rng = random.Random(seed)
    nodes = make_nodes(size, rng)
    placed = 0
    elapsed = 0.0
    for b in range(batches):
        app = f"app{b}"
        reqs = []
        for c in range(10):
            r = make_request(c, rng, 1)
            r.app, r.name = app, f"c{c}"
            r.interacts_with = [f"c{c - 1}"] if c else []
            r.depends_on = [f"c{c - 1}"] if c % 3 == 1 else []
            r.instances = 2 if c % 4 == 0 else 1
            reqs.append(r)
        t0 = time.perf_counter()
        result = place_app(reqs, nodes)
        elapsed += time.perf_counter() - t0
        placed += sum(len(v) for v in result.placements.values())
        nodes = result.nodes
    return placed / elapsed if elapsed > 0 else float("nan")


POLICY_CONTEXT = {
    "weights": {"spread": 0.1},
    "placement": {
        "filters": {"disable": ["mobility"]},
        "scorers": {"proximity": {"weight": 2, "args": {"unknown_latency_ms": 50}},
                    "layer": {"args": {"preference": {"edge": 2, "cloud": 1}}},
                    "utilization": {"enabled": False}},
    },
}


def bench_config_build(repeats: int = 2000) -> float:
    """Microseconds to turn a typical policy context into a ``PlacementConfig``."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats):
            placement_config(POLICY_CONTEXT)
        best = min(best, (time.perf_counter() - t0) / repeats * 1e6)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1000, help="decisions per node-set size (>= 1000)")
    parser.add_argument("--batches", type=int, default=20, help="place_app batches at 1,000 nodes")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    results = {size: bench_decisions(size, args.decisions, args.seed) for size in (100, 1000)}
    pps = bench_batches(1000, args.batches, args.seed)
    config_us = bench_config_build()

    print(f"schedule() vs baselines, {args.decisions} decisions per size (same requests, same nodes)")
    print(
        f"{'nodes':>6} {'policy':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'x p50':>6} "
        f"{'peer ms':>8} {'util':>5}"
    )
    nan = float("nan")
    for size, r in results.items():
        rows = (
            ("schedule", r["p50"], r["p95"], r["p99"], r["peer_ms"], r["util"]),
            ("first-fit", r["base_p50"], nan, r["base_p99"], r["base_peer_ms"], r["base_util"]),
            ("random-eligible", r["rand_p50"], nan, r["rand_p99"], r["rand_peer_ms"], r["rand_util"]),
        )
        for name, p50, p95, p99, peer, util in rows:
            print(
                f"{size:>6} {name:<16} {p50:>8.3f} {p95:>8.3f} {p99:>8.3f} {r['p50'] / p50:>6.1f} "
                f"{peer:>8.2f} {util:>5.2f}"
            )
    print(f"all policies placed {results[1000]['placed']:.1%} of requests at 1000 nodes (feasibility agrees)")
    print("x p50 = schedule p50 / policy p50; peer ms = mean latency from the chosen node to the")
    print("interacting running peer (lower is better); util = mean observed cpu utilisation of the")
    print("chosen node (lower is better).")
    print(f"place_app on 1000 nodes: {pps:.0f} component instances/s over {args.batches} batches")
    print(f"placement config from a policy context: {config_us:.1f} us")
    r100, r1000 = results[100], results[1000]
    print(
        f"decision_p50_ms_100={r100['p50']:.3f} decision_p99_ms_100={r100['p99']:.3f} "
        f"decision_p50_ms_1000={r1000['p50']:.3f} decision_p99_ms_1000={r1000['p99']:.3f} "
        f"placements_per_s_1000={pps:.0f} config_build_us={config_us:.1f} "
        f"ratio_vs_first_fit_p50_1000={r1000['p50'] / r1000['base_p50']:.2f} "
        f"ratio_vs_random_eligible_p50_1000={r1000['p50'] / r1000['rand_p50']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
