"""Chaos benchmark: one run of faults against the per-process demo slice over prosody, both example apps running.

Run: ``.venv/bin/python benchmarks/chaos.py [--outage S] [--only fault,fault] [--hog-cap-mb MB] [--keep]``

Setup: a throw-away prosody server (in-band registration on, which the stranger uses) and the demo slice
(`examples/slices/demo`: continuum, clusters cloud-1 and edge-1, seven nodes) one agent per process, as in
production: ``mlsysops sim serve`` + ``mlsysops agent continuum|cluster|node``, intervals heartbeat 1 s x 3,
node grace 10 s, eviction timeout 30 s. Both example apps (video-analytics, env-monitor) are applied and
must be running before the first fault. Faults, in this order, each followed by a wait for convergence:

- ``kill9-node``: kill -9 of the node agent hosting env-monitor's sensor-reader (which other nodes could take),
  restarted 2 s later;
- ``kill9-cluster``: kill -9 of cluster agent edge-1, restarted 2 s later;
- ``kill9-continuum``: kill -9 of the continuum agent, restarted 2 s later (same state directory, same port);
- ``outage-graceful`` / ``outage-kill9``: prosody stopped (SIGTERM) or killed (SIGKILL) for ``--outage`` s;
- ``partition``: every node agent of edge-1 frozen (SIGSTOP: connected, silent) for 9 s (3 liveness
  periods): the cluster agent is cut off from all its children;
- ``policy-block``: a policy whose first ``analyze`` (per process) blocks 20 s in ``time.sleep``, kept for 22 s
  in the cluster layer's policy directory (so both cluster agents load it: were their loops blocked, the
  continuum would lose all its children at once); the slice must stay converged meanwhile (polled every
  second; each miss counts as a wrong outcome);
- ``policy-hog``: a cluster-layer policy that allocates 64 MB more on every ``analyze``; the benchmark removes
  it once every cluster recorded it ``memory_exceeded`` (its worker's limit), after 40 s, or when a cluster
  agent's RSS passes ``--hog-cap-mb`` (a safety cap on this shared machine), and then restarts (kill -9)
  every cluster agent that kept the memory (none should);
- ``stranger``: an XMPP client with its own account sends every request kind (and every report kind) to
  the continuum, edge-1 and a node, with valid bodies.

Per fault: apps lost (an app with a component not running when convergence gave up), needless redeploys
(instances the simulator created after the fault began: none of these faults needs one), stranger
actions (an INFORM answer to the stranger, or a change of instances/apps/mode during its turn), and the
time to converge (from the end of the fault until every component of both apps runs, every cluster is
alive with all its nodes, and every agent answers a decisions read over XMPP, fanned out from the continuum;
polled every 0.25 s, given up after ``--converge-timeout`` s).
The policy faults also check their effect (column ``wrong``): every cluster agent must have recorded the
overrun (``timeout`` for the blocking policy, ``memory_exceeded`` for the hog) and kept its own memory;
a policy that never loaded or ran proves nothing and counts as missed.
The last printed line is ``apps_lost= needless_redeploys= stranger_actions= max_converge_s=
policy_faults_missed=``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlsysops.agents.slice_config import load_slice  # noqa: E402
from mlsysops.agents.xmpp_prosody import ProsodyServer  # noqa: E402

DEMO = ROOT / "examples" / "slices" / "demo"
APPS = {"video-analytics": ROOT / "examples/apps/video-analytics.yaml",
        "env-monitor": ROOT / "examples/apps/env-monitor.yaml"}
PASSWORD = "chaos-" + os.urandom(6).hex()
FAULTS = ["kill9-node", "kill9-cluster", "kill9-continuum", "outage-graceful", "outage-kill9", "partition",
          "policy-block", "policy-hog", "stranger"]
POLL = 0.25

BLOCK_POLICY = '''
"""chaos: the first analyze blocks the agent's loop for 20 s (time.sleep, not await)."""
import time
_done = []


