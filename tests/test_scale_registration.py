"""A cluster of 2,000 nodes registers with its continuum over the real XMPP server: no message grows with the
number of nodes (registration and heartbeat are constant size; descriptions and states are paged)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mlsysops.agents.child_pages import PAGE_BYTES, page
from mlsysops.agents.descriptions import MLSysOpsCluster, MLSysOpsContinuum, load_file, load_obj, to_k8s
from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.agents.protocol import MAX_DIGEST_BYTES, MAX_MESSAGE_BYTES
from mlsysops.cluster.agent import ClusterAgent
from mlsysops.continuum.agent import ContinuumAgent
from mlsysops.mechanisms.sim_placement import SimPlacementMechanism
from mlsysops.sim import SimContinuum
from tests.conftest import unique_jid
from tests.support import until

NODE = Path(__file__).resolve().parents[1] / "examples" / "slices" / "demo" / "nodes" / "edge-rpi-1.yaml"
N = 2000


def generated_nodes(n: int, cluster: str) -> dict[str, Any]:
    base = to_k8s(load_file(NODE)[0].spec)
    out = {}
    for i in range(n):
        raw = copy.deepcopy(base)
        raw["metadata"]["name"] = raw["spec"]["name"] = f"{cluster}-n{i:05d}"
        raw["spec"]["cluster_id"] = cluster
        out[raw["spec"]["name"]] = load_obj(raw, source="generated").spec
    return out


def test_a_page_stays_under_its_limit_and_always_advances() -> None:
    items = [(f"n{i:04d}", {"name": f"n{i:04d}", "pad": "x" * 500}) for i in range(300)]
    seen, after = [], None
    while True:
        p = page(items, after, version=1, total=len(items))
        assert len(json.dumps(p.model_dump())) < MAX_MESSAGE_BYTES
        assert p.items, "a page is never empty while items remain"
        seen.extend(i["name"] for i in p.items)
        if p.next is None:
            break
        after = p.next
    assert seen == [n for n, _ in items]
    huge = [("a", {"pad": "y" * (PAGE_BYTES + 10)}), ("b", {})]
    assert [i for i in page(huge, None, version=0, total=2).items] == [huge[0][1]]


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.xmpp
@pytest.mark.timeout(240)
async def test_a_cluster_of_2000_nodes_registers(make_agent: Any, xmpp_server: Any) -> None:
    cid = "big-1"
    nodes = generated_nodes(N, cid)
    cont_jid, cl_jid = unique_jid("continuum", xmpp_server.domain), unique_jid("cluster", xmpp_server.domain)
    settings = AgentSettings(heartbeat=0.5)
    cont = await make_agent(ContinuumAgent, jid=cont_jid,
                            description=MLSysOpsContinuum.model_validate({"continuum_id": "big", "clusters": [cid]}),
                            cluster_jids={cid: cl_jid}, settings=settings)
    cluster = await make_agent(
        ClusterAgent, jid=cl_jid, parent=cont_jid, settings=AgentSettings(heartbeat=0.5),
        description=MLSysOpsCluster.model_validate({"cluster_id": cid, "nodes": sorted(nodes)}), nodes=nodes,
        node_jids={n: f"node-{n}@{xmpp_server.domain}" for n in nodes},
        placement=SimPlacementMechanism(SimContinuum([]), cid))
    assert len(json.dumps(cluster._self_description())) < MAX_DIGEST_BYTES   # constant, whatever N
    await until(lambda: len(cont.cluster_nodes.get(cid, {})) == N, timeout=180,
                message="the continuum learnt every node description")
    assert cont.cluster_nodes[cid]["big-1-n01999"].cluster_id == cid
    rec = cont.children.child(cl_jid)
    await until(lambda: rec.seq >= 1 and rec.digest.get("nodes_total") == N, timeout=30, message="heartbeats")
    assert len(json.dumps(rec.digest)) < 200
    # the states are paged too: every node known, none alive (no node agent runs)
    await until(lambda: len(cont.node_state(cid)[0]) == N, timeout=60, message="node states paged")
    assert not any(cont.node_state(cid)[0].values())
    assert rec.alive and not [r for r in cont.decisions(outcome="error") if "big-1" in r.get("reason", "")]
