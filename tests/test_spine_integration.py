"""The spine end to end: real agents over a real XMPP server (prosody, every message over the wire),
the simulated continuum, the demo slice. Intervals are short so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from mlsysops.agents.agent_base import RequestFailed
from mlsysops.agents.payloads import AppDeploy, InstanceReport, StatusReport
from mlsysops.agents.protocol import Envelope, Kind, Performative, decode, encode
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.sim import InstanceState
from tests.support import formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(90)]
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5},
        "cluster": {"node_grace": 1.0}}


@pytest_asyncio.fixture(loop_scope="session")
async def make_slice(prosody):
    runtimes: list[SliceRuntime] = []

    async def _make(overrides=None, **kw) -> SliceRuntime:
        merged = {k: dict(v) for k, v in FAST.items()}
        for layer, values in (overrides or {}).items():
            merged.setdefault(layer, {}).update(values)
        rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                          jid_suffix="-" + uuid.uuid4().hex[:6], overrides=merged, **kw)
        runtimes.append(rt)
        await rt.start()
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        return rt

    yield _make
    for rt in runtimes:
        await rt.stop()




def statuses(rt: SliceRuntime, app: str) -> dict[str, str]:
    return {c: s["status"] for c, s in rt.continuum.app_status(app).items()}


def all_running(rt: SliceRuntime, app: str) -> bool:
    st = statuses(rt, app)
    return bool(st) and all(s == "running" for s in st.values())


def write_app(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"app-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


MOVABLE_APP = """
MLSysOpsApp:
  name: {name}
  cluster_placement: {{cluster_id: [edge-1]}}
  components:
    - metadata: {{name: worker}}
      node_placement: {{continuum_layer: [edge, edge_infrastructure]}}
      qos_metrics:
        - {{application_metric_id: response_time_ms, target: {target}, relation: lower_or_equal}}
      containers:
        - image: registry.example.org/worker:1
          platform_requirements:
            cpu: {{requests: 200m}}
            memory: {{requests: 64Mi}}
