"""Management modes across a running demo slice over the real XMPP server and the real HTTP API: the
mode travels down the tree (slice-wide and per app), the cluster's ML policy takes over from the
heuristics it shares a mechanism with, decides with the heuristics' code while it has no model, and
says so in the decision record and the mode status."""

from __future__ import annotations

import uuid

import httpx
import pytest

from mlsysops.continuum.api_auth import Role
from tests.support import demo_slice, formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
FAST = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
ADMIN = "admin-" + uuid.uuid4().hex
V1 = "/api/v1"


def app_body(name: str) -> dict:
    return {"MLSysOpsApp": {
        "name": name, "cluster_placement": {"cluster_id": ["edge-1"]},
        "components": [{
            "metadata": {"name": "worker"},
            "node_placement": {"continuum_layer": ["edge", "edge_infrastructure"]},
            "qos_metrics": [{"application_metric_id": "response_time_ms", "target": 500, "relation": "lower_or_equal"}],
            "containers": [{"image": "registry.example.org/worker:1",
                            "platform_requirements": {"cpu": {"requests": "200m"}, "memory": {"requests": "64Mi"}}}],
        }]}}


async def test_modes_over_the_tree_and_the_ml_policy_reporting_who_acts(prosody):
    async with demo_slice(prosody.port, FAST, {ADMIN: Role.admin}) as (rt, url):
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        cluster = rt.clusters["edge-1"]
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=15) as c:
            assert {p.name for p in cluster.policies.enabled()} >= {"relocation", "filter_score_placement"}
            assert "ml_qos_placement" not in {p.name for p in cluster.policies.enabled()}

            r = await c.put(f"{V1}/mode", json={"mode": "auto"})
            assert r.status_code == 200, r.text
            assert r.json()["children"]["edge-1"]["mode"] == "auto"
            await until(lambda: cluster.mode == "auto" and all(n.mode == "auto" for n in rt.nodes.values()), 10,
                        "the mode did not reach every agent")
            enabled = {p.name for p in cluster.policies.enabled()}
            assert "ml_qos_placement" in enabled and "relocation" not in enabled

            app = "mlmodes-" + uuid.uuid4().hex[:4]
            assert (await c.put(f"{V1}/apps/{app}", json=app_body(app))).status_code in (200, 201)

            async def placed() -> bool:
                st = (await c.get(f"{V1}/apps/{app}")).json()
                return st["components"]["worker"]["status"] == "running"
            await until(placed, 30, "the app was not placed")

            status = (await c.get(f"{V1}/mode/status")).json()
            mine = status["edge-1"]["apps"][app]
            assert mine["mode"] == "auto" and mine["acting"] == "heuristic" and mine["why"] == "no model yet"
            plans = (await c.get(f"{V1}/decisions", params={"app": app, "limit": 200})).json()
            rows = plans if isinstance(plans, list) else plans.get("decisions", [])
            ml_plans = [d for d in rows if d.get("policy") == "ml_qos_placement" and d.get("stage") == "plan"]
            assert ml_plans and "the heuristics decide (no model yet)" in ml_plans[-1]["explanation"]["summary"]

            r = await c.put(f"{V1}/mode", json={"mode": "shadow", "app": app})
            assert r.status_code == 200
            await until(lambda: cluster.app_modes.get(app) == "shadow", 10, "the app's mode did not reach edge-1")
            assert (await c.put(f"{V1}/mode", json={"mode": "learned"})).status_code == 422

            await c.put(f"{V1}/mode", json={"mode": "heuristic"})
            await until(lambda: cluster.mode == "heuristic", 10, "back to heuristic")
            await c.delete(f"{V1}/apps/{app}")
