"""Footprint of the far-edge agent beside the node agent and a bare slixmpp client, measured in one run.

A prosody server and the demo slice's `edge-1` cluster agent run in this process (heartbeat 1 s). Three
child processes join the cluster's XMPP server: the far-edge agent (`python -m mlsysops.far_edge`, one
`sleep` component), the node agent of `edge-rpi-1` (SPADE, the MAPE engine, an in-process simulated node)
and a bare slixmpp client that only stays connected (the floor of any Python XMPP agent). After a warm-up,
each is sampled for `--seconds`: peak RSS (VmHWM of /proc/<pid>/status) and CPU (utime+stime over the
window, % of one core). `--memory-max 64M` starts the far-edge agent in a child cgroup v2 with
`memory.max` where the memory controller is enabled, else under `systemd-run --scope -p MemoryMax=`, and reports whether it survived the window (and memory.events);
where neither exists it says so and measures without the limit.

Last line: far_edge_rss_mb=<peak RSS, MB> far_edge_cpu_pct=<% of one core>.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PW = "bench-" + uuid.uuid4().hex[:8]

NODE_SCRIPT = """
import asyncio, sys
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_assembly import SliceAssembly
from mlsysops.mechanisms.sim_placement import sim_node_spec
from mlsysops.node.substrate import SimNodeSubstrate
from mlsysops.sim import SimContinuum
async def main():
    spec = load_slice(sys.argv[1])
    asm = SliceAssembly(spec, password=sys.argv[2], suffix=sys.argv[3], xmpp_port=int(sys.argv[4]), force_xmpp=True)
    sim = SimContinuum.from_specs([sim_node_spec(n) for n in spec.nodes.values()], seed=1)
    agent = asm.node_agent("edge-rpi-1", SimNodeSubstrate(sim, "edge-rpi-1"))
    await agent.start_agent()
    await asyncio.Event().wait()
asyncio.run(main())
"""

BARE_SCRIPT = """
import asyncio, ssl, sys
from slixmpp import ClientXMPP
async def main():
    c = ClientXMPP(sys.argv[1], sys.argv[2])
    c.ssl_context.check_hostname = False; c.ssl_context.verify_mode = ssl.CERT_NONE
    c.add_event_handler("session_start", lambda _e: c.send_presence())
    c.connect(host="127.0.0.1", port=int(sys.argv[3]))
    await asyncio.Event().wait()
