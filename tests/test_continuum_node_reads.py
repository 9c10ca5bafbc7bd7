"""A cluster's node descriptions, once learnt, survive a failed re-read: a cluster that recovers while it
cannot answer (a registration storm, a loaded machine) keeps the nodes the continuum places on."""

from __future__ import annotations

from typing import Any

import pytest

from mlsysops.agents.agent_base import HandlerError
from mlsysops.agents.child_pages import CHILDREN_QUERY
from mlsysops.agents.descriptions import MLSysOpsCluster, MLSysOpsContinuum
from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.cluster.agent import ClusterAgent
from mlsysops.continuum.agent import ContinuumAgent
from mlsysops.mechanisms.sim_placement import SimPlacementMechanism
from mlsysops.sim import SimContinuum
from tests.conftest import unique_jid
from tests.support import until
from tests.test_scale_registration import generated_nodes


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.xmpp
@pytest.mark.timeout(90)
async def test_a_failed_reread_keeps_the_known_nodes(make_agent: Any, xmpp_server: Any) -> None:
    cid = "keep-1"
    nodes = generated_nodes(3, cid)
    cont_jid, cl_jid = unique_jid("continuum", xmpp_server.domain), unique_jid("cluster", xmpp_server.domain)
    cont = await make_agent(ContinuumAgent, jid=cont_jid, settings=AgentSettings(heartbeat=0.5),
                            description=MLSysOpsContinuum.model_validate({"continuum_id": "keep", "clusters": [cid]}),
                            cluster_jids={cid: cl_jid})
    cluster = await make_agent(
        ClusterAgent, jid=cl_jid, parent=cont_jid, settings=AgentSettings(heartbeat=0.5),
        description=MLSysOpsCluster.model_validate({"cluster_id": cid, "nodes": sorted(nodes)}), nodes=nodes,
        node_jids={n: f"node-{n}@{xmpp_server.domain}" for n in nodes},
        placement=SimPlacementMechanism(SimContinuum([]), cid))
    await until(lambda: len(cont.cluster_nodes.get(cid, {})) == 3, timeout=30, message="nodes learnt")

    async def refuse(_env: Any) -> Any:
        raise HandlerError("busy")

    cluster._handlers[str(CHILDREN_QUERY)].handler = refuse   # every page read fails from now on
    rec = cont.children.child(cl_jid)
    assert rec is not None
    cont.children.declare_lost(cl_jid, "test: lost")          # it comes back with its next heartbeat
    await until(lambda: any("could not be read" in r["reason"] for r in cont.decisions(limit=100)), timeout=30,
                message="the failed re-read is recorded")
    assert rec.alive
    assert sorted(cont.cluster_nodes[cid]) == sorted(nodes)
    assert any("keeping the 3 known" in r["reason"] for r in cont.decisions(limit=100))
