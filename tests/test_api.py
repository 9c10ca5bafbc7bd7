"""The northbound REST API over real HTTP, served in the same event loop as a running demo slice (every
agent message over prosody). One slice for the module; the tests run in file order and the destructive
ones (node crash, property-based run) come last."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import yaml

from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role, TokenError, configured_tokens, dev_token, parse_tokens
from tests.support import demo_slice, formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
# 1 s heartbeats: this module runs two slices at once on a loaded CI machine; crashes are still seen at
# once through presence, only hung agents wait for the misses.
FAST = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
ADMIN, READER = "admin-" + uuid.uuid4().hex, "reader-" + uuid.uuid4().hex
V1 = "/api/v1"

APP = {"MLSysOpsApp": {
    "name": "probe",
    "cluster_placement": {"cluster_id": ["edge-1"]},
    "components": [{
        "metadata": {"name": "worker"},
        "node_placement": {"continuum_layer": ["edge", "edge_infrastructure"]},
        "containers": [{"image": "registry.example.org/worker:1",
                        "platform_requirements": {"cpu": {"requests": "200m"}, "memory": {"requests": "64Mi"}}}],
    }],
}}


def app_named(name: str, cpu: str = "200m") -> dict:
    body = copy.deepcopy(APP)
    body["MLSysOpsApp"]["name"] = name
    body["MLSysOpsApp"]["components"][0]["containers"][0]["platform_requirements"]["cpu"]["requests"] = cpu
    return body


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(prosody):
    async with demo_slice(prosody.port, FAST, {ADMIN: Role.admin, READER: Role.read}) as (rt, url):
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        yield rt, url


@pytest_asyncio.fixture(loop_scope="session")
async def client(served):
    _, url = served
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=15) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def anon(served):
    async with httpx.AsyncClient(base_url=served[1], timeout=15) as c:
        yield c


# -- health, docs, auth -----------------------------------------------------------------------------------
async def test_health_readiness_and_docs_need_no_token(anon):
    r = await anon.get("/healthz")
    assert r.status_code == 200 and r.json()["ok"] is True
    r = await anon.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True and r.json()["clusters_alive"] == 2
    spec = (await anon.get("/openapi.json")).json()
    assert f"{V1}/apps" in spec["paths"] and f"{V1}/apps/{{name}}" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "AppDetail" in spec["components"]["schemas"]
    assert (await anon.get("/docs")).status_code == 200


async def test_readyz_is_503_without_clusters():
    class Children:
        def children(self):
            return []

    class Lonely:
        children, jid_clusters, cluster_jids = Children(), {}, {"c": "c@x"}

    app = create_app(ApiBackend(Lonely()), {ADMIN: Role.admin})
    server = ApiServer(app)
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
    finally:
        await server.stop()


async def test_tokens_401_and_403(anon):
    r = await anon.get(f"{V1}/apps")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "detail" in r.json()
    r = await anon.get(f"{V1}/apps", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await anon.get(f"{V1}/apps", headers={"Authorization": f"Basic {READER}"})
    assert r.status_code == 401
    read = {"Authorization": f"Bearer {READER}"}
    assert (await anon.get(f"{V1}/apps", headers=read)).status_code == 200
    r = await anon.post(f"{V1}/apps", json=APP, headers=read)
    assert r.status_code == 403 and "read token" in r.json()["detail"]
    assert (await anon.delete(f"{V1}/apps/probe", headers=read)).status_code == 403
    assert (await anon.post(f"{V1}/ping", json={}, headers=read)).status_code == 403


async def test_token_sources(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# token role\nabc admin\n\nxyz read\n")
    assert configured_tokens(f, env={"MLSYSOPS_API_TOKENS": "k1:read, k2:admin"}) == {
        "abc": Role.admin, "xyz": Role.read, "k1": Role.read, "k2": Role.admin}
    assert configured_tokens(None, env={}) == {}
    with pytest.raises(TokenError, match="role must be one of"):
        parse_tokens("abc root", "f")
    with pytest.raises(TokenError, match="cannot read"):
        configured_tokens(tmp_path / "missing", env={})
    token, path = dev_token(tmp_path / "state")
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().strip() == token
    assert dev_token(tmp_path / "state")[0] == token    # reused while the file exists


# -- applications -----------------------------------------------------------------------------------------
async def test_invalid_descriptions_say_which_field_and_why(client):
    r = await client.post(f"{V1}/apps", json=app_named("bad", cpu="lots"))
    assert r.status_code == 422
    detail = r.json()["detail"]
    paths = [e["path"] for e in detail["errors"]]
    assert "components[0].containers[0].platform_requirements.cpu.requests" in paths, detail
    assert all(e["message"] for e in detail["errors"])
    r = await client.post(f"{V1}/apps", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "invalid JSON" in r.json()["detail"]["message"]
    r = await client.post(f"{V1}/apps", content="a: [", headers={"Content-Type": "application/yaml"})
    assert r.status_code == 422 and "invalid YAML" in r.json()["detail"]["message"]
    r = await client.post(f"{V1}/apps", content="x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = await client.post(f"{V1}/apps", json={"MLSysOpsCluster": {"cluster_id": "c", "nodes": []}})
    assert r.status_code == 422 and r.json()["detail"]["errors"][0]["path"] == "kind"
    r = await client.post(f"{V1}/apps", json={"MLSysOpsAp": {}})
    assert r.status_code == 422 and any(e.get("suggestion") == "MLSysOpsApp" for e in r.json()["detail"]["errors"])
    r = await client.post(f"{V1}/apps", json=[1, 2])
    assert r.status_code == 422
    r = await client.put(f"{V1}/apps/other", json=app_named("probe"))
    assert r.status_code == 422 and r.json()["detail"]["errors"][0]["path"] == "name"
    assert (await client.get(f"{V1}/apps/bad")).status_code == 404


async def test_fuzzed_descriptions_are_422_with_where(client):
    """A 400-digit quantity and a self-referencing alias (found by fuzzing) were 500s."""
    r = await client.post(f"{V1}/apps", json=app_named("huge", cpu=10**400))
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["errors"][0]["path"] == "components[0].containers[0].platform_requirements.cpu.requests"
    r = await client.post(f"{V1}/apps", content="MLSysOpsApp: &a {name: x, components: [*a]}\n",
                          headers={"Content-Type": "application/yaml"})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]["errors"]
    assert error["line"] == 1 and error["path"].startswith("MLSysOpsApp.components[0]")


async def test_failed_desired_state_write_is_507_or_503_with_the_cause(served, client):
    import sqlite3

    from tests.test_persist_failures import FailingWrites

    store = served[0].continuum.store
    real = store._db
    try:
        store._db = FailingWrites(real, sqlite3.OperationalError("database or disk is full"))
        r = await client.post(f"{V1}/apps", json=app_named("full"))
        assert r.status_code == 507, r.text
        assert r.json()["detail"].startswith("cannot persist app full: database or disk is full at ")
        store._db = FailingWrites(real, sqlite3.OperationalError("attempt to write a readonly database"))
        assert (await client.post(f"{V1}/apps", json=app_named("full"))).status_code == 503
    finally:
        store._db = real
    assert (await client.get(f"{V1}/apps/full")).status_code == 404      # not accepted, nothing half-done
    assert (await client.get("/healthz")).status_code == 200             # the agent kept running


async def test_app_lifecycle_with_status_transitions(served, client):
    rt, _ = served
    r = await client.post(f"{V1}/apps", json=APP)
    assert r.status_code == 201 and r.json() == {"name": "probe", "result": "created", "components": 1,
                                                 "warnings": []}
    seen: list[str] = []

    async def running() -> bool:
        st = (await client.get(f"{V1}/apps/probe")).json()["components"]["worker"]["status"]
        if not seen or seen[-1] != st:
            seen.append(st)
        return st == "running"

    await until(running, 20, "probe did not run", interval=0.01)
    assert seen[0] == "pending" and seen[-1] == "running", seen
    events = (await client.get(f"{V1}/apps/probe/events")).json()
    changes = [e["reason"].split(": ", 1)[1].split(" on ")[0].split(" -> ")
               for e in events if e["reason"].startswith("probe/worker: ") and e["agent"] == rt.continuum.agent_id]
    # pending -> (deploying ->) running, each step recorded; "deploying" can be skipped when the node
    # reports running before the cluster's execution result comes back, as on a loaded machine
    assert changes and changes[0][0] == "pending" and changes[-1][1] == "running", changes
    assert all(a[1] == b[0] for a, b in zip(changes, changes[1:], strict=False)), changes
    assert set(seen) <= {"pending", "deploying", "running"}, seen
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)              # newest last
    assert {e["agent"] for e in events} >= {rt.continuum.agent_id, "edge-1"}       # every agent of the process
    assert len((await client.get(f"{V1}/apps/probe/events", params={"limit": 2})).json()) == 2

    detail = (await client.get(f"{V1}/apps/probe")).json()
    assert detail["description"]["kind"] == "MLSysOpsApp" and detail["description"]["metadata"]["name"] == "probe"
    worker = detail["components"]["worker"]
    assert worker["cluster"] == "edge-1" and len(worker["nodes"]) == 1 and worker["since"] > 0
    listed = {a["name"]: a for a in (await client.get(f"{V1}/apps")).json()}
    assert listed["probe"]["components"] == 1 and listed["probe"]["status"] == {"running": 1}
    assert listed["probe"]["submitted"] <= time.time()

    # idempotent re-submission, in either form, YAML or JSON
    assert (await client.post(f"{V1}/apps", json=APP)).json()["result"] == "unchanged"
    r = await client.post(f"{V1}/apps", json=detail["description"])            # Kubernetes form
    assert r.status_code == 200 and r.json()["result"] == "unchanged"
    r = await client.post(f"{V1}/apps", content=yaml.safe_dump(APP), headers={"Content-Type": "application/yaml"})
    assert r.status_code == 200
    r = await client.put(f"{V1}/apps/probe", json=APP)
    assert r.status_code == 200 and r.json()["result"] == "unchanged"
    # a different description under the same name: POST conflicts, PUT replaces
    r = await client.post(f"{V1}/apps", json=app_named("probe", cpu="300m"))
    assert r.status_code == 409 and "PUT" in r.json()["detail"]
    r = await client.put(f"{V1}/apps/probe", json=app_named("probe", cpu="300m"))
    assert r.status_code == 200 and r.json()["result"] == "replaced"
    assert rt.continuum.apps["probe"].components[0].cpu_request_cores == pytest.approx(0.3)
    # PUT creates; YAML body
    r = await client.put(f"{V1}/apps/probe-2", content=yaml.safe_dump(app_named("probe-2")),
                         headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201 and r.json()["result"] == "created"

    assert (await client.delete(f"{V1}/apps/probe-2")).status_code == 202
    assert (await client.get(f"{V1}/apps/probe-2")).status_code == 404
    assert (await client.delete(f"{V1}/apps/probe-2")).status_code == 404
    assert "probe-2" not in {a["name"] for a in (await client.get(f"{V1}/apps")).json()}
    r = await client.get(f"{V1}/apps/probe-2/events")                              # history stays readable
    assert r.status_code == 200 and any("removed" in e["reason"] for e in r.json())
    assert (await client.get(f"{V1}/apps/never/events")).status_code == 404


# -- infrastructure ---------------------------------------------------------------------------------------
async def test_infrastructure_views(served, client):
    rt, _ = served
    cont = (await client.get(f"{V1}/continuum")).json()
    assert cont["id"] == rt.continuum.agent_id and cont["clusters"] == 2 and cont["clusters_alive"] == 2
    assert cont["description"]["kind"] == "MLSysOpsContinuum" and cont["connected"] is True
    clusters = {c["id"]: c for c in (await client.get(f"{V1}/clusters")).json()}
    assert set(clusters) == set(rt.spec.clusters)
    assert all(c["alive"] and c["registered"] and c["nodes"] == c["nodes_alive"] > 0 for c in clusters.values())
    edge = (await client.get(f"{V1}/clusters/edge-1")).json()
    assert edge["description"]["kind"] == "MLSysOpsCluster"
    assert {n["name"] for n in edge["node_status"]} == {n.name for n in rt.spec.cluster_nodes("edge-1")}
    r = await client.get(f"{V1}/clusters/nope")
    assert r.status_code == 404 and "edge-1" in r.json()["detail"]

    nodes = {n["name"]: n for n in (await client.get(f"{V1}/nodes")).json()}
    assert set(nodes) == set(rt.spec.nodes)
    assert all(n["alive"] is True and n["last_heartbeat"] > 0 for n in nodes.values())
    host = rt.continuum.app_status("probe")["worker"]["nodes"][0]
    await until(lambda: host in rt.continuum.node_state("edge-1")[1], 5, "no cpu figures paged yet")
    node = (await client.get(f"{V1}/nodes/{host}")).json()
    assert {"app": "probe", "component": "worker", "status": "running"} in node["components"]
    assert node["cluster"] == "edge-1" and node["description"]["kind"] == "MLSysOpsNode"
    assert isinstance(node["cpu_utilization"], float)
    assert (await client.get(f"{V1}/nodes/nope")).status_code == 404


# -- decisions, ping, policies ----------------------------------------------------------------------------
async def test_decisions_across_agents_with_filters(served, client):
    rt, _ = served
    every = (await client.get(f"{V1}/decisions", params={"limit": 1000})).json()
    agents = {d["agent"] for d in every}
    assert {rt.continuum.agent_id, "edge-1", "cloud-1"} <= agents and agents & set(rt.spec.nodes)
    plans = (await client.get(f"{V1}/decisions", params={"agent": "edge-1", "stage": "plan", "app": "probe"})).json()
    assert plans and all(d["agent"] == "edge-1" and d["stage"] == "plan" and d["app"] == "probe" for d in plans)
    mid = every[len(every) // 2]["ts"]
    later = (await client.get(f"{V1}/decisions", params={"since": mid, "limit": 1000})).json()
    assert later and all(d["ts"] >= mid for d in later)
    earlier = (await client.get(f"{V1}/decisions", params={"until": mid, "limit": 1000})).json()
    assert earlier and all(d["ts"] <= mid for d in earlier)
    assert len((await client.get(f"{V1}/decisions", params={"limit": 3})).json()) == 3
    assert (await client.get(f"{V1}/decisions", params={"agent": "nope"})).status_code == 404
    r = await client.get(f"{V1}/decisions", params={"limit": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_ping(served, client):
    rt, _ = served
    r = (await client.post(f"{V1}/ping")).json()
    assert r["transport"] == "in-process" and r["agent"] == rt.continuum.agent_id
    r = await client.post(f"{V1}/ping", json={"agent": "edge-1"})
    assert r.status_code == 200 and r.json()["transport"] == "xmpp" and r.json()["latency_ms"] > 0
    assert (await client.post(f"{V1}/ping", json={"agent": "nope"})).status_code == 404


async def test_policies(served, client):
    rt, _ = served
    pols = (await client.get(f"{V1}/policies")).json()
    assert {rt.continuum.agent_id, "edge-1", "cloud-1", *rt.spec.nodes} <= set(pols)
    assert any(p["name"] == "continuum_cluster_placement" for p in pols[rt.continuum.agent_id])
    name = pols["edge-1"][0]["name"]
    r = await client.post(f"{V1}/policies/edge-1/{name}/disable")
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert not rt.clusters["edge-1"].policies.get(name).enabled
    r = await client.post(f"{V1}/policies/edge-1/{name}/enable")
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert (await client.post(f"{V1}/policies/edge-1/nope/enable")).status_code == 404
    assert (await client.post(f"{V1}/policies/nope/{name}/enable")).status_code == 404
    assert (await client.post(f"{V1}/policies/edge-1/{name}/explode")).status_code == 422


# -- simulator --------------------------------------------------------------------------------------------
async def test_sim_snapshot_and_bad_faults(served, client):
    rt, _ = served
    snap = (await client.get(f"{V1}/sim")).json()
    assert {n["name"] for n in snap["nodes"]} == set(rt.spec.nodes)
    r = await client.post(f"{V1}/sim/faults", json={"kind": "crash", "node": "no-such-node"})
    assert r.status_code == 422 and "unknown node" in r.json()["detail"]
    r = await client.post(f"{V1}/sim/faults", json={"kind": "melt", "node": "edge-rpi-1"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
    r = await client.post(f"{V1}/sim/faults", json={"kind": "degrade_link"})
    assert r.status_code == 422


async def test_sim_endpoints_404_without_a_simulator(served):
    rt, _ = served
    server = ApiServer(create_app(ApiBackend(rt.continuum), {ADMIN: Role.admin}))
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
            assert (await c.get(f"{V1}/sim")).status_code == 404
            r = await c.post(f"{V1}/sim/faults", json={"kind": "crash", "node": "edge-rpi-1"})
            assert r.status_code == 404 and "mlsysops sim serve" in r.json()["detail"]
            assert set((await c.get(f"{V1}/policies")).json()) == {rt.continuum.agent_id}   # continuum only
            assert len((await c.get(f"{V1}/nodes")).json()) == len(rt.spec.nodes)
    finally:
        await server.stop()


async def test_node_crash_moves_the_component_off_the_node(served, client):
    rt, _ = served
    victim = (await client.get(f"{V1}/apps/probe")).json()["components"]["worker"]["nodes"][0]
    r = await client.post(f"{V1}/sim/faults", json={"kind": "crash", "node": victim})
    assert r.status_code == 200 and r.json() == {"injected": f"crash {victim}"}

    async def moved() -> bool:
        w = (await client.get(f"{V1}/apps/probe")).json()["components"]["worker"]
        return w["status"] == "running" and victim not in w["nodes"]

    await until(moved, 20, "the component did not leave the crashed node")
    await until(lambda: _node_alive(client, victim, False), 10, "the node is not shown down")
    node = (await client.get(f"{V1}/nodes/{victim}")).json()
    assert all(c["app"] != "probe" for c in node["components"])
    events = (await client.get(f"{V1}/apps/probe/events", params={"limit": 1000})).json()
    assert any("fault injected" in e["reason"] for e in (await client.get(
        f"{V1}/decisions", params={"stage": "event", "limit": 1000})).json())
    assert events[-1]["ts"] >= events[0]["ts"]


async def _node_alive(client: httpx.AsyncClient, name: str, alive: bool) -> bool:
    return (await client.get(f"{V1}/nodes/{name}")).json()["alive"] is alive


# -- property-based: no input gives a 5xx -----------------------------------------------------------------
async def test_generated_requests_get_documented_answers(served, client):
    """schemathesis over the whole OpenAPI spec (real HTTP; run in a thread so this loop keeps serving):
    no 5xx, every status code and every response body as the OpenAPI document says."""
    import schemathesis  # a test dependency: missing it must fail, not skip
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )
    from schemathesis.core.failures import FailureGroup

    _, url = served
    spec = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    failures: list[str] = []

    def run(headers: dict[str, str], examples: int) -> int:
        calls = 0
        for result in schema.get_all_operations():
            op = result.ok()
            if op.method.upper() == "POST" and op.path.endswith("/sim/faults"):
                continue   # random faults could crash the slice under the other operations
            if op.path.endswith("/stream"):
                continue   # an endless event stream by design (tests/test_telemetry.py reads it)

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def check(case) -> None:
                nonlocal calls
                calls += 1
                resp = case.call(base_url=url, headers=headers, timeout=10)
                try:
                    case.validate_response(resp, checks=[not_a_server_error, status_code_conformance,
                                                         content_type_conformance, response_schema_conformance])
                except FailureGroup as group:
                    failures.extend(f"{case.method} {case.formatted_path}: {f.title}: {f.message[:300]}"
                                    for f in group.exceptions)
                except AssertionError as exc:
                    failures.append(f"{case.method} {case.formatted_path}: {str(exc)[:300]}")

            check()
        return calls

    calls = await asyncio.to_thread(run, auth, 50)
    # the same operations as a reader (403 on writes) and as a stranger (401): documented answers too
    calls += await asyncio.to_thread(run, {"Authorization": f"Bearer {READER}"}, 4)
    calls += await asyncio.to_thread(run, {}, 3)
    distinct = sorted(set(f.split(": ", 2)[0] + ": " + f.split(": ", 2)[1] for f in failures))
    assert calls > 100 and not failures, distinct[:40]


async def test_random_json_bodies_never_give_5xx(client):
    """Hypothesis: arbitrary JSON (and JSON-ish app skeletons) posted as app descriptions."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    anything = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                         max_size=3), max_leaves=12)
    keys = st.sampled_from(["name", "components", "metadata", "containers", "platform_requirements", "cpu",
                            "requests", "node_placement", "continuum_layer", "cluster_placement", "kind"])
    skeleton = st.fixed_dictionaries({"MLSysOpsApp": st.dictionaries(keys, anything, max_size=5)})
    bodies: list[object] = []

    @settings(max_examples=int(os.environ.get("RANDOM_BODIES", "150")), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=anything | skeleton)
    def collect(body: object) -> None:
        bodies.append(body)

    collect()
    for body in bodies:
        for method, path in (("POST", f"{V1}/apps"), ("PUT", f"{V1}/apps/x")):
            r = await client.request(method, path, content=json.dumps(body),
                                     headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (method, body, r.text)


async def test_non_finite_numbers_in_bad_input_are_a_4xx_not_a_500(client):
    """Regression (found by the random-body test): the error echoed the bad value inf, which strict JSON
    responses cannot encode."""
    for text in ("Infinity", '{"MLSysOpsApp": {"name": "x", "components": NaN}}'):
        r = await client.post(f"{V1}/apps", content=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text


async def test_continuum_restart_mid_deployment_over_http(prosody, tmp_path):
    """Through the API, as an operator sees it: apps accepted (201) survive a continuum agent restart in
    the middle of their deployment, reach running, and no component instance is started twice."""
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True, state_dir=tmp_path / "state",
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides={k: dict(v) for k, v in FAST.items()})
    await rt.start()
    server = ApiServer(create_app(ApiBackend(runtime=rt), {ADMIN: Role.admin}), port=0)
    url = await server.start()
    try:
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            for path in ("examples/apps/video-analytics.yaml", "examples/apps/env-monitor.yaml"):
                r = await http.post("/api/v1/apps", content=(ROOT / path).read_text(),
                                    headers={"Content-Type": "application/yaml"})
                assert r.status_code == 201, r.text

            async def statuses() -> dict[str, str]:
                out = {}
                for app in ("video-analytics", "env-monitor"):
                    comps = (await http.get(f"/api/v1/apps/{app}")).json()["components"]
                    out.update({f"{app}/{c}": s["status"] for c, s in comps.items()})
                return out

            deadline = time.monotonic() + 15
            while "running" not in (await statuses()).values():
                assert time.monotonic() < deadline, "no progress before the restart"
                await asyncio.sleep(0.05)
            await rt.restart_continuum()
            listed = (await http.get("/api/v1/apps")).json()
            assert sorted(a["name"] for a in listed) == ["env-monitor", "video-analytics"]
            deadline = time.monotonic() + 25
            while set((await statuses()).values()) != {"running"}:
                assert time.monotonic() < deadline, await statuses()
                await asyncio.sleep(0.1)
        active = [i for i in rt.sim.instances() if not i.state.terminal]
        assert len(active) == 5, [i.instance_id for i in active]   # one instance per component, none twice
        assert [i for i in rt.sim.instances() if i.state.terminal] == []   # nothing was stopped or replaced
    finally:
        await server.stop()
        await rt.stop()


async def test_register_and_drain_a_node(prosody, tmp_path):
    """A node registered through the API joins (its agent registers); removing a node drains it first:
    its component runs elsewhere before the old instance stops (make-before-break)."""
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides={k: dict(v) for k, v in FAST.items()})
    await rt.start()
    server = ApiServer(create_app(ApiBackend(runtime=rt), {ADMIN: Role.admin}), port=0)
    url = await server.start()
    try:
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            node = yaml.safe_load((ROOT / "examples/slices/demo/nodes/edge-rpi-1.yaml").read_text())
            body = node["MLSysOpsNode"] if "MLSysOpsNode" in node else node["spec"]
            body = {"MLSysOpsNode": {**body, "name": "edge-rpi-9"}}
            r = await http.post("/api/v1/nodes", json=body)
            assert r.status_code == 201, r.text
            assert (await http.post("/api/v1/nodes", json=body)).status_code == 409     # already there
            bad = {"MLSysOpsNode": {**body["MLSysOpsNode"], "name": "x9", "cluster_id": "nowhere"}}
            assert (await http.post("/api/v1/nodes", json=bad)).status_code == 409

            async def node_alive(name: str) -> bool:
                nodes = {n["name"]: n for n in (await http.get("/api/v1/nodes")).json()}
                return bool(nodes.get(name, {}).get("alive"))

            deadline = time.monotonic() + 15
            while not await node_alive("edge-rpi-9"):
                assert time.monotonic() < deadline, "registered node never came alive"
                await asyncio.sleep(0.1)
            r = await http.post("/api/v1/apps", json=app_named("drainme"))
            assert r.status_code == 201, r.text

            async def worker() -> dict:
                comps = (await http.get("/api/v1/apps/drainme")).json()["components"]
                return next(iter(comps.values()))

            deadline = time.monotonic() + 15
            while (await worker())["status"] != "running":
                assert time.monotonic() < deadline, await worker()
                await asyncio.sleep(0.1)
            victim = (await worker())["nodes"][0]
            r = await http.delete(f"/api/v1/nodes/{victim}", timeout=40)
            assert r.status_code == 202 and r.json()["relocated"] == 1, r.text
            deadline = time.monotonic() + 15
            while (await worker())["status"] != "running" or victim in (await worker())["nodes"]:
                assert time.monotonic() < deadline, await worker()
                await asyncio.sleep(0.1)
            assert victim not in {n["name"] for n in (await http.get("/api/v1/nodes")).json()}
            assert (await http.delete(f"/api/v1/nodes/{victim}")).status_code == 404
        old = [i for i in rt.sim.instances(app="drainme") if i.node == victim]
        new = [i for i in rt.sim.instances(app="drainme") if i.node != victim and not i.state.terminal]
        assert len(old) == 1 and len(new) == 1
        assert old[0].state_since >= new[0].running_at   # stopped only after its replacement ran
    finally:
        await server.stop()
        await rt.stop()