def initialize():
    return {"scope": "global", "configuration": {"analyze_interval": "1s"}, "mechanisms": []}


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    if not _done:
        _done.append(1)
        time.sleep(20)
    return False, context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    return {}, context, {"summary": "nothing"}
'''

HOG_POLICY = '''
"""chaos: 64 MB more on every analyze, kept for ever."""
_kept = []


def initialize():
    return {"scope": "global", "configuration": {"analyze_interval": "1s"}, "mechanisms": []}


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    _kept.append(b"\\x01" * (64 << 20))
    return False, context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    return {}, context, {"summary": "nothing"}
'''


def _cmd() -> list[str]:
    exe = shutil.which("mlsysops", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mlsysops.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_rss_mb(pid: int) -> float:
    """RSS of a process's direct children (the agent's policy workers), MiB."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(rss_mb(int(k)) for k in kids)
    return total


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Slice:
    """The demo slice, one process per agent, over a prosody server of its own."""

    def __init__(self, work: Path, prosody: ProsodyServer) -> None:
        self.work, self.prosody = work, prosody
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.api_port = _free_port()
        self.sim_port = _free_port()
        self.policy_dir = work / "cluster-policies"
        self.policy_dir.mkdir()
        self.slice_file = work / "slice.yaml"
        ca = getattr(prosody, "ca_file", None)   # servers whose certificates agents verify name their CA
        ca_entry = f", ca_file: {ca}" if ca is not None else ""
        self.slice_file.write_text(textwrap.dedent(f"""
            slice: chaos
            xmpp: {{server: external, host: localhost, port: {prosody.port}{ca_entry}}}
            continuum: {DEMO}/continuum.yaml
            clusters: ["{DEMO}/clusters.yaml"]
            nodes: ["{DEMO}/nodes/*.yaml"]
            intervals: {{heartbeat: 1s, liveness_misses: 3, analyze: 1s, monitor: 0.5s, status_report: 1s,
                        node_grace: 10s, eviction_timeout: 30s}}
            policies:
              cluster: {{directories: ["{self.policy_dir}"]}}
            state_dir: {work / "state"}
        """))
        self.env = {**os.environ, "HOME": str(work), "MLSYSOPS_XMPP_PASSWORD": PASSWORD}
        spec = load_slice(self.slice_file)
        self.clusters = sorted(spec.clusters)
        self.nodes = sorted(spec.nodes)
        self.cluster_of = {name: str(node.cluster_id) for name, node in spec.nodes.items()}
        self.continuum_id = spec.continuum.continuum_id
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.sim = f"http://127.0.0.1:{self.sim_port}"
        self._token: str | None = None

    # -- processes ---------------------------------------------------------------------------------
    def _args(self, name: str) -> list[str]:
        cfg = ["-c", str(self.slice_file)]
        if name == "sim":
            return ["sim", "serve", str(self.slice_file), "--port", str(self.sim_port)]
        if name == "continuum":
            return ["agent", "continuum", *cfg, "--api-port", str(self.api_port)]
        if name in self.clusters:
            return ["agent", "cluster", *cfg, "--id", name, "--sim", self.sim]
        return ["agent", "node", *cfg, "--id", name, "--sim", self.sim]

    def start(self, name: str) -> None:
        log = open(self.work / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen([*_cmd(), *self._args(name)], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, text=True)

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=10)

    def signal_all(self, names: list[str], sig: int) -> None:
        for name in names:
            self.procs[name].send_signal(sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def start_all(self) -> None:
        self.start("sim")
        wait_blocking(lambda: _http_ok(f"{self.sim}/healthz"), 60, "simulator did not start")
        self.start("continuum")
        wait_blocking(lambda: (self.work / "state" / "token").exists() and _http_ok(f"{self.api}/healthz"), 90,
                      "continuum API did not start")
        for name in [*self.clusters, *self.nodes]:
            self.start(name)

    # -- reads -------------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        if self._token is None:
            self._token = (self.work / "state" / "token").read_text().strip()
        return self._token

    def get(self, path: str) -> Any:
        req = urllib.request.Request(f"{self.api}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(f"{self.api}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def policy_outcomes(self, policy: str) -> dict[str, dict[str, int]]:
        """agent -> {outcome: count} of a policy's decision records (analyze/plan stages and events)."""
        out: dict[str, dict[str, int]] = {}
        for r in self.get(f"/api/v1/decisions?policy={policy}&limit=1000"):
            if r.get("stage") in ("analyze", "plan", "event") and r.get("agent") in self.clusters:
                key = "disabled" if r["stage"] == "event" and "disabled" in (r.get("reason") or "") else r["outcome"]
                out.setdefault(r["agent"], {}).setdefault(key, 0)
                out[r["agent"]][key] += 1
        return out

    def snapshot(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.sim}/snapshot", timeout=5) as resp:
            return json.loads(resp.read())

    def statuses(self) -> dict[str, dict[str, dict[str, Any]]]:
        out = {}
        for app in APPS:
            try:
                out[app] = self.get(f"/api/v1/apps/{app}")["components"]
            except (OSError, KeyError, ValueError):
                out[app] = {}
        return out

    def converged(self) -> bool:
        try:
            st = self.statuses()
            if not all(comps and all(c["status"] == "running" for c in comps.values()) for comps in st.values()):
                return False
            clusters = self.get("/api/v1/clusters")
            if not (len(clusters) == len(self.clusters) and all(
                    c["alive"] and c["registered"] and c["nodes_alive"] == c["nodes"] and c["nodes"] > 0
                    for c in clusters)):
                return False
            if not self.get("/api/v1/continuum")["connected"]:
                return False
            # every agent answers over XMPP (the read fans out down the tree): reconnected, not just unnoticed
            rows = self.get("/api/v1/decisions?limit=1")
            return not any(r.get("outcome") == "unanswered" for r in rows)
        except (OSError, ValueError, KeyError):
            return False

    def live_instances(self) -> dict[str, float]:
        """instance id -> created_at of every instance the simulator runs or starts."""
        return {i["instance_id"]: i["created_at"] for i in self.snapshot()["instances"]
                if i.get("state") in ("starting", "running")}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def wait_blocking(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:   # noqa: BLE001 - not up yet
            pass
        time.sleep(POLL)
    raise SystemExit(f"chaos: {what} within {timeout:g}s")


async def converge(sl: Slice, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await asyncio.to_thread(sl.converged):
            return time.monotonic() - t0
        await asyncio.sleep(POLL)
    return None


# -- the stranger ---------------------------------------------------------------------------------
def stranger_messages(sl: Slice, target_node: str) -> list[tuple[str, str, Any, bool]]:
    """(target agent, kind, body, is_request) for every kind, with bodies each handler would accept."""
    from mlsysops.agents.protocol import Kind

    app_doc = {"MLSysOpsApp": {"name": "evil", "components": [
        {"metadata": {"name": "x"}, "node_placement": {"continuum_layer": ["edge"]},
         "containers": [{"image": "registry.example.org/evil:1",
                         "platform_requirements": {"cpu": {"requests": "100m"}, "memory": {"requests": "16Mi"}}}]}]}}
    from mlsysops.agents.descriptions import load_obj

    k8s = load_obj(app_doc, source="stranger").kubernetes_form
    now = time.time()
    per_kind: dict[str, tuple[dict[str, Any], bool]] = {
        Kind.REGISTER: ({"role": "node", "agent_id": target_node, "description": {}}, True),
        Kind.HEARTBEAT: ({"seq": 1, "digest": {}}, True),
        Kind.APP_DEPLOY: ({"app": "evil", "description": k8s, "components": ["x"]}, True),
        Kind.APP_REMOVE: ({"app": "env-monitor"}, True),
        Kind.APP_STATUS: ({"app": "env-monitor"}, True),
        Kind.PLAN_PROPOSE: ({"app": "env-monitor", "component": "aggregator", "instance_id": "x", "node": target_node,
                             "reason": "stranger"}, True),
        Kind.CONFIG_UPDATE: ({"mode": "ml"}, True),
        Kind.PING: ({"sent_at": now}, True),
        Kind.DECISIONS_QUERY: ({}, True),
        Kind.SIM_FAULT: ({"kind": "crash", "node": target_node}, True),
        Kind.STATUS_REPORT: ({"source": target_node, "full": True, "instances": []}, False),
        Kind.TELEMETRY_REPORT: ({"source": target_node, "node": target_node, "t": now, "window": 1.0, "series": []},
                                False),
    }
    targets = [f"continuum-{sl.continuum_id}", "cluster-edge-1", f"node-{target_node}"]
    return [(t, str(k), body, req) for t in targets for k, (body, req) in per_kind.items()]


async def run_stranger(sl: Slice, target_node: str) -> tuple[int, list[str]]:
    from mlsysops.agents.agent_base import MLSysOpsAgent, RequestError, RequestFailed

    jid = f"stranger-{os.urandom(3).hex()}@localhost"
    agent = MLSysOpsAgent(jid, "stranger-password", port=sl.prosody.port, force_xmpp=True, request_timeout=3,
                          request_retries=0)
    await agent.start_agent(timeout=20)   # in-band registration of its own account
    accepted: list[str] = []
    try:
        for target, kind, body, is_request in stranger_messages(sl, target_node):
            to = f"{target}@localhost"
            if not is_request:
                await agent.inform(to, kind, body)
                continue
            try:
                await agent.request(to, kind, body, timeout=3, retries=0)
                accepted.append(f"{kind} -> {target}")
            except RequestFailed:
                pass                    # refused: what we want
            except RequestError:
                pass                    # no answer: nothing done either (checked by the state below)
        await asyncio.sleep(2.0)        # let anything accepted take effect
    finally:
        await agent.stop()
    return len(accepted), accepted


# -- faults ---------------------------------------------------------------------------------------
def _outcomes_or_empty(sl: Slice, policy: str) -> dict[str, dict[str, int]]:
    try:
        return sl.policy_outcomes(policy)
    except (OSError, ValueError, KeyError):
        return {}


def _policy_effect(sl: Slice, policy: str, expected: str, notes: list[str]) -> int:
    """Note what each cluster recorded for the chaos policy; 1 (a wrong outcome) unless every cluster loaded
    it and recorded the overrun as `expected`: a policy that never ran proves nothing."""
    seen = _outcomes_or_empty(sl, policy)
    notes.append("; ".join(f"{c}: " + (", ".join(f"{k} x{v}" for k, v in sorted(seen[c].items())) if c in seen
                                       else "nothing recorded") for c in sl.clusters))
    ok = all(seen.get(c, {}).get(expected) for c in sl.clusters)
    if not ok:
        notes.append(f"NOT EFFECTIVE: not every cluster recorded {expected}")
    return 0 if ok else 1


async def fault(sl: Slice, name: str, args: argparse.Namespace, notes: list[str]) -> int:
    """Apply one fault; returns its wrong actions (stranger actions; for the policy faults 1 when the agents
    did not record the overrun or their memory grew). Returns when the fault has ended."""
    if name == "kill9-node":
        # the node of a component that could move (sensor-reader fits several nodes): a restart that
        # relocated at once would show as a redeploy
        victim = sl.statuses()["env-monitor"]["sensor-reader"]["nodes"][0]
        notes.append(f"node agent {victim}")
        sl.kill9(victim)
        await asyncio.sleep(2.0)
        sl.start(victim)
    elif name == "kill9-cluster":
        sl.kill9("edge-1")
        await asyncio.sleep(2.0)
        sl.start("edge-1")
    elif name == "kill9-continuum":
        sl.kill9("continuum")
        await asyncio.sleep(2.0)
        sl.start("continuum")
    elif name in ("outage-graceful", "outage-kill9"):
        if name == "outage-graceful":
            await sl.prosody.stop()
        else:
            await asyncio.to_thread(sl.prosody.kill_sync)
        await asyncio.sleep(args.outage)
        await sl.prosody.start()
    elif name == "partition":
        edge_nodes = [n for n in sl.nodes if sl.cluster_of.get(n) == "edge-1"]
        notes.append(f"froze {len(edge_nodes)} node agents of edge-1")
        sl.signal_all(edge_nodes, signal.SIGSTOP)
        await asyncio.sleep(9.0)
        sl.signal_all(edge_nodes, signal.SIGCONT)
    elif name == "policy-block":
        path = sl.policy_dir / "chaos_block.py"
        path.write_text(BLOCK_POLICY)
        t0 = time.monotonic()
        polls = ok = 0
        # 22 s in place: every fresh worker blocks again, so the agents record timeouts and back off;
        # meanwhile the slice must stay converged (the agents' loops are not the policy's)
        while time.monotonic() - t0 < 22.0:
            polls += 1
            ok += await asyncio.to_thread(sl.converged)
            await asyncio.sleep(1.0)
        path.unlink()
        notes.append(f"converged in {ok}/{polls} polls while it blocked")
        return _policy_effect(sl, "chaos_block", "timeout", notes) + (polls - ok)
    elif name == "policy-hog":
        path = sl.policy_dir / "chaos_hog.py"
        pids = {c: sl.procs[c].pid for c in sl.clusters}       # the policy directory is every cluster's
        base = {c: rss_mb(pid) for c, pid in pids.items()}
        peak = dict(base)
        worker_peak = {c: 0.0 for c in pids}
        path.write_text(HOG_POLICY)
        t0 = time.monotonic()
        # until every cluster recorded the hog stopped at its limit (or 40 s, or the safety cap)
        while time.monotonic() - t0 < 40:
            peak = {c: max(peak[c], rss_mb(pid)) for c, pid in pids.items()}
            worker_peak = {c: max(worker_peak[c], children_rss_mb(pid)) for c, pid in pids.items()}
            if max(peak.values()) > args.hog_cap_mb:
                break
            seen = await asyncio.to_thread(_outcomes_or_empty, sl, "chaos_hog")
            if all(seen.get(c, {}).get("memory_exceeded") for c in sl.clusters):
                break
            await asyncio.sleep(0.5)
        path.unlink()
        capped = max(peak.values()) > args.hog_cap_mb
        notes.append("agent RSS " + ", ".join(f"{c} {base[c]:.0f} -> {peak[c]:.0f} MB" for c in sl.clusters)
                     + ", workers' peak " + ", ".join(f"{worker_peak[c]:.0f}" for c in sl.clusters)
                     + f" MB in {time.monotonic() - t0:.0f}s"
                     + (" (safety cap hit: the agents did not bound it)" if capped else " (bounded)"))
        await asyncio.sleep(3.0)      # rescan removes the policy; the memory stays with the processes
        grown = [c for c, pid in pids.items() if rss_mb(pid) > base[c] + 256]
        if grown:
            notes.append(f"restarted {', '.join(grown)} to free the memory")
            for c in grown:
                sl.kill9(c)
                sl.start(c)
        return _policy_effect(sl, "chaos_hog", "memory_exceeded", notes) + (1 if capped or grown else 0)
    elif name == "stranger":
        node = sl.statuses()["env-monitor"]["aggregator"]["nodes"][0]
        before = (sl.live_instances(), sorted(a["name"] for a in sl.get("/api/v1/apps")), sl.get("/api/v1/mode"))
        n, accepted = await run_stranger(sl, node)
        after = (sl.live_instances(), sorted(a["name"] for a in sl.get("/api/v1/apps")), sl.get("/api/v1/mode"))
        changed = [what for what, b, a in zip(("instances", "apps", "mode"), before, after, strict=True) if b != a]
        if accepted:
            notes.append("accepted: " + ", ".join(accepted))
        if changed:
            notes.append("changed: " + ", ".join(changed))
        return n + len(changed)
    else:
        raise SystemExit(f"unknown fault {name}")
    return 0


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="mlsysops-chaos-"))
    prosody = ProsodyServer(work / "prosody")
    sl: Slice | None = None
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        await prosody.start()
        sl = Slice(work, prosody)
        await asyncio.to_thread(sl.start_all)
        for path in APPS.values():
            await asyncio.to_thread(subprocess.run, [*_cmd(), "apply", "-f", str(path), "--api", sl.api,
                                                     "--token", sl.token], env=sl.env, check=True,
                                    capture_output=True)
        first = await converge(sl, 180)
        if first is None:
            print("chaos: the slice did not converge before the first fault; see", work, file=sys.stderr)
            return 1
        print(f"slice up and both apps running after {time.monotonic() - t_start:.1f}s "
              f"({len(sl.procs)} processes)", flush=True)
        for name in args.faults:
            notes: list[str] = []
            before = await asyncio.to_thread(sl.live_instances)
            t_fault = time.monotonic()
            stranger = await fault(sl, name, args, notes)
            took = await converge(sl, args.converge_timeout)
            after = await asyncio.to_thread(sl.live_instances)
            new = [i for i, created in after.items() if i not in before or created != before[i]]
            st = await asyncio.to_thread(sl.statuses)
            lost = [a for a, comps in st.items() if not comps or any(c["status"] != "running" for c in comps.values())]
            rows.append({"fault": name, "apps_lost": len(lost), "redeploys": len(new),
                         "stranger": stranger if name == "stranger" else 0,
                         "wrong": 0 if name == "stranger" else stranger,
                         "converge_s": took, "fault_s": time.monotonic() - t_fault - (took or args.converge_timeout),
                         "notes": "; ".join(notes + ([f"new: {', '.join(new)}"] if new else [])
                                            + ([f"not running: {lost}"] if lost else []))})
            r = rows[-1]
            print(f"  {name:16s} done: converge={r['converge_s'] if took is None else round(took, 1)} "
                  f"redeploys={len(new)} lost={len(lost)}", flush=True)
    finally:
        if sl is not None:
            await asyncio.to_thread(sl.stop_all)
        await prosody.stop()
        # SPADE prints a whole stanza for each message no behaviour took (issue 16: a recovered node agent)
        unmatched = sum(log.read_text(errors="replace").count("No behaviour matched") for log in work.glob("*.log"))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("logs kept in", work)
    print()
    print(f"{'fault':16s} {'fault_s':>7s} {'apps_lost':>9s} {'redeploys':>9s} {'stranger':>8s} {'wrong':>5s} "
          f"{'converge_s':>10s}  notes")
    for r in rows:
        conv = "never" if r["converge_s"] is None else f"{r['converge_s']:.1f}"
        print(f"{r['fault']:16s} {r['fault_s']:7.1f} {r['apps_lost']:9d} {r['redeploys']:9d} {r['stranger']:8d} "
              f"{r['wrong']:5d} {conv:>10s}  {r['notes']}")
    convs = [r["converge_s"] for r in rows]
    max_conv = "inf" if any(c is None for c in convs) else f"{max(convs, default=0.0):.1f}"
    print(f"total run {time.monotonic() - t_start:.0f}s; 'No behaviour matched' lines in the agents' logs: {unmatched}")
    print(f"apps_lost={sum(r['apps_lost'] for r in rows)} needless_redeploys={sum(r['redeploys'] for r in rows)} "
          f"stranger_actions={sum(r['stranger'] for r in rows)} max_converge_s={max_conv} "
          f"policy_faults_missed={sum(r['wrong'] for r in rows)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outage", type=float, default=15.0, help="XMPP outage length (s)")
    ap.add_argument("--only", default="", help="comma-separated faults to run (default: all, in order)")
    ap.add_argument("--hog-cap-mb", type=float, default=1536.0, help="safety cap on the hog's agent RSS")
    ap.add_argument("--converge-timeout", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (agent logs)")
    args = ap.parse_args()
    args.faults = [f for f in args.only.split(",") if f] or FAULTS
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        ap.error(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
