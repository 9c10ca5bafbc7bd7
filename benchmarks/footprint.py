"""Footprint benchmark: resident memory of one node agent and one cluster agent, each in its own process.

Run: ``.venv/bin/python benchmarks/footprint.py [--duration S] [--interval S]``

Setup: a throw-away prosody server and, in this process, the continuum agent of the demo slice
(``examples/slices/demo.yaml``), so the measured agents have a real parent. Then, concurrently, two child
processes (this script with ``--child``):
- ``cluster``: ``ClusterAgent`` edge-1 (its five described nodes) with a ``SimPlacementMechanism`` over a
  ``SimContinuum`` of those nodes, registered with the continuum;
- ``node``: ``NodeAgent`` edge-server-1 with a ``SimNodeSubstrate`` over a one-node ``SimContinuum``
  running three component instances, registered with the cluster agent above.
Each child connects over XMPP (``force_xmpp=True``), runs ``--duration`` seconds with every interval
(heartbeat, monitor, analyze, status report) at ``--interval``, then reports ``VmHWM`` (peak RSS) and
``VmRSS`` from ``/proc/self/status``, plus its RSS after imports, before the agent started.
Baselines: a bare interpreter, ``python -c 'import spade'``.
The last printed line is ``key=value`` pairs for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "examples" / "slices" / "demo.yaml"
CLUSTER = "edge-1"
NODE = "edge-server-1"
MB = 1024.0


PASSWORD = "mlsysops-bench"   # fresh prosody: accounts are created in-band with this password


def jid(role: str, name: str) -> str:
    """The JID scheme of mlsysops.cli.slice_runtime (not imported: a real agent process does not load it)."""
    part = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name.lower())
    return f"{role}-{part}@localhost"


def proc_status() -> dict[str, float]:
    """VmRSS / VmHWM of this process in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / MB   # kB -> MiB
    return out


# -- child processes ------------------------------------------------------------------------------
async def child(role: str, port: int, duration: float, interval: float) -> None:
    from mlsysops.agents.managed_agent import AgentSettings
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.cluster.agent import ClusterAgent
    from mlsysops.mechanisms.sim_placement import SimPlacementMechanism, sim_node_spec
    from mlsysops.node.agent import NodeAgent
    from mlsysops.node.substrate import SimNodeSubstrate
    from mlsysops.sim import SimClock, SimContinuum

    spec = load_slice(DEMO)
    after_import = proc_status()["VmRSS"]
    settings = AgentSettings(heartbeat=interval, liveness_misses=3, monitor=interval, analyze=interval,
                             status_report=interval)
    kw = {"port": port, "force_xmpp": True}
    if role == "node":
        desc = spec.nodes[NODE]
        sim = SimContinuum.from_specs([sim_node_spec(desc)], seed=1, clock=SimClock.realtime())
        for i in range(3):
            sim.deploy(f"fp.c{i}.0@{NODE}", "fp", f"c{i}", NODE, 0.2, 64 * 2**20)
        agent = NodeAgent(jid("node", NODE), PASSWORD, description=desc,
                          substrate=SimNodeSubstrate(sim, NODE), parent=jid("cluster", CLUSTER),
                          settings=settings, **kw)
        connected = lambda: agent.membership.connected  # noqa: E731
    else:
        nodes = {n.name: n for n in spec.cluster_nodes(CLUSTER)}
        sim = SimContinuum.from_specs([sim_node_spec(n) for n in nodes.values()], seed=1,
                                      clock=SimClock.realtime())
        mech = SimPlacementMechanism(sim, CLUSTER)   # the cluster agent binds it to its apps
        agent = ClusterAgent(jid("cluster", CLUSTER), PASSWORD, description=spec.clusters[CLUSTER],
                             nodes=nodes, node_jids={n: jid("node", n) for n in nodes}, placement=mech,
                             parent=jid("continuum", spec.continuum.continuum_id), settings=settings,
                             **kw)
        connected = lambda: agent.upstream.connected  # noqa: E731
    sim_task = asyncio.create_task(sim.run(interval=0.05))
    t0 = time.monotonic()
    await agent.start_agent()
    while not connected() and time.monotonic() - t0 < 15:
        await asyncio.sleep(0.05)
    registered = connected()
    t_reg = time.monotonic() - t0
    await asyncio.sleep(duration)
    extra = {}
    if role == "cluster":
        extra["children_alive"] = len(agent.children.children(alive_only=True))
    else:
        extra["instances"] = len(agent._instances)
    st = proc_status()
    print(json.dumps({"role": role, "after_import_mb": after_import, "rss_mb": st["VmRSS"],
                      "peak_mb": st["VmHWM"], "registered": registered, "register_s": round(t_reg, 3),
                      **extra}), flush=True)
    await agent.stop()
    sim_task.cancel()


