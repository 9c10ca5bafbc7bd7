"""The far-edge agent against a real cluster agent over the session's prosody server.

The cluster is the demo slice's `edge-1` agent (simulated placement); the far-edge agent takes the place of
the node agent of `far-edge-1`, runs a real local process as its component, and is checked end to end:
registration, heartbeats with its digest, instance reports adopted by the cluster, telemetry, knob
commands, refusal of a stranger, a cluster outage (component kept and restarted offline, reports after),
loss on kill -9 of its process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mlsysops.agents.agent_base import MLSysOpsAgent, RequestFailed
from mlsysops.agents.payloads import KnobCommand
from mlsysops.agents.protocol import Kind
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_assembly import SliceAssembly
from mlsysops.far_edge.agent import FarEdgeAgent
from mlsysops.far_edge.components import Component
from mlsysops.mechanisms.sim_placement import sim_node_spec
from mlsysops.sim import SimContinuum
from tests.support import AGENT_PASSWORD, DEMO, ROOT, until

pytestmark = [pytest.mark.xmpp, pytest.mark.asyncio(loop_scope="session")]
NODE = "far-edge-1"
HB = 0.3


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(prosody: Any) -> Any:
    xmpp_server = prosody   # prosody: pyjabber stops routing to a cluster agent once a far-edge peer subscribes
    spec = load_slice(DEMO)
    assembly = SliceAssembly(spec, password=AGENT_PASSWORD, suffix="-" + uuid.uuid4().hex[:6],
                             xmpp_port=xmpp_server.port, force_xmpp=True,
                             overrides={"cluster": {"heartbeat": HB, "liveness_misses": 3, "status_report": 0.5}})
    sim = SimContinuum.from_specs([sim_node_spec(n) for n in spec.nodes.values()], seed=1)
    placement = assembly.placement_for("edge-1", sim=sim)
    started: list[Any] = []

    async def start() -> Any:
        agent = assembly.cluster_agent("edge-1", placement)
        await agent.start_agent(timeout=10)
        started.append(agent)
        return agent

    fe_jid = assembly.jid("node", NODE)
    account = MLSysOpsAgent(fe_jid, AGENT_PASSWORD, port=xmpp_server.port)   # in-band registration of the account
    await account.start_agent(timeout=10)
    await account.stop()
    yield {"assembly": assembly, "start": start, "fe_jid": fe_jid, "parent": assembly.jid("cluster", "edge-1"),
           "server": xmpp_server}
    for agent in started:
        if agent.is_alive():
            await agent.stop()


def far_edge(cluster: dict[str, Any], components: list[Component], **kw: Any) -> FarEdgeAgent:
    srv = cluster["server"]
    return FarEdgeAgent(cluster["fe_jid"], AGENT_PASSWORD, parent=cluster["parent"], node=NODE,
                        components=components, server="127.0.0.1", port=srv.port, monitor_interval=0.2,
                        report_interval=0.5, backoff_max=1.0, verify_tls=False, **kw)


def sleeper(name: str = "sensor") -> Component:
    return Component.parse({"name": name, "app": "farm", "command": [sys.executable, "-c",
                                                                      "import time; time.sleep(600)"]}, NODE, "c")


def child(agent: Any) -> Any:
    return next((c for c in agent.children.children() if c.agent_id == NODE), None)


async def test_registers_heartbeats_reports_and_keeps_its_component_through_an_outage(cluster: Any) -> None:
    edge = await cluster["start"]()
    fe = far_edge(cluster, [sleeper()], permitted_actions=["cpu_frequency"])
    await fe.start(timeout=10)
    try:
        rec = await until(lambda: child(edge), 15, "far-edge agent registered with its cluster")
        assert rec.role.value == "far_edge"
        first = rec.seq
        await until(lambda: child(edge).seq > first + 2, 10, "heartbeats arrive")
        assert child(edge).digest["far_edge"] is True and child(edge).digest["running"] == 1
        iid = f"{NODE}.farm.sensor"
        await until(lambda: (edge.instances.get(iid) or {}).get("status") == "running", 10,
                    "the cluster adopted the far-edge component from its status report")
        await until(lambda: edge.knowledge.latest("system.memory.utilization", node=NODE) is not None, 10,
                    "telemetry digest applied by the cluster")

        # knob commands: the cluster drives the far edge's cpufreq, which this VM does not have
        with pytest.raises(RequestFailed, match="not supported on this host"):
            await edge.request(cluster["fe_jid"], Kind.NODE_KNOB,
                               KnobCommand(knob="cpu_frequency", command={"command": "set_governor",
                                                                          "governor": "powersave"}))
        with pytest.raises(RequestFailed, match="is not a knob"):
            await edge.request(cluster["fe_jid"], Kind.NODE_KNOB, KnobCommand(knob="warp_drive"))
        reply = await edge.request(cluster["fe_jid"], Kind.CONFIG_UPDATE, {"mode": "ml", "propagate": False})
        assert reply.body["mode"] == "ml"

        # outage: the cluster agent goes away; the component crashes meanwhile and the far edge restarts it
        await edge.stop()
        await until(lambda: not fe.registered, 10, "far edge notices the cluster is gone")
        os.kill(fe.supervisor.components["sensor"].pid, signal.SIGKILL)
        await until(lambda: fe.supervisor.components["sensor"].restarts >= 1
                    and fe.supervisor.components["sensor"].state == "running", 15,
                    "the local rule restarts the crashed component while the cluster is unreachable")
        await until(lambda: len(fe.outbox.telemetry) >= 1, 10, "digests are buffered while offline")
        assert any(d["policy"] == "far_edge.restart_crashed" and not d["connected"] for d in fe.decisions)

        edge2 = await cluster["start"]()
        await until(lambda: child(edge2) is not None and child(edge2).alive, 20, "re-registered with the new cluster")
        await until(lambda: (edge2.instances.get(iid) or {}).get("status") == "running", 10,
                    "the restarted component is reported to the new cluster agent")
        await until(lambda: any(d["policy"] == "far_edge.reconnect" for d in fe.decisions), 10,
                    "buffered state sent after the outage")
        await until(lambda: child(edge2).digest.get("restarts", 0) >= 1, 10, "the restart shows in the digest")
        assert len(fe.outbox.telemetry) == 0
    finally:
        await fe.stop()


async def test_refuses_strangers_and_answers_garbage(cluster: Any, make_agent: Any, prosody: Any) -> None:
    edge = await cluster["start"]()
    fe = far_edge(cluster, [])
    await fe.start(timeout=10)
    stranger = await make_agent(MLSysOpsAgent, "stranger", server=prosody)
    try:
        await until(lambda: fe.registered, 15, "registered")
        with pytest.raises(RequestFailed, match="not authorized"):
            await stranger.request(cluster["fe_jid"], Kind.CONFIG_UPDATE, {"mode": "ml"}, retries=0)
        assert fe.mode == "heuristic"
        # an invalid body from the cluster itself: FAILURE naming the field, the agent keeps running
        with pytest.raises(RequestFailed, match="mode: expected one of"):
            await _raw(edge, cluster["fe_jid"], "config.update", None)
        with pytest.raises(RequestFailed, match="unknown kind 'warp.drive'"):
            await _raw(edge, cluster["fe_jid"], "warp.drive", None)
        # garbage on the wire: no id to answer to, so the FAILURE cannot reference it; counted, nothing crashes
        await _raw(edge, cluster["fe_jid"], "node.knob", "{not json", wait=False)
        await until(lambda: fe.invalid == 2, 10, "the garbage frame was seen and refused")
        assert fe.registered and fe.session_up
    finally:
        await fe.stop()
        await edge.stop()


async def _raw(edge: Any, jid: str, kind: str, text: str | None, wait: bool = True) -> None:
    """A request the cluster's own encoder would refuse (bad body, garbage text, unknown kind), sent raw."""
    from spade.message import Message

    from mlsysops.agents.agent_base import _Pending
    from mlsysops.agents.wire import encode_text, metadata, new_id

    msg_id = new_id()
    fut = asyncio.get_running_loop().create_future()
    edge._pending[msg_id] = _Pending(fut, jid.lower())
    if text is None:
        text = encode_text(msg_id, None, {"mode": "turbo"})
    msg = Message(to=jid, sender=str(edge.jid), body=text)
    for k, v in metadata(kind, "request").items():
        msg.set_metadata(k, v)
    edge._deliver(msg)
    if not wait:
        edge._pending.pop(msg_id, None)
        return
    reply = await asyncio.wait_for(fut, 10)
    edge._pending.pop(msg_id, None)
    raise RequestFailed(str(reply.body.get("reason")))


