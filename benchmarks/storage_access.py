"""Data-access latency with the storage policy vs all data in the cloud vs a static placement.

Run: ``python benchmarks/storage_access.py [--seed 1]``; importable as ``benchmarks.storage_access``
(``run(seed) -> dict``).

Scenario (seeded; the simulated continuum's network model, `sim.object_access` for each access):

- **sites**: ``cloud-eu`` (Frankfurt, GDPR), ``cloud-us`` (Virginia), ``edge-a`` (Athens, GDPR, edge),
  ``edge-b`` (Madrid, GDPR, edge); each store on its own node of its cluster.
- **buckets**: ``video/frames`` (GDPR, 1 replica, ``detector`` target 30 ms; ``camera`` writes 5/s and
  ``detector`` reads 10/s, 256 KiB, both in Athens, and both relocate to Madrid at t=120 s);
  ``shop/catalog`` (2 replicas, unrestricted; ``web-eu`` in Madrid and ``web-us`` in Virginia read 20/s,
  64 KiB; ``admin`` in Frankfurt writes 0.2/s); ``audit/trail`` (GDPR, cloud layer only: Frankfurt is
  the one site; ``collector`` in Athens writes 2/s, 16 KiB). 240 s of simulated accesses.
- **strategies**, same accesses: ``cloud`` = every bucket on cloud sites only; ``static`` = the policy's
  first placement (from the owners' nodes, before any access), never moved; ``policy`` = the storage
  policy's choice (`storage_replica_choice`) re-evaluated every 10 s on the mechanism's `AccessLog`
  (30 s window), each move make-before-break: the old replicas serve until the copy (its modelled
  duration) is complete; ``bytes_moved`` counts every byte copied.

Metrics: per component and pooled, p50/p95/p99 of access latency (ms); targets met. Last line:
``access_p95_ratio=`` (pooled p95, policy / cloud) ``static_p95_ratio=`` (static / cloud)
``median_component_p95_ratio=`` (median over components of policy p95 / cloud p95) ``bytes_moved=``
``moves=``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlsysops.agents.descriptions.storage_intents import BucketIntent, StorageSite  # noqa: E402
from mlsysops.mechanisms.storage_access_log import AccessLog  # noqa: E402
from mlsysops.policies.storage_replica_choice import choose_replica_sites, current_accessors  # noqa: E402
from mlsysops.sim import SimClock, SimContinuum  # noqa: E402
from mlsysops.sim.model import SimNodeSpec  # noqa: E402
from mlsysops.sim.object_access import AccessStream, ObjectAccessModel, generate_accesses  # noqa: E402

DURATION_S = 240.0
RELOCATE_AT_S = 120.0
EVAL_EVERY_S = 5.0
WINDOW_S = 10.0
INITIAL_OBJECTS = 200
KIB = 1024

PLACES = {"fra": (8.68, 50.11), "iad": (-77.5, 39.0), "ath": (23.73, 37.98), "mad": (-3.70, 40.42)}
NODES = [  # name, cluster, layer, place
    ("cloud-eu-s", "cloud-eu", "cloud", "fra"), ("cloud-eu-1", "cloud-eu", "cloud", "fra"),
    ("cloud-us-s", "cloud-us", "cloud", "iad"), ("cloud-us-1", "cloud-us", "cloud", "iad"),
    ("edge-a-s", "edge-a", "edge", "ath"), ("edge-a-1", "edge-a", "edge", "ath"),
    ("edge-b-s", "edge-b", "edge", "mad"), ("edge-b-1", "edge-b", "edge", "mad")]
SITES = [StorageSite("cloud-eu", region="eu", gdpr=True, layer="cloud", node="cloud-eu-s"),
         StorageSite("cloud-us", region="us", gdpr=False, layer="cloud", node="cloud-us-s"),
         StorageSite("edge-a", region="eu", gdpr=True, layer="edge", node="edge-a-s"),
         StorageSite("edge-b", region="eu", gdpr=True, layer="edge", node="edge-b-s")]
INTENTS = [
    BucketIntent("video", "frames", "camera", "components[0].storage.buckets[0]", replicas=1, gdpr=True,
                 targets_ms={"detector": 30.0}),
    BucketIntent("shop", "catalog", "admin", "components[0].storage.buckets[0]", replicas=2),
    BucketIntent("audit", "trail", "collector", "components[0].storage.buckets[0]", replicas=1, gdpr=True,
                 layers=("cloud",)),
]


def streams(phase: int) -> list[AccessStream]:
    video_node = "edge-a-1" if phase == 0 else "edge-b-1"
    return [AccessStream("video/frames", "camera", video_node, 0.0, 5.0, 256 * KIB),
            AccessStream("video/frames", "detector", video_node, 10.0, 0.0, 256 * KIB),
            AccessStream("shop/catalog", "web-eu", "edge-b-1", 20.0, 0.0, 64 * KIB),
            AccessStream("shop/catalog", "web-us", "cloud-us-1", 20.0, 0.0, 64 * KIB),
            AccessStream("shop/catalog", "admin", "cloud-eu-1", 0.0, 0.2, 64 * KIB),
            AccessStream("audit/trail", "collector", "edge-a-1", 0.0, 2.0, 16 * KIB)]


OWNER_NODE = {"video/frames": "edge-a-1", "shop/catalog": "cloud-eu-1", "audit/trail": "edge-a-1"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


@dataclass
class Placement:
    sites: list[str]
    pending: tuple[list[str], float] | None = None    # (new sites, time the copy completes)


@dataclass
class Outcome:
    latencies: dict[str, list[float]] = field(default_factory=dict)   # component -> ms
    bytes_moved: int = 0
    moves: list[str] = field(default_factory=list)


def _rtt(sim: SimContinuum) -> dict[str, dict[str, float]]:
    return {n[0]: {s.name: sim.latency_ms(n[0], s.node) for s in SITES} for n in NODES}


def _cloud(intent: BucketIntent) -> list[str]:
    allowed = choose_replica_sites(intent, SITES, [], [], {}).filtered
    clouds = [s.name for s in SITES if s.layer == "cloud" and s.name not in allowed]
    return clouds[:intent.replicas]


def simulate(strategy: str, seed: int) -> Outcome:
    sim = SimContinuum.from_specs([SimNodeSpec(n, c, layer=layer, location=PLACES[p]) for n, c, layer, p in NODES],
                                  seed=seed, clock=SimClock.manual())
    model = ObjectAccessModel(sim, seed=seed)
    rtt = _rtt(sim)
    node_of = {s.name: s.node for s in SITES}
    t_now = [0.0]
    log = AccessLog(window_s=WINDOW_S, clock=lambda: t_now[0])
    sizes = {i.key: INITIAL_OBJECTS * (256 * KIB if i.bucket_id == "frames" else 64 * KIB) for i in INTENTS}
    by_key = {i.key: i for i in INTENTS}
    if strategy == "cloud":
        place = {i.key: Placement(_cloud(i)) for i in INTENTS}
    else:
        place = {i.key: Placement(choose_replica_sites(i, SITES, [], [], rtt, owner_node=OWNER_NODE[i.key]).sites)
                 for i in INTENTS}
    out = Outcome()
    accesses = (generate_accesses(streams(0), 0.0, RELOCATE_AT_S, seed)
                + generate_accesses(streams(1), RELOCATE_AT_S, DURATION_S - RELOCATE_AT_S, seed + 1))
    next_eval = EVAL_EVERY_S
    for acc in accesses:
        t_now[0] = acc.at
        for p in place.values():    # a finished copy switches the bucket, then the old replicas go
            if p.pending and p.pending[1] <= acc.at:
                p.sites, p.pending = p.pending[0], None
        if strategy == "policy" and acc.at >= next_eval:
            next_eval += EVAL_EVERY_S
            _evaluate(place, by_key, log, rtt, sizes, model, node_of, acc.at, out)
        s = acc.stream
        p = place[s.bucket]
        serving = {site: node_of[site] for site in p.sites}
        if acc.op == "write" and p.pending:   # writes also go to the replica being made
            serving |= {site: node_of[site] for site in p.pending[0]}
        ms, served = model.access_ms(s.node, serving, acc.op, s.object_bytes)
        if acc.op == "write":
            sizes[s.bucket] += s.object_bytes
        log.record(s.bucket, s.component, s.node, acc.op, s.object_bytes, ms, served, at=acc.at)
        out.latencies.setdefault(s.component, []).append(ms)
    return out


def _evaluate(place, by_key, log, rtt, sizes, model, node_of, now, out) -> None:
    summary = log.summary(now)
    for key, p in place.items():
        if p.pending:
            continue
        accessors = current_accessors(summary.get(key, []))
        choice = choose_replica_sites(by_key[key], SITES, p.sites, accessors, rtt)
        if not choice.changes:
            continue
        new = [s for s in choice.sites if s not in p.sites]
        src = p.sites[0]
        copy_s = max(model.copy_s(node_of[src], node_of[s], sizes[key]) for s in new)
        out.bytes_moved += sizes[key] * len(new)
        out.moves.append(f"t={now:.0f}s {key}: {choice.reason}")
        p.pending = (choice.sites, now + copy_s)


def run(seed: int = 1) -> dict:
    outcomes = {name: simulate(name, seed) for name in ("cloud", "static", "policy")}
    rows = []
    targets = {c: t for i in INTENTS for c, t in i.targets_ms.items()}
    for name, o in outcomes.items():
        pooled = [v for vals in o.latencies.values() for v in vals]
        for comp, vals in sorted(o.latencies.items()) + [("(all)", pooled)]:
            target = targets.get(comp)
            p95 = percentile(vals, 0.95)
            rows.append({"strategy": name, "component": comp, "accesses": len(vals),
                         "p50_ms": round(percentile(vals, 0.5), 2), "p95_ms": round(p95, 2),
                         "p99_ms": round(percentile(vals, 0.99), 2),
                         "target_ms": target, "met": None if target is None else p95 <= target})
    pooled_p95 = {r["strategy"]: r["p95_ms"] for r in rows if r["component"] == "(all)"}
    per_comp = {(r["strategy"], r["component"]): r["p95_ms"] for r in rows if r["component"] != "(all)"}
    comp_ratios = sorted(per_comp["policy", c] / per_comp["cloud", c] for s, c in per_comp if s == "cloud")
    return {"rows": rows, "access_p95_ratio": round(pooled_p95["policy"] / pooled_p95["cloud"], 3),
            "median_component_p95_ratio": round(statistics.median(comp_ratios), 3),
            "targets_met": {s: sum(1 for r in rows if r["strategy"] == s and r["met"]) for s in outcomes},
            "targets": sum(1 for r in rows if r["strategy"] == "cloud" and r["met"] is not None),
            "static_p95_ratio": round(pooled_p95["static"] / pooled_p95["cloud"], 3),
            "bytes_moved": outcomes["policy"].bytes_moved, "moves": outcomes["policy"].moves, "seed": seed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    res = run(args.seed)
    print(f"{'strategy':8} {'component':10} {'accesses':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'target':>7}")
    for r in res["rows"]:
        target = "" if r["target_ms"] is None else f"{r['target_ms']:g}{' ok' if r['met'] else ' MISS'}"
        print(f"{r['strategy']:8} {r['component']:10} {r['accesses']:8d} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} "
              f"{r['p99_ms']:8.2f} {target:>7}")
    print("policy moves:")
    for m in res["moves"]:
        print(f"  {m}")
    print(f"access_p95_ratio={res['access_p95_ratio']} static_p95_ratio={res['static_p95_ratio']} "
          f"median_component_p95_ratio={res['median_component_p95_ratio']} "
          f"bytes_moved={res['bytes_moved']} moves={len(res['moves'])}")


if __name__ == "__main__":
    main()
