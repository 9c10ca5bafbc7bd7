"""Bounded hypothesis fuzzers of the real message handlers: every kind an agent handles (continuum, cluster,
node over prosody; the far-edge agent's own dispatcher), with bodies mutated from valid ones, sent as
an identity the kind's rule lets through. A body the schema rejects is the refusal path
(`tests/test_fuzz_bad_input.py` fuzzes the schemas alone); one it accepts reaches the handler, which must
answer or refuse (`HandlerError` / the far edge's `RequestFailed`) with a reason: nothing else may come out
of a handler, its answer must be a valid reply, and every agent still answers a ping afterwards.
Deterministic (`derandomize`), so CI sees the same cases every run."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsysops.agents.agent_base import HandlerError, MLSysOpsAgent, _as_dict
from mlsysops.agents.protocol import Envelope, Kind, Performative, ProtocolError, encode, validate_body
from mlsysops.agents.slice_config import load_slice
from mlsysops.agents.wire import Frame, encode_text
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.far_edge import handlers as far_edge_handlers
from mlsysops.far_edge.agent import FarEdgeAgent
from tests.support import formed, until

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
ENV_MONITOR = yaml.safe_load((ROOT / "examples/apps/env-monitor.yaml").read_text())
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
CPUFREQ = Path("/nonexistent/cpufreq")   # no frequency knob here: the knob refuses, with its reason
EXAMPLES = 120     # per agent; every handled kind gets several
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
                 st.floats(), st.text(max_size=10), st.sampled_from(["250m", "1e400", "-1Gi", "", "*", "edge-1",
                                                                     "env-monitor", "edge-rpi-1", "ml"]))
junk = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8)


def valid_bodies(node: str) -> dict[str, dict[str, Any]]:
    """A body each kind's schema accepts: the fuzzer mutates these, so most cases get past the schema."""
    now = time.time()
    return {
        str(Kind.REGISTER): {"role": "node", "agent_id": node, "description": {}},
        str(Kind.HEARTBEAT): {"seq": 1, "digest": {}},
        str(Kind.APP_DEPLOY): {"app": "fuzz", "description": copy.deepcopy(ENV_MONITOR), "components": ["aggregator"]},
        str(Kind.APP_REMOVE): {"app": "fuzz"},
        str(Kind.APP_STATUS): {"app": "env-monitor"},
        str(Kind.PLAN_PROPOSE): {"app": "env-monitor", "component": "aggregator", "instance_id": "x", "node": node,
                                 "reason": "fuzz"},
        str(Kind.CONFIG_UPDATE): {"mode": "heuristic"},
        str(Kind.PING): {"sent_at": now},
        str(Kind.DECISIONS_QUERY): {},
        str(Kind.SIM_FAULT): {"kind": "clear"},
        str(Kind.STATUS_REPORT): {"source": node, "full": False, "instances": []},
        str(Kind.TELEMETRY_REPORT): {"source": node, "node": node, "t": now, "window": 1.0, "series": []},
        str(Kind.NODE_KNOB): {"knob": "cpu_frequency", "command": {"command": "get"}},
        "children.query": {"what": "states"},
        "telemetry.config.query": {},
        "model.fetch": {"name": "qos-response-time"},
        "model.report": {"observations": []},
        "model.train": {"name": "qos-response-time"},
    }


def mutate(data: Any, body: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for _ in range(data.draw(st.sampled_from([0, 0, 1, 1, 2, 3]), label="mutations")):
        keys = sorted(body)
        # an unknown key is always refused (every schema forbids extras): rarer, so most cases reach handlers
        op = data.draw(st.sampled_from(["set", "set", "drop", "add"] if keys else ["add"]), label="op")
        if op == "add":
            body[data.draw(st.text(max_size=8), label="new key")] = data.draw(junk, label="new value")
        else:
            key = data.draw(st.sampled_from(keys), label="key")
            if op == "drop":
                del body[key]
            else:
                body[key] = data.draw(junk, label="value")
    return body


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def slice_rt(prosody: Any) -> Any:
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides=FAST)
    await rt.start()
    try:
        await until(lambda: formed(rt), 20, "hierarchy did not form")
        rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
        await until(lambda: all(s["status"] == "running" for s in rt.continuum.app_status("env-monitor").values()),
                    30, "env-monitor did not run")
        yield rt
    finally:
        await rt.stop()


def senders_for(rt: SliceRuntime, agent: MLSysOpsAgent) -> list[str]:
    """JIDs of the slice that may stand in a relation to `agent` (parent, children, the continuum)."""
    everyone = [rt.continuum, *rt.clusters.values(), *rt.nodes.values()]
    return [f"{a.jid.bare}/fuzz" for a in everyone if a is not agent]


