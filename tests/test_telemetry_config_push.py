"""A parent pushes its telemetry collection plan to each child once per plan version: a child that
answers and refuses (an agent without telemetry collection) is not asked again every monitor tick."""

from __future__ import annotations

from typing import Any

import pytest

from mlsysops.agents.agent_base import MLSysOpsAgent
from mlsysops.agents.descriptions import MLSysOpsCluster
from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.agents.membership import ChildMembership
from mlsysops.agents.protocol import Kind, Role
from mlsysops.cluster.agent import ClusterAgent
from mlsysops.mechanisms.sim_placement import SimPlacementMechanism
from mlsysops.sim import SimContinuum
from tests.conftest import unique_jid
from tests.support import until
from tests.test_scale_registration import generated_nodes


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.xmpp
async def test_a_child_that_refuses_the_plan_is_not_asked_every_tick(make_agent: Any, prosody: Any) -> None:
    cid = "push-1"
    nodes = generated_nodes(1, cid)
    name = next(iter(nodes))
    node_jid = unique_jid("node", prosody.domain)
    parent = await make_agent(MLSysOpsAgent, prefix="continuum", server=prosody)   # answers nothing: the cluster stays unregistered
    cluster = await make_agent(
        ClusterAgent, server=prosody, jid=unique_jid("cluster", prosody.domain), parent=str(parent.jid),
        settings=AgentSettings(heartbeat=0.5, monitor=0.1),
        description=MLSysOpsCluster.model_validate({"cluster_id": cid, "nodes": [name]}), nodes=nodes,
        node_jids={name: node_jid}, placement=SimPlacementMechanism(SimContinuum([]), cid))
    asked: list[str] = []
    outcomes: list[str] = []
    request = cluster.request

    async def counting_request(to: str, kind: Any, body: Any, **kw: Any) -> Any:
        if kind == Kind.CONFIG_UPDATE:
            asked.append(to)
            try:
                reply = await request(to, kind, body, **kw)
            except Exception as exc:
                outcomes.append(type(exc).__name__)
                raise
            outcomes.append("ok")
            return reply
        return await request(to, kind, body, **kw)

    cluster.request = counting_request   # type: ignore[method-assign]
    child = await make_agent(MLSysOpsAgent, jid=node_jid, agent_id=name, server=prosody)
    membership = ChildMembership(child, str(cluster.jid), role=Role.NODE, description={}, backoff=0.1)
    await membership.start()
    await until(lambda: cluster.children.children(alive_only=True), timeout=20, message="the node registered")
    await until(lambda: outcomes, timeout=20, message="the plan was pushed and answered")
    assert outcomes[0] == "RequestFailed"   # a bare agent has no CONFIG_UPDATE handler
    await _monitor_ticks(cluster, 5)   # each tick pushes the plan to children that lack it
    assert asked == [node_jid], f"asked {len(asked)} times"
    await membership.stop()


async def _monitor_ticks(agent: Any, n: int) -> None:
    counter = {"n": 0}
    tick = agent._monitor_tick

    async def counted() -> None:
        counter["n"] += 1
        await tick()

    agent.engine.monitor = counted
    await until(lambda: counter["n"] >= n, timeout=30, message=f"{n} monitor ticks")
