"""API load benchmark: concurrent clients against the REST API while the demo slice runs.

Run: ``.venv/bin/python benchmarks/api_load.py [--duration S] [--clients 10,50] [--settle S]``

Setup (as ``benchmarks/api_reads.py``, whose helpers it reuses): a throw-away prosody server, a
``SliceRuntime`` of ``examples/slices/demo.yaml`` (every agent message over prosody), both example apps
running, ``--settle`` seconds of decision logs; the API (``ApiBackend(runtime=rt)``, what ``mlsysops up``
serves) on its own thread (``ApiServer``). The load generator runs in a separate process (its own
interpreter, N clients on keep-alive connections), as real clients would.

Per endpoint (``/apps``, ``/decisions?limit=100``, ``/telemetry``) and client count: ``--duration`` seconds
of back-to-back GETs (each client one keep-alive connection, one request at a time); requests/s, p50/p99
latency, errors (non-200 or unreadable), and the generator's own CPU (near 100 % it, not the API, is the
limit). Meanwhile, from the agents: the
largest loop lag of any agent (``mlsysops.agent.loop.lag``, its max since the previous row) and false losses
(any child declared lost: nothing is crashed).
Last line: ``decisions_rps= decisions_p99_ms= max_loop_lag_ms= false_losses=`` (decisions at the largest
client count; loop lag and losses over the whole run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from api_reads import APPS, DEMO, TOKEN, formed, pct, running, wait_for  # noqa: E402

PATHS = ["/apps", "/decisions?limit=100", "/telemetry"]


# -- load generator (a separate process) -------------------------------------------------------------
# A bare HTTP/1.1 keep-alive client on asyncio streams: httpx costs ~1.5 ms of CPU per request, so at 50
# clients the generator itself saturated a core (87 % measured) and capped every row near 150-350 req/s,
# whatever the server could do. This one reads status, headers and a Content-Length or chunked body, and
# spends ~0.1 ms per request; anything it cannot parse counts as an error.
class _Conn:
    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            raise ValueError(f"no body length in {lines[0]!r}")
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, path: str, clients: int, duration: float, token: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    request = (f"GET /api/v1{path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {token}\r\n"
               f"Accept: application/json\r\n\r\n").encode()
    times: list[float] = []
    errors: list[str] = []
    probe = _Conn(host, port, request)
    if (status := await probe.get()) != 200:
        raise SystemExit(f"GET {path}: HTTP {status}")
    probe.close()
    end = time.monotonic() + duration

    async def client() -> None:
        conn = _Conn(host, port, request)
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                status = await conn.get()
                if status != 200:
                    errors.append(str(status))
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                errors.append(type(exc).__name__)
                conn.close()
            times.append(time.perf_counter() - t0)
        conn.close()

    t0 = time.monotonic()
    cpu0 = time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.monotonic() - t0
    ms = [t * 1000 for t in times]
    return {"n": len(ms), "rps": len(ms) / wall, "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99),
            "errors": len(errors), "gen_cpu_pct": 100 * (time.process_time() - cpu0) / wall}


# -- parent ------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> int:
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.agents.xmpp_prosody import ProsodyServer
    from mlsysops.cli import freeze_startup_heap
    from mlsysops.cli.slice_runtime import SliceRuntime
    from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
    from mlsysops.continuum.api_auth import Role

    srv = ProsodyServer(workdir=Path(tempfile.mkdtemp(prefix="mlsysops-bench-load-")) / "prosody")
    await srv.start()
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=srv.port, force_xmpp=True)
    server = None
    rows: list[dict[str, Any]] = []
    lost: list[str] = []
    under_load: list[str] = []
    lag_max = 0.0
    try:
        await rt.start()
        freeze_startup_heap()   # as `mlsysops up` does once the agents run
        gc.callbacks.append(GC_PAUSES)
        if not await wait_for(lambda: formed(rt), 60):
            print(f"hierarchy did not form: {rt.hierarchy()}", file=sys.stderr)
            return 1
        apps = sorted({d.name for path in APPS for d in rt.apply_file(path)})
        if not await wait_for(lambda: running(rt, apps), 90):
            print("apps not running", file=sys.stderr)
            return 1
        for p in [rt.continuum, *rt.clusters.values()]:
            p.children.on_lost(lambda child, reason: _note(lost, child.agent_id, reason))
        await asyncio.sleep(args.settle)
        server = ApiServer(create_app(ApiBackend(runtime=rt), {TOKEN: Role.admin}), port=0)
        url = await server.start()
        agents = [rt.continuum, *rt.clusters.values(), *rt.nodes.values()]
        for clients in [int(c) for c in args.clients.split(",")]:
            for path in args.paths.split(","):
                for a in agents:   # the max over this row only
                    a.loop_lag.max_s = 0.0
                GC_PAUSES.longest = 0.0
                before = len(lost)
                out = await asyncio.to_thread(
                    subprocess.run, [sys.executable, str(Path(__file__).resolve()), "--load", url, "--path", path,
                                     "--n-clients", str(clients), "--duration", str(args.duration),
                                     "--token", TOKEN],
                    capture_output=True, text=True, cwd=ROOT, timeout=args.duration + 120)
                if out.returncode != 0:
                    print(f"load generator failed: {out.stderr[-1500:]}", file=sys.stderr)
                    return 1
                res = json.loads(out.stdout.strip().splitlines()[-1])
                row_lag = max(a.loop_lag.max_s for a in agents) * 1000
                lag_max = max(lag_max, row_lag)
                rows.append({"clients": clients, "path": path, **res, "loop_lag_ms": row_lag,
                             "lost": len(lost) - before, "gc_ms": GC_PAUSES.longest * 1000})
                print(f"{clients} clients {path}: {res['rps']:.0f} req/s", file=sys.stderr, flush=True)
        under_load = list(lost)   # the stop's own departures below are not losses under load
    finally:
        if server is not None:
            await server.stop()
        await rt.stop()
        await srv.stop()

    print(f"demo slice over prosody, apps {apps}; API on its own thread; {args.duration:g} s per row, "
          f"load generator in another process")
    head = (f"{'clients':>7} {'GET /api/v1...':<24} {'requests':>8} {'req/s':>7} {'p50_ms':>7} {'p99_ms':>7} "
            f"{'errors':>6} {'max_loop_lag_ms':>15} {'longest_gc_ms':>13} {'false_losses':>12} {'gen_cpu_pct':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['clients']:>7} {r['path']:<24} {r['n']:>8} {r['rps']:>7.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
              f"{r['errors']:>6} {r['loop_lag_ms']:>15.0f} {r['gc_ms']:>13.0f} {r['lost']:>12} "
              f"{r['gen_cpu_pct']:>11.0f}")
    if under_load:
        print(f"false losses: {under_load[:5]}")
    top = max(int(c) for c in args.clients.split(","))
    dec = next(r for r in rows if r["clients"] == top and r["path"].startswith("/decisions"))
    print(f"decisions_rps={dec['rps']:.0f} decisions_p99_ms={dec['p99_ms']:.1f} max_loop_lag_ms={lag_max:.0f} "
          f"false_losses={len(under_load)}")
    return 0


class _GcPauses:
    """The longest garbage-collector pause (it stops every thread of the process: agents and API alike)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._t0)


GC_PAUSES = _GcPauses()


async def _note(lost: list[str], who: str, reason: str) -> None:
    lost.append(f"{who}: {reason}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per endpoint and client count")
    ap.add_argument("--clients", default="10,50", help="comma-separated concurrent client counts")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated endpoints (under /api/v1)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds the slice runs before the load")
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--n-clients", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    if args.load:
        print(json.dumps(asyncio.run(load(args.load, args.path, args.n_clients, args.duration, args.token))))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
