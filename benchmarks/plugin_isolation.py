"""Plugin isolation benchmark: what running policies off the agent's loop costs, and what it buys.

Run: ``.venv/bin/python benchmarks/plugin_isolation.py [--calls N] [--nodes N] [--block S] [--memory-mb M]``

All in this process, whose event loop plays the agent's:
1. per-decision overhead: one `analyze` call of a trivial policy (returns `(False, context)`) with the
   arguments the engine passes (a system description of ``--nodes`` nodes, an app description, mechanism
   states, the telemetry view), ``--calls`` times, three ways: on the agent's loop (the baseline: how async
   policies ran before), on a `PolicyLoop` thread (built-ins) and in a `PolicyWorker` process (files and
   uploads). Also at 10x the nodes, for the cost of copying a larger description into the worker.
2. a file policy that calls ``time.sleep(--block)`` inside ``async def analyze`` runs under a real
   `MAPEEngine` while a client thread sends a request every 50 ms to a TCP server on the agent's loop (a
   stand-in for a heartbeat or an API request) and a ticker measures the loop's lag.
3. a file policy that allocates 16 MiB chunks without bound runs under the engine with a worker limit of
   ``--memory-mb``; the agent's RSS is sampled every 20 ms until the call ends as `memory_exceeded`.
Last line: ``overhead_p50_ms= overhead_p99_ms= loop_lag_max_ms= agent_rss_growth_mb=`` (overhead: worker
process minus baseline, at ``--nodes``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRIVIAL = """
def initialize():
    return {"scope": "global", "configuration": {"analyze_interval": 0.05}}
async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
    return False, context
async def plan(context, app, system, mechanisms, telemetry, ml_connector):
    return {}, context
"""
BLOCKING = TRIVIAL.replace("    return False, context", "    import time\n    time.sleep(BLOCK)\n    return False, context", 1)
HOG = TRIVIAL.replace("    return False, context",
                      "    chunks = []\n    while True:\n        chunks.append(bytearray(16 * 2**20))", 1)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


WORKER_RSS: list[float] = []


def proc_rss_mb(pid: int | None) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def arguments(nodes: int) -> tuple[Any, ...]:
    from mlsysops.agents.mape import Knowledge, Telemetry

    system = {"nodes": [{"name": f"node-{i}", "labels": {"zone": f"z{i % 3}", "arch": "amd64"},
                         "capacity": {"cpu": 4.0, "memory": 8 * 2**30}, "allocated": {"cpu": 1.5},
                         "components": [f"app-{i % 7}.c{j}" for j in range(3)]} for i in range(nodes)]}
    app = {"name": "app-1", "components": [{"metadata": {"name": f"c{j}"},
                                            "containers": [{"image": "x:1"}]} for j in range(5)]}
    mechanisms = {"placement": {"state": {"instances": 3 * nodes}, "options": {"nodes": nodes}}}
    k = Knowledge()
    k.record("cpu_load", 0.3, {"node": "node-0"})
    return ({"scope": "global"}, app, system, mechanisms, Telemetry(k), None)


async def time_calls(call: Any, n: int) -> list[float]:
    for _ in range(min(20, n)):       # warm up
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        res = await call()
        out.append((time.perf_counter() - t) * 1000)
        if res is not None and not getattr(res, "ok", True):
            raise RuntimeError(res.reason)
    return out


async def overhead(folder: Path, calls: int, nodes: int) -> dict[str, list[float]]:
    from mlsysops.agents.mape.isolation import PolicyLoop
    from mlsysops.agents.mape.plugins import _load_file_module
    from mlsysops.agents.mape.sandbox import PolicyWorker

    path = folder / "trivial.py"
    path.write_text(TRIVIAL)
    module = _load_file_module(path, "policy")
    args = arguments(nodes)
    loop_thread = PolicyLoop("trivial")
    worker = PolicyWorker("trivial", path)
    await asyncio.to_thread(worker.load)
    async def deepcopy() -> None:
        copy.deepcopy(args[1:4])

    try:
        out = {
            "agent loop (baseline)": await time_calls(lambda: module.analyze(*args), calls),
            "(engine's input deepcopy)": await time_calls(deepcopy, calls),
            "PolicyLoop thread": await time_calls(lambda: loop_thread.call(module.analyze, args, 5.0), calls),
            "worker process": await time_calls(lambda: worker.call("analyze", args, 5.0), calls),
        }
        WORKER_RSS.append(proc_rss_mb(worker.pid))
        return out
    finally:
        worker.close()
        loop_thread.close()


class Responder:
    """A TCP server on the agent's loop answering one line per request, and a client thread timing it."""

    def __init__(self) -> None:
        self.rtts: list[float] = []
        self._stop = threading.Event()

    async def start(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self._client, args=(port,), daemon=True)
        self.thread.start()

    def _client(self, port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            f = s.makefile("rwb")
            while not self._stop.is_set():
                t = time.perf_counter()
                f.write(b"heartbeat\n")
                f.flush()
                f.readline()
                self.rtts.append((time.perf_counter() - t) * 1000)
                time.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self.thread.join, 5)
        self.server.close()