# -- parent ---------------------------------------------------------------------------------------
def baseline(code: str) -> dict[str, float]:
    prog = (f"{code}\nfrom pathlib import Path\n"
            "d = {l.split(':')[0]: int(l.split()[1]) / 1024 for l in Path('/proc/self/status').read_text()"
            ".splitlines() if l.startswith(('VmRSS', 'VmHWM'))}\nprint(d['VmRSS'], d['VmHWM'])")
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True, cwd=ROOT)
    rss, hwm = map(float, out.stdout.split())
    return {"rss_mb": rss, "peak_mb": hwm}


async def parent(args: argparse.Namespace) -> int:
    from mlsysops.agents.managed_agent import AgentSettings
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.agents.xmpp_prosody import ProsodyServer
    from mlsysops.continuum.agent import ContinuumAgent

    spec = load_slice(DEMO)
    srv = ProsodyServer(workdir=Path(tempfile.mkdtemp(prefix="mlsysops-bench-footprint-")))
    await srv.start()
    iv = args.interval
    cont = ContinuumAgent(jid("continuum", spec.continuum.continuum_id), PASSWORD,
                          description=spec.continuum,
                          cluster_jids={cid: jid("cluster", cid) for cid in spec.clusters},
                          inventory=spec.inventory,
                          settings=AgentSettings(heartbeat=iv, monitor=iv, analyze=iv, status_report=iv),
                          port=srv.port, force_xmpp=True)
    results: dict[str, dict] = {}
    errors: list[str] = []
    try:
        await cont.start_agent()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(srv.port),
               "--duration", str(args.duration), "--interval", str(iv), "--child"]
        procs = {}
        for role in ("cluster", "node"):   # cluster first: the node registers with it
            # Popen, not asyncio's subprocess API: SPADE installs an event-loop policy without a child watcher.
            procs[role] = subprocess.Popen([*cmd, role], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           cwd=ROOT)
            await asyncio.sleep(0.5)
        for role, proc in procs.items():
            try:
                out, err = await asyncio.to_thread(proc.communicate, timeout=args.duration + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                errors.append(f"{role} child timed out")
                continue
            lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                errors.append(f"{role} child failed (rc={proc.returncode}): {err.decode()[-800:]}")
                continue
            results[role] = json.loads(lines[-1])
    finally:
        await cont.stop()
        await srv.stop()
    results["python"] = {"role": "python (bare interpreter)", **baseline("pass")}
    results["spade"] = {"role": "python -c 'import spade'", **baseline("import spade")}

    print(f"{'process':<28} {'peak_rss_mb':>11} {'rss_mb':>8} {'after_imports_mb':>16}  notes")
    for key in ("node", "cluster", "spade", "python"):
        r = results.get(key)
        if r is None:
            continue
        label = {"node": f"node agent ({NODE})", "cluster": f"cluster agent ({CLUSTER})"}.get(key, r["role"])
        notes = ""
        if key == "node":
            notes = f"registered={r['registered']} in {r['register_s']}s, {r['instances']} sim instances"
        elif key == "cluster":
            notes = f"registered={r['registered']} in {r['register_s']}s, {r['children_alive']} live node child"
        after = f"{r['after_import_mb']:.1f}" if "after_import_mb" in r else "-"
        print(f"{label:<28} {r['peak_mb']:>11.1f} {r['rss_mb']:>8.1f} {after:>16}  {notes}")
    print(f"duration={args.duration:g}s interval={iv:g}s; MiB from /proc/self/status (VmHWM, VmRSS)")
    for e in errors:
        print(f"FAILED: {e}")
    kv = {"node_agent_peak_rss_mb": results.get("node", {}).get("peak_mb"),
          "cluster_agent_peak_rss_mb": results.get("cluster", {}).get("peak_mb"),
          "import_spade_rss_mb": results["spade"]["rss_mb"],
          "node_agent_rss_mb": results.get("node", {}).get("rss_mb"),
          "cluster_agent_rss_mb": results.get("cluster", {}).get("rss_mb"),
          "python_rss_mb": results["python"]["rss_mb"]}
    print(" ".join(f"{k}={v:.1f}" if v is not None else f"{k}=nan" for k, v in kv.items()))
    return 1 if errors else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds each agent runs after connecting")
    ap.add_argument("--interval", type=float, default=1.0, help="heartbeat/monitor/analyze/report interval")
    ap.add_argument("--child", choices=["node", "cluster"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    if args.child:
        asyncio.run(child(args.child, args.port, args.duration, args.interval))
        return 0
    return asyncio.run(parent(args))


if __name__ == "__main__":
    sys.exit(main())
