"""Energy of the QoS-aware frequency policy vs fixed `performance` and `powersave`, same seeded workload.

One simulated 4-core node with five CPU steps (1.0..3.0 GHz), sim power model (mlsysops.sim.power). A seeded
schedule of components arrives and leaves over `--minutes` of sim time (manual clock, 1 s steps), with load
spikes; every component has a response-time target of `--target-factor` x its base service time. Each run
replays exactly the same schedule; the policy is the real `policies/frequency_scaling.py` (analyze + plan
every second) driving the real simulated knob (`mechanisms/sim_cpufreq.py`). A violation is one
component-second above its target. Energy is the node's `hw.energy` counter at the end.

Last line: energy_saving=<fraction vs performance> violations_ratio=<policy / performance violations>.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from typing import Any

from mlsysops.mechanisms.sim_cpufreq import SimCpuFrequencyMechanism
from mlsysops.policies import frequency_scaling
from mlsysops.sim import SimClock, SimContinuum, SimNodeSpec

GHZ = 1e9
STEPS = [1.0 * GHZ, 1.5 * GHZ, 2.0 * GHZ, 2.5 * GHZ, 3.0 * GHZ]


def schedule(seed: int, seconds: int) -> list[tuple[int, str, tuple]]:
    rng = random.Random(seed)
    events, live, n = [], [], 0
    for t in range(seconds):
        if rng.random() < 0.08 and len(live) < 4:
            n += 1
            iid = f"c{n}"
            events.append((t, "deploy", (iid, rng.uniform(0.2, 0.6), rng.uniform(10, 40))))
            live.append(iid)
        elif live and rng.random() < 0.04:
            events.append((t, "remove", (live.pop(rng.randrange(len(live))),)))
        if rng.random() < 0.01:
            events.append((t, "spike", (rng.uniform(0.5, 1.5), rng.uniform(5, 20))))
    return events


MODES: dict[str, dict[str, Any] | None] = {   # None: a fixed governor; else overrides of the policy's settings
    "performance": None,
    "powersave": None,
    "policy": {},                                   # as shipped (analyze every 0.25 s)
    "policy@1s": {"configuration": {"analyze_interval": 1.0}},
    "policy+reserve": {"spike_reserve": 0.25},      # keeps room for a 1-core spike on this 4-core node
}


async def run(mode: str, seed: int, seconds: int, factor: float, step: float) -> dict[str, float]:
    """One seeded run; the policy (if any) decides every `analyze_interval` of its settings, the workload
    is measured every `step` s (a violation lasts from one measurement to the next)."""
    sim = SimContinuum([SimNodeSpec("b1", "c1", cpu_cores=4, cpu_freqs_hz=STEPS)], seed=seed, clock=SimClock.manual())
    mech = SimCpuFrequencyMechanism(sim, "b1")
    overrides = MODES[mode]
    if overrides is None:
        await mech.apply({"command": "set_governor", "governor": mode})
    ctx = frequency_scaling.initialize() | (overrides or {})
    every = max(1, round(float(ctx["configuration"]["analyze_interval"]) / step))
    targets: dict[str, float] = {}
    events = schedule(seed, seconds)
    over_s = measured_s = 0.0
    changes = 0
    rts: list[float] = []
    last_rt: dict[str, float] = {}
    last_util = 0.0
    i = 0
    for k in range(round(seconds / step)):
        t = k * step
        while i < len(events) and events[i][0] <= t:
            _, kind, args = events[i]
            i += 1
            if kind == "deploy":
                iid, cores, base = args
                sim.deploy(iid, "app", iid, "b1", cores, 256 << 20, base_response_ms=base, activity=0.6)
                targets[f"app/{iid}"] = base * factor
            elif kind == "remove":
                sim.remove(args[0])
            else:
                sim.load_spike("b1", args[0], args[1])
        if overrides is not None and k % every == 0:   # the node agent sees the instance table and decides
            ctx["targets"] = targets
            views = [{"instance_id": x.instance_id, "app": "app", "component": x.component, "state": str(x.state),
                      "response_time_ms": last_rt.get(x.instance_id) if str(x.state) == "running" else None,
                      "cpu_usage_cores": 0.0} for x in sim.instances(node="b1") if not x.state.terminal]
            system = {"node": "b1", "now": t, "cpu_frequency_hz": sim.cpu_frequency("b1"),
                      "cpu_utilization": [last_util], "instances": views}
            mechs = {"cpu_frequency": {"state": mech.get_state(), "options": mech.get_options()}}
            needed, ctx = await frequency_scaling.analyze(ctx, None, system, mechs, None, None)
            if needed:
                cmds = (await frequency_scaling.plan(ctx, None, system, mechs, None, None))[0]
                if "cpu_frequency" in cmds and (await mech.apply(cmds["cpu_frequency"]))["ok"]:
                    changes += 1
        sim.advance(step)
        last_util = sim.node_metrics("b1")["system.cpu.utilization"]
        last_rt = {}
        for inst in sim.instances(node="b1"):
            if str(inst.state) != "running":
                continue
            rt = sim.component_metrics(inst.instance_id)["response_time_ms"]
            last_rt[inst.instance_id] = rt
            measured_s += step
            rts.append(rt)
            over_s += step * (rt > targets[f"app/{inst.component}"])
    return {"energy_j": sim.energy_joules("b1"), "violations": over_s, "samples": measured_s,
            "p95_rt": statistics.quantiles(rts, n=20)[-1] if len(rts) > 20 else float("nan"), "changes": changes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="sim minutes per run (default 30)")
    ap.add_argument("--seeds", type=int, default=3, help="seeded workloads (default 3)")
    ap.add_argument("--target-factor", type=float, default=3.0, help="target = factor x base service time")
    ap.add_argument("--step", type=float, default=0.25, help="measurement step, s (default 0.25)")
    a = ap.parse_args()
    seconds = int(a.minutes * 60)
    totals = {m: {"energy_j": 0.0, "violations": 0.0, "samples": 0.0} for m in MODES}
    print(f"{'seed':>4} {'mode':<15} {'energy kJ':>10} {'violation s':>11} {'measured s':>10} {'p95 rt ms':>10} "
          f"{'changes':>8}")
    for seed in range(a.seeds):
        for mode in MODES:
            r = asyncio.run(run(mode, seed, seconds, a.target_factor, a.step))
            for key in ("energy_j", "violations", "samples"):
                totals[mode][key] += r[key]
            print(f"{seed:>4} {mode:<15} {r['energy_j'] / 1e3:>10.2f} {r['violations']:>11.2f} {r['samples']:>10.0f} "
                  f"{r['p95_rt']:>10.1f} {r['changes']:>8}")
    perf = totals["performance"]

    def versus(mode: str) -> tuple[float, float]:
        m = totals[mode]
        ratio = m["violations"] / perf["violations"] if perf["violations"] else (0.0 if not m["violations"] else float("inf"))
        return 1.0 - m["energy_j"] / perf["energy_j"], ratio

    print(f"\n{'total':<15} {'energy kJ':>10} {'violation s':>11} {'saving':>7} {'viol. ratio':>11}")
    for mode, m in totals.items():
        saving, ratio = versus(mode)
        print(f"{mode:<15} {m['energy_j'] / 1e3:>10.1f} {m['violations']:>11.2f} {saving:>7.1%} {ratio:>11.3f}")
    saving, ratio = versus("policy")
    print(f"energy_saving={saving:.3f} violations_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
