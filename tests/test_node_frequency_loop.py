"""Node knobs in the node agent's own MAPE loop, over the demo slice on prosody: the frequency policy lowers
a simulated node's clock while its component keeps its target (decision explained), the cluster drives
the knob with `node.knob`, and bad knob commands are refused with the reason."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from mlsysops.agents.agent_base import RequestFailed
from mlsysops.agents.payloads import KnobCommand
from mlsysops.agents.protocol import Kind
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from tests.support import DEMO, ROOT, formed, until

pytestmark = [pytest.mark.xmpp, pytest.mark.asyncio(loop_scope="session")]
NODE = "edge-server-1"
FAST = {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}


async def test_frequency_policy_lowers_the_clock_and_the_cluster_drives_the_knob(prosody: Any) -> None:
    overrides = {"all": FAST, "node": {
        "policies": ["mlsysops.policies.node_overload", "mlsysops.policies.frequency_scaling"],
        "policy_settings": {"frequency_scaling": {"default_target_ms": 400.0, "lower_after": 1}}}}
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides=overrides)
    await rt.start()
    try:
        await until(lambda: formed(rt), 20, "hierarchy formed")
        rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
        top = rt.sim.node(NODE).cpu_freqs_hz[-1]
        await until(lambda: any(i.node == NODE and str(i.state) == "running" for i in rt.sim.instances()), 30,
                    f"a component runs on {NODE}")
        await until(lambda: rt.sim.cpu_frequency(NODE) < top, 30, "the node's policy lowered its clock")
        plans = [d for d in rt.nodes[NODE].decisions(limit=500)
                 if d["stage"] == "plan" and d.get("policy") == "frequency_scaling"]
        assert plans and "lowest step" in plans[-1]["explanation"]["summary"]
        assert plans[-1]["alternatives"]
        for inst in rt.sim.instances(node=NODE):
            if str(inst.state) == "running":
                assert rt.sim.component_metrics(inst.instance_id)["response_time_ms"] < 400.0

        cluster, node_jid = rt.clusters["edge-1"], rt.assembly.jid("node", NODE)
        with pytest.raises(RequestFailed, match="not an available frequency"):
            await cluster.request(node_jid, Kind.NODE_KNOB, KnobCommand(
                knob="cpu_frequency", command={"command": "set_speed", "hz": 9e9, "governor": "userspace"}))
        with pytest.raises(RequestFailed, match="is not a knob"):
            await cluster.request(node_jid, Kind.NODE_KNOB, KnobCommand(knob="gpu_frequency"))
        reply = await cluster.request(node_jid, Kind.NODE_KNOB, KnobCommand(
            knob="cpu_frequency", command={"command": "set_governor", "governor": "performance"}))
        assert reply.body["ok"] and reply.body["state"]["permitted"] is True
        await until(lambda: rt.nodes[NODE].knowledge.latest("hw.energy", node=NODE), 10, "energy in node telemetry")
    finally:
        await rt.stop()