"""


async def test_hierarchy_forms_and_apps_run_on_eligible_nodes(make_slice):
    rt = await make_slice()
    seen: dict[tuple[str, str], list[str]] = {}
    premature: list[str] = []
    original = rt.continuum._on_status_report

    async def spy(env):   # "running" may reach the continuum only once the sim really runs it
        for comp in env.payload.components:
            seen.setdefault((comp.app, comp.component), []).append(comp.status)
            if comp.status == "running":
                running = [i for i in rt.sim.instances(app=comp.app)
                           if i.component == comp.component and i.state is InstanceState.RUNNING]
                if not running:
                    premature.append(f"{comp.app}/{comp.component}")
        await original(env)

    rt.continuum.on(Kind.STATUS_REPORT, spy, performatives=(Performative.INFORM,))
    rt.apply_file(ROOT / "examples/apps/video-analytics.yaml")
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "video-analytics") and all_running(rt, "env-monitor"), 20,
                "apps did not reach running")
    assert premature == []
    assert seen, "status reports reached the continuum"
    va = rt.continuum.app_status("video-analytics")
    assert va["dashboard"]["nodes"] == ["cloud-vm-2"]                  # pinned
    assert va["camera-capture"]["nodes"] == ["edge-jetson-1"]          # label node-type:jetson + camera d455
    assert rt.spec.nodes[va["detector"]["nodes"][0]].gpu_present       # needs a GPU
    env = rt.continuum.app_status("env-monitor")
    assert str(rt.spec.nodes[env["aggregator"]["nodes"][0]].continuum_layer) == "edge_infrastructure"
    reader = rt.spec.nodes[env["sensor-reader"]["nodes"][0]]
    assert reader.has_sensor("temperature")
    # depends_on: a component never started before its dependency ran
    expl = [r for r in rt.clusters["edge-1"].decisions(app="env-monitor", stage="plan")]
    assert expl, "the cluster recorded its placement plan"
    assert any(r["alternatives"] for r in expl), "plan records name the alternatives considered"
    # sensor-reader depends_on aggregator: created only once an aggregator instance ran
    agg = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator"]
    reader_inst = [i for i in rt.sim.instances(app="env-monitor") if i.component == "sensor-reader"]
    assert agg and reader_inst and all(i.running_at is not None for i in agg)
    assert min(i.created_at for i in reader_inst) >= min(i.running_at for i in agg)


async def test_node_crash_relocates_its_components(make_slice, tmp_path):
    rt = await make_slice()
    rt.apply_file(write_app(tmp_path, MOVABLE_APP.format(name="movable", target=10_000)))
    await until(lambda: all_running(rt, "movable"), 15, "app did not run")
    victim = rt.continuum.app_status("movable")["worker"]["nodes"][0]
    t0 = time.monotonic()
    rt.fail_node(victim)
    await until(lambda: rt.continuum.app_status("movable")["worker"]["status"] != "running", 5,
                "the crash was not noticed")
    await until(lambda: all_running(rt, "movable")
                and victim not in rt.continuum.app_status("movable")["worker"]["nodes"], 15,
                "component not relocated")
    assert time.monotonic() - t0 < 10
    reasons = [r["reason"] for r in rt.clusters["edge-1"].decisions(app="movable")]
    assert any(f"node {victim} lost" in r for r in reasons)
    plans = rt.clusters["edge-1"].decisions(app="movable", policy="relocation", stage="plan")
    assert plans and any(victim in str(p.get("explanation")) for p in plans)


async def test_hung_node_agent_is_detected_by_missed_heartbeats(make_slice, tmp_path):
    rt = await make_slice()
    rt.apply_file(write_app(tmp_path, MOVABLE_APP.format(name="hung", target=10_000)))
    await until(lambda: all_running(rt, "hung"), 15, "app did not run")
    victim = rt.continuum.app_status("hung")["worker"]["nodes"][0]
    rt.hang_node_agent(victim)   # presence stays "available": only heartbeats can tell
    await until(lambda: all_running(rt, "hung") and victim not in rt.continuum.app_status("hung")["worker"]["nodes"],
                15, "hung node's component not relocated")
    reasons = [r["reason"] for r in rt.clusters["edge-1"].decisions()]
    assert any(f"node {victim} lost (missed" in r for r in reasons)
    # make-before-break: the node itself is fine, so the old instance was stopped only after the new one ran
    active = [i for i in rt.sim.instances(app="hung") if not i.state.terminal]
    assert len(active) == 1 and active[0].node != victim


async def test_late_report_from_a_lost_node_does_not_resurrect_its_instances(make_slice, tmp_path):
    """Regression: a report in flight when the node was declared lost set its rows back to running, and
    relocation then added a copy every cycle. Relocation is disabled so the `lost` row stays observable."""
    rt = await make_slice(overrides={"cluster": {"disabled_policies": ["static_placement", "relocation"]}})
    rt.apply_file(write_app(tmp_path, MOVABLE_APP.format(name="stale", target=10_000)))
    await until(lambda: all_running(rt, "stale"), 15, "app did not run")
    edge = rt.clusters["edge-1"]
    victim = rt.continuum.app_status("stale")["worker"]["nodes"][0]
    stale_id = next(iid for iid, row in edge.instances.items() if row["node"] == victim)
    rt.fail_node(victim)
    await until(lambda: edge.instances[stale_id]["status"] == "lost", 5, "loss not recorded")
    stale = Envelope(kind=Kind.STATUS_REPORT, performative=Performative.INFORM, body=StatusReport(
        source=victim, instances=[InstanceReport(instance_id=stale_id, app="stale", component="worker",
                                                 node=victim, status="running")]).model_dump())
    await edge._on_status_report(decode(encode(stale, to=str(edge.jid), sender=rt.jid("node", victim))))
    assert edge.instances[stale_id]["status"] == "lost"
    await asyncio.sleep(1.5)   # several monitor ticks: reconciliation keeps it lost, nothing is added
    assert edge.instances[stale_id]["status"] == "lost"
    assert rt.continuum.app_status("stale")["worker"]["status"] == "relocating"
    assert [i for i in rt.sim.instances(app="stale") if not i.state.terminal] == []


async def test_a_cluster_wide_silence_is_a_full_disruption_that_relocates_nothing(make_slice):
    """Every node agent of edge-1 silent (a partition between the cluster agent and its nodes): the cluster
    suspects itself, records why, and relocates nothing; when they are back, nothing moved."""
    rt = await make_slice()
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "env-monitor"), 20, "app did not run")
    edge = rt.clusters["edge-1"]
    before = {i.instance_id for i in rt.sim.instances(app="env-monitor") if not i.state.terminal}
    for node in edge.nodes:
        rt.hang_node_agent(node)
    await until(lambda: edge.children.in_disruption, 10, "disruption not seen")
    await asyncio.sleep(2.0)   # past the node grace and several analyze intervals
    assert "relocating" not in statuses(rt, "env-monitor").values()
    for node in edge.nodes:
        rt.hang_node_agent(node, hung=False)
    await until(lambda: not edge.children.in_disruption and formed(rt), 15, "nodes not back")
    await until(lambda: all_running(rt, "env-monitor"), 15, "components not running again")
    after = {i.instance_id for i in rt.sim.instances(app="env-monitor") if not i.state.terminal}
    assert after == before
    reasons = [r["reason"] for r in edge.decisions()]
    assert any(r.startswith("full disruption: ") and "children lost at once" in r for r in reasons), reasons
    assert any(r.startswith("full disruption over") for r in reasons)


async def test_nodes_back_after_a_disruption_past_its_limit_keep_their_instances(make_slice):
    """The same silence, lasting past the disruption limit: all lost, nothing could be relocated (the
    aggregator fits only edge-server-1). When they are back and still run their instances, those are
    kept - not `relocating` for ever while they run."""
    rt = await make_slice(overrides={"cluster": {"disruption_limit": 0.5}})
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "env-monitor"), 20, "app did not run")
    edge = rt.clusters["edge-1"]
    for node in edge.nodes:
        rt.hang_node_agent(node)
    await until(lambda: statuses(rt, "env-monitor")["aggregator"] == "relocating", 15, "loss not seen")
    await asyncio.sleep(1.0)
    for node in edge.nodes:
        rt.hang_node_agent(node, hung=False)
    await until(lambda: all_running(rt, "env-monitor"), 15, "components not running again")
    agg = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator" and not i.state.terminal]
    assert [i.node for i in agg] == ["edge-server-1"]        # the same instance, not a redeploy
    kept = [r["reason"] for r in edge.decisions(app="env-monitor") if "kept, node" in r["reason"]]
    assert any("aggregator" in r for r in kept), kept


async def test_a_restarted_node_agent_keeps_its_instances(make_slice):
    """A node agent stops and a fresh one starts while the node runs on (a kubelet restart): within the node
    grace nothing is relocated or redeployed."""
    rt = await make_slice(overrides={"cluster": {"node_grace": 30.0}})
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "env-monitor"), 20, "app did not run")
    edge = rt.clusters["edge-1"]
    before = {i.instance_id: i.node for i in rt.sim.instances(app="env-monitor") if not i.state.terminal}
    victim = rt.continuum.app_status("env-monitor")["aggregator"]["nodes"][0]
    await rt.nodes.pop(victim).stop()
    await until(lambda: not edge.children.child(rt.jid("node", victim)).alive, 10, "loss not seen")
    await asyncio.sleep(1.5)   # several analyze intervals
    await rt.start_node(victim)
    await until(lambda: formed(rt), 15, "node agent did not rejoin")
    await asyncio.sleep(1.5)
    after = {i.instance_id: i.node for i in rt.sim.instances(app="env-monitor") if not i.state.terminal}
    assert after == before and all_running(rt, "env-monitor")
    reasons = [r["reason"] for r in edge.decisions()]
    assert any(f"node {victim} lost" in r and "kept for 30s" in r for r in reasons), reasons
    assert any(f"node {victim} back within its 30s grace" in r for r in reasons), reasons


async def test_a_node_back_without_its_instance_redeploys_it_instead_of_relocating_for_ever(make_slice):
    """The aggregator fits only edge-server-1. Its agent goes silent past the grace (relocating: nowhere to
    go) and meanwhile the instance dies; when the agent is back the component is redeployed there."""
    rt = await make_slice()
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "env-monitor"), 20, "app did not run")
    rt.hang_node_agent("edge-server-1")
    await until(lambda: statuses(rt, "env-monitor")["aggregator"] == "relocating", 15, "loss not seen")
    (agg,) = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator" and not i.state.terminal]
    rt.sim.remove(agg.instance_id)
    rt.hang_node_agent("edge-server-1", hung=False)
    await until(lambda: all_running(rt, "env-monitor"), 20, "aggregator stayed relocating")
    (new,) = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator" and not i.state.terminal]
    assert new.node == "edge-server-1" and new.created_at > agg.created_at   # a new instance (same slot id)


async def test_a_drain_that_cannot_complete_is_reported_and_undone(make_slice):
    """Removing edge-server-1 cannot complete (the aggregator fits nowhere else): the error says which
    component and why, the node stays cordoned with its instance running, and uncordon undoes it."""
    rt = await make_slice()
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "env-monitor"), 20, "app did not run")
    edge = rt.clusters["edge-1"]
    (agg,) = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator" and not i.state.terminal]
    with pytest.raises(TimeoutError) as err:
        await rt.remove_node("edge-server-1", timeout=2.0)
    assert "env-monitor/aggregator" in str(err.value) and "uncordon edge-server-1" in str(err.value)
    assert rt.drain_status("edge-server-1") == {"state": "stuck", "reason": str(err.value)}
    assert statuses(rt, "env-monitor")["aggregator"] == "relocating"
    assert rt.uncordon_node("edge-server-1") == {"name": "edge-server-1", "was": "stuck", "kept": 1}
    await until(lambda: all_running(rt, "env-monitor"), 10, "not running after uncordon")
    assert rt.drain_status("edge-server-1") == {"state": "none", "reason": None}
    (still,) = [i for i in rt.sim.instances(app="env-monitor") if i.component == "aggregator" and not i.state.terminal]
    assert still.instance_id == agg.instance_id
    assert "edge-server-1" in edge._alive_nodes()


async def test_a_removed_node_leaves_membership(make_slice, tmp_path):
    rt = await make_slice()
    rt.apply_file(write_app(tmp_path, MOVABLE_APP.format(name="leaving", target=10_000)))
    await until(lambda: all_running(rt, "leaving"), 15, "app did not run")
    victim = rt.continuum.app_status("leaving")["worker"]["nodes"][0]
    edge = rt.clusters["edge-1"]
    jid = rt.jid("node", victim)
    assert await rt.remove_node(victim, timeout=20) == 1
    assert edge.children.child(jid) is None
    await asyncio.sleep(1.0)   # the stopped agent's presence arrives: it must not be a loss
    reasons = [r["reason"] for r in edge.decisions()]
    assert not any("node None" in r for r in reasons), reasons
    assert all_running(rt, "leaving") and victim not in rt.continuum.app_status("leaving")["worker"]["nodes"]


async def test_qos_violation_triggers_relocation(make_slice, tmp_path):
    # node_overload would propose the move first; this test is about the cluster's QoS path
    # Heartbeats at 1 s: on a loaded CI machine 0.3 s heartbeats can miss and turn this into a node-loss
    # relocation, which is not what this test is about.
    rt = await make_slice(overrides={"node": {"disabled_policies": ["node_overload"]},
                                     "all": {"heartbeat": 1.0}})
    rt.apply_file(write_app(tmp_path, MOVABLE_APP.format(name="latency", target=60)))
    await until(lambda: all_running(rt, "latency"), 15, "app did not run")
    hot = rt.continuum.app_status("latency")["worker"]["nodes"][0]
    rt.sim.load_spike(hot, cpu_cores=rt.sim.node(hot).cpu_cores * 2, duration_s=60)
    await until(lambda: all_running(rt, "latency")
                and hot not in rt.continuum.app_status("latency")["worker"]["nodes"], 20,
                "QoS violation did not trigger a relocation")
    plans = rt.clusters["edge-1"].decisions(app="latency", policy="relocation", stage="plan")
    assert any("qos violated" in str(p.get("explanation")) for p in plans), [
        (p["reason"], p.get("explanation")) for p in plans]


async def test_cluster_agent_restart_does_not_redeploy(make_slice):
    rt = await make_slice()
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "env-monitor"), 15, "app did not run")
    before = {i.instance_id for i in rt.sim.instances(app="env-monitor") if not i.state.terminal}
    new = await rt.restart_cluster("edge-1")
    await until(lambda: formed(rt), 15, "cluster did not re-form")
    await until(lambda: "env-monitor" in new.apps, 10, "continuum did not resync the app")
    await asyncio.sleep(2.0)   # several analyze intervals: a redeploy would have happened by now
    after = {i.instance_id for i in rt.sim.instances(app="env-monitor") if not i.state.terminal}
    assert after == before
    assert all(i.state is InstanceState.RUNNING for i in rt.sim.instances(app="env-monitor")
               if i.instance_id in before)
    assert all_running(rt, "env-monitor")
    assert any("adopted" in r["reason"] for r in new.decisions())


async def test_continuum_restart_mid_deployment_loses_nothing_and_redeploys_nothing(make_slice, tmp_path):
    rt = await make_slice(state_dir=tmp_path / "state")
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    rt.apply_file(ROOT / "examples/apps/video-analytics.yaml")
    # restart while the deployment is under way (dependencies still starting)
    await until(lambda: any(s == "running" for s in statuses(rt, "video-analytics").values()), 15, "no progress")
    new = await rt.restart_continuum()
    assert sorted(new.apps) == ["env-monitor", "video-analytics"]     # nothing lost
    assert new.assignments["video-analytics"], "assignments restored"
    await until(lambda: formed(rt), 15, "clusters did not re-register with the new continuum")
    await until(lambda: all_running(rt, "video-analytics") and all_running(rt, "env-monitor"), 20,
                "status did not reconcile after the restart")
    ids = {i.instance_id for i in rt.sim.instances() if not i.state.terminal}
    await asyncio.sleep(1.5)   # a few analyze cycles later: still exactly the same instances
    assert {i.instance_id for i in rt.sim.instances() if not i.state.terminal} == ids
    assert sum(1 for i in rt.sim.instances() if not i.state.terminal) == 5   # one per component, no duplicates
    assert any("restored 2 app(s)" in r["reason"] for r in new.decisions())
    again = new.submit_app(rt.continuum.app_docs["env-monitor"])      # idempotent re-submission
    assert again.name == "env-monitor" and new.store.history("env-monitor")[-1]["event"] == "accepted"


CRASHY = """
def initialize():
    return {"scope": "application", "configuration": {"analyze_interval": 0.3}}
