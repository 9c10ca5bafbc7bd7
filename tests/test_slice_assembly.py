"""The composition root: one slice's agents are wired the same way for `mlsysops up` and `mlsysops agent`."""

from __future__ import annotations

from mlsysops.agents.descriptions import load_file
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_assembly import SliceAssembly, agent_jid
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.mechanisms.remote_sim_placement import RemoteSimPlacementMechanism
from mlsysops.mechanisms.sim_placement import SimPlacementMechanism
from mlsysops.sim import SimContinuum
from tests.support import DEMO, ROOT


def test_the_tree_is_wired_from_the_slice_config() -> None:
    spec = load_slice(DEMO)
    asm = SliceAssembly(spec, xmpp_port=5222)
    cont = asm.continuum_agent()
    assert str(cont.jid) == agent_jid("continuum", spec.continuum.continuum_id, "localhost")
    for cid in spec.clusters:
        cluster = asm.cluster_agent(cid, asm.placement_for(cid, sim_url="http://127.0.0.1:1"))
        assert cluster.parent == str(cont.jid.bare)
        assert set(cluster.node_jids) == {n.name for n in spec.cluster_nodes(cid)}
        assert cont.cluster_jids[cid] == str(cluster.jid)
        for name, jid in cluster.node_jids.items():
            node = asm.node_agent(name, substrate=None)
            assert str(node.jid) == jid and node.parent == str(cluster.jid)


def test_up_and_agent_build_the_same_agents() -> None:
    """SliceRuntime (one process) and a per-process agent differ only in where the simulator lives."""
    spec = load_slice(DEMO)
    rt = SliceRuntime(spec, xmpp_port=5222)
    alone = SliceAssembly(spec, xmpp_port=5222)
    cid = next(iter(spec.clusters))
    in_process = rt.assembly.placement_for(cid, sim=SimContinuum.from_specs([]))
    remote = alone.placement_for(cid, sim_url="http://127.0.0.1:1")
    assert isinstance(in_process, SimPlacementMechanism) and isinstance(remote, RemoteSimPlacementMechanism)
    a, b = rt.assembly.cluster_agent(cid, in_process), alone.cluster_agent(cid, remote)
    assert (str(a.jid), a.parent, a.node_jids, a.settings) == (str(b.jid), b.parent, b.node_jids, b.settings)
    # each placement mechanism resolves components from the apps of the agent it serves
    doc = load_file(ROOT / "examples" / "apps" / "env-monitor.yaml", inventory=spec.inventory)[0]
    for agent, mech in ((a, in_process), (b, remote)):
        agent.apps[doc.name] = doc.spec
        comp = doc.spec.components[0].name
        assert mech.resolve(doc.name, comp, None).cpu_cores > 0


def test_liveness_intervals_reach_the_parents(tmp_path) -> None:
    """`intervals.node_grace`, `eviction_timeout`, `disruption_fraction`/`_limit` from the slice file end in
    the agents' settings and their membership."""
    text = DEMO.read_text().replace("demo/", f"{DEMO.parent}/demo/").replace(
        "liveness_misses: 3", "liveness_misses: 3\n  node_grace: 4s\n  eviction_timeout: 1m\n"
                              "  disruption_fraction: 0.8\n  disruption_limit: 45s")
    path = tmp_path / "slice.yaml"
    path.write_text(text)
    asm = SliceAssembly(load_slice(path), xmpp_port=5222)
    cont = asm.continuum_agent()
    cluster = asm.cluster_agent("edge-1", asm.placement_for("edge-1", sim_url="http://127.0.0.1:1"))
    assert cont.settings.eviction_timeout == 60.0 and cluster.settings.node_grace == 4.0
    for parent in (cont.children, cluster.children):
        assert parent.disruption_fraction == 0.8 and parent.disruption_limit == 45.0
