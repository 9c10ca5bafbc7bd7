"""Kubernetes substrate wiring without a server: the slice's substrate section, connection errors, and the
cluster agent's use of an authoritative placement mechanism (status from get_state(), NotReady nodes,
an unreachable API server)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from mlsysops.agents.descriptions import MLSysOpsCluster, load_file
from mlsysops.agents.slice_config import SubstrateConfig
from mlsysops.cli.slice_assembly import SubstrateError, kube_connect
from mlsysops.cluster.agent import ClusterAgent

DEMO_NODES = Path(__file__).resolve().parents[1] / "examples" / "slices" / "demo" / "nodes"
NODES = ("edge-rpi-1", "edge-rpi-2")


def test_substrate_defaults_and_errors():
    sub = SubstrateConfig(type="kubernetes", kubeconfig=Path("kc"), simulate_nodes=True)
    assert (sub.namespace, sub.simulate_nodes) == ("mlsysops-apps", True)
    assert SubstrateConfig().simulate_nodes is False
    with pytest.raises(ValidationError, match="need type kubernetes"):
        SubstrateConfig(type="sim", kubeconfig=Path("kc"))
    with pytest.raises(ValidationError, match="simulate_nodes needs type kubernetes"):
        SubstrateConfig(type="karmada", simulate_nodes=True)
    with pytest.raises(ValidationError, match="namespace"):
        SubstrateConfig(type="kubernetes", namespace="Not_A_Namespace")


def test_kube_connect_says_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SubstrateError, match="kubeconfig is required outside a Kubernetes pod"):
        asyncio.run(kube_connect(SubstrateConfig(type="kubernetes")))
    with pytest.raises(SubstrateError, match="is not a file"):
        asyncio.run(kube_connect(SubstrateConfig(type="kubernetes", kubeconfig=tmp_path / "missing")))
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    with pytest.raises(SubstrateError, match="context nope"):
        asyncio.run(kube_connect(SubstrateConfig(type="kubernetes", kubeconfig=bad, context="nope")))


class FakeKube:
    """Stands in for KubePlacementMechanism's get_state() (authoritative for instance status)."""

    name = "component_placement"
    capabilities = frozenset({"reports_status"})

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"instances": [], "nodes_up": {n: True for n in NODES}}

    async def get_state(self) -> dict[str, Any]:
        return self.state

    async def get_options(self) -> dict[str, Any]:
        return {}

    async def apply(self, command: Any) -> dict[str, Any]:
        return {"ok": True, "detail": []}


def inst(iid: str, node: str, state: str, reason: str | None = None) -> dict[str, Any]:
    return {"instance_id": iid, "app": "a", "component": "c", "node": node, "state": state, "reason": reason}


@pytest.fixture
def agent():
    mech = FakeKube()
    cluster = MLSysOpsCluster.model_validate({"cluster_id": "edge-1", "nodes": list(NODES)})
    nodes = {n: load_file(DEMO_NODES / f"{n}.yaml")[0].spec for n in NODES}
    ag = ClusterAgent("cluster-edge-1@localhost", "pw", description=cluster, nodes=nodes,
                      node_jids={n: f"node-{n}@localhost" for n in NODES}, placement=mech, parent=None)
    # both node agents alive (membership is not what these tests are about)
    ag.children.children = lambda alive_only=False: [SimpleNamespace(jid=f"node-{n}@localhost", alive=True,
                                                                     held=False) for n in NODES]
    return ag, mech


def events(ag: ClusterAgent) -> list[str]:
    return [r.reason for r in ag.decision_log.query(stage="event", limit=100)]


def test_status_comes_from_the_substrate(agent):
    ag, mech = agent
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "starting")]
    asyncio.run(ag.monitor())
    assert ag.instances["i1"]["status"] == "deploying"
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "starting", "Unschedulable: 0/2 nodes are available")]
    asyncio.run(ag.monitor())
    up = ag.component_status("a", "c")     # what holds it up goes up with "deploying"
    assert (up.status, up.reason) == ("deploying", "Unschedulable: 0/2 nodes are available")
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "running")]
    asyncio.run(ag.monitor())
    assert ag.instances["i1"]["status"] == "running"
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "failed", "ProgressDeadlineExceeded")]
    asyncio.run(ag.monitor())
    assert (ag.instances["i1"]["status"], ag.instances["i1"]["reason"]) == ("failed", "ProgressDeadlineExceeded")
    up = ag.component_status("a", "c")   # what goes up to the continuum
    assert (up.status, up.reason) == ("failed", "ProgressDeadlineExceeded")


def test_a_failing_pod_on_a_ready_node_holds_its_place(agent):
    """ImagePullBackOff on a Ready node: failed with the reason, but Kubernetes retries it there, so the
    placement policies see the slot taken and place no second, equally failing Deployment elsewhere."""
    from mlsysops.agents.placement.cluster_view import ClusterState

    ag, mech = agent
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "failed", "ImagePullBackOff: Back-off pulling image")]
    asyncio.run(ag.monitor())
    up = ag.component_status("a", "c")
    assert (up.status, up.reason) == ("failed", "ImagePullBackOff: Back-off pulling image")
    state = ClusterState.from_system(ag.system_description())
    assert [i["instance_id"] for i in state.active("a", "c")] == ["i1"]
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "running")]     # the operator fixed the image
    asyncio.run(ag.monitor())
    assert ag.component_status("a", "c").status == "running" and not ag.instances["i1"]["retrying"]


