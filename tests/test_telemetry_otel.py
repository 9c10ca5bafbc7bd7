"""The OTel side of an agent without a slice: SDK round trip, Prometheus text, OTLP/HTTP push to a real local
receiver, an unreachable collector, digests and the collection plan."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from mlsysops.agents.mape import Knowledge
from mlsysops.agents.telemetry import AgentTelemetry, CollectionPlan, app_qos_metrics
from mlsysops.agents.telemetry import digest as digests
from mlsysops.agents.telemetry.io_counters import IoCounters

NODE = {"node": "n1"}
COMP = {"node": "n1", "app": "shop", "component": "web", "instance": "shop.web.1"}


def test_sdk_round_trip_maps_labels_to_semantic_conventions_and_back():
    t = AgentTelemetry("n1", "node", prometheus=True)
    try:
        t.publish([("system.cpu.utilization", NODE, 0.25), ("response_time_ms", COMP, 12.5)])
        got = {(m, tuple(sorted(lbl.items()))): v for m, lbl, v in t.collect()}
        assert got[("system.cpu.utilization", (("node", "n1"),))] == 0.25
        assert got[("response_time_ms", tuple(sorted(COMP.items())))] == 12.5
        t.publish([("system.cpu.utilization", NODE, 0.5)])     # a series absent now disappears
        assert [(m, v) for m, _, v in t.collect()] == [("system.cpu.utilization", 0.5)]
        t.count("mlsysops.agent.decisions", 2, {"agent": "n1", "stage": "plan"})
        text = t.prometheus_text().decode()
        assert 'system_cpu_utilization{host_name="n1"} 0.5' in text
        assert 'mlsysops_agent_decisions_total{mlsysops_agent="n1",stage="plan"} 2.0' in text
        assert 'service_instance_id="n1"' in text and "otel_scope_name" not in text
    finally:
        t.shutdown()


def test_io_rates_become_the_semantic_conventions_cumulative_counters():
    io = IoCounters()
    rest, first = io.fold({"system.cpu.utilization": 0.5, "system.network.io.receive": 1000.0,
                           "system.disk.io.write": 10.0}, now=100.0)
    assert rest == {"system.cpu.utilization": 0.5}
    assert first == [("system.network.io", {"network.io.direction": "receive"}, 0.0),   # no interval yet
                     ("system.disk.io", {"disk.io.direction": "write"}, 0.0)]
    _, second = io.fold({"system.network.io.receive": 1000.0, "system.disk.io.write": 10.0}, now=102.0)
    _, third = io.fold({"system.network.io.receive": 500.0, "system.disk.io.write": -1.0}, now=103.0)
    assert [v for _, _, v in second] == [2000.0, 20.0] and [v for _, _, v in third] == [2500.0, 20.0]

    t = AgentTelemetry("n1", "node", prometheus=True)
    try:
        t.publish([(name, {**NODE, **attrs}, v) for name, attrs, v in third])
        text = t.prometheus_text().decode()
        assert "# TYPE system_network_io_bytes_total counter" in text
        assert 'system_network_io_bytes_total{host_name="n1",network_io_direction="receive"} 2500.0' in text
        assert 'system_disk_io_bytes_total{disk_io_direction="write",host_name="n1"} 20.0' in text
        back = {(m, lbl.get("network.io.direction")): v for m, lbl, v in t.collect()}
        assert back[("system.network.io", "receive")] == 2500.0     # the Monitor reads the total back
    finally:
        t.shutdown()


def test_two_agents_in_one_process_keep_separate_registries():
    a, b = AgentTelemetry("a", "node", prometheus=True), AgentTelemetry("b", "node", prometheus=True)
    try:
        a.publish([("system.cpu.utilization", {"node": "a"}, 0.1)])
        b.publish([("system.cpu.utilization", {"node": "b"}, 0.2)])
        assert 'host_name="b"' not in a.prometheus_text().decode()
        assert 'host_name="a"' not in b.prometheus_text().decode()
    finally:
        a.shutdown()
        b.shutdown()


def test_serve_prometheus_on_its_own_port():
    import urllib.request
    t = AgentTelemetry("n1", "node", prometheus=True)
    try:
        t.publish([("system.memory.usage", NODE, 1024.0)])
        port = t.serve_prometheus(0)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'system_memory_usage_bytes{host_name="n1"} 1024.0' in body
    finally:
        t.shutdown()


@pytest.mark.asyncio(loop_scope="session")
async def test_otlp_export_reaches_a_local_receiver():
    received: list[ExportMetricsServiceRequest] = []

    async def handle(request: web.Request) -> web.Response:
        msg = ExportMetricsServiceRequest()
        msg.ParseFromString(await request.read())
        received.append(msg)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    t = AgentTelemetry("n1", "node", slice_name="s", otlp_endpoint=f"http://127.0.0.1:{port}", otlp_interval=0.2)
    try:
        t.publish([("system.cpu.utilization", NODE, 0.75)])
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert received, "no OTLP export arrived"
        rm = received[0].resource_metrics[0]
        resource = {a.key: a.value.string_value for a in rm.resource.attributes}
        assert resource["service.instance.id"] == "n1" and resource["mlsysops.slice"] == "s"
        metrics = {m.name: m for sm in rm.scope_metrics for m in sm.metrics}
        point = metrics["system.cpu.utilization"].gauge.data_points[0]
        assert point.as_double == 0.75
        assert {a.key: a.value.string_value for a in point.attributes} == {"host.name": "n1"}
    finally:
        await asyncio.to_thread(t.shutdown)
        await runner.cleanup()


@pytest.mark.asyncio(loop_scope="session")
async def test_an_unreachable_collector_never_blocks_the_agent():
    with socket.socket() as s:        # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    t = AgentTelemetry("n1", "node", otlp_endpoint=f"http://127.0.0.1:{dead}", otlp_interval=0.2)
    try:
        worst = 0.0
        for i in range(40):                      # 2 s of a 20 Hz control loop while exports fail
            started = time.perf_counter()
            t.publish([("system.cpu.utilization", NODE, i / 40)])
            assert t.collect()[0][2] == i / 40
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.05)
        assert worst < 0.5, f"a tick took {worst:.3f}s"
    finally:
        started = time.monotonic()
        await asyncio.to_thread(t.shutdown)
        assert time.monotonic() - started < 10


def test_digest_rows_split_and_apply():
    k = Knowledge()
    now = time.time()
    for i in range(5):
        k.record("system.cpu.utilization", 0.1 * (i + 1), NODE, ts=now - 4 + i)
    k.record("old.metric", 1.0, NODE, ts=now - 100)
    rows = digests.summarise(k, 10.0, now=now)
    assert rows == [["system.cpu.utilization", {"node": "n1"}, 0.5, 0.1, 0.5, 0.3, 5]]
    many = [["m", {"node": f"n{i}", "x": "y" * 50}, 1.0, 1.0, 1.0, 1.0, 1] for i in range(2000)]
    parts = digests.split(many, limit=4096)
    assert len(parts) > 1 and sum(len(p) for p in parts) == 2000
    assert all(digests.size_of(p) <= 4096 for p in parts)
    target, stats = Knowledge(), {}
    assert digests.apply(target, rows, now, extra={"cluster": "c1"}, stats=stats) == 1
    assert target.latest("system.cpu.utilization", cluster="c1", node="n1") == 0.5
    assert next(iter(stats.values()))["mean"] == 0.3


class _Pol:
    def __init__(self, name, metrics, scrape=None):
        self.name, self.metrics, self.scrape_interval = name, metrics, scrape


def test_collection_plan_tracks_who_asked_and_the_interval():
    plan = CollectionPlan({"system.cpu.utilization"}, interval=1.0)
    added, removed = plan.update([_Pol("p", ["gpu.util"], 0.5)], {"shop": ["response_time_ms"]})
    assert added == {"gpu.util", "response_time_ms"} and not removed
    assert plan.interval == 0.5 and plan.wants("gpu.util") and plan.wants("system.cpu.utilization")
    assert plan.describe()["requested"] == {"gpu.util": ["policy:p"], "response_time_ms": ["app:shop"]}
    version = plan.version
    plan.update([_Pol("p", ["gpu.util"], 0.2)], {"shop": ["response_time_ms"]})   # only the interval changes
    assert plan.interval == 0.2 and plan.version == version + 1
    plan.set_parent(["disk.io"], 0.25)
    plan.update([], {})
    assert plan.metrics() == ["disk.io", "system.cpu.utilization"] and plan.interval == 0.25
    assert not plan.wants("gpu.util")


def test_app_qos_metrics_come_from_component_descriptions():
    apps = {"shop": {"name": "shop", "components": [
        {"metadata": {"name": "web"}, "qos_metrics": [{"application_metric_id": "response_time_ms", "target": 50}]},
        {"metadata": {"name": "db"}}]}}
    assert app_qos_metrics(apps) == {"shop": ["response_time_ms"]}
