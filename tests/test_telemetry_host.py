"""A node agent on a real host: psutil/sysfs metrics, and QoS metrics pushed by components over HTTP, both
recorded through the OTel SDK into the Monitor windows."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from mlsysops.agents.descriptions import load_obj
from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.agents.telemetry.push import ComponentMetricsInbox, PushServer
from mlsysops.node.agent import NodeAgent
from mlsysops.node.host_substrate import HostNodeSubstrate

NODE_DESC = {"MLSysOpsNode": {"name": "host-1", "cluster_id": "c1", "continuum_layer": "edge",
                              "environment": {"node_type": "native", "os": "ubuntu"},
                              "hardware": {"cpu": {"architecture": "amd64", "cores": 2}, "memory": "4Gi"}}}


RECEIVE = {"node": "host-1", "network.io.direction": "receive"}


def test_host_sample_has_semantic_convention_names_and_rates():
    sub = HostNodeSubstrate("host-1")
    first = sub.sample()
    time.sleep(0.05)
    second = sub.sample()
    assert 0.0 <= second["system.cpu.utilization"] <= 1.0
    assert 0 < second["system.memory.usage"] <= second["system.memory.limit"]
    assert 0.0 < second["system.memory.utilization"] <= 1.0
    assert "system.network.io.receive" not in first                    # a rate needs two samples
    assert second["system.network.io.receive"] >= 0 and second["system.network.io.transmit"] >= 0
    assert second["system.cpu.logical.count"] >= 1


@pytest.mark.asyncio(loop_scope="session")
async def test_push_endpoint_validates_and_expires():
    inbox = ComponentMetricsInbox(ttl=0.3)
    server = PushServer(inbox)
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            ok = await c.post("/v1/component-metrics", json={"app": "shop", "component": "web", "instance": "w-1",
                                                              "metrics": {"response_time_ms": 41.5}})
            assert ok.status_code == 202
            bad = await c.post("/v1/component-metrics", json={"app": "shop", "component": "web",
                                                               "metrics": {"response_time_ms": "fast"}})
            assert bad.status_code == 422 and bad.json()["detail"][0]["path"] == "metrics.response_time_ms"
            unknown = await c.post("/v1/component-metrics", json={"app": "a", "component": "b", "metrics": {"x": 1},
                                                                   "colour": "red"})
            assert unknown.status_code == 422 and unknown.json()["detail"][0]["path"] == "colour"
            assert (await c.post("/v1/component-metrics", content=b"{nope")).status_code == 400
            badname = await c.post("/v1/component-metrics", json={"app": "a", "component": "b",
                                                                   "metrics": {"bad name": 1}})
            assert badname.status_code == 422 and "invalid metric name" in badname.json()["detail"]
        assert inbox.current() == [("response_time_ms", {"app": "shop", "component": "web", "instance": "w-1"},
                                    41.5)]
        await asyncio.sleep(0.35)
        assert inbox.current() == []                                       # stopped pushing: gone
    finally:
        await server.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_node_agent_on_a_host_records_host_and_pushed_metrics(make_agent):
    """...while its OTLP exporter pushes every 0.2 s to a collector that is not there."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    inbox = ComponentMetricsInbox(ttl=30)
    server = PushServer(inbox)
    url = await server.start()
    try:
        agent = await make_agent(NodeAgent, "node", description=load_obj(NODE_DESC).spec,
                                 substrate=HostNodeSubstrate("host-1"), parent="nobody@localhost",
                                 settings=AgentSettings(monitor=0.1, policies=["mlsysops.policies.node_overload"],
                                                        otlp_endpoint=f"http://127.0.0.1:{dead}",
                                                        otlp_interval=0.2))
        agent.pushed_metrics = inbox
        async with httpx.AsyncClient(base_url=url) as c:
            resp = await c.post("/v1/component-metrics", json={"app": "shop", "component": "web",
                                                                "metrics": {"response_time_ms": 12.0}})
            assert resp.status_code == 202
        deadline = time.monotonic() + 10
        labels = {"node": "host-1", "app": "shop", "component": "web", "instance": "web"}
        while not (agent.knowledge.window("response_time_ms", labels)
                   and len(agent.knowledge.window("system.network.io", RECEIVE)) >= 3):
            assert time.monotonic() < deadline, agent.knowledge.metrics()
            await asyncio.sleep(0.05)
        assert agent.knowledge.latest("response_time_ms", app="shop") == 12.0
        # the semantic conventions' cumulative byte counter: never decreases
        totals = [v for _, v in agent.knowledge.window("system.network.io", RECEIVE)]
        assert totals == sorted(totals) and len(totals) >= 3
        assert agent.knowledge.window("system.network.io", {**RECEIVE, "network.io.direction": "transmit"})
        before = len(agent.knowledge.window("system.cpu.utilization", {"node": "host-1"}))
        await asyncio.sleep(1.0)   # several failed exports later, the Monitor still ticks at its pace
        assert len(agent.knowledge.window("system.cpu.utilization", {"node": "host-1"})) >= before + 5
        assert 0.0 <= agent.knowledge.latest("system.cpu.utilization", node="host-1") <= 1.0
        text_names = {m for m, _, _ in agent.telemetry.collect()}
        assert {"system.cpu.utilization", "response_time_ms"} <= text_names
    finally:
        await server.stop()
