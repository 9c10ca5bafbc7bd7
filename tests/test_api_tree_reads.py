"""Other agents' decisions and telemetry plans reach the API over the protocol (every message over
prosody), so an API with no in-process reference to the cluster and node agents (`ApiBackend(continuum)`,
as `mlsysops agent continuum` builds it) answers as `mlsysops up` does; a cluster that does not answer is
reported, within a bounded time."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import pytest_asyncio

from mlsysops.agents.protocol import Kind
from mlsysops.agents.tree_reads import DecisionsPage, budget_page, merge_pages
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role
from tests.support import demo_slice, formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
FAST = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
ADMIN = "admin-" + uuid.uuid4().hex
V1 = "/api/v1"


def rec(ts: float, agent: str = "a", size: int = 0) -> dict:
    return {"id": f"{agent}-{ts}", "ts": ts, "agent": agent, "stage": "plan", "outcome": "planned",
            "reason": "r", "inputs": "x" * size}


async def test_a_page_keeps_the_newest_records_that_fit():
    records = [rec(float(i), size=100) for i in range(50)]
    kept, cut = budget_page(records, limit=50, budget=1000)
    assert cut and kept == records[-len(kept):] and 0 < len(kept) < 10
    kept, cut = budget_page(records, limit=5, budget=None)
    assert not cut and kept == records[-5:]
    big = rec(1.0, size=10_000)
    kept, cut = budget_page([big], limit=5, budget=1000)
    assert not cut and kept[0]["id"] == big["id"] and "omitted" in kept[0]["inputs"]   # slimmed, not lost


async def test_a_merge_stops_where_a_truncated_source_leaves_a_gap():
    full = DecisionsPage([rec(1.0, "a"), rec(2.0, "a"), rec(5.0, "a")])
    partial = DecisionsPage([rec(3.0, "b"), rec(4.0, "b")], truncated=True, unanswered={"n1": "lost"})
    page = merge_pages([full, partial], limit=10, budget=None)
    assert [r["ts"] for r in page.records] == [3.0, 4.0, 5.0]     # below 3.0, b's records are unknown
    assert page.truncated and page.unanswered == {"n1": "lost"}
    page = merge_pages([full, partial], limit=2, budget=None)
    assert [r["ts"] for r in page.records] == [4.0, 5.0] and not page.truncated   # the newest 2 are complete


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def two_modes(prosody):
    """The demo slice with its `mlsysops up` API, and a second API over the continuum agent alone."""
    async with demo_slice(prosody.port, FAST, {ADMIN: Role.admin}) as (rt, up_url):
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        server = ApiServer(create_app(ApiBackend(rt.continuum, tree_wait=1.0), {ADMIN: Role.admin}))
        alone_url = await server.start()
        try:
            yield rt, up_url, alone_url
        finally:
            await server.stop()


def http(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=15)


async def test_cluster_and_node_decisions_without_an_in_process_reference(two_modes):
    rt, up_url, alone_url = two_modes
    node = next(iter(rt.spec.cluster_nodes("edge-1"))).name
    async with http(alone_url) as alone, http(up_url) as up:
        await until(lambda: rt.clusters["edge-1"].decisions(limit=1) and rt.nodes[node].decisions(limit=1), 10,
                    "no decisions yet")
        edge = (await alone.get(f"{V1}/decisions", params={"agent": "edge-1", "limit": 50})).json()
        assert edge and {d["agent"] for d in edge} == {"edge-1"}
        assert [d["ts"] for d in edge] == sorted(d["ts"] for d in edge)
        of_node = (await alone.get(f"{V1}/decisions", params={"agent": node})).json()
        assert of_node and {d["agent"] for d in of_node} == {node}
        # the same question gives the same answer in both modes (a fixed window: the logs keep growing)
        t = time.time()
        params = {"until": t, "since": t - 30, "limit": 1000}
        a = (await alone.get(f"{V1}/decisions", params=params)).json()
        b = (await up.get(f"{V1}/decisions", params=params)).json()
        assert [d["id"] for d in a] == [d["id"] for d in b]
        assert {rt.continuum.agent_id, "edge-1", "cloud-1", node} <= {d["agent"] for d in a}
        assert all(d["outcome"] != "unanswered" for d in a)
        config = (await alone.get(f"{V1}/telemetry/config")).json()
        assert set(config) == {rt.continuum.agent_id, *rt.spec.clusters, *rt.spec.nodes}
        assert all("metrics" in c and "interval" in c for c in config.values())


async def test_a_cluster_that_does_not_answer_is_reported_within_the_timeout(two_modes):
    rt, _, alone_url = two_modes
    cloud = rt.clusters["cloud-1"]
    answering = cloud._handlers[str(Kind.DECISIONS_QUERY)].handler

    async def silent(_env):
        await asyncio.sleep(30)

    cloud.on(Kind.DECISIONS_QUERY, silent)
    try:
        async with http(alone_url) as alone:
            started = time.monotonic()
            rows = (await alone.get(f"{V1}/decisions", params={"limit": 1000})).json()
            elapsed = time.monotonic() - started
        missing = [d for d in rows if d["outcome"] == "unanswered"]
        assert [d["agent"] for d in missing] == ["cloud-1"] and "within" in missing[0]["reason"]
        assert {"edge-1", rt.continuum.agent_id} <= {d["agent"] for d in rows}   # the others still answer
        assert elapsed < 10, elapsed    # bounded by the API's wait (1 s here), not by the silent cluster
    finally:
        cloud.on(Kind.DECISIONS_QUERY, answering)


async def test_the_records_of_one_node_do_not_wait_for_its_silent_siblings(two_modes):
    rt, _, alone_url = two_modes
    node, sibling = [n.name for n in rt.spec.cluster_nodes("edge-1")][:2]
    quiet = rt.nodes[sibling]
    answering = quiet._handlers[str(Kind.DECISIONS_QUERY)].handler

    async def silent(_env):
        await asyncio.sleep(30)

    quiet.on(Kind.DECISIONS_QUERY, silent)
    try:
        async with http(alone_url) as alone:
            rows = (await alone.get(f"{V1}/decisions", params={"agent": node, "limit": 20})).json()
            everyone = (await alone.get(f"{V1}/decisions", params={"limit": 1000})).json()
        assert rows and {d["agent"] for d in rows} == {node}     # the sibling is not asked, so not missing
        assert [d["agent"] for d in everyone if d["outcome"] == "unanswered"] == [sibling]
    finally:
        quiet.on(Kind.DECISIONS_QUERY, answering)


async def test_a_lost_node_is_named_not_dropped(two_modes):
    rt, _, alone_url = two_modes
    victim = next(iter(rt.spec.cluster_nodes("edge-1"))).name
    rt.sim.crash_node(victim)
    edge = rt.clusters["edge-1"]
    await until(lambda: any(c.agent_id == victim and not c.alive for c in edge.children.children()), 20,
                "the cluster did not see the node agent lost")
    async with http(alone_url) as alone:
        rows = (await alone.get(f"{V1}/decisions", params={"limit": 10})).json()
        config = (await alone.get(f"{V1}/telemetry/config")).json()
    assert any(d["agent"] == victim and d["outcome"] == "unanswered" and "lost" in d["reason"] for d in rows)
    assert "lost" in config[victim]["error"]