async def lag_ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(max(0.0, (time.perf_counter() - t - 0.01) * 1000))


def engine_over(folder: Path, timeout: float, memory_mb: int) -> Any:
    from mlsysops.agents.mape import DecisionLog, Knowledge, MAPEEngine, MechanismRegistry, PolicyRegistry
    from mlsysops.agents.mape.sandbox import SandboxLimits

    reg = PolicyRegistry([folder], entry_point_group=None, sandbox=SandboxLimits(memory_mb=memory_mb))
    reg.load_all()
    log = DecisionLog("bench")
    return MAPEEngine("bench", Knowledge(), reg, MechanismRegistry(), log, assets=dict,
                      system_description=dict, plugin_timeout=timeout, rescan_interval=None,
                      default_analyze_interval=3600, disable_after=None), log


async def blocking(folder: Path, block: float) -> dict[str, Any]:
    (folder / "sleepy.py").write_text(BLOCKING.replace("BLOCK", repr(block)))
    engine, log = engine_over(folder, timeout=block + 30, memory_mb=1024)
    responder, lags, stop = Responder(), [], asyncio.Event()
    await responder.start()
    ticker = asyncio.create_task(lag_ticker(lags, stop))
    started = time.monotonic()
    engine.start()
    while not log.query(stage="analyze") and time.monotonic() - started < block + 60:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    stop.set()
    await ticker
    await responder.stop()
    await engine.stop()
    rec = log.query(stage="analyze")
    return {"elapsed_s": elapsed, "outcome": rec[0].outcome if rec else "none", "lags": lags,
            "rtts": responder.rtts}


async def inline_block(folder: Path, block: float) -> float:
    """The baseline: the same blocking policy awaited on the agent's loop (how async policies ran before)."""
    from mlsysops.agents.mape.plugins import _load_file_module

    path = folder / "inline_sleepy.py"
    path.write_text(BLOCKING.replace("BLOCK", repr(block)))
    module = _load_file_module(path, "policy")
    lags, stop = [], asyncio.Event()
    ticker = asyncio.create_task(lag_ticker(lags, stop))
    await asyncio.sleep(0.05)
    await module.analyze(*arguments(1))
    await asyncio.sleep(0.05)
    stop.set()
    await ticker
    return max(lags)