async def analyze(context, app, system, mechanisms, telemetry, ml):
    raise RuntimeError("boom from a faulty policy")
async def plan(context, app, system, mechanisms, telemetry, ml):
    return {}, context
"""

HANGER = """
def initialize():
    return {"scope": "global", "configuration": {"analyze_interval": 0.5}, "mechanisms": ["hang"]}
async def analyze(context, app, system, mechanisms, telemetry, ml):
    return True, context
async def plan(context, app, system, mechanisms, telemetry, ml):
    return {"hang": {"forever": True}}, context
"""


class HangingMechanism:
    async def apply(self, command):
        await asyncio.sleep(3600)

    async def get_state(self):
        return {}

    async def get_options(self):
        return {}


async def test_faulty_policy_and_hanging_mechanism_are_isolated(make_slice, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "crashy.py").write_text(CRASHY)
    (plugins / "hanger.py").write_text(HANGER)
    rt = await make_slice(overrides={"cluster": {"policy_dirs": [plugins], "execute_timeout": 1.0}})
    for cl in rt.clusters.values():
        cl.mechanisms.register("hang", HangingMechanism())
    rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
    await until(lambda: all_running(rt, "env-monitor"), 20, "placement stopped working")
    edge = rt.clusters["edge-1"]
    await until(lambda: edge.decisions(policy="hanger", outcome="timeout"), 10, "hang not timed out")
    errors = edge.decisions(policy="crashy", outcome="error")
    assert errors and "boom from a faulty policy" in errors[-1]["reason"]
    assert edge.is_alive() and edge.connected


async def test_invalid_requests_are_answered_with_a_reason(make_slice, prosody):
    rt = await make_slice()
    cluster = str(rt.clusters["edge-1"].jid.bare)
    bad = {"MLSysOpsApp": {"name": "x", "components": [{"metadata": {"name": "c"}, "containers": [
        {"image": "i", "platform_requirements": {"cpu": {"requests": "lots"}}}]}]}}
    # the cluster's parent sends it (anyone else is refused before validation: tests/test_authorization.py)
    with pytest.raises(RequestFailed) as err:
        await rt.continuum.request(cluster, Kind.APP_DEPLOY, AppDeploy(app="x", description=bad, components=["c"]))
    assert "components[0].containers[0].platform_requirements.cpu.requests" in err.value.reason
    assert rt.clusters["edge-1"].is_alive()
