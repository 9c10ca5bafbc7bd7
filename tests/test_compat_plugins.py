"""Original MLSysOps plugins run unchanged on the simulated continuum (issue 14, "Must show").

The plugins in tests/fixtures/original_plugins are written from the original contract, one per layer:
the continuum policy is loaded from a policy directory, the cluster policy is uploaded through the REST
API as `policy-pinPlacement`, the node policy comes from an entry point (group
`mlsysops.original_policies`), a second, application-scope node policy from a directory, and the node
mechanism `CPUFrequencyConfigurator` from a `mechanisms.node.directories` folder; an original-style
mechanism also arrives as an entry point. Their plans are executed by real mechanisms: the continuum's
`cluster_dispatch` (for `clusterPlacement`), the cluster's Fluidity placement on the simulator, the node's
`relocation_proposal` (for `fluidity_proxy`) over XMPP, and the node mechanism, which answers "pending"
and reports the result later on its inbound queue.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from mlsysops.continuum.api_auth import Role
from tests.support import demo_slice, formed, until

pytestmark = [pytest.mark.xmpp, pytest.mark.asyncio(loop_scope="session")]

FIXTURES = Path(__file__).parent / "fixtures" / "original_plugins"
ADMIN = "compat-admin-token"
CLUSTER_DEFAULTS = ["filter_score_placement", "relocation", "static_placement"]

APP = """\
# an app as a user of the original framework submits it (kind-keyed)
MLSysOpsApp:
  name: compat-app
  cluster_placement:
    cluster_id: [edge-1]
  components:
    - metadata: {name: worker, uid: worker-v1}
      node_placement: {node: edge-server-1}
      containers:
        - image: registry.example.org/worker:1
          platform_requirements:
            cpu: {requests: 200m}
            memory: {requests: 64Mi}
