"""API read benchmark: latency of the REST reads that fan out over the protocol, on the demo slice.

Run: ``.venv/bin/python benchmarks/api_reads.py [--requests N] [--settle S] [--concurrency C]``

Setup: a throw-away prosody server and a ``SliceRuntime`` of ``examples/slices/demo.yaml`` (continuum, two
cluster agents, seven node agents in this process, ``force_xmpp=True``: every agent-to-agent message goes
over the server), both example apps (``examples/apps/*.yaml``) applied and running, then ``--settle``
seconds so the decision logs fill as in a running slice. Two APIs over that slice:
- ``runtime``: ``ApiBackend(runtime=rt)``, what ``mlsysops up`` serves;
- ``continuum``: ``ApiBackend(continuum)``, what ``mlsysops agent continuum`` serves (no in-process
  reference to other agents; everything it shows of them arrives in messages);
- ``uncached``: the same with ``read_max_age=0``: every read is a fan-out over the protocol (what a reader
  pays when no other read of the same question happened within the last second).

Measured: wall time of ``GET`` (httpx, keep-alive, one request at a time, or ``--concurrency`` clients at
once) of ``/decisions`` (limit 100), ``/decisions?app=``, ``/apps/NAME/events``, ``/dashboard/state`` and
``/telemetry/config``. A read that reports an agent ``unanswered`` while every agent is up counts as an
error (a fast wrong answer is not a result). The last line is ``key=value`` pairs for scripts
(``decisions_*`` and ``dashboard_*`` from the ``continuum`` backend, the one-agent-per-process shape;
``fanout_*`` from ``uncached``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlsysops.agents.slice_config import load_slice  # noqa: E402
from mlsysops.agents.xmpp_prosody import ProsodyServer  # noqa: E402
from mlsysops.cli.slice_runtime import SliceRuntime  # noqa: E402
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app  # noqa: E402
from mlsysops.continuum.api_auth import Role  # noqa: E402

DEMO = ROOT / "examples" / "slices" / "demo.yaml"
APPS = sorted((ROOT / "examples" / "apps").glob("*.yaml"))
POLL = 0.05
TOKEN = "bench-" + uuid.uuid4().hex


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


async def wait_for(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(POLL)
    return False


def formed(rt: SliceRuntime) -> bool:
    h = rt.hierarchy()
    return all(c["registered"] for c in h.values()) and \
        sum(sum(1 for ok in c["nodes"].values() if ok) for c in h.values()) == len(rt.spec.nodes)


def running(rt: SliceRuntime, apps: list[str]) -> bool:
    for app in apps:
        st = rt.continuum.app_status(app)
        if not st or any(s["status"] != "running" for s in st.values()):
            return False
    return True


def unanswered(path: str, body: Any) -> list[str]:
    """Agents a read says it could not hear from (all agents are up, so any is an error)."""
    if path.startswith("/telemetry/config"):
        return [a for a, v in body.items() if isinstance(v, dict) and "error" in v]
    if path.startswith("/dashboard"):
        return [a["text"] for a in body["alerts"] if "unavailable" in a["text"]]
    return [r["agent"] for r in body if r.get("outcome") == "unanswered"]


async def measure(url: str, path: str, n: int, concurrency: int, errors: list[str]) -> list[float]:
    """`n` timed GETs of `path` (in `concurrency` parallel clients), after two untimed warm-up reads."""
    times: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        for _ in range(2):
            (await http.get(f"/api/v1{path}")).raise_for_status()

        async def client(share: int) -> None:
            for _ in range(share):
                t0 = time.perf_counter()
                r = await http.get(f"/api/v1{path}")
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
                missing = unanswered(path, r.json())
                if missing:
                    errors.append(f"{path}: unanswered {missing}")

        shares = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
        await asyncio.gather(*(client(s) for s in shares if s))
    return times


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mlsysops-bench-reads-"))
    srv = ProsodyServer(workdir=tmp / "prosody")
    await srv.start()
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=srv.port, force_xmpp=True)
    tokens = {TOKEN: Role.admin}
    servers: dict[str, ApiServer] = {}
    results: dict[tuple[str, str], list[float]] = {}
    errors: list[str] = []
    try:
        await rt.start()
        if not await wait_for(lambda: formed(rt), 30):
            print(f"hierarchy did not form: {rt.hierarchy()}", file=sys.stderr)
            return 1
        docs = [d for path in APPS for d in rt.apply_file(path)]
        apps = sorted({d.name for d in docs})
        if not await wait_for(lambda: running(rt, apps), 60):
            print(f"apps not running: {[rt.continuum.app_status(a) for a in apps]}", file=sys.stderr)
            return 1
        await asyncio.sleep(args.settle)
        servers = {"runtime": ApiServer(create_app(ApiBackend(runtime=rt), tokens), port=0),
                   "continuum": ApiServer(create_app(ApiBackend(rt.continuum), tokens), port=0),
                   "uncached": ApiServer(create_app(ApiBackend(rt.continuum, read_max_age=0), tokens), port=0)}
        urls = {mode: await s.start() for mode, s in servers.items()}
        records = sum(len(a.decision_log) for a in [rt.continuum, *rt.clusters.values(), *rt.nodes.values()])
        print(f"demo slice: {len(rt.spec.clusters)} clusters, {len(rt.spec.nodes)} nodes, apps {apps}; "
              f"{records} decision records in memory; prosody on port {srv.port}; "
              f"{args.requests} requests per row, concurrency {args.concurrency}")
        paths = ["/decisions?limit=100", f"/decisions?app={apps[0]}&limit=100", f"/apps/{apps[0]}/events",
                 "/dashboard/state", "/telemetry/config"]
        for mode, url in urls.items():
            for path in paths:
                results[(mode, path)] = await measure(url, path, args.requests, args.concurrency, errors)
    finally:
        for s in servers.values():
            await s.stop()
        await rt.stop()
        await srv.stop()

    head = f"{'backend':<10} {'GET /api/v1...':<44} {'n':>4} {'p50_ms':>8} {'p95_ms':>8} {'p99_ms':>8} {'max_ms':>8}"
    print(head)
    print("-" * len(head))
    for (mode, path), vals in results.items():
        ms = [v * 1000 for v in vals]
        print(f"{mode:<10} {path:<44} {len(ms):>4} {statistics.median(ms):>8.1f} {pct(ms, 95):>8.1f} "
              f"{pct(ms, 99):>8.1f} {max(ms):>8.1f}")
    for e in sorted(set(errors)):
        print(f"ERROR: {e} ({errors.count(e)}x)")
    dec = [v * 1000 for v in results[("continuum", paths[0])]]
    dash = [v * 1000 for v in results[("continuum", "/dashboard/state")]]
    fan = [v * 1000 for v in results[("uncached", paths[0])]]
    print(f"decisions_p50_ms={statistics.median(dec):.1f} decisions_p95_ms={pct(dec, 95):.1f} "
          f"dashboard_p50_ms={statistics.median(dash):.1f} fanout_p50_ms={statistics.median(fan):.1f} "
          f"fanout_p95_ms={pct(fan, 95):.1f} errors={len(errors)}")
    return 1 if errors else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=50, help="timed requests per endpoint and backend")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds the slice runs before measuring")
    ap.add_argument("--concurrency", type=int, default=1, help="clients reading at the same time")
    ap.add_argument("-v", "--verbose", action="store_true", help="agent warnings on stderr")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL,
                        format="%(relativeCreated)d %(name)s %(levelname)s %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
