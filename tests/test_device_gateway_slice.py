"""Devices behind a gateway, end to end: simulated devices on a real mosquitto broker, the demo slice's
continuum agent, `edge-1` cluster agent and `edge-rpi-1` node agent (the gateway) over a real prosody server.

A device announces over MQTT, becomes a far-edge node of the cluster, seen alive by the continuum (its description: layer, sensors,
`gateway:` and `service-slots:` labels), gets a component placed on it through the gateway, dies (socket
closed: the broker's last will), is lost through the cluster's lost-node path and its component is
relocated onto the other device (the continuum sees the dead one down); the other device unregisters and leaves the inventory.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from mlsysops.agents.agent_base import RequestFailed
from mlsysops.agents.device_kinds import DeviceJoin, DeviceKind, DeviceLeave
from mlsysops.agents.payloads import AppDeploy
from mlsysops.agents.protocol import Kind
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_assembly import SliceAssembly
from mlsysops.mechanisms.sim_placement import sim_node_spec
from mlsysops.node.device_gateway import DeviceGateway
from mlsysops.node.substrate import SimNodeSubstrate
from mlsysops.sim import SimContinuum
from mlsysops.sim.mqtt_device import SimMqttDevice
from tests.support import AGENT_PASSWORD, DEMO, until

pytestmark = [pytest.mark.xmpp, pytest.mark.asyncio(loop_scope="session")]
GW = "edge-rpi-1"
APP = {"MLSysOpsApp": {"name": "farm", "cluster_placement": {"cluster_id": ["edge-1"]}, "components": [{
    "metadata": {"name": "sampler"},
    "node_placement": {"continuum_layer": ["far_edge"], "labels": ["runtime:embserve"]},
    "sensors": [{"temperature": {"measurement_unit": "celsius"}}],
    "containers": [{"image": "embserve/sampler:1",
                    "platform_requirements": {"cpu": {"requests": "100m"}, "memory": {"requests": "32Mi"}}}]}]}}


def on_device(edge: Any, device: str) -> list[str]:
    return [iid for iid, row in edge.instances.items() if row["node"] == device and row["status"] == "running"]


async def test_device_joins_gets_a_component_is_lost_and_it_moves(prosody: Any, mosquitto: Any) -> None:
    spec = load_slice(DEMO)
    assembly = SliceAssembly(spec, password=AGENT_PASSWORD, suffix="-" + uuid.uuid4().hex[:6],
                             xmpp_port=prosody.port, force_xmpp=True,
                             overrides={"all": {"heartbeat": 0.3, "liveness_misses": 3, "status_report": 0.5,
                                                "node_grace": 0.5}})
    sim = SimContinuum.from_specs([sim_node_spec(n) for n in spec.nodes.values()], seed=1)
    continuum = assembly.continuum_agent()   # the real one: it must see the devices as nodes of edge-1
    gateway = DeviceGateway(GW, host=mosquitto.host, port=mosquitto.port, command_timeout=5.0)
    edge = assembly.cluster_agent("edge-1", assembly.placement_for("edge-1", sim=sim))
    node = assembly.node_agent(GW, SimNodeSubstrate(sim, GW), device_gateway=gateway)
    devices = [SimMqttDevice(name, GW, host=mosquitto.host, port=mosquitto.port, slots=1, heartbeat_s=0.5,
                             sensors=[{"type": "temperature", "model": "ds18b20"}]) for name in ("mcu-a", "mcu-b")]
    started: list[Any] = []
    try:
        for agent in (continuum, edge, node):
            await agent.start_agent(timeout=10)
            started.append(agent)
        await until(lambda: node.membership.connected, 20, "the gateway node registered with its cluster")
        for dev in devices:
            await dev.start()
        await until(lambda: {"mcu-a", "mcu-b"} <= set(edge._alive_nodes()), 15, "both devices are cluster nodes")
        await until(lambda: {"mcu-a", "mcu-b"} <= {n for n, up in continuum.node_state("edge-1")[0].items() if up},
                    20, "the continuum sees both devices as alive nodes of edge-1")
        desc = edge.nodes["mcu-a"]
        assert str(desc.continuum_layer) == "far_edge" and [r.type for r in desc.sensor_refs] == ["temperature"]
        assert f"gateway:{GW}" in desc.labels and "service-slots:1" in desc.labels
        child = next(c for c in edge.children.children() if c.agent_id == "mcu-a")
        assert child.role.value == "far_edge"
        cluster_jid = assembly.jid("cluster", "edge-1")
        with pytest.raises(RequestFailed, match=r"mcu-x: invalid description: (.|\n)*continuum_layer: required field is missing"):
            await node.request(cluster_jid, DeviceKind.JOIN, DeviceJoin(device="mcu-x", description={
                "apiVersion": "mlsysops.eu/v1", "kind": "MLSysOpsNode", "metadata": {"name": "mcu-x"}, "spec": {}}))
        with pytest.raises(RequestFailed, match="unknown device mcu-y"):
            await node.request(cluster_jid, DeviceKind.LEAVE, DeviceLeave(device="mcu-y", reason="x", lost=True))
        assert "mcu-x" not in edge.nodes

        await continuum.request(assembly.jid("cluster", "edge-1"), Kind.APP_DEPLOY,
                                AppDeploy(app="farm", description=APP, components=["sampler"]))
        first = await until(lambda: (on_device(edge, "mcu-a") and "mcu-a") or (on_device(edge, "mcu-b") and "mcu-b"),
                            20, "the component runs on a device, placed through the gateway")
        host = next(d for d in devices if d.name == first)
        other = next(d for d in devices if d.name != first)
        assert [s["component"] for s in host.services.values()] == ["sampler"]

        host.kill()   # power loss: the broker publishes the last will
        try:
            await until(lambda: on_device(edge, other.name), 30, "relocated onto the other device")
        except AssertionError:
            print([(r.stage, r.outcome, r.reason) for r in edge.decision_log.query(limit=60)], dict(edge.instances))
            raise
        assert not next(c for c in edge.children.children() if c.agent_id == first).alive
        await until(lambda: continuum.node_state("edge-1")[0].get(first) is False, 20,
                    "the continuum sees the dead device as down")
        assert [s["component"] for s in other.services.values()] == ["sampler"]
        events = [r.reason for r in edge.decision_log.query(limit=200)]
        assert any(f"node {first} lost" in e and "last will" in e for e in events), events

        await other.unregister()
        await until(lambda: other.name not in edge.nodes, 10, "an unregistered device leaves the inventory")
        assert any(f"device {other.name} unregistered" in r.reason for r in edge.decision_log.query(limit=200))
        gw_events = [r.reason for r in node.decision_log.query(limit=200)]
        assert any(f"device {first} lost" in e for e in gw_events)
    finally:
        for dev in devices:
            await dev.stop()
        for agent in reversed(started):
            await agent.stop()
