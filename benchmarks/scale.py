"""Scale benchmark: one cluster agent holding N node agents over prosody, then several clusters under one continuum.

Run: ``.venv/bin/python benchmarks/scale.py`` (reduced: 100 and 500 nodes, 30 s steady state, 3 clusters x 50)
     ``.venv/bin/python benchmarks/scale.py --full`` (100/500/1,000/2,000 nodes, 600 s, 10 clusters x 500)
     or choose: ``--sizes 100,500 --steady 60 --multi 10x500 --per-process 250``

Setup: a throw-away prosody server (every message on the wire, TLS, in-band registration); in this process
the continuum agent; one process per cluster agent (a real ``ClusterAgent`` with N generated node
descriptions, the demo's ``edge-rpi-1`` renamed, registered with the continuum); node agents spread over
worker processes (``--per-process`` each). The node agents here are *membership-only*: a real
``MLSysOpsAgent`` with the node's ``ChildMembership`` (registration with its description, 1 s heartbeats with
a node digest), not a full ``NodeAgent`` (no MAPE engine, no status or telemetry reports): this machine has 2
shared cores, and what is measured is what the cluster agent pays to hold its children.

Measured per size, after all nodes registered: time to all registered (from the first worker start), the
cluster agent process's CPU (% of one core, psutil, over the steady window) and RSS, liveness lag p99 (per
heartbeat: the gap since the child's previous one minus the interval, at the cluster), false losses (a
node declared lost that was not crashed) over the steady window, then crash recovery: ``--crashes`` node
agents are killed one at a time (stream aborted, as a crashed host); detection = crash -> the cluster
declares it lost (what relocates its work); then it is restarted; recovery = restart -> the cluster has the
node alive again. (A node restarted within the presence grace is never declared lost: a restart, not a crash.)
Last line: ``nodes= cluster_cpu_pct= false_losses= recovery_p95_s=`` for the largest single-cluster size.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NODE_TEMPLATE = ROOT / "examples" / "slices" / "demo" / "nodes" / "edge-rpi-1.yaml"
PASSWORD = "mlsysops-bench-scale"
HB = 1.0
MISSES = 3


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def node_names(cid: str, n: int) -> list[str]:
    return [f"{cid}-n{i:05d}" for i in range(n)]


def jid(role: str, name: str) -> str:
    return f"{role}-{name}@localhost"


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


# -- cluster process ---------------------------------------------------------------------------------
async def cluster_main(args: argparse.Namespace) -> None:
    import psutil

    from mlsysops.agents.descriptions import MLSysOpsCluster, load_file, load_obj, to_k8s
    from mlsysops.agents.managed_agent import AgentSettings
    from mlsysops.agents.protocol import Kind
    from mlsysops.cluster.agent import ClusterAgent
    from mlsysops.mechanisms.sim_placement import SimPlacementMechanism
    from mlsysops.sim import SimContinuum

    base = to_k8s(load_file(NODE_TEMPLATE)[0].spec)
    nodes = {}
    for name in node_names(args.cid, args.nodes):
        raw = copy.deepcopy(base)
        raw["metadata"]["name"] = raw["spec"]["name"] = name
        raw["spec"]["cluster_id"] = args.cid
        nodes[name] = load_obj(raw, source="generated").spec
    agent = ClusterAgent(jid("cluster", args.cid), PASSWORD, port=args.port, force_xmpp=True,
                         parent=jid("continuum", "bench"), settings=AgentSettings(heartbeat=HB, liveness_misses=MISSES),
                         description=MLSysOpsCluster.model_validate({"cluster_id": args.cid, "nodes": sorted(nodes)}),
                         nodes=nodes, node_jids={n: jid("node", n) for n in nodes},
                         placement=SimPlacementMechanism(SimContinuum([]), args.cid))
    lags: list[float] = []
    original = agent._handlers[str(Kind.HEARTBEAT)].handler

    async def timed_heartbeat(env: Any) -> Any:   # instrumentation only: the gap since this child's last one
        rec = agent.children.child(env.sender)
        if rec is not None and rec.alive:
            lags.append(max(0.0, time.monotonic() - rec.last_seen_monotonic - max(rec.interval, HB)))
        return await original(env)

    agent._handlers[str(Kind.HEARTBEAT)].handler = timed_heartbeat
    agent.children.on_lost(lambda c, reason: _emit_async(event="lost", node=c.agent_id, reason=reason, t=time.time()))
    agent.children.on_recovered(lambda c: _emit_async(event="alive", node=c.agent_id, t=time.time()))
    agent.children.on_joined(lambda c: _emit_async(event="alive", node=c.agent_id, t=time.time()))
    await agent.start_agent(timeout=30)
    proc = psutil.Process()
    emit(event="ready", pid=os.getpid())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        if line == "mark":    # start of a measurement window
            lags.clear()
            proc.cpu_percent(None)
            emit(event="marked")
        elif line == "stats":
            emit(event="stats", cpu_pct=proc.cpu_percent(None), rss_mb=proc.memory_info().rss / 2**20,
                 lag_p99_ms=pct(lags, 99) * 1000, lag_p50_ms=pct(lags, 50) * 1000, heartbeats=len(lags),
                 alive=len(agent.children.children(alive_only=True)), stalls=agent.children.stalls,
                 loop_lag_max_ms=agent.loop_lag.max_s * 1000,
                 interval_s=agent.children.heartbeat_interval_now(),
                 upstream=bool(agent.upstream and agent.upstream.connected))
    await agent.stop()


async def _emit_async(**event: Any) -> None:
    emit(**event)


# -- node worker process -----------------------------------------------------------------------------
async def nodes_main(args: argparse.Namespace) -> None:
    from mlsysops.agents.agent_base import MLSysOpsAgent
    from mlsysops.agents.descriptions import load_file, to_k8s
    from mlsysops.agents.membership import ChildMembership
    from mlsysops.agents.protocol import Role

    base = to_k8s(load_file(NODE_TEMPLATE)[0].spec)
    names = args.names.split(",")
    agents: dict[str, Any] = {}

    async def start(name: str) -> None:
        a = MLSysOpsAgent(jid("node", name), PASSWORD, port=args.port, force_xmpp=True, parent=jid("cluster", args.cid),
                          agent_id=name,
                          connect_attempt_timeout=60)
        desc = copy.deepcopy(base)
        desc["metadata"]["name"] = desc["spec"]["name"] = name
        desc["spec"]["cluster_id"] = args.cid
        m = ChildMembership(a, jid("cluster", args.cid), role=Role.NODE, description=desc,
                            digest=lambda: {"cpu": 0.1, "mem": 0.2, "running": 0, "lag_ms": 0.0},
                            register_timeout=2.0, backoff=0.5, backoff_max=5.0)   # the defaults of a node agent
        await a.start_agent(timeout=120)
        await m.start()
        agents[name] = a

    sem = asyncio.Semaphore(8)   # logins in small waves: TLS + SCRAM per client

    async def start_limited(name: str) -> None:
        async with sem:
            try:
                await start(name)
            except Exception as exc:   # noqa: BLE001 - reported, the others go on
                emit(event="start_failed", node=name, error=str(exc))

    await asyncio.gather(*(start_limited(n) for n in names))
    emit(event="started", count=len(agents))
    crashed: dict[str, asyncio.Task[None]] = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        cmd, _, name = line.partition(" ")
        if cmd == "crash" and name in agents:
            a = agents.pop(name)
            t = time.time()
            if a.client is not None:
                a.client.abort()   # the stream dies without a goodbye, as with a crashed host
            emit(event="crashed", node=name, t=t)
            crashed[name] = asyncio.create_task(_quiet_stop(a))
        elif cmd == "restart" and name in crashed:
            await crashed.pop(name)
            t = time.time()
            emit(event="restarting", node=name, t=t)
            await start(name)
    await asyncio.gather(*(_quiet_stop(a) for a in agents.values()))


async def _quiet_stop(agent: Any) -> None:
    try:
        await asyncio.wait_for(agent.stop(), 5)
    except Exception:   # noqa: BLE001 - a crashed agent may fail to stop cleanly
        pass


# -- parent ------------------------------------------------------------------------------------------
class Child:
    """A child process speaking JSON lines; events kept in order, waited on by predicate."""

    def __init__(self, argv: list[str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="mlsysops-bench-scale-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     cwd=ROOT, text=True, bufsize=1)
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._lock:
                    self.events.append(json.loads(line))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def find(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events[since:] if e.get("event") == kind]

    async def wait(self, kind: str, timeout: float, since: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(kind, since)
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                raise RuntimeError(f"child exited (rc={self.proc.returncode}) before {kind!r}")
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no {kind!r} within {timeout}s")

    def close(self) -> None:
        try:
            self.send("quit")
            self.proc.wait(15)
        except Exception:   # noqa: BLE001
            self.proc.kill()


def spawn(role: str, port: int, **kw: Any) -> Child:
    argv = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--port", str(port)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return Child(argv)


def alive_now(cluster: Child) -> set[str]:
    state: dict[str, bool] = {}
    with cluster._lock:
        for e in cluster.events:
            if e.get("event") == "alive":
                state[e["node"]] = True
            elif e.get("event") == "lost":
                state[e["node"]] = False
    return {n for n, ok in state.items() if ok}


async def run_clusters(port: int, cont: Any, clusters: dict[str, int], per_process: int, steady: float,
                       crashes: int, register_timeout: float) -> list[dict[str, Any]]:
    """Start the cluster processes, then their node workers; measure; stop everything."""
    procs: dict[str, Child] = {}
    workers: dict[str, list[tuple[Child, list[str]]]] = {}
    results = []
    try:
        for cid, n in clusters.items():
            procs[cid] = spawn("cluster", port, cid=cid, nodes=n)
            await procs[cid].wait("ready", 120)
            print(f"cluster {cid} up ({n} nodes described)", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        for cid, n in clusters.items():
            names = node_names(cid, n)
            workers[cid] = []
            for i in range(0, n, per_process):
                chunk = names[i:i + per_process]
                workers[cid].append((spawn("nodes", port, cid=cid, names=",".join(chunk)), chunk))
        want = {cid: set(node_names(cid, n)) for cid, n in clusters.items()}
        registered_s: dict[str, float] = {}
        deadline = time.monotonic() + register_timeout
        while time.monotonic() < deadline and len(registered_s) < len(clusters):
            for cid in clusters:
                if cid not in registered_s and want[cid] <= alive_now(procs[cid]):
                    registered_s[cid] = time.monotonic() - t0
                    print(f"cluster {cid}: all {clusters[cid]} nodes registered in {registered_s[cid]:.1f}s",
                          file=sys.stderr, flush=True)
            await asyncio.sleep(0.2)
        # the continuum learns every cluster's nodes (paged descriptions)
        while time.monotonic() < deadline and any(len(cont.cluster_nodes.get(c, {})) < n for c, n in clusters.items()):
            await asyncio.sleep(0.2)
        cont_nodes = {c: len(cont.cluster_nodes.get(c, {})) for c in clusters}
        # steady state
        marks = {cid: len(p.events) for cid, p in procs.items()}
        for p in procs.values():
            p.send("mark")
        await asyncio.sleep(steady)
        stats = {}
        for cid, p in procs.items():
            since = len(p.events)
            p.send("stats")
            stats[cid] = await p.wait("stats", 30, since)
        lost_steady = {cid: [e for e in p.find("lost", marks[cid])] for cid, p in procs.items()}
        # crash recovery (first cluster only: the figure is per cluster agent)
        cid0 = next(iter(clusters))
        recov, detect, failed = [], [], []
        step = max(1, len(workers[cid0]) and clusters[cid0] // max(crashes, 1))
        victims = node_names(cid0, clusters[cid0])[::step][:crashes]
        for victim in victims:
            # crash, the cluster declares it lost (detection), restart, the cluster has it alive (recovery)
            worker = next(w for w, chunk in workers[cid0] if victim in chunk)
            since_c, since_w = len(procs[cid0].events), len(worker.events)
            worker.send(f"crash {victim}")
            try:
                crashed = await worker.wait("crashed", 30, since_w)
                lost = await _wait_node(procs[cid0], "lost", victim, since_c, 30)
                detect.append(lost["t"] - crashed["t"])
                worker.send(f"restart {victim}")
                restart = await worker.wait("restarting", 30, since_w)
                back = await _wait_node(procs[cid0], "alive", victim, since_c, 60, after=restart["t"])
                recov.append(back["t"] - restart["t"])
            except (TimeoutError, RuntimeError) as exc:
                failed.append(f"{victim}: {exc}")
        for cid, n in clusters.items():
            st = stats[cid]
            results.append({"cluster": cid, "nodes": n, "registered_s": registered_s.get(cid),
                            "continuum_nodes": cont_nodes[cid], "cpu_pct": st["cpu_pct"], "rss_mb": st["rss_mb"],
                            "lag_p50_ms": st["lag_p50_ms"], "lag_p99_ms": st["lag_p99_ms"],
                            "heartbeats": st["heartbeats"], "alive": st["alive"], "stalls": st["stalls"],
                            "loop_lag_max_ms": st["loop_lag_max_ms"], "false_losses": len(lost_steady[cid]),
                            "lost_examples": [f"{e['node']}: {e['reason']}" for e in lost_steady[cid][:3]],
                            **({"recovery": recov, "detection": detect, "crash_failures": failed}
                               if cid == cid0 else {})})
    finally:
        for ws in workers.values():
            for w, _ in ws:
                w.close()
        for p in procs.values():
            p.close()
    return results


async def _wait_node(child: Child, kind: str, node: str, since: int, timeout: float,
                     after: float | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in child.find(kind, since):
            if e["node"] == node and (after is None or e["t"] >= after):
                return e
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{node}: no {kind} within {timeout}s")


async def parent(args: argparse.Namespace) -> int:
    from mlsysops.agents.xmpp_prosody import ProsodyServer

    sizes = [int(s) for s in args.sizes.split(",") if s]
    mc, mn = (int(x) for x in args.multi.split("x")) if args.multi else (0, 0)
    srv = ProsodyServer(workdir=Path(tempfile.mkdtemp(prefix="mlsysops-bench-scale-")) / "prosody",
                        storage=args.prosody_storage)
    await srv.start()
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    try:
        for i, n in enumerate(sizes):
            cid = f"s{i}"
            cont = await _continuum(srv.port, [cid])
            try:
                runs.append((f"1 x {n}", await run_clusters(srv.port, cont, {cid: n}, args.per_process, args.steady,
                                                            args.crashes, args.register_timeout)))
            finally:
                await cont.stop()
            print(f"done: 1 cluster x {n}", file=sys.stderr, flush=True)
        if mc:
            cids = [f"m{i}" for i in range(mc)]
            cont = await _continuum(srv.port, cids)
            try:
                runs.append((f"{mc} x {mn}", await run_clusters(srv.port, cont, {c: mn for c in cids}, args.per_process,
                                                                args.steady, args.crashes, args.register_timeout)))
            finally:
                await cont.stop()
    finally:
        await srv.stop()

    print(f"prosody (TLS), {HB:g} s heartbeats, {MISSES} misses; membership-only node agents, "
          f"{args.per_process} per process; steady window {args.steady:g} s; {args.crashes} crashes")
    head = (f"{'run':<10} {'cluster':<7} {'nodes':>6} {'registered_s':>12} {'cont_nodes':>10} {'cpu_%':>6} "
            f"{'rss_mb':>7} {'lag_p50_ms':>10} {'lag_p99_ms':>10} {'false_loss':>10} {'recov_p50_s':>11} "
            f"{'recov_p95_s':>11} {'detect_p95_s':>12}")
    print(head)
    print("-" * len(head))
    for label, rows in runs:
        for r in rows:
            rec = r.get("recovery")
            reg = f"{r['registered_s']:.1f}" if r["registered_s"] is not None else "never"
            print(f"{label:<10} {r['cluster']:<7} {r['nodes']:>6} {reg:>12} {r['continuum_nodes']:>10} "
                  f"{r['cpu_pct']:>6.1f} {r['rss_mb']:>7.1f} {r['lag_p50_ms']:>10.1f} {r['lag_p99_ms']:>10.1f} "
                  f"{r['false_losses']:>10} {_p(rec, 50):>11} {_p(rec, 95):>11} {_p(r.get('detection'), 95):>12}")
            if r["lost_examples"]:
                print(f"           false losses, e.g.: {r['lost_examples']}")
            if r.get("crash_failures"):
                print(f"           crash runs that did not recover: {r['crash_failures'][:3]}")
    single = [rows[0] for label, rows in runs if label.startswith("1 x ")]
    if not single:
        return 0
    last = max(single, key=lambda r: r["nodes"])
    rec = last.get("recovery") or []
    ok = last["registered_s"] is not None
    print(f"nodes={last['nodes']} cluster_cpu_pct={last['cpu_pct']:.1f} false_losses={last['false_losses']} "
          f"recovery_p95_s={pct(rec, 95):.2f}")
    return 0 if ok else 1


def _p(values: list[float] | None, q: float) -> str:
    return "-" if not values else f"{pct(values, q):.2f}"


async def _continuum(port: int, cids: list[str]) -> Any:
    from mlsysops.agents.descriptions import MLSysOpsContinuum
    from mlsysops.agents.managed_agent import AgentSettings
    from mlsysops.continuum.agent import ContinuumAgent

    cont = ContinuumAgent(jid("continuum", "bench"), PASSWORD, port=port, force_xmpp=True,
                          description=MLSysOpsContinuum.model_validate({"continuum_id": "bench", "clusters": cids}),
                          cluster_jids={c: jid("cluster", c) for c in cids},
                          settings=AgentSettings(heartbeat=HB, liveness_misses=MISSES))
    await cont.start_agent(timeout=30)
    return cont


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="100/500/1000/2000 nodes, 600 s steady, 10 x 500")
    ap.add_argument("--sizes", default="100,500", help="nodes of the single-cluster runs")
    ap.add_argument("--multi", default="3x50", help="CLUSTERSxNODES under one continuum ('' to skip)")
    ap.add_argument("--steady", type=float, default=30.0, help="seconds of steady state measured")
    ap.add_argument("--per-process", type=int, default=150, help="node agents per worker process")
    ap.add_argument("--crashes", type=int, default=10, help="node agents crashed and restarted")
    ap.add_argument("--register-timeout", type=float, default=300.0)
    ap.add_argument("--prosody-storage", default="memory", choices=["memory", "internal"],
                    help="prosody's store (internal: files, a roster rewritten whole on every change)")
    ap.add_argument("--role", choices=["cluster", "nodes"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cid", help=argparse.SUPPRESS)
    ap.add_argument("--nodes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--names", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=os.environ.get("MLSYSOPS_BENCH_LOG", "CRITICAL"))   # e.g. INFO: to each process's log
    if args.role == "cluster":
        asyncio.run(cluster_main(args))
        return 0
    if args.role == "nodes":
        asyncio.run(nodes_main(args))
        return 0
    if args.full:
        args.sizes, args.steady, args.multi, args.per_process = "100,500,1000,2000", 600.0, "10x500", 250
    return asyncio.run(parent(args))


if __name__ == "__main__":
    sys.exit(main())
