"""Footprint of the far-edge agent beside the node agent and a bare slixmpp client, measured in one run.

A prosody server and the demo slice's `edge-1` cluster agent run in this process (heartbeat 1 s). Three
child processes join the cluster's XMPP server: the far-edge agent (`python -m mlsysops.far_edge`, one
`sleep` component), the node agent of `edge-rpi-1` (SPADE, the MAPE engine, an in-process simulated node)
and a bare slixmpp client that only stays connected (the floor of any Python XMPP agent). After a warm-up,
each is sampled for `--seconds`: peak RSS (VmHWM of /proc/<pid>/status) and CPU (utime+stime over the
window, % of one core). `--memory-max 64M` starts the far-edge agent in a child of this process's own
cgroup with the limit: cgroup v2 `memory.max` where v2 has the memory controller, else cgroup v1
`memory.limit_in_bytes` (this machine binds the memory controller to v1), else `systemd-run --scope -p
MemoryMax=`; it reports whether the agent survived the window and the cgroup's OOM-kill count. Where none
exists it says so and measures without the limit.

Last line: far_edge_rss_mb=<peak RSS, MB> far_edge_cpu_pct=<% of one core> (with a limit applied, also
memory_limit_mb= oom_kills= survived=).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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


@dataclass
class MemoryCgroup:
    """A child cgroup of this process's own with a memory limit; v2 `memory.max`, or v1 `memory.limit_in_bytes`
    where the memory controller is bound to cgroup v1 (the kernel enforces both the same way: OOM kill)."""

    path: Path
    version: int
    limit_bytes: int

    def wrap(self, cmd: list[str]) -> list[str]:
        """The shell joins the cgroup, then becomes `cmd` (same pid), so nothing runs outside the limit."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *cmd]

    def events(self) -> dict[str, int]:
        """Counters of the limit: oom_kill always; v2 adds memory.events, v1 the failcnt and the peak."""
        if self.version == 2:
            return {k: int(v) for k, v in (line.split() for line in (self.path / "memory.events").read_text().splitlines())}
        oom = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
        return {"oom_kill": int(oom.get("oom_kill", 0)), "failcnt": int((self.path / "memory.failcnt").read_text()),
                "max_usage_bytes": int((self.path / "memory.max_usage_in_bytes").read_text())}

    def describe(self) -> str:
        knob = "memory.max" if self.version == 2 else "memory.limit_in_bytes"
        return f"cgroup v{self.version} {knob}={self.limit_bytes >> 20}M ({self.path})"

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left inside (a killed agent's orphaned components), then remove the cgroup."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _child(base: Path, knob: str, limit: int, version: int) -> tuple[MemoryCgroup | None, str]:
    child = base / f"mlsysops-bench-{uuid.uuid4().hex[:6]}"
    try:
        child.mkdir()
        (child / knob).write_text(str(limit))
    except OSError as exc:
        with contextlib.suppress(OSError):
            child.rmdir()
        return None, f"cannot create {child} with {knob}: {exc.strerror}"
    return MemoryCgroup(child, version, limit), ""


def memory_cgroup(limit: str) -> tuple[MemoryCgroup | None, str]:
    """A child cgroup with the memory limit under this process's own cgroup (v2 first, then v1), or (None, why)."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    own = dict((parts[1], parts[2]) for parts in (line.split(":", 2) for line in
                                                  Path("/proc/self/cgroup").read_text().splitlines()))
    size, whys = parse_size(limit), []
    v2 = next((m[1] for m in mounts if m[2] == "cgroup2"), None)
    if v2 is not None and "" in own:
        base = Path(v2) / own[""].lstrip("/")
        controllers = (base / "cgroup.controllers").read_text().split() if (base / "cgroup.controllers").exists() else []
        if "memory" in controllers:
            group, why = _child(base, "memory.max", size, 2)
            if group is not None:
                return group, ""
            whys.append(why)
        else:
            whys.append(f"cgroup v2 ({base}) has no memory controller")
    else:
        whys.append("no cgroup v2 hierarchy")
    v1 = next((m[1] for m in mounts if m[2] == "cgroup" and "memory" in m[3].split(",")), None)
    if v1 is not None and "memory" in own:
        group, why = _child(Path(v1) / own["memory"].lstrip("/"), "memory.limit_in_bytes", size, 1)
        if group is not None:
            return group, ""
        whys.append(why)
    else:
        whys.append("no cgroup v1 memory hierarchy")
    return None, "; ".join(whys)


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
        cgroup, why = memory_cgroup(a.memory_max)
        if cgroup is not None:
            fe_cmd = cgroup.wrap(fe_cmd)
            limit_note = cgroup.describe()
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
        tail: list[str] = []
        print(f"window {dt:.0f} s after {a.warmup:.0f} s warm-up; heartbeat 1 s; joined: {sorted(joined)}; "
              f"memory limit: {limit_note}")
        print(f"{'process':<22} {'peak RSS MB':>12} {'CPU % core':>11} {'state':>10}")
        for name, (rss, cpu, state) in rows.items():
            print(f"{name:<22} {rss:>12.1f} {cpu:>11.2f} {state:>10}")
        fe, node, bare = rows["far-edge agent"], rows["node agent (SPADE)"], rows["bare slixmpp client"]
        print(f"ratios: far-edge/node RSS {fe[0] / node[0]:.2f}, far-edge - bare client RSS {fe[0] - bare[0]:+.1f} MB")
        if cgroup is not None:
            events = cgroup.events()
            print(f"under the limit: {rows['far-edge agent'][2]}; "
                  f"{' '.join(f'{k}={v}' for k, v in events.items())}")
            tail.append(f"memory_limit_mb={cgroup.limit_bytes >> 20} oom_kills={events.get('oom_kill', 0)} "
                        f"survived={str(rows['far-edge agent'][2] == 'running').lower()}")
        print(" ".join([f"far_edge_rss_mb={fe[0]:.1f} far_edge_cpu_pct={fe[1]:.2f}", *tail]))
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        await cluster.stop()
        server.stop_sync()
        shutil.rmtree(tmp, ignore_errors=True)
        if cgroup is not None:
            cgroup.remove()


if __name__ == "__main__":
    asyncio.run(main())
