"""What a cluster agent writes into its MLSysOpsCluster/MLSysOpsNode `.status` (cluster/cr_status.py): node
readiness from the node agent, Kubernetes and draining, with the reason in the conditions."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlsysops.agents.descriptions import MLSysOpsCluster, load_file
from mlsysops.agents.membership import ChildRecord
from mlsysops.agents.protocol import Role
from mlsysops.cluster import cr_status
from mlsysops.cluster.agent import ClusterAgent

DEMO_NODES = Path(__file__).resolve().parents[1] / "examples" / "slices" / "demo" / "nodes"
NODES = ("edge-rpi-1", "edge-rpi-2", "edge-server-1")


class Writer:
    def __init__(self) -> None:
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}

    def set(self, kind: str, name: str, status: dict[str, Any]) -> None:
        self.statuses[(kind, name)] = status


def agent() -> ClusterAgent:
    cluster = MLSysOpsCluster.model_validate({"cluster_id": "edge-1", "nodes": list(NODES)})
    nodes = {n: load_file(DEMO_NODES / f"{n}.yaml")[0].spec for n in NODES}
    ag = ClusterAgent("cluster-edge-1@localhost", "pw", description=cluster, nodes=nodes,
                      node_jids={n: f"node-{n}@localhost" for n in NODES}, placement=SimpleNamespace(apply=lambda _cmd: None),
                      parent=None)
    now = time.time()
    for n in ("edge-rpi-1", "edge-rpi-2"):   # edge-server-1's agent never registered
        jid = f"node-{n}@localhost"
        ag.children._children[jid] = ChildRecord(jid=jid, agent_id=n, role=Role.NODE, description={},
                                                 joined_at=now, last_heartbeat=now)
    ag.instances.adopt({"instance_id": "i1", "app": "a", "component": "web", "node": "edge-rpi-1"}, "running")
    return ag


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_node_status_says_why_a_node_is_not_ready() -> None:
    ag = agent()
    up = cr_status.node_status(ag, "edge-rpi-1")
    assert up["phase"] == "Ready" and up["components"] == {"a/web": "running"}
    assert up["instances"] == {"running": 1, "deploying": 0} and up["schedulable"] is True
    assert all(c["status"] for c in up["conditions"])
    assert "kubernetes" not in up          # no inventory: not on Kubernetes

    never = conditions(cr_status.node_status(ag, "edge-server-1"))
    assert never["Ready"]["status"] is False and never["AgentConnected"]["message"] == "never registered"

    ag.children._children["node-edge-rpi-2@localhost"].alive = False
    ag.children._children["node-edge-rpi-2@localhost"].lost_reason = "missed 3 heartbeats"
    lost = cr_status.node_status(ag, "edge-rpi-2")
    assert lost["phase"] == "NotReady" and lost["agent"] == {"connected": False, "reason": "missed 3 heartbeats"}
    assert conditions(lost)["Ready"]["message"] == "node agent: missed 3 heartbeats"

    ag.cordoned.add("edge-rpi-1")
    drained = conditions(cr_status.node_status(ag, "edge-rpi-1"))
    assert drained["Schedulable"]["status"] is False and drained["Schedulable"]["reason"] == "Cordoned"
    ag.not_ready.add("edge-rpi-1")      # Kubernetes says NotReady while the agent still runs
    st = cr_status.node_status(ag, "edge-rpi-1")
    assert st["phase"] == "NotReady" and "Kubernetes reports" in conditions(st)["Ready"]["message"]


def test_cluster_status_counts_ready_nodes_and_is_written_on_membership_changes() -> None:
    ag = agent()
    writer = Writer()
    ag.attach_status_writer(writer)
    st = writer.statuses[("MLSysOpsCluster", "edge-1")]
    assert (st["phase"], st["nodes"], st["readyNodes"]) == ("Degraded", 3, 2)
    assert conditions(st)["Ready"]["message"] == "2/3 nodes ready (not ready: edge-server-1)"
    assert conditions(st)["ContinuumConnected"]["status"] is True      # no parent: nothing to be connected to
    assert {k for k in writer.statuses if k[0] == "MLSysOpsNode"} == {("MLSysOpsNode", n) for n in NODES}

    ag.substrate_error = "API server unreachable: timeout"
    ag._write_cr_status()
    sub = conditions(writer.statuses[("MLSysOpsCluster", "edge-1")])["SubstrateReachable"]
    assert sub["status"] is False and sub["message"] == "API server unreachable: timeout"
