"""Cost of the original-contract adapter (mlsysops.agents.compat) per MAPE cycle, against the same policy
written in our contract, in one process.

Run: ``python benchmarks/compat_adapter.py [--cycles N] [--nodes N] [--apps N]``

Both policies do the same: analyze reads the latest value of a QoS metric and compares it with the
component's target; plan moves the component to another node with a Fluidity plan. The original one gets
the original argument shapes (list of CRs, `{"MLSysOpsCluster": ...}`, the `fluidity` state built from the
instance table, a telemetry dict whose `query(latest=True)` builds a frame of every metric); the native one
reads our live view directly. Each cycle runs through the real MAPEEngine and PlanScheduler of one cluster
agent's view with `--nodes` nodes and `--apps` apps (one instance each) and 20 metric series; the
mechanism returns at once. Medians and p95/p99 over batches of 50 cycles.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlsysops.agents.mape import DecisionLog, Knowledge, MAPEEngine, MechanismRegistry, PolicyRegistry  # noqa: E402

ORIGINAL = '''
async def analyze(context, application_description, system_description, mechanisms, telemetry, ml):
    latest = await telemetry["query"](latest=True)
    target = application_description[0]["spec"]["components"][0]["qos_metrics"][0]["target"]
    return latest["response_time_ms"].values[0] > target, context

async def plan(context, application_description, system_description, mechanisms, telemetry, ml):
    cr = application_description[0]
    here = mechanisms["fluidity"]["state"]["applications"][cr["name"]]["components"]["web"]["node_placed"]
    other = next(n for n in system_description["MLSysOpsCluster"]["nodes"] if n != here)
    return {"fluidity": {"name": cr["name"], "deployment_plan": {"initial_plan": False, "web": [
        {"action": "move", "src_host": here, "target_host": other}]}}}, context

def initialize():
    return {"scope": "application", "configuration": {"analyze_interval": "1s"}}
'''

NATIVE = '''
async def analyze(context, app, system, mechanisms, telemetry, ml):
    target = app["components"][0]["qos_metrics"][0]["target"]
    return telemetry.latest("response_time_ms", app=app["name"]) > target, context

async def plan(context, app, system, mechanisms, telemetry, ml):
    here = next(r["node"] for r in system["instances"] if r["app"] == app["name"])
    other = next(n for n in system["nodes"] if n != here)
    return {"fluidity": {"name": app["name"], "deployment_plan": {"initial_plan": False, "web": [
        {"action": "move", "src_host": here, "target_host": other}]}}}, context

def initialize():
    return {"scope": "application", "configuration": {"analyze_interval": "1s"}}
'''


class Fluidity:
    async def apply(self, command):
        return True


def world(n_nodes: int, n_apps: int) -> tuple[dict, dict, Knowledge]:
    nodes = {f"n{i}": {"model": None, "alive": True, "cpu_utilization": 0.5} for i in range(n_nodes)}
    apps = {f"app{i}": {"name": f"app{i}", "components": [{"metadata": {"name": "web"}, "qos_metrics": [
        {"application_metric_id": "response_time_ms", "target": 50, "relation": "lower_or_equal"}]}]}
        for i in range(n_apps)}
    system = {"cluster_id": "c", "now": time.time(), "description": {"cluster_id": "c"}, "nodes": nodes,
              "instances": [{"instance_id": f"i{i}", "app": f"app{i}", "component": "web",
                             "node": f"n{i % n_nodes}", "status": "running"} for i in range(n_apps)],
              "app_models": dict.fromkeys(apps), "assigned": {}, "qos": {}, "latency_ms": {}, "proposals": []}
    k = Knowledge()
    for i in range(20):
        metric = "response_time_ms" if i < n_apps and i < 10 else f"system.metric.{i}"
        for s in range(30):
            k.record(metric, 80.0 + s, {"app": f"app{i}", "component": "web"}, ts=time.time() - 30 + s)
    return apps, system, k


async def measure(source: str, file_name: str, cycles: int, apps: dict, system: dict, k: Knowledge) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / file_name).write_text(source)
        policies = PolicyRegistry([tmp], entry_point_group=None)
        policies.load_all()
        (name,) = policies.names()
        mechanisms = MechanismRegistry()
        mechanisms.register("fluidity", Fluidity())
        engine = MAPEEngine("c", k, policies, mechanisms, DecisionLog("c"), assets=lambda: apps,
                            system_description=lambda: system, rescan_interval=None)
        await engine.refresh_mechanisms()
        for _ in range(20):   # warm-up
            await engine.run_cycle(name, "app0")
        per_batch = []
        batch = 50
        for _ in range(max(1, cycles // batch)):
            start = time.perf_counter()
            for _ in range(batch):
                outcome = await engine.run_cycle(name, "app0")
                assert outcome == "completed", outcome
            per_batch.append((time.perf_counter() - start) * 1000 / batch)
        await engine.stop()
        return per_batch


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--apps", type=int, default=20)
    args = ap.parse_args()
    apps, system, k = world(args.nodes, args.apps)
    native = asyncio.run(measure(NATIVE, "native_move.py", args.cycles, apps, system, k))
    original = asyncio.run(measure(ORIGINAL, "policy-originalMove.py", args.cycles, apps, system, k))
    base = statistics.median(native)
    print(f"cluster view: {args.nodes} nodes, {args.apps} apps, 20 metric series; {args.cycles} cycles each "
          "(analyze + plan + schedule + execute)")
    print("\n| policy contract | ms per cycle median | p95 | p99 | x native |")
    print("|---|---|---|---|---|")
    for label, vals in (("native (ours)", native), ("original, through the adapter", original)):
        med = statistics.median(vals)
        print(f"| {label} | {med:.3f} | {pct(vals, 95):.3f} | {pct(vals, 99):.3f} | {med / base:.2f} |")
    overhead = statistics.median(original) - base
    print(f"\nnative_cycle_ms_p50={base:.3f} original_cycle_ms_p50={statistics.median(original):.3f} "
          f"adapter_overhead_ms_p50={overhead:.3f} ratio={statistics.median(original) / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
