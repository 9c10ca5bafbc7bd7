"""Traffic follows components across clusters, on the simulated continuum: the demo slice over prosody
(every message on the wire). A caller in edge-1 of a component served by cloud-1 gets a route; a move of
the component across clusters rewrites it (make-before-break); the simulator's calls follow the route;
deleting the app removes it. The decision rule itself is unit-tested at the end."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mlsysops.agents.descriptions import load_file, load_obj
from mlsysops.agents.placement.adapters import callees
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.continuum.traffic_routes import TrafficRoutes
from tests.support import formed, until

ASYNC = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
VIDEO = ROOT / "examples" / "apps" / "video-analytics.yaml"
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5},
        "cluster": {"node_grace": 1.0}}

APP = """
MLSysOpsApp:
  name: {name}
  components:
    - metadata: {{name: api}}
      node_placement: {{node: {node}}}
      containers:
        - image: registry.example.org/api:1
          platform_requirements: {{cpu: {{requests: 200m}}}}
          ports: [{{container_port: 8080, name: http}}]
    - metadata: {{name: reader}}
      depends_on: [api]
      node_placement: {{node: edge-rpi-1}}
      qos_metrics:
        - {{application_metric_id: response_time_ms, target: 5000, relation: lower_or_equal}}
      containers:
        - image: registry.example.org/reader:1
          platform_requirements: {{cpu: {{requests: 100m}}}}
          env: [{{name: API, value: "api:8080"}}]
  component_interactions:
    - {{component_name1: reader, type: egress, component_name2: api}}