def test_a_node_agent_back_before_any_replacement_keeps_its_instance(agent):
    """The node agent was lost (its instance `lost`), nothing replaced it, Kubernetes says it still runs:
    once the agent is back the instance is kept, with an event saying so."""
    ag, mech = agent
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "running")]
    asyncio.run(ag.monitor())
    everyone = ag.children.children
    ag.children.children = lambda alive_only=False: [c for c in everyone() if "edge-rpi-2" in c.jid]
    asyncio.run(ag._node_lost(SimpleNamespace(jid="node-edge-rpi-1@localhost"), "missed 3 heartbeats"))
    asyncio.run(ag.monitor())
    assert ag.instances["i1"]["status"] == "lost"
    ag.children.children = everyone
    asyncio.run(ag.monitor())
    assert ag.instances["i1"]["status"] == "running"
    assert any("instance i1 kept, node edge-rpi-1 is back" in e for e in events(ag))


def test_not_ready_node_is_not_alive_and_its_instances_are_lost(agent):
    ag, mech = agent
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "running"), inst("i2", "edge-rpi-2", "running")]
    asyncio.run(ag.monitor())
    mech.state = {"instances": [inst("i1", "edge-rpi-1", "failed", "node edge-rpi-1 is not ready"), inst("i2", "edge-rpi-2", "running")],
                  "nodes_up": {"edge-rpi-1": False, "edge-rpi-2": True}}
    asyncio.run(ag.monitor())
    assert ag._alive_nodes() == {"edge-rpi-2"}
    assert ag.instances["i1"]["status"] == "lost" and ag.instances["i2"]["status"] == "running"
    assert any("node edge-rpi-1 is not ready" in e for e in events(ag))
    mech.state["nodes_up"] = {"edge-rpi-1": True, "edge-rpi-2": True}
    asyncio.run(ag.monitor())
    assert ag._alive_nodes() == {"edge-rpi-1", "edge-rpi-2"}
    assert ag.instances["i1"]["status"] == "lost"   # stays lost until relocation replaces it


def test_stale_state_keeps_the_table_and_records_one_event(agent):
    ag, mech = agent
    mech.state["instances"] = [inst("i1", "edge-rpi-1", "running")]
    asyncio.run(ag.monitor())
    mech.state = {"instances": [], "nodes_up": {}, "stale": True, "error": "API server unreachable: boom"}
    for _ in range(3):
        asyncio.run(ag.monitor())
    assert ag.instances["i1"]["status"] == "running"
    assert ag.substrate_error == "API server unreachable: boom"
    assert sum("substrate unreachable" in e for e in events(ag)) == 1
    mech.state = {"instances": [inst("i1", "edge-rpi-1", "running")], "nodes_up": {n: True for n in NODES}}
    asyncio.run(ag.monitor())
    assert ag.substrate_error is None and any("reachable again" in e for e in events(ag))
    assert ag.instances["i1"]["status"] == "running"


def test_adopted_rows_wait_for_node_agents_but_not_ready_nodes_lose_them(agent):
    """A restarted cluster agent adopts what Kubernetes runs; node agents not yet registered do not make
    its instances lost (Kubernetes says they run), a NotReady node does."""
    ag, mech = agent
    ag.children.children = lambda alive_only=False: []
    mech.state = {"instances": [inst("i1", "edge-rpi-1", "running"),
                                inst("i2", "edge-rpi-2", "failed", "node edge-rpi-2 is not ready")],
                  "nodes_up": {"edge-rpi-1": True, "edge-rpi-2": False}}
    asyncio.run(ag.adopt())
    asyncio.run(ag.monitor())
    assert ag.instances["i1"]["status"] == "running"
    assert (ag.instances["i2"]["status"], ag.instances["i2"]["reason"]) == ("lost", "node edge-rpi-2 is not ready")


def test_qos_windows_find_pod_labelled_samples(agent):
    """On Kubernetes node agents label QoS samples with the pod ("ns/pod"), not our instance id: the
    cluster's QoS view (what the relocation policy reads) must still see them."""
    ag, mech = agent
    mech.state["instances"] = [inst("a.c.0@edge-rpi-1", "edge-rpi-1", "running")]
    asyncio.run(ag.monitor())
    since = ag.instances["a.c.0@edge-rpi-1"]["since"]
    labels = {"node": "edge-rpi-1", "app": "a", "component": "c", "instance": "apps/c-7d9f-xk2"}
    for i, v in enumerate((40.0, 90.0, 120.0)):
        ag.knowledge.record("response_time_ms", v, labels, ts=since + 1 + i)
    ag.knowledge.record("response_time_ms", 999.0, {**labels, "node": "edge-rpi-2"}, ts=since + 5)  # other node
    assert ag._qos_windows() == {"a/c": [40.0, 90.0, 120.0]}