async def memory(folder: Path, limit_mb: int) -> dict[str, Any]:
    (folder / "hog.py").write_text(HOG)
    engine, log = engine_over(folder, timeout=120, memory_mb=limit_mb)
    before = rss_mb()
    peak = before
    engine.start()
    t0 = time.monotonic()
    while not log.query(stage="analyze") and time.monotonic() - t0 < 120:
        peak = max(peak, rss_mb())
        await asyncio.sleep(0.02)
    await engine.stop()
    rec = log.query(stage="analyze")
    return {"before": before, "peak": peak, "outcome": rec[0].outcome if rec else "none",
            "worker_peak": (rec[0].inputs or {}).get("measured") if rec else None,
            "reason": rec[0].reason if rec else "", "seconds": time.monotonic() - t0}


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mlsysops-bench-iso-") as tmp:
        base = Path(tmp)
        rows = []
        for nodes in (args.nodes, args.nodes * 10):
            d = base / f"o{nodes}"
            d.mkdir()
            for name, ms in (await overhead(d, args.calls, nodes)).items():
                rows.append((nodes, name, ms))
        d = base / "block"
        d.mkdir()
        blocked = await blocking(d, args.block)
        inline_lag = await inline_block(d, args.baseline_block)
        d = base / "hog"
        d.mkdir()
        hog = await memory(d, args.memory_mb)

    print(f"per-decision cost of one analyze call ({args.calls} calls each; ms)")
    print(f"{'nodes':>6} {'where the policy runs':<27} {'p50':>8} {'p95':>8} {'p99':>8} {'p50 - baseline':>15}")
    base_p50: dict[int, float] = {}
    for nodes, name, ms in rows:
        p50 = statistics.median(ms)
        base_p50.setdefault(nodes, p50)
        print(f"{nodes:>6} {name:<27} {p50:>8.3f} {pct(ms, .95):>8.3f} {pct(ms, .99):>8.3f} "
              f"{p50 - base_p50[nodes]:>15.3f}")
    print("(the engine deep-copies the inputs before every call whichever way the policy runs: that row is a "
          "cost paid before this change too)")
    at = {name: ms for nodes, name, ms in rows if nodes == args.nodes}
    base_ms, proc_ms, thread_ms = at["agent loop (baseline)"], at["worker process"], at["PolicyLoop thread"]
    over50 = statistics.median(proc_ms) - statistics.median(base_ms)
    over99 = pct(proc_ms, .99) - pct(base_ms, .99)
    print(f"RSS of one idle worker process: {WORKER_RSS[0]:.1f} MiB (each file policy has one)")
    print(f"overhead at {args.nodes} nodes: worker process +{over50:.3f} ms p50 / +{over99:.3f} ms p99; "
          f"loop thread +{statistics.median(thread_ms) - statistics.median(base_ms):.3f} ms p50")
    print()
    rtts, lags = blocked["rtts"], blocked["lags"]
    print(f"a policy blocking {args.block:g} s in async analyze (worker process): call ended after "
          f"{blocked['elapsed_s']:.1f} s as {blocked['outcome']}")
    print(f"  requests answered by the agent's loop meanwhile: {len(rtts)}, round trip p50 "
          f"{statistics.median(rtts):.2f} ms, p99 {pct(rtts, .99):.2f} ms, max {max(rtts):.2f} ms")
    print(f"  loop lag (10 ms ticker): p50 {statistics.median(lags):.2f} ms, p99 {pct(lags, .99):.2f} ms, "
          f"max {max(lags):.2f} ms")
    print(f"  baseline: the same policy awaited on the agent's loop, blocking {args.baseline_block:g} s: "
          f"loop lag max {inline_lag:.0f} ms")
    print()
    growth = hog["peak"] - hog["before"]
    print(f"a policy allocating without bound (worker limit {args.memory_mb} MiB): {hog['outcome']} after "
          f"{hog['seconds']:.1f} s, worker address space at the end {hog['worker_peak']} MiB")
    print(f"  agent RSS {hog['before']:.1f} MiB before, peak {hog['peak']:.1f} MiB during (+{growth:.1f} MiB)")
    print(f"overhead_p50_ms={over50:.3f} overhead_p99_ms={over99:.3f} loop_lag_max_ms={max(lags):.1f} "
          f"agent_rss_growth_mb={growth:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1000, help="analyze calls per row")
    ap.add_argument("--nodes", type=int, default=50, help="nodes in the system description")
    ap.add_argument("--block", type=float, default=20.0, help="seconds the blocking policy sleeps")
    ap.add_argument("--baseline-block", type=float, default=2.0,
                    help="seconds the same policy blocks when awaited on the agent's loop (the baseline)")
    ap.add_argument("--memory-mb", type=int, default=512, help="address-space limit of the hog's worker")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
