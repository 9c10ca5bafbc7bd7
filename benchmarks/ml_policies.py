"""ML policies against heuristics on a drifting workload (issue 12).

Same scenario for every contender (`benchmarks/ml_scenario.py`): hidden per-kind speed, interference,
diurnal load and a node that slows down mid-run; several seeds. Contenders: the heuristic policies
(`relocation` + `filter_score_placement`, default weights and a utilisation-heavy variant; the best one
is the baseline), ML `auto` (falls back on drift), ML without fallback (`ml`), and an oracle: the same
policy deciding with the simulator's own response-time formula (hidden speeds, interference, drift; no
noise) instead of a learnt model - a reference for what better predictions could give, not a global
optimum (it is still greedy, per decision, with the policy's thresholds).

    python benchmarks/ml_policies.py            # 5 seeds, 240 s each (about a minute)
    python benchmarks/ml_policies.py --seeds 5 --seconds 600
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ml_scenario import Result, run  # noqa: E402

# columns: violation_s = seconds a component's worst instance broke its response-time target (summed over
# the 6 components; median over seeds); relocations = moves (median); decisions/s = policy calls per
# second of policy time; infer_* = one predict_with_uncertainty call (all candidates of one choice),
# wall clock and thread CPU time; training_s = initial + re-training time (median); drift->fallback =
# decision intervals from the drift to the first fallback after it (median, max); false_alarms = fallbacks
# before the drift (all seeds).

CONTENDERS = [
    ("heuristic", "heuristic", None),
    ("heuristic-utilization", "heuristic",
     {"heuristic": {"relocation": {"weights": {"utilization": 1.0, "least_allocated": 0.2}},
                    "placement": {"weights": {"utilization": 1.0, "least_allocated": 0.2}}}}),
    ("ml-auto", "auto", None),
    ("ml-no-fallback", "ml", None),
    ("oracle", "ml", None),
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--drift-at", type=float, default=120.0)
    args = ap.parse_args()
    from mlsysops.policies import ml_qos_placement as policy

    results: dict[str, list[Result]] = {}
    for name, mode, overrides in CONTENDERS:
        for seed in range(args.seeds):
            ctx = None
            if overrides:
                base = policy.initialize()
                for key, sub in overrides["heuristic"].items():
                    base["heuristic"][key].update(sub)
                ctx = {"heuristic": base["heuristic"]}
            results.setdefault(name, []).append(
                run(name, mode, seed, seconds=args.seconds, drift_at=args.drift_at, context_overrides=ctx))
    print(f"{args.seeds} seeds x {args.seconds:g} s, drift of nuc-1 at {args.drift_at:g} s, decision interval 1 s")
    header = ("contender", "violation_s", "relocations", "decisions/s", "infer_p50_ms", "infer_p99_ms",
              "infer_p99_cpu_ms", "training_s", "drift->fallback", "false_alarms")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    summary = {}
    for name, rs in results.items():
        viol = statistics.median(r.violation_s for r in rs)
        reloc = statistics.median(r.relocations for r in rs)
        rate = sum(r.decisions for r in rs) / max(1e-9, sum(r.decide_s for r in rs))
        inf = [x for r in rs for x in r.inference_ms]
        cpu = [x for r in rs for x in r.inference_cpu_ms]
        alarms = sum(r.false_alarms for r in rs)
        visible = sum(1 for r in rs if r.drift_visible)
        train = statistics.median(r.training_s for r in rs)
        fb = [r.fallback_intervals for r in rs if r.fallback_intervals is not None]
        summary[name] = {"viol": viol, "reloc": reloc, "p99": pct(inf, 0.99),
                         "fb": max(fb) if fb else None, "fb_n": len(fb), "n": len(rs), "visible": visible}
        fb_s = (f"{statistics.median(fb):.0f} intervals (max {max(fb):.0f}; {len(fb)} of {visible} seeds where "
                f"the drift was visible)" if fb else f"- ({visible} of {len(rs)} seeds: drift visible)")
        print(f"| {name} | {viol:.0f} | {reloc:.0f} | {rate:.0f} | {pct(inf, 0.5):.3f} | {pct(inf, 0.99):.3f} | "
              f"{pct(cpu, 0.99):.3f} | {train:.3f} | {fb_s} | {alarms} |")
    heur = min((n for n in summary if n.startswith("heuristic")), key=lambda n: summary[n]["viol"])
    auto = summary["ml-auto"]
    base = summary[heur]
    reduction = 1.0 - auto["viol"] / base["viol"] if base["viol"] else 0.0
    ratio = auto["reloc"] / base["reloc"] if base["reloc"] else (math.inf if auto["reloc"] else 1.0)
    print(f"best heuristic: {heur}; targets: violation_reduction >= 0.30 "
          f"({'met' if reduction >= 0.30 else 'MISSED'}), relocations_ratio <= 1 "
          f"({'met' if ratio <= 1 else 'MISSED'}), fallback_intervals <= 3 "
          f"({'met' if auto['fb'] is not None and auto['fb'] <= 3 else 'MISSED'}; fell back in {auto['fb_n']} of "
          f"the {auto['visible']} seeds where the drifted node ran something when it drifted)")
    fb_out = f"{auto['fb']:.0f}" if auto["fb"] is not None else "nan"
    print(f"violation_reduction={reduction:.3f} relocations_ratio={ratio:.2f} fallback_intervals={fb_out} "
          f"inference_p99_ms={auto['p99']:.3f}")


if __name__ == "__main__":
    main()