async def deliver(agent: MLSysOpsAgent, senders: list[str], kind: str, performative: Performative,
                  body: dict[str, Any], outcomes: dict[str, int], crashes: list[str]) -> None:
    """What `_on_message` does with a message, minus the transport: schema (decode), sender rule, handler."""
    entry = agent._handlers[kind]
    try:
        checked, inst = validate_body(kind, performative, body)
    except ProtocolError as exc:
        assert exc.reason
        outcomes["schema refused"] = outcomes.get("schema refused", 0) + 1
        return
    env = None
    for sender in senders:
        candidate = Envelope(kind=kind, performative=performative, sender=sender, body=checked)
        if agent.authorize(candidate, entry.allowed) is None:
            env = candidate
            break
    if env is None:
        outcomes["no sender may send it"] = outcomes.get("no sender may send it", 0) + 1
        return
    env._payload = inst
    try:
        result = await asyncio.wait_for(entry.handler(env), 15)
    except HandlerError as exc:
        assert exc.reason, f"{kind}: a refusal without a reason"
        outcomes["handler refused"] = outcomes.get("handler refused", 0) + 1
        return
    except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
        crashes.append(f"{agent.agent_id} {kind}/{performative.value} {body!r:.300}: {type(exc).__name__}: {exc}")
        return
    outcomes["answered"] = outcomes.get("answered", 0) + 1
    if performative is Performative.REQUEST:
        try:
            encode(env.reply(Performative.INFORM, _as_dict(result)), to="x@localhost", sender=str(agent.jid))
        except ProtocolError as exc:
            crashes.append(f"{agent.agent_id} {kind}: invalid reply {exc.reason}")


def fuzz_agent(rt: SliceRuntime, agent: MLSysOpsAgent, loop: asyncio.AbstractEventLoop,
               outcomes: dict[str, int], crashes: list[str]) -> None:
    """Runs in a thread (hypothesis is sync); each case is delivered on the slice's loop."""
    # bodies name the child the agent hears them from: a cluster for the continuum, a node of edge-1 below
    child = {id(rt.continuum): "edge-1", id(rt.clusters["edge-1"]): "edge-rpi-1"}.get(id(agent), agent.agent_id)
    bodies = valid_bodies(child)
    kinds = sorted(agent._handlers)
    senders = senders_for(rt, agent)

    @FUZZ
    @given(data=st.data())
    def one(data: Any) -> None:
        kind = data.draw(st.sampled_from(kinds), label="kind")
        performative = data.draw(st.sampled_from(sorted(agent._handlers[kind].performatives)), label="performative")
        body = mutate(data, bodies.get(kind, {}))
        asyncio.run_coroutine_threadsafe(
            deliver(agent, senders, kind, performative, body, outcomes, crashes), loop).result(60)

    # every kind's valid body first, as each performative it handles: each handler is reached at least once
    for kind in kinds:
        for performative in sorted(agent._handlers[kind].performatives):
            asyncio.run_coroutine_threadsafe(
                deliver(agent, senders, kind, performative, copy.deepcopy(bodies.get(kind, {})), outcomes, crashes),
                loop).result(60)
    outcomes["baseline reached"] = outcomes.get("answered", 0) + outcomes.get("handler refused", 0)
    one()


@pytest.mark.xmpp
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("which", ["continuum", "cluster", "node"])
async def test_every_handled_kind_answers_or_refuses_with_a_reason_and_the_agent_lives_on(
        slice_rt: SliceRuntime, which: str) -> None:
    rt = slice_rt
    agent = {"continuum": rt.continuum, "cluster": rt.clusters["edge-1"], "node": rt.nodes["edge-rpi-1"]}[which]
    outcomes: dict[str, int] = {}
    crashes: list[str] = []
    await asyncio.to_thread(fuzz_agent, rt, agent, asyncio.get_running_loop(), outcomes, crashes)
    assert not crashes, "\n".join(crashes[:10])
    # the fuzzer must reach the handlers, not only the schemas: every valid body does, and mutated ones too
    reached = outcomes.get("answered", 0) + outcomes.get("handler refused", 0)
    assert outcomes["baseline reached"] >= len(agent._handlers) // 2, repr(sorted(outcomes.items()))
    assert reached - outcomes["baseline reached"] >= EXAMPLES // 10, repr(sorted(outcomes.items()))
    for other in [rt.continuum, *rt.clusters.values(), *rt.nodes.values()]:
        assert other.is_alive(), other.agent_id
    # a ping over the bus both ways of the fuzzed agent: it still sends (continuum) or answers (the others)
    parent = rt.clusters["edge-1"] if which == "node" else rt.continuum
    target = agent if which != "continuum" else rt.clusters["edge-1"]
    pong = await parent.request(str(target.jid.bare), Kind.PING, {"sent_at": time.time()}, timeout=10)
    assert pong.performative is Performative.INFORM


@FUZZ
@given(data=st.data())
def test_the_far_edge_dispatcher_answers_or_refuses_with_a_reason(data: Any) -> None:
    kind = data.draw(st.sampled_from([str(Kind.PING), str(Kind.CONFIG_UPDATE), str(Kind.NODE_KNOB), "app.deploy"]))
    body = mutate(data, valid_bodies("far-edge-1").get(kind, {}))
    frame = Frame(kind=kind, performative=Performative.REQUEST, id="f", reply_to=None, body=body)

    async def run() -> dict[str, Any]:
        # the real agent, never connected: the dispatcher is what its `_on_message` runs for the parent
        agent = FarEdgeAgent("far-edge-1@localhost", "x", parent="cluster-edge-1@localhost",
                             cpufreq_root=str(CPUFREQ), permitted_actions=["cpu_frequency"])
        return await far_edge_handlers.dispatch(agent, frame)

    try:
        result = asyncio.run(run())
    except far_edge_handlers.RequestFailed as exc:
        assert exc.reason
        return
    assert isinstance(result, dict)
    encode_text("r", "f", result, kind=kind, performative=Performative.INFORM.value)   # what it would send