asyncio.run(main())
"""


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def cgroup_v2(limit: str) -> tuple[Path | None, str]:
    """A child cgroup with memory.max = limit under this process's cgroup v2, or (None, why not)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.split()[2] == "cgroup2"]
    own = next((line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")), None)
    if not mounts or own is None:
        return None, "no cgroup v2 hierarchy"
    base = Path(mounts[0]) / own.lstrip("/")
    controllers = (base / "cgroup.controllers").read_text().split() if (base / "cgroup.controllers").exists() else []
    if "memory" not in controllers:
        return None, f"the memory controller is not enabled in cgroup v2 ({base}; it is bound to cgroup v1 here)"
    child = base / f"mlsysops-bench-{uuid.uuid4().hex[:6]}"
    try:
        child.mkdir()
        (child / "memory.max").write_text(str(parse_size(limit)))
    except OSError as exc:
        return None, f"cannot create {child}: {exc.strerror}"
    return child, f"cgroup v2 memory.max={limit} ({child})"


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def register_account(jid: str, port: int) -> None:
    from mlsysops.agents.agent_base import MLSysOpsAgent

    a = MLSysOpsAgent(jid, PW, port=port)
    await a.start_agent(timeout=15)
    await a.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measuring window (default 60 s)")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--memory-max", default=None, help="e.g. 64M: run the far-edge agent under this memory limit")
    a = ap.parse_args()

    from mlsysops.agents.slice_config import load_slice
    from mlsysops.agents.xmpp_prosody import ProsodyServer
    from mlsysops.cli.slice_assembly import SliceAssembly
    from mlsysops.mechanisms.sim_placement import sim_node_spec
    from mlsysops.sim import SimContinuum

    tmp = Path(tempfile.mkdtemp(prefix="bench-far-edge-"))
    server = ProsodyServer(tmp / "prosody")
    server.start_sync()
    demo = ROOT / "examples/slices/demo.yaml"
    suffix = "-" + uuid.uuid4().hex[:6]
    spec = load_slice(demo)
    asm = SliceAssembly(spec, password=PW, suffix=suffix, xmpp_port=server.port, force_xmpp=True,
                        overrides={"cluster": {"heartbeat": 1.0}})
    sim = SimContinuum.from_specs([sim_node_spec(n) for n in spec.nodes.values()], seed=1)
    cluster = asm.cluster_agent("edge-1", asm.placement_for("edge-1", sim=sim))
    await cluster.start_agent(timeout=15)
    fe_jid, bare_jid = asm.jid("node", "far-edge-1"), f"bare{suffix}@{asm.domain}"
    for jid in (fe_jid, bare_jid):
        await register_account(jid, server.port)
    (tmp / "pw").write_text(PW)
    (tmp / "fe.json").write_text(json.dumps({
        "jid": fe_jid, "parent": asm.jid("cluster", "edge-1"), "node": "far-edge-1", "server": "127.0.0.1",
        "port": server.port, "password_file": str(tmp / "pw"), "verify_tls": False,
        "components": [{"name": "sleep", "app": "bench", "command": ["sleep", "100000"]}]}))
    fe_cmd = [sys.executable, "-m", "mlsysops.far_edge", "--config", str(tmp / "fe.json"), "--log-level", "WARNING"]
    limit_note, cgroup = "none", None
    if a.memory_max:
        cgroup, why = cgroup_v2(a.memory_max)
        if cgroup is not None:   # the shell joins the cgroup, then becomes the agent (same pid)
            fe_cmd = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *fe_cmd]
            limit_note = why
        elif shutil.which("systemd-run") and subprocess.run(["systemd-run", "--scope", "--quiet", "true"],
                                                            capture_output=True).returncode == 0:
            fe_cmd = ["systemd-run", "--scope", "--quiet", "-p", f"MemoryMax={a.memory_max}", *fe_cmd]
            limit_note = f"MemoryMax={a.memory_max} (systemd-run --scope)"
        else:
            limit_note = f"{a.memory_max} NOT applied: {why}; systemd-run --scope unavailable"
    procs = {
        "far-edge agent": subprocess.Popen(fe_cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        "node agent (SPADE)": subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(demo), PW, suffix,
                                                str(server.port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL),
        "bare slixmpp client": subprocess.Popen([sys.executable, "-c", BARE_SCRIPT, bare_jid, PW, str(server.port)],
                                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = {c.agent_id for c in cluster.children.children(alive_only=True)}
            if {"far-edge-1", "edge-rpi-1"} <= alive:
                break
            await asyncio.sleep(0.5)
        joined = {c.agent_id for c in cluster.children.children(alive_only=True)}
        await asyncio.sleep(a.warmup)
        pids = {name: p.pid for name, p in procs.items()}
        start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        await asyncio.sleep(a.seconds)
        dt = time.monotonic() - t0
        rows = {}
        for name, pid in pids.items():
            if procs[name].poll() is not None:
                rows[name] = (float("nan"), float("nan"), f"exited {procs[name].returncode}")
                continue
            rows[name] = (rss_peak_mb(pid), 100.0 * (cpu_seconds(pid) - start[name]) / dt, "running")
        print(f"window {dt:.0f} s after {a.warmup:.0f} s warm-up; heartbeat 1 s; joined: {sorted(joined)}; "
              f"memory limit: {limit_note}")
        print(f"{'process':<22} {'peak RSS MB':>12} {'CPU % core':>11} {'state':>10}")
        for name, (rss, cpu, state) in rows.items():
            print(f"{name:<22} {rss:>12.1f} {cpu:>11.2f} {state:>10}")
        fe, node, bare = rows["far-edge agent"], rows["node agent (SPADE)"], rows["bare slixmpp client"]
        print(f"ratios: far-edge/node RSS {fe[0] / node[0]:.2f}, far-edge - bare client RSS {fe[0] - bare[0]:+.1f} MB")
        if cgroup is not None:
            events = (cgroup / "memory.events").read_text()
            print(f"under the limit: {rows['far-edge agent'][2]}; memory.events: {' '.join(events.split())}")
        print(f"far_edge_rss_mb={fe[0]:.1f} far_edge_cpu_pct={fe[1]:.2f}")
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        await cluster.stop()
        server.stop_sync()
        shutil.rmtree(tmp, ignore_errors=True)
        if cgroup is not None:
            with contextlib.suppress(OSError):
                cgroup.rmdir()


if __name__ == "__main__":
    asyncio.run(main())