async def test_process_is_lost_on_kill(cluster: Any, tmp_path: Path) -> None:
    """`python -m mlsysops.far_edge` in its own process; kill -9 and the cluster declares the node lost."""
    edge = await cluster["start"]()
    pw = tmp_path / "pw"
    pw.write_text(AGENT_PASSWORD)
    cfg = tmp_path / "far-edge.json"
    cfg.write_text(json.dumps({"jid": cluster["fe_jid"], "parent": cluster["parent"], "node": NODE,
                               "server": "127.0.0.1", "port": cluster["server"].port, "password_file": str(pw),
                               "report_interval": 0.5, "verify_tls": False}))
    out = (tmp_path / "far-edge.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlsysops.far_edge", "--config", str(cfg)], cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            await until(lambda: child(edge) is not None and child(edge).alive and child(edge).seq > 2, 30,
                        "the far-edge process registered and heartbeats")
        except AssertionError:
            raise AssertionError((tmp_path / "far-edge.log").read_text()[-3000:]) from None
        proc.kill()
        proc.wait(10)
        await until(lambda: not child(edge).alive, 20, "the cluster declared the killed far-edge node lost")
        assert child(edge).lost_reason
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await edge.stop()


async def test_process_runs_under_a_64_mb_cgroup_limit(cluster: Any, tmp_path: Path) -> None:
    """The far-edge process inside a 64 MB memory cgroup registers, heartbeats and is not OOM-killed; a
    process that needs more than the limit in the same kind of cgroup is killed (the limit is real)."""
    from benchmarks.far_edge import memory_cgroup

    group, why = memory_cgroup("64M")
    if group is None:
        pytest.skip(f"no memory cgroup can be created on this host: {why}")
    hog_group, _ = memory_cgroup("64M")
    assert hog_group is not None
    edge = await cluster["start"]()
    pw = tmp_path / "pw"
    pw.write_text(AGENT_PASSWORD)
    cfg = tmp_path / "far-edge.json"
    cfg.write_text(json.dumps({"jid": cluster["fe_jid"], "parent": cluster["parent"], "node": NODE,
                               "server": "127.0.0.1", "port": cluster["server"].port, "password_file": str(pw),
                               "report_interval": 0.5, "verify_tls": False,
                               "components": [{"name": "sensor", "app": "farm", "command": ["sleep", "600"]}]}))
    out = (tmp_path / "far-edge.log").open("w")
    proc = subprocess.Popen(group.wrap([sys.executable, "-m", "mlsysops.far_edge", "--config", str(cfg)]),
                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        hog = subprocess.run(hog_group.wrap([sys.executable, "-c", "x = bytearray(128 << 20); x[::4096] = b'1' * len(x[::4096])"]),
                             capture_output=True, timeout=60)
        assert hog.returncode == -signal.SIGKILL and hog_group.events()["oom_kill"] >= 1, hog
        try:
            await until(lambda: child(edge) is not None and child(edge).alive and child(edge).seq > 2, 30,
                        "the far-edge process under the limit registered and heartbeats")
        except AssertionError:
            raise AssertionError((tmp_path / "far-edge.log").read_text()[-3000:]) from None
        iid = f"{NODE}.farm.sensor"
        await until(lambda: (edge.instances.get(iid) or {}).get("status") == "running", 15,
                    "its component runs and is reported")
        seq = child(edge).seq
        await until(lambda: child(edge).seq >= seq + 10, 30, "ten more heartbeats under the limit")
        assert proc.poll() is None and group.events()["oom_kill"] == 0
        assert str(proc.pid) in (group.path / "cgroup.procs").read_text().split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await edge.stop()
        for g in (group, hog_group):
            g.remove()   # also kills the component the killed agent left behind
            assert not g.path.exists()