"""


def app_doc(name: str, node: str) -> Any:
    return load_obj(__import__("yaml").safe_load(textwrap.dedent(APP.format(name=name, node=node))))


@pytest_asyncio.fixture(loop_scope="session")
async def slice_rt(prosody):
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides={k: dict(v) for k, v in FAST.items()})
    await rt.start()
    try:
        await until(lambda: formed(rt), 20, "hierarchy did not form")
        yield rt
    finally:
        await rt.stop()


def route_of(rt: SliceRuntime, app: str, comp: str, caller: str) -> dict[str, Any] | None:
    return next((r for r in rt.continuum.traffic.view(app) if r["component"] == comp and r["from_cluster"] == caller),
                None)


def running_on(rt: SliceRuntime, app: str, comp: str) -> str | None:
    st = rt.continuum.app_status(app).get(comp) or {}
    return st.get("cluster") if st.get("status") == "running" else None


@ASYNC
@pytest.mark.timeout(120)
async def test_the_demo_video_pipeline_routes_edge_callers_to_the_cloud_detector(slice_rt):
    rt = slice_rt
    rt.continuum.submit_app(load_file(VIDEO)[0])
    await until(lambda: (route_of(rt, "video-analytics", "detector", "edge-1") or {}).get("via") == "endpoints",
                40, "no route from edge-1 to the detector")
    row = route_of(rt, "video-analytics", "detector", "edge-1")
    assert row["to_cluster"] == "cloud-1" == running_on(rt, "video-analytics", "detector")
    node = rt.continuum.app_status("video-analytics")["detector"]["nodes"][0]
    assert row["endpoints"] == [{"address": f"sim://{node}", "port": 8500, "name": None, "protocol": "TCP"}]
    # the dashboard runs in the detector's own cluster: its Service, no route
    assert route_of(rt, "video-analytics", "detector", "cloud-1")["via"] == "local"
    assert rt.sim.routes("video-analytics") == {"edge-1": {"detector": "cloud-1"}}
    events = rt.continuum.decision_log.query(app="video-analytics", stage="event", limit=200)
    assert any("traffic from edge-1 to video-analytics/detector now goes to cloud-1" in e.reason for e in events)
    assert await rt.continuum.remove_app("video-analytics")
    await until(lambda: not rt.sim.routes("video-analytics"), 20, "routes left after the app was removed")


@ASYNC
@pytest.mark.timeout(150)
async def test_a_component_moved_to_another_cluster_takes_its_callers_traffic_along(slice_rt):
    rt = slice_rt
    name = "routed-" + uuid.uuid4().hex[:4]
    rt.continuum.submit_app(app_doc(name, "cloud-vm-1"))
    await until(lambda: (route_of(rt, name, "api", "edge-1") or {}).get("to_cluster") == "cloud-1", 40,
                "no route from edge-1 to cloud-1")
    assert rt.sim.routes(name) == {"edge-1": {"api": "cloud-1"}}
    reader = await until(lambda: next((i for i in rt.sim.instances(app=name, state="running")
                                       if i.component == "reader"), None), 20, "reader not running")
    cross = rt.sim.component_metrics(reader.instance_id)["network_latency_ms"]

    # the api moves into the reader's cluster: the route goes once the api runs there (its Service serves)
    rt.continuum.submit_app(app_doc(name, "edge-server-1"))
    await until(lambda: running_on(rt, name, "api") == "edge-1", 40, "api did not move to edge-1")
    await until(lambda: (route_of(rt, name, "api", "edge-1") or {}).get("via") == "local", 20, "route not dropped")
    await until(lambda: not rt.sim.routes(name), 20, "the sim still routes edge-1's calls to cloud-1")
    local = rt.sim.component_metrics(reader.instance_id)["network_latency_ms"]
    assert local < cross

    # and back to the cloud: a new route, pointing at the new node
    rt.continuum.submit_app(app_doc(name, "cloud-vm-2"))
    await until(lambda: (route_of(rt, name, "api", "edge-1") or {}).get("endpoints") ==
                [{"address": "sim://cloud-vm-2", "port": 8080, "name": "http", "protocol": "TCP"}], 40,
                "route not rewritten to cloud-vm-2")
    assert rt.sim.routes(name) == {"edge-1": {"api": "cloud-1"}}
    events = [e.reason for e in rt.continuum.decision_log.query(app=name, stage="event", limit=300)]
    assert any("no longer routed to cloud-1" in r for r in events)
    assert await rt.continuum.remove_app(name)
    await until(lambda: not rt.sim.routes(name), 20, "routes left after the app was removed")


# -- the decision rule, without agents ----------------------------------------------------------------
class _Tables:
    """The continuum's tables the rule reads (the real agent's attributes of the same names)."""

    def __init__(self, app: Any) -> None:
        self.apps = {app.name: app}
        self.assignments: dict[str, dict[str, str]] = {app.name: {}}
        self.status: dict[str, dict[str, dict[str, Any]]] = {app.name: {}}
        self.cluster_jids = {"cloud-1": "c@x", "edge-1": "e@x"}
        self.events: list[str] = []

    def record_event(self, reason: str, **_: Any) -> None:
        self.events.append(reason)

    def place(self, comp: str, cluster: str, status: str = "running") -> None:
        self.assignments[next(iter(self.apps))][comp] = cluster
        self.status[next(iter(self.apps))][comp] = {"status": status, "cluster": cluster}


def test_callees_are_interactions_and_dependencies():
    app = load_file(VIDEO)[0].spec
    assert callees(app, "camera-capture") == ["detector"]
    assert callees(app, "dashboard") == ["detector"]
    assert callees(app, "detector") == []


def test_the_rule_routes_remote_callers_and_keeps_the_old_route_while_the_callee_moves():
    app = app_doc("rule", "cloud-vm-1").spec
    tables = _Tables(app)
    routes = TrafficRoutes(tables)
    tables.place("api", "cloud-1")
    tables.place("reader", "edge-1")
    assert routes.wanted("rule") == ({"cloud-1": {"api"}}, {"edge-1": {"api": "cloud-1"}})
    routes.routes["rule"] = {"edge-1": {"api": {"cluster": "cloud-1", "endpoints": [{"address": "a", "port": 1}]}}}
    tables.place("api", "edge-1", status="deploying")       # moving in: the old route stays until it runs
    assert routes.wanted("rule") == ({}, {"edge-1": {"api": "cloud-1"}})
    tables.place("api", "edge-1")                            # running in the caller's cluster: no route
    assert routes.wanted("rule") == ({}, {})
    tables.place("api", "cloud-1", status="failed")          # nowhere running, no old route: nothing to write
    routes.routes.clear()
    assert routes.wanted("rule") == ({}, {})
