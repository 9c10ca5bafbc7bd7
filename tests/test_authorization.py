"""Sender authorization: the rule table, and the demo slice over prosody (every message over the wire)
attacked by a stranger (its own account on the server) and by agents of the slice in the wrong role."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from mlsysops.agents.agent_base import MLSysOpsAgent, RequestFailed
from mlsysops.agents.authorization import (
    FROM_ANYONE,
    FROM_PARENT,
    RULES,
    Relation,
    forged_claim,
    norm_jid,
    rule_for,
)
from mlsysops.agents.payloads import (
    AppDeploy,
    AppRemove,
    InstanceReport,
    PlanProposal,
    StatusReport,
    TelemetryReport,
)
from mlsysops.agents.protocol import Envelope, Kind, Performative
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from tests.support import formed, until

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
ENV_MONITOR = yaml.safe_load((ROOT / "examples/apps/env-monitor.yaml").read_text())
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}


# -- the rule table ---------------------------------------------------------------------------------------
def test_every_kind_has_a_rule() -> None:
    assert {str(k) for k in Kind} <= set(RULES)
    assert all(RULES[str(k)] is not FROM_ANYONE for k in Kind)   # tests may declare open kinds of their own
    assert rule_for("telemetry.config.query") is FROM_PARENT   # registered next to its payload


def test_a_kind_without_a_rule_cannot_get_a_handler() -> None:
    agent = MLSysOpsAgent(f"a-{uuid.uuid4().hex[:6]}@localhost", "x")

    async def handler(_env: Envelope) -> None:
        return None

    with pytest.raises(ValueError, match="no authorization rule for kind 'authz.unruled'"):
        agent.on("authz.unruled", handler)
    agent.on("authz.unruled", handler, allowed=FROM_ANYONE)   # an explicit choice is accepted
    assert agent._handlers["authz.unruled"].allowed is FROM_ANYONE


def test_relations_compare_bare_jids_case_insensitively() -> None:
    agent = MLSysOpsAgent(f"a-{uuid.uuid4().hex[:6]}@localhost", "x", parent="Cluster-Edge@LocalHost")
    assert agent.relations_of("cluster-edge@localhost/res-1") >= {Relation.PARENT}
    assert norm_jid("Node-1@Example.org/x") == "node-1@example.org"
    assert Relation.PARENT not in agent.relations_of("cluster-edge@elsewhere/res-1")


def test_forged_claims_are_named() -> None:
    report = {"source": "edge-rpi-1", "instances": [{"node": "edge-rpi-1"}, {"node": "edge-rpi-2"}]}
    assert forged_claim(Kind.STATUS_REPORT, report, "edge-rpi-1") == "edge-rpi-2"
    assert forged_claim(Kind.STATUS_REPORT, {"source": "edge-rpi-1"}, "edge-rpi-1") is None
    assert forged_claim(Kind.TELEMETRY_REPORT, {"source": "edge-1", "cluster": "cloud-1"}, "edge-1") == "cloud-1"
    assert forged_claim(Kind.PLAN_PROPOSE, {"node": "n2"}, "n1") == "n2"
    assert forged_claim(Kind.REGISTER, {"agent_id": "cloud-1"}, "edge-1") == "cloud-1"
    assert forged_claim(Kind.CONFIG_UPDATE, {"mode": "ml"}, "edge-1") is None


# -- the slice under attack ---------------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def slice_rt(prosody: Any) -> Any:
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides=FAST)
    await rt.start()
    try:
        await until(lambda: formed(rt), 20, "hierarchy did not form")
        rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
        await until(lambda: rt.sim.instances(app="env-monitor")
                    and all(s["status"] == "running" for s in rt.continuum.app_status("env-monitor").values()),
                    30, "env-monitor did not run")
        yield rt
    finally:
        await rt.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def stranger(prosody: Any) -> Any:
    agent = MLSysOpsAgent(f"stranger-{uuid.uuid4().hex[:6]}@localhost", "secret", port=prosody.port,
                          force_xmpp=True, request_retries=0, request_timeout=5)
    await agent.start_agent()
    try:
        yield agent
    finally:
        await agent.stop()


def failures_to(agent: MLSysOpsAgent) -> list[Envelope]:
    """The FAILURE replies `agent` receives (those to its informs, which no request awaits, included)."""
    got: list[Envelope] = []
    original = agent._on_reply

    def spy(env: Envelope) -> None:
        if env.performative is Performative.FAILURE:
            got.append(env)
        original(env)

    agent._on_reply = spy   # type: ignore[method-assign]
    return got


async def refused(sender: MLSysOpsAgent, to: Any, kind: str, body: Any, claimed: str | None = None) -> None:
    expected = f"not authorized: {norm_jid(sender.jid)} may not send {kind}"
    if claimed is not None:
        expected += f" as {claimed!r}"
    with pytest.raises(RequestFailed) as err:
        await sender.request(str(to.jid.bare), kind, body, retries=0)
    assert err.value.reason == expected


async def inform_refused(sender: MLSysOpsAgent, failures: list[Envelope], to: Any, kind: str, body: Any,
                         claimed: str | None = None) -> None:
    expected = f"not authorized: {norm_jid(sender.jid)} may not send {kind}"
    if claimed is not None:
        expected += f" as {claimed!r}"
    env = Envelope(kind=kind, performative=Performative.INFORM, body=body.model_dump(mode="json"))
    await sender.send_envelope(str(to.jid.bare), env)
    await until(lambda: any(f.reply_to == env.id for f in failures), 5, f"no failure for {kind}")
    assert [f.body["reason"] for f in failures if f.reply_to == env.id] == [expected]


def deploy_body(app: str = "evil") -> AppDeploy:
    doc = {"MLSysOpsApp": {**ENV_MONITOR["MLSysOpsApp"], "name": app}}
    return AppDeploy(app=app, description=doc, components=["aggregator"])


def snapshot(rt: SliceRuntime) -> dict[str, Any]:
    edge = rt.clusters["edge-1"]
    return {"modes": {a.agent_id: a.mode for a in [rt.continuum, *rt.clusters.values(), *rt.nodes.values()]},
            "apps": sorted(edge.apps), "assigned": {a: list(c) for a, c in edge.assigned.items()},
            "instances": sorted((i.app, i.component, i.node) for i in rt.sim.instances()),
            "children": sorted(c.jid for c in edge.children.children()),
            "proposals": len(edge.proposals)}


def rows_of(agent: Any) -> dict[str, tuple[str, str]]:
    return {iid: (row["node"], row["status"]) for iid, row in agent.instances.items()}


def has_series(knowledge: Any, metric: str, **labels: str) -> bool:
    return any(set(labels.items()) <= set(key) for key in knowledge.series(metric))


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(120)
async def test_every_handler_of_every_agent_has_its_kinds_rule(slice_rt: SliceRuntime) -> None:
    agents = [slice_rt.continuum, *slice_rt.clusters.values(), *slice_rt.nodes.values()]
    for agent in agents:
        for kind, entry in agent._handlers.items():
            assert entry.allowed is RULES[kind], (agent.agent_id, kind)
    edge = slice_rt.clusters["edge-1"]
    assert {str(Kind.APP_DEPLOY), str(Kind.STATUS_REPORT), str(Kind.REGISTER)} <= set(edge._handlers)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(120)
async def test_a_stranger_is_refused_every_kind_and_changes_nothing(slice_rt: SliceRuntime,
                                                                    stranger: MLSysOpsAgent) -> None:
    rt = slice_rt
    edge, node, cont = rt.clusters["edge-1"], rt.nodes["edge-rpi-1"], rt.continuum
    failures = failures_to(stranger)
    before = snapshot(rt)
    rows = rows_of(edge)
    iid = next(iter(edge.instances))
    now = time.time()

    for target in (edge, node):
        await refused(stranger, target, Kind.CONFIG_UPDATE, {"mode": "ml"})
        await refused(stranger, target, Kind.DECISIONS_QUERY, {})
        await refused(stranger, target, "telemetry.config.query", {})
        await refused(stranger, target, Kind.PING, {"sent_at": now})
    await refused(stranger, edge, Kind.APP_DEPLOY, deploy_body())
    await refused(stranger, edge, Kind.APP_REMOVE, AppRemove(app="env-monitor"))
    await refused(stranger, edge, Kind.PLAN_PROPOSE,
                  PlanProposal(app="env-monitor", component="aggregator", instance_id=iid, node="edge-rpi-1",
                               reason="evil"))
    for target in (edge, cont):
        await refused(stranger, target, Kind.REGISTER, {"role": "node", "agent_id": "edge-rpi-1"})
        await refused(stranger, target, Kind.HEARTBEAT, {"seq": 1})
    await inform_refused(stranger, failures, edge, Kind.STATUS_REPORT, StatusReport(
        source="edge-rpi-1", full=True, instances=[]))
    await inform_refused(stranger, failures, edge, Kind.TELEMETRY_REPORT, TelemetryReport(
        source="edge-rpi-1", node="edge-rpi-1", t=now, window=5.0,
        series=[("authz.forged", {}, 1.0, 1.0, 1.0, 1.0, 1)]))
    await inform_refused(stranger, failures, cont, Kind.TELEMETRY_REPORT, TelemetryReport(
        source="edge-1", cluster="edge-1", t=now, window=5.0, series=[("authz.forged", {}, 1.0, 1.0, 1.0, 1.0, 1)]))

    assert snapshot(rt) == before
    assert rows_of(edge) == rows   # the empty full report did not fail anything
    assert not has_series(edge.knowledge, "authz.forged") and not has_series(cont.slice_telemetry, "authz.forged")
    assert "evil" not in {i.app for i in rt.sim.instances()}

    # logged and recorded once per (sender, kind), however many times it is sent
    for _ in range(2):
        await refused(stranger, edge, Kind.CONFIG_UPDATE, {"mode": "ml"})
    who = norm_jid(stranger.jid)
    assert edge.refusals[(who, str(Kind.CONFIG_UPDATE))] == 3
    events = [r for r in edge.decisions(stage="event", outcome="error", limit=1000)
              if r["reason"] == f"not authorized: {who} may not send config.update"]
    assert len(events) == 1 and events[0]["inputs"] == {"sender": who, "kind": "config.update"}

    # the legitimate senders still work
    pong = await cont.request(str(edge.jid.bare), Kind.PING, {"sent_at": now})
    assert pong.body["sent_at"] == now
    out = await cont.set_mode_tree("ml")
    assert out["children"]["edge-1"]["mode"] == "ml"
    await until(lambda: all(n.mode == "ml" for n in rt.nodes.values()), 5, "nodes did not switch to ml")
    await cont.set_mode_tree("heuristic")


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(120)
async def test_agents_in_the_wrong_role_are_refused(slice_rt: SliceRuntime) -> None:
    rt = slice_rt
    edge, cloud, cont = rt.clusters["edge-1"], rt.clusters["cloud-1"], rt.continuum
    rpi1 = rt.nodes["edge-rpi-1"]
    node_failures = failures_to(rpi1)
    edge_failures = failures_to(edge)
    before = snapshot(rt)
    rows = rows_of(edge)
    now = time.time()

    # a node sending what only its parent may send
    await refused(rpi1, edge, Kind.APP_DEPLOY, deploy_body())
    await refused(rpi1, edge, Kind.APP_REMOVE, AppRemove(app="env-monitor"))
    await refused(rpi1, edge, Kind.CONFIG_UPDATE, {"mode": "ml"})
    await refused(rpi1, edge, Kind.DECISIONS_QUERY, {})
    # ... or reporting under another node's name
    other = next(iid for iid, row in edge.instances.items() if row["node"] != "edge-rpi-1")
    other_node = edge.instances.get(other)["node"]
    await inform_refused(rpi1, node_failures, edge, Kind.STATUS_REPORT, StatusReport(
        source="edge-rpi-1", instances=[InstanceReport(instance_id=other, app="env-monitor", component="x",
                                                       node=other_node, status="failed")]), claimed=other_node)
    await inform_refused(rpi1, node_failures, edge, Kind.TELEMETRY_REPORT, TelemetryReport(
        source="edge-rpi-1", node="edge-rpi-2", t=now, window=5.0,
        series=[("authz.forged", {}, 1.0, 1.0, 1.0, 1.0, 1)]), claimed="edge-rpi-2")
    await refused(rpi1, edge, Kind.PLAN_PROPOSE, PlanProposal(
        app="env-monitor", component="aggregator", instance_id=other, node=other_node, reason="x"),
        claimed=other_node)
    with pytest.raises(RequestFailed, match=f"not authorized: .* may not propose moving instance {other}"):
        await rpi1.request(str(edge.jid.bare), Kind.PLAN_PROPOSE, PlanProposal(
            app="env-monitor", component="aggregator", instance_id=other, node="edge-rpi-1", reason="x"), retries=0)
    # ... or registering with a cluster the slice does not put it in, or reporting to the continuum
    await refused(rpi1, cloud, Kind.REGISTER, {"role": "node", "agent_id": "edge-rpi-1"})
    await inform_refused(rpi1, node_failures, cont, Kind.STATUS_REPORT, StatusReport(source="edge-rpi-1"))
    # a cluster commanding its sibling, or reporting under its name
    await refused(edge, cloud, Kind.APP_DEPLOY, deploy_body())
    await refused(edge, cloud, Kind.CONFIG_UPDATE, {"mode": "ml"})
    await inform_refused(edge, edge_failures, cont, Kind.TELEMETRY_REPORT, TelemetryReport(
        source="edge-1", cluster="cloud-1", t=now, window=5.0,
        series=[("authz.forged", {}, 1.0, 1.0, 1.0, 1.0, 1)]), claimed="cloud-1")

    assert snapshot(rt) == before
    assert rows_of(edge) == rows
    assert not has_series(edge.knowledge, "authz.forged") and not has_series(cont.slice_telemetry, "authz.forged")

    # the same node reporting as itself is heard
    await rpi1.inform(str(edge.jid.bare), Kind.TELEMETRY_REPORT, TelemetryReport(
        source="edge-rpi-1", node="edge-rpi-1", t=time.time(), window=5.0,
        series=[("authz.genuine", {}, 1.0, 1.0, 1.0, 1.0, 1)]))
    await until(lambda: has_series(edge.knowledge, "authz.genuine", node="edge-rpi-1"), 5,
                "genuine telemetry not recorded")
