"""Telemetry benchmark: CPU and memory cost of telemetry per node agent at a 1 s interval, and digest sizes.

Run: ``.venv/bin/python benchmarks/telemetry.py [--ticks N] [--wall S]``

1. Per-tick cost (CPU time, ``time.process_time``, over ``--ticks`` ticks, median and p95/p99 of 20 batches)
   of a node agent's telemetry path on a real snapshot of a demo node running three components
   (``examples/slices/demo.yaml``, simulated continuum):
   - baseline ``raw``: the snapshot's values written straight into the Knowledge windows (no OTel);
   - ``otel``: what the node agent does: filter by the collection plan, ``publish`` to its MeterProvider,
     read back through the ``InMemoryMetricReader``, record into the windows;
   - ``otel+digest``: plus building and serialising the node -> cluster digest (sent once per tick at 1 s);
   - ``otel+prom``: plus a Prometheus exposition of the agent's registry each tick (a 1 s scrape).
   At a 1 s interval, ms per tick is ms of CPU per second.
2. Wall-clock run (``--wall`` seconds at 1 s ticks) of the ``otel+digest`` path with an OTLP/HTTP exporter
   pushing every second to a local receiver stub: process CPU ms/s (includes the exporter thread).
3. Memory: RSS growth of 50 AgentTelemetry instances fed the same series (per agent).
4. Digest sizes from a running demo slice (embedded server, in-process delivery, both example apps):
   node -> cluster and cluster -> continuum bytes and series per digest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlsysops.agents.mape import Knowledge  # noqa: E402
from mlsysops.agents.slice_config import load_slice  # noqa: E402
from mlsysops.agents.telemetry import COMPONENT_DEFAULTS, NODE_DEFAULTS, AgentTelemetry, CollectionPlan  # noqa: E402
from mlsysops.agents.telemetry import digest as digests  # noqa: E402

DEMO = ROOT / "examples" / "slices" / "demo.yaml"
NODE = "edge-server-1"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def demo_samples() -> list[tuple[str, dict[str, str], float]]:
    """One tick's observations of a demo node running three component instances (the sim's snapshot)."""
    from mlsysops.agents.telemetry.io_counters import IoCounters
    from mlsysops.mechanisms.sim_placement import sim_node_spec
    from mlsysops.node.substrate import node_snapshot
    from mlsysops.sim import SimClock, SimContinuum

    spec = load_slice(DEMO)
    sim = SimContinuum.from_specs([sim_node_spec(n) for n in spec.nodes.values()], seed=1,
                                  clock=SimClock.manual())
    for i in range(3):
        sim.deploy(f"bench.c{i}.0", "bench", f"c{i}", NODE, 0.2, 64 * 2**20)
    sim.advance(5.0)
    snap = node_snapshot(sim, NODE)
    plan = CollectionPlan(NODE_DEFAULTS | COMPONENT_DEFAULTS)
    io = IoCounters()
    io.fold(snap["metrics"], 0.0)
    metrics, counters = io.fold(snap["metrics"], 1.0)      # as the node agent does: I/O rates -> counters
    out = [(n, {"node": NODE}, float(v)) for n, v in metrics.items() if plan.wants(n)]
    out.extend((n, {"node": NODE, **attrs}, v) for n, attrs, v in counters if plan.wants(n))
    for inst in snap["instances"]:
        labels = {"node": NODE, "app": inst["app"], "component": inst["component"], "instance": inst["instance_id"]}
        out.extend((n, labels, float(v)) for n, v in inst["metrics"].items() if plan.wants(n))
    return out


class _Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Sink.received += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def per_tick(samples, ticks: int) -> dict[str, list[float]]:
    """CPU ms per tick for each path, as 20 batch medians."""
    results: dict[str, list[float]] = {}
    tel = AgentTelemetry(NODE, "node")
    prom = AgentTelemetry(NODE, "node", prometheus=True)

    def raw(k: Knowledge, now: float) -> None:
        for name, labels, v in samples:
            k.record(name, v, labels, ts=now)

    def otel(k: Knowledge, now: float, t: AgentTelemetry = tel) -> None:
        t.publish(samples)
        for name, labels, v in t.collect():
            k.record(name, v, labels, ts=now)

    def otel_digest(k: Knowledge, now: float) -> None:
        otel(k, now)
        rows = digests.summarise(k, 1.5, now=now)
        json.dumps({"source": NODE, "t": now, "window": 1.5, "series": rows}, separators=(",", ":"))

    def otel_prom(k: Knowledge, now: float) -> None:
        otel(k, now, prom)
        prom.prometheus_text()

    for name, fn in (("raw", raw), ("otel", otel), ("otel+digest", otel_digest), ("otel+prom", otel_prom)):
        k = Knowledge()
        now = time.time()
        batches = []
        for _ in range(20):
            started = time.process_time()
            for _ in range(ticks // 20):
                now += 1.0
                fn(k, now)
            batches.append((time.process_time() - started) * 1000 / (ticks // 20))
        results[name] = batches
    tel.shutdown()
    prom.shutdown()
    return results


def wall_run(samples, seconds: float) -> tuple[float, int]:
    server = HTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tel = AgentTelemetry(NODE, "node", otlp_endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                         otlp_interval=1.0)
    k = Knowledge()
    cpu0 = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.time()
        tel.publish(samples)
        for name, labels, v in tel.collect():
            k.record(name, v, labels, ts=now)
        rows = digests.summarise(k, 1.5, now=now)
        json.dumps(rows, separators=(",", ":"))
        time.sleep(1.0)
    cpu = (time.process_time() - cpu0) * 1000 / seconds
    tel.shutdown()
    server.shutdown()
    return cpu, _Sink.received


def memory(samples, n: int = 50) -> float:
    before = rss_mib()
    agents = [AgentTelemetry(f"n{i}", "node") for i in range(n)]
    for a in agents:
        for _ in range(3):
            a.publish(samples)
            a.collect()
    after = rss_mib()
    for a in agents:
        a.shutdown()
    return (after - before) / n


async def slice_digests(seconds: float) -> dict[str, float]:
    from mlsysops.cli.slice_runtime import SliceRuntime

    spec = load_slice(DEMO)
    rt = SliceRuntime(spec, overrides={"all": {"digest_interval": 2.0}})
    await rt.start()
    try:
        for f in sorted((ROOT / "examples" / "apps").glob("*.yaml")):
            rt.apply_file(f)
        await asyncio.sleep(seconds)
        nodes = [n.last_digest for n in rt.nodes.values() if n.last_digest]
        clusters = [c.last_digest for c in rt.clusters.values() if c.last_digest]
        return {"node_bytes_median": statistics.median(d["bytes"] for d in nodes),
                "node_bytes_max": max(d["bytes"] for d in nodes),
                "node_series_max": max(d["series"] for d in nodes),
                "cluster_bytes_median": statistics.median(d["bytes"] for d in clusters),
                "cluster_bytes_max": max(d["bytes"] for d in clusters),
                "cluster_series_max": max(d["series"] for d in clusters)}
    finally:
        await rt.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=4000)
    ap.add_argument("--wall", type=float, default=20.0)
    ap.add_argument("--slice-seconds", type=float, default=12.0)
    args = ap.parse_args()
    samples = demo_samples()
    print(f"node tick: {len(samples)} series ({sum(1 for _, lbl, _ in samples if 'app' not in lbl)} node, "
          f"{sum(1 for _, lbl, _ in samples if 'app' in lbl)} component)")
    res = per_tick(samples, args.ticks)
    base = statistics.median(res["raw"])
    print("\n| path (per node agent, 1 s interval) | CPU ms/s median | p95 | p99 | x raw |")
    print("|---|---|---|---|---|")
    for name, vals in res.items():
        med = statistics.median(vals)
        print(f"| {name} | {med:.3f} | {pct(vals, 95):.3f} | {pct(vals, 99):.3f} | {med / base:.1f} |")
    cpu, exports = wall_run(samples, args.wall)
    print(f"\nwall run {args.wall:.0f} s at 1 s ticks, OTel + digest + OTLP push every 1 s to a local receiver: "
          f"{cpu:.2f} CPU ms/s (incl. exporter thread), {exports} exports received")
    print(f"memory: {memory(samples):.2f} MiB RSS per agent's MeterProvider with these series (50 agents)")
    sizes = asyncio.run(slice_digests(args.slice_seconds))
    print("\n| digest | bytes (median) | bytes (max) | series (max) |")
    print("|---|---|---|---|")
    print(f"| node -> cluster | {sizes['node_bytes_median']:.0f} | {sizes['node_bytes_max']:.0f} | "
          f"{sizes['node_series_max']:.0f} |")
    print(f"| cluster -> continuum | {sizes['cluster_bytes_median']:.0f} | {sizes['cluster_bytes_max']:.0f} | "
          f"{sizes['cluster_series_max']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
