"""Telemetry end to end on a demo slice over prosody: the OTel SDK feeds the node's Monitor windows, digests
carry it to the cluster and the continuum, the API and /metrics serve it, and a policy that declares a new
metric makes the nodes collect it without a restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from mlsysops.continuum.api_auth import Role
from tests.support import demo_slice, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[1]
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5,
                "digest_interval": 0.5}}
TOKEN = "admin-" + uuid.uuid4().hex
V1 = "/api/v1"

POWER_POLICY = """
def initialize():
    return {"scope": "global", "telemetry": {"metrics": ["sim.node.power"]},
            "configuration": {"analyze_interval": 5}}
async def analyze(context, app, system, mechanisms, telemetry, ml):
    return False, context
async def plan(context, app, system, mechanisms, telemetry, ml):
    return {}, context
"""


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def slice_api(prosody):
    async with demo_slice(prosody.port, FAST, {TOKEN: Role.admin}) as (rt, url):
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=15) as client:
            yield rt, client


async def test_sdk_samples_reach_monitor_windows_digests_and_the_api(slice_api):
    rt, client = slice_api
    node = rt.nodes["edge-rpi-1"]
    # The node's Monitor window holds what its MeterProvider recorded (read back through the SDK).
    await until(lambda: node.knowledge.window("system.cpu.utilization", {"node": "edge-rpi-1"}), 10,
                "no cpu samples in the node's knowledge")
    sdk = {(m, tuple(sorted(lbl.items()))): v for m, lbl, v in node.telemetry.collect()}
    assert ("system.cpu.utilization", (("node", "edge-rpi-1"),)) in sdk
    # Digest node -> cluster.
    cluster = rt.clusters["edge-1"]
    await until(lambda: cluster.knowledge.latest("system.cpu.utilization", node="edge-rpi-1") is not None, 10,
                "cluster never received the node's digest")
    assert node.last_digest["bytes"] > 0 and node.last_digest["series"] >= 5
    # Digest cluster -> continuum, with the cluster label added.
    cont = rt.continuum
    await until(lambda: cont.slice_telemetry.latest("system.cpu.utilization", node="edge-rpi-1",
                                                    cluster="edge-1") is not None, 10,
                "continuum never received the cluster's digest")
    # ... and the API serves it, with window stats and points.
    rows = (await client.get(f"{V1}/telemetry", params={"metric": "system.cpu.utilization",
                                                         "node": "edge-rpi-1", "window": 60})).json()
    assert len(rows) == 1 and rows[0]["labels"] == {"node": "edge-rpi-1", "cluster": "edge-1"}
    row = rows[0]
    assert 0.0 <= row["min"] <= row["latest"] <= row["max"] <= 1.0 and row["points"]
    assert row["digest"]["count"] >= 1
    sizes = (await client.get(f"{V1}/telemetry/digests")).json()
    assert set(sizes["received"]) == {"cloud-1", "edge-1"}
    assert all(0 < d["bytes"] < 40 * 1024 for d in sizes["received"].values())
    await until(lambda: cont.slice_telemetry.latest("mlsysops.telemetry.digest.bytes", agent=node.agent_id),
                10, "node digest sizes never reached the continuum")


async def test_prometheus_endpoint_serves_the_slice(slice_api):
    rt, client = slice_api
    cont = rt.continuum
    await until(lambda: len({dict(k).get("node") for k in cont.slice_telemetry.series("system.cpu.utilization")})
                == len(rt.spec.nodes), 10, "not every node's cpu reached the continuum")
    await until(lambda: cont.digest_stats, 5, "no digest stats")
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anon:   # open, like node-exporter
        resp = await anon.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for node in rt.spec.nodes:
        assert f'system_cpu_utilization{{host_name="{node}"' in text, node
    assert 'mlsysops_agent_decisions_total{' in text
    assert 'target_info{' in text and 'service_name="mlsysops-continuum"' in text
    assert "# TYPE system_memory_usage_bytes gauge" in text


async def test_a_policy_declaring_a_metric_makes_nodes_collect_it_without_restart(slice_api):
    rt, client = slice_api
    cluster = rt.clusters["cloud-1"]
    node = rt.nodes["cloud-vm-1"]
    assert not node.collection.wants("sim.node.power")          # not a default metric
    await asyncio.sleep(0.5)
    assert node.knowledge.window("sim.node.power", {"node": "cloud-vm-1"}) == []
    resp = await client.put(f"{V1}/policies/cloud-1/power_watch", content=POWER_POLICY,
                            headers={"Content-Type": "text/x-python"})
    assert resp.status_code == 200, resp.text
    # The cluster asks its nodes (config.update over XMPP); the node's Monitor collects it from then on.
    await until(lambda: node.knowledge.window("sim.node.power", {"node": "cloud-vm-1"}), 10,
                "the node never collected the newly declared metric")
    await until(lambda: cluster.knowledge.latest("sim.node.power", node="cloud-vm-1") is not None, 10,
                "the metric never reached the cluster")
    config = (await client.get(f"{V1}/telemetry/config")).json()
    assert "policy:power_watch" in config["cloud-1"]["requested"]["sim.node.power"]
    assert config["cloud-vm-1"]["requested"]["sim.node.power"] == ["parent"]
    assert "sim.node.power" not in config["edge-rpi-1"]["metrics"]   # another cluster: not asked
    # Disabling the policy stops the collection again.
    assert (await client.post(f"{V1}/policies/cloud-1/power_watch/disable")).status_code == 200
    await until(lambda: not node.collection.wants("sim.node.power"), 10, "collection did not shrink")
    assert any("telemetry collection changed" in r["reason"] for r in node.decisions(limit=200))


async def test_dashboard_state_and_stream(slice_api):
    rt, client = slice_api
    state = (await client.get(f"{V1}/dashboard/state")).json()
    assert {c["id"] for c in state["clusters"]} == {"cloud-1", "edge-1"}
    assert {n["name"] for c in state["clusters"] for n in c["nodes"]} == set(rt.spec.nodes)

    async def powered() -> bool:   # node energy (sim power model -> telemetry digests) in the dashboard's snapshot
        s = (await client.get(f"{V1}/dashboard/state")).json()
        return any((n.get("power") or 0) > 0 and (n.get("energy") or 0) > 0 for c in s["clusters"] for n in c["nodes"])
    await until(powered, 20, "node power and energy in the dashboard state")
    s = (await client.get(f"{V1}/dashboard/state")).json()
    for n in (n for c in s["clusters"] for n in c["nodes"]):
        assert n["status"] == ("Ready" if n["alive"] else "NotReady" if n["alive"] is False else "Unknown")
        if n["cpu"] is not None:   # each value with the time it was sampled: the page plots it there
            assert 0 <= s["t"] - n["at"]["cpu"] < 60, n
    for app in s["apps"]:
        assert set(app["why"]) == {"converged", "summary", "components"}
        assert {c["component"] for c in app["why"]["components"]} == {c["component"] for c in app["components"]}
    async with client.stream("GET", f"{V1}/stream", params={"interval": 0.2}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = 0
        async for line in resp.aiter_lines():
            if line.startswith("event: snapshot"):
                events += 1
                if events == 2:
                    break
    assert events == 2
    page = await client.get("/dashboard")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert (await client.get("/dashboard/static/uPlot.iife.min.js")).status_code == 200
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anon:
        assert (await anon.get(f"{V1}/stream")).status_code == 401     # the data needs the token


async def test_grafana_dashboard_queries_series_the_slice_exports(slice_api):
    """Grafana cannot run here, so check what can be: the JSON is a dashboard whose every PromQL metric
    name is a series of the live /metrics, and every panel's label filters use labels that exist."""
    import json
    import re

    rt, client = slice_api
    for f in sorted((ROOT / "examples" / "apps").glob("*.yaml")):
        if not rt.continuum.apps.get(f.stem):
            rt.apply_file(f)
    await until(lambda: rt.continuum.slice_telemetry.latest("response_time_ms") is not None, 30,
                "no component QoS reached the continuum")
    await until(lambda: rt.continuum.slice_telemetry.latest("cpu_usage_cores") is not None, 10, "no cpu use")
    await asyncio.sleep(1.0)   # one more digest so every series is in the exposition
    text = (await client.get("/metrics")).text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    labels = set(re.findall(r'([a-z_]+)="', text))
    dash = json.loads((ROOT / "examples" / "grafana" / "mlsysops-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and all("gridPos" in p for p in dash["panels"])
    promql_words = {"sum", "rate", "count", "max", "by", "label_values"}
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            names = {n for n in re.findall(r"\b([a-z_][a-z0-9_]*)\s*[{\[(]", expr) if n not in promql_words}
            assert names, expr
            assert names <= exported, (panel["title"], names - exported)
            used = set(re.findall(r"([a-z_]+)\s*=~?\"", expr))
            assert used <= labels, (panel["title"], used - labels)