"""

PROBE_MECHANISM = '''\
"""An original-style mechanism installed as an entry point: done at once (a truthy apply)."""
calls = []


def initialize(inbound_queue, outbound_queue, agent_state):
    calls.append(("initialize", agent_state.agent_id))


async def apply(command):
    calls.append(("apply", command["plan_uid"]))
    return True


def get_state():
    return {"calls": len(calls)}


def get_options():
    return None
'''


def _entry_point_package(root: Path) -> None:
    """A distribution on sys.path with an original policy and an original mechanism as entry points."""
    shutil.copy(FIXTURES / "node" / "policy-cpuMin.py", root / "compat_ep_cpu_policy.py")
    (root / "compat_ep_probe.py").write_text(PROBE_MECHANISM)
    info = root / "compat_ep_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: compat-ep-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mlsysops.original_policies]\ncpuMin = compat_ep_cpu_policy\n\n"
                                           "[mlsysops.mechanisms]\ncompatProbe = compat_ep_probe\n")


@pytest_asyncio.fixture(loop_scope="session")
async def slice_with_original_plugins(prosody, tmp_path_factory):
    root = tmp_path_factory.mktemp("compat-ep")
    _entry_point_package(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        overrides = {
            "all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5},
            "continuum": {"policy_dirs": [FIXTURES / "continuum"],
                          "disabled_policies": ["continuum_cluster_placement"]},
            "cluster": {"disabled_policies": CLUSTER_DEFAULTS},
            "node": {"mechanism_dirs": [FIXTURES / "mechanisms"], "policy_dirs": [FIXTURES / "node_app"],
                     "disabled_policies": ["node_overload"]},
        }
        async with demo_slice(prosody.port, overrides, {ADMIN: Role.admin}) as (rt, url):
            await until(lambda: formed(rt), 20, "hierarchy did not form")
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"},
                                         timeout=15) as http:
                yield rt, http


def _records(agent, **filters):
    return [r.to_dict() for r in agent.decision_log.query(**filters)]


async def test_original_plugins_run_unchanged_on_the_simulated_continuum(slice_with_original_plugins):
    rt, http = slice_with_original_plugins
    cont, edge = rt.continuum, rt.clusters["edge-1"]

    # continuum: loaded from the directory under the original name, its packages reported, never installed
    assert "pickCluster" in cont.policies.names()
    loaded = [r for r in _records(cont, stage="event") if "policy pickCluster added" in r["reason"]]
    assert loaded and "wants packages ['scikit-learn==1.4.0'], not installed" in loaded[0]["reason"]

    # cluster: uploaded as policy-NAME through the API, to the cluster the app asks for
    source = (FIXTURES / "cluster" / "policy-pinPlacement.py").read_text()
    r = await http.put(f"/api/v1/policies/{edge.agent_id}/policy-pinPlacement", content=source,
                       headers={"Content-Type": "text/x-python"})
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "pinPlacement"
    assert edge.policies.get("pinPlacement").target.contract == "original"

    # node: the entry-point policy and both plugin mechanisms are loaded on every node agent
    for node in rt.nodes.values():
        assert "cpuMin" in node.policies.names()
        assert {"CPUFrequencyConfigurator", "compatProbe"} <= node.mechanisms.names()
    assert "compatProbe" in edge.mechanisms.names() and "compatProbe" in cont.mechanisms.names()

    r = await http.post("/api/v1/apps", content=APP, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text

    # the continuum policy's clusterPlacement plan went to cluster_dispatch, then the cluster policy's
    # Fluidity plan deployed the component on its pinned node of the simulator
    def running() -> bool:
        return any(i.app == "compat-app" and i.component == "worker" and str(i.state) == "running"
                   for i in rt.sim.instances(node="edge-server-1"))

    await until(running, 30, "the original policies did not get the component running on edge-server-1")
    plans = _records(cont, stage="plan", policy="pickCluster", outcome="planned")
    assert plans[0]["explanation"]["resolved_mechanisms"] == {"clusterPlacement": "cluster_dispatch"}
    assert plans[0]["chosen"]["cluster_dispatch"]["assign"] == {"worker": "edge-1"}
    executed = _records(edge, stage="execute", policy="pinPlacement")
    assert executed and executed[0]["outcome"] == "completed" and executed[0]["mechanism"] == "fluidity"

    # node, application scope: one clone per app with components here; its fluidity_proxy move became a
    # relocation proposal to the cluster (which decides; its relocation policy is off here)
    server = rt.nodes["edge-server-1"]
    proposals = await until(lambda: [p for p in edge.proposals if p["app"] == "compat-app"], 20,
                            "no relocation proposal reached the cluster")
    assert proposals[0]["component"] == "worker" and proposals[0]["node"] == "edge-server-1"
    assert "move to elsewhere" in proposals[0]["reason"]
    (asked,) = _records(server, stage="plan", policy="proposeMove", outcome="planned")
    assert asked["explanation"]["resolved_mechanisms"] == {"fluidity_proxy": "relocation_proposal"}
    assert _records(server, stage="execute", policy="proposeMove")[0]["outcome"] == "completed"

    # node: the pending-then-reported mechanism set the simulated node's CPU frequency to its minimum
    rpi = rt.nodes["edge-rpi-1"]
    lowest = min(rt.sim.node("edge-rpi-1").cpu_freqs_hz)
    await until(lambda: rt.sim.cpu_frequency("edge-rpi-1") == lowest, 20, "CPU frequency not lowered")
    done = await until(lambda: _records(rpi, stage="execute", mechanism="CPUFrequencyConfigurator"), 10,
                       "no execute record of the node mechanism")
    assert done[0]["outcome"] == "completed"
    assert done[0]["explanation"]["detail"]["reported"] == "Completed"
    # cloud-vm-1 does not permit `cpu_frequency`: the policy left it alone (its frequency stays the highest)
    vm1 = rt.nodes["cloud-vm-1"]
    assert "cpu_frequency" not in (vm1.description.permitted_actions or [])
    assert not _records(vm1, stage="execute", mechanism="CPUFrequencyConfigurator")
    freqs = rt.sim.node("cloud-vm-1").cpu_freqs_hz
    assert rt.sim.cpu_frequency("cloud-vm-1") == (max(freqs) if freqs else None)
