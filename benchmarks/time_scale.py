"""Faster than real time: the demo slice with one scaled clock for the simulator and every agent interval.

Run: ``.venv/bin/python benchmarks/time_scale.py [--scales 1,20] [--phase S]``

Setup, per scale k: a throw-away prosody server and a ``SliceRuntime`` of ``examples/slices/demo.yaml``
with ``substrate.time_scale = k`` (every agent-to-agent message over prosody). The scenario is written in
simulated seconds (``--phase`` each): both example apps applied at t=0; at t=P the node running the first
component is crashed; at t=2P it recovers; the run ends at t=3P. At the end of each phase the placement
(component -> nodes, status) is recorded. Compared with scale 1: the same placements ("same decisions"),
the speed-up (simulated seconds of the scenario / wall seconds), false losses (a child declared lost that
was not crashed) and the agents' largest loop lag. A scale "keeps up" when its placements equal scale 1's,
and nothing was falsely lost (`running`: components running at the ends of the phases, summed).
Last line: ``max_scale_kept_up= speedup= same_decisions= false_losses=`` (for the largest scale that kept up).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlsysops.agents.slice_config import load_slice  # noqa: E402
from mlsysops.agents.xmpp_prosody import ProsodyServer  # noqa: E402
from mlsysops.cli.slice_runtime import SliceRuntime  # noqa: E402

DEMO = ROOT / "examples" / "slices" / "demo.yaml"
APPS = sorted((ROOT / "examples" / "apps").glob("*.yaml"))


def placement(rt: SliceRuntime, apps: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {f"{a}/{c}": (st["status"], tuple(sorted(st.get("nodes") or ())))
            for a in apps for c, st in sorted(rt.continuum.app_status(a).items())}


async def until_sim(rt: SliceRuntime, t: float) -> None:
    while rt.sim.clock.now() < t:
        await asyncio.sleep(0.01)


async def scenario(scale: float, phase: float, port: int) -> dict[str, Any]:
    spec = load_slice(DEMO)
    spec.config.substrate.time_scale = scale
    rt = SliceRuntime(spec, xmpp_port=port, force_xmpp=True, jid_suffix=f"-k{int(scale)}-{int(time.time())}")
    lost: list[str] = []
    phases: list[dict[str, Any]] = []
    await rt.start()
    try:
        t_form = time.monotonic()
        while not _formed(rt):
            if time.monotonic() - t_form > 60:
                raise RuntimeError(f"hierarchy did not form: {rt.hierarchy()}")
            await asyncio.sleep(0.05)
        for p in [rt.continuum, *rt.clusters.values()]:
            p.children.on_lost(lambda child, reason: _note(lost, child.agent_id, reason))
        apps = sorted({d.name for path in APPS for d in rt.apply_file(path)})
        t0, wall0 = rt.sim.clock.now(), time.monotonic()
        await until_sim(rt, t0 + phase)
        phases.append(placement(rt, apps))
        victim = next(n for _, (_, nodes) in sorted(phases[0].items()) for n in nodes)
        rt.fail_node(victim)
        await until_sim(rt, t0 + 2 * phase)
        phases.append(placement(rt, apps))
        rt.recover_node(victim)
        await until_sim(rt, t0 + 3 * phase)
        phases.append(placement(rt, apps))
        wall = time.monotonic() - wall0
        lag = max(a.loop_lag.max_s for a in [rt.continuum, *rt.clusters.values(), *rt.nodes.values()])
        false = [x for x in lost if not x.startswith(victim + ":")]   # before the stop's own departures
    finally:
        await rt.stop()
    return {"scale": scale, "wall_s": wall, "sim_s": 3 * phase, "phases": phases, "victim": victim,
            "false_losses": false, "max_loop_lag_ms": lag * 1000,
            "running": sum(st == "running" for ph in phases for st, _ in ph.values())}


def _formed(rt: SliceRuntime) -> bool:
    h = rt.hierarchy()
    return all(c["registered"] for c in h.values()) and \
        sum(sum(1 for ok in c["nodes"].values() if ok) for c in h.values()) == len(rt.spec.nodes)


async def _note(lost: list[str], who: str, reason: str) -> None:
    lost.append(f"{who}: {reason}")


async def run(args: argparse.Namespace) -> int:
    scales = [float(s) for s in args.scales.split(",")]
    if 1.0 not in scales:
        scales.insert(0, 1.0)
    srv = ProsodyServer(workdir=Path(tempfile.mkdtemp(prefix="mlsysops-bench-timescale-")) / "prosody")
    await srv.start()
    results = []
    try:
        for k in scales:
            results.append(await scenario(k, args.phase, srv.port))
            print(f"scale {k:g}: done in {results[-1]['wall_s']:.1f}s", file=sys.stderr, flush=True)
    finally:
        await srv.stop()
    base = results[0]
    print(f"scenario: demo slice, both example apps, crash at t={args.phase:g}s, recovery at t={2 * args.phase:g}s, "
          f"end at t={3 * args.phase:g}s (simulated); placements compared with scale 1")
    head = (f"{'scale':>6} {'wall_s':>7} {'speedup':>8} {'same_placements':>15} {'running':>7} "
            f"{'false_losses':>12} {'max_loop_lag_ms':>15}")
    print(head)
    print("-" * len(head))
    best = None
    for r in results:
        same = sum(a == b for a, b in zip(r["phases"], base["phases"], strict=True))
        r["same"] = same == len(base["phases"])
        r["speedup"] = r["sim_s"] / r["wall_s"]
        ratio = f"{same}/{len(base['phases'])}"
        print(f"{r['scale']:>6g} {r['wall_s']:>7.1f} {r['speedup']:>8.1f} {ratio:>15} "
              f"{r['running']:>7} {len(r['false_losses']):>12} {r['max_loop_lag_ms']:>15.0f}")
        if r["false_losses"]:
            print(f"       false losses: {r['false_losses'][:5]}")
        if not r["same"]:
            for i, (a, b) in enumerate(zip(r["phases"], base["phases"], strict=True)):
                if a != b:
                    print(f"       phase {i}: {a} vs scale 1 {b}")
        if r["same"] and not r["false_losses"]:
            best = r
    if best is None:
        print("max_scale_kept_up=0 speedup=0 same_decisions=false false_losses=nan")
        return 1
    print(f"max_scale_kept_up={best['scale']:g} speedup={best['speedup']:.1f} same_decisions={str(best['same']).lower()} "
          f"false_losses={len(best['false_losses'])}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="1,20", help="comma-separated time scales (1 is always run: the baseline)")
    ap.add_argument("--phase", type=float, default=30.0, help="simulated seconds per phase (3 phases)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