async def test_a_drain_that_cannot_complete_answers_504_and_is_undone_by_patch(prosody):
    """env-monitor's aggregator fits only edge-server-1: removing that node cannot complete. The 504 says
    which component and how to undo it, the node shows the stuck drain, PATCH cordoned=false undoes it and the
    same instance runs on."""
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides={k: dict(v) for k, v in FAST.items()})
    rt.drain_timeout = 2.0
    await rt.start()
    server = ApiServer(create_app(ApiBackend(runtime=rt), {ADMIN: Role.admin}), port=0)
    url = await server.start()
    try:
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            async def aggregator() -> dict:
                return (await http.get("/api/v1/apps/env-monitor")).json()["components"].get("aggregator", {})

            deadline = time.monotonic() + 20
            while (await aggregator()).get("status") != "running":
                assert time.monotonic() < deadline, await aggregator()
                await asyncio.sleep(0.1)
            (before,) = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator"]
            r = await http.delete("/api/v1/nodes/edge-server-1")
            assert r.status_code == 504 and "env-monitor/aggregator" in r.json()["detail"], r.text
            assert "mlsysops uncordon edge-server-1" in r.json()["detail"]
            drain = (await http.get("/api/v1/nodes/edge-server-1")).json()["drain"]
            assert drain == {"state": "stuck", "reason": r.json()["detail"]}
            assert (await aggregator())["status"] == "relocating"
            assert (await http.patch("/api/v1/nodes/edge-server-1", json={"cordoned": True})).status_code == 422
            assert (await http.patch("/api/v1/nodes/nope", json={"cordoned": False})).status_code == 404
            r = await http.patch("/api/v1/nodes/edge-server-1", json={"cordoned": False})
            assert r.status_code == 200 and r.json() == {"name": "edge-server-1", "was": "stuck", "kept": 1}, r.text
            got = (await http.get("/api/v1/nodes/edge-server-1")).json()["drain"]
            assert got == {"state": "none", "reason": None}
            deadline = time.monotonic() + 15
            while (await aggregator())["status"] != "running":
                assert time.monotonic() < deadline, await aggregator()
                await asyncio.sleep(0.1)
        running = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator"
                   and not i.state.terminal]
        assert [i.created_at for i in running] == [before.created_at]   # the same instance throughout
    finally:
        await server.stop()
        await rt.stop()
