"""The original plugin contract in front of our engine (mlsysops.agents.compat), piece by piece: mechanism
return semantics through the real registry and plan scheduler, policy argument shapes, original mechanism
names, and the helper modules original plugins import."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest

from mlsysops.agents.compat import (
    OriginalMechanism,
    OriginalPolicy,
    original_policy_name,
    shapes,
    wanted_packages,
)
from mlsysops.agents.compat.frame import MetricFrame, frame_from_telemetry
from mlsysops.agents.compat.names import PlanTranslationError, translate_plan
from mlsysops.agents.mape.decision_log import DecisionLog
from mlsysops.agents.mape.engine import MAPEEngine
from mlsysops.agents.mape.knowledge import Knowledge, Telemetry
from mlsysops.agents.mape.plugins import MechanismRegistry, PolicyRegistry
from mlsysops.agents.mape.scheduler import Plan, PlanScheduler
from tests.support import until

aio = pytest.mark.asyncio(loop_scope="session")

MECHANISM = '''\
import asyncio
from mlsysops.events import MessageEvents

seen = {}


def initialize(inbound_queue, outbound_queue, agent_state):
    seen.update(inbound=inbound_queue, outbound=outbound_queue, state=agent_state, commands=[])


async def _report(uid, status, via):
    await asyncio.sleep(0.05)
    if via == "queue":
        await seen["inbound"].put({"event": MessageEvents.PLAN_EXECUTED.value,
                                   "payload": {"plan_uid": uid, "status": status}})
    else:
        seen["state"].update_plan_status(uid, "{name}", status)


async def apply(command):
    seen["commands"].append(command)
    mode = command.get("mode")
    if mode == "done":
        return True
    if mode in ("report", "fail"):
        status = "Completed" if mode == "report" else "Failed"
        asyncio.get_running_loop().create_task(_report(command["plan_uid"], status, command.get("via")))
        return None if command.get("none") else False
    if mode == "chatty":
        await seen["inbound"].put({"event": "application_removed", "payload": {"name": "x"}})
        return True
    return False          # "silent": pending and never reported


def get_state():
    return None


def get_options():
    return {"modes": ["done", "report", "fail", "silent"]}
'''


def _scheduler(tmp_path: Path, name: str = "origmech", timeout: float = 1.0):
    (tmp_path / f"{name}.py").write_text(MECHANISM.replace("{name}", name))
    registry = MechanismRegistry(agent_id="compat-test")
    messages = []
    (mech,) = registry.load_directory(tmp_path, on_message=lambda m, msg: messages.append((m, msg)))
    log = DecisionLog("compat-test")
    return PlanScheduler(registry, log, execute_timeout=timeout), mech, log, messages


async def _run(sched: PlanScheduler, command: dict) -> tuple[str, str]:
    result = await sched.submit(Plan("p", "app", {"origmech": command}))
    return result.status, result.reason


@aio
async def test_an_original_mechanism_loads_with_queues_and_agent_state(tmp_path):
    sched, mech, _, _ = _scheduler(tmp_path)
    assert isinstance(mech.target, OriginalMechanism)
    seen = mech.target.module.seen
    assert isinstance(seen["inbound"], asyncio.Queue) and isinstance(seen["outbound"], asyncio.Queue)
    assert callable(seen["state"].update_plan_status)
    # get_state() returning None (as clusterPlacement's did) is still a dict for the engine
    assert mech.target.get_state() == {"value": None}


@aio
async def test_truthy_is_done_and_the_plan_uid_is_injected(tmp_path):
    sched, mech, log, _ = _scheduler(tmp_path)
    status, _ = await _run(sched, {"mode": "done"})
    assert status == "completed"
    assert mech.target.module.seen["commands"][0]["plan_uid"]


@aio
@pytest.mark.parametrize("via", ["queue", "agent_state"])
@pytest.mark.parametrize("none", [False, True])
async def test_falsy_is_pending_until_the_mechanism_reports(tmp_path, via, none):
    sched, mech, log, _ = _scheduler(tmp_path)
    status, reason = await _run(sched, {"mode": "report", "via": via, "none": none})
    assert status == "completed", reason
    (rec,) = [r for r in log.query(stage="execute")]
    assert rec.explanation["detail"]["reported"] == "Completed"
    assert rec.explanation["detail"]["plan_uid"] == mech.target.module.seen["commands"][0]["plan_uid"]


@aio
async def test_a_reported_failure_fails_the_plan(tmp_path):
    sched, _, _, _ = _scheduler(tmp_path)
    status, reason = await _run(sched, {"mode": "fail", "via": "queue"})
    assert status == "failed" and "reported 'Failed'" in reason


@aio
async def test_a_falsy_result_never_reported_times_out_and_is_not_completed(tmp_path):
    sched, mech, log, _ = _scheduler(tmp_path, timeout=0.3)
    status, _ = await _run(sched, {"mode": "silent"})
    assert status == "timeout"
    assert not mech.target._waiting          # nothing left waiting for a report
    assert [r.outcome for r in log.query(stage="execute")] == ["timeout"]


@aio
async def test_other_inbound_messages_reach_the_host(tmp_path):
    sched, mech, _, messages = _scheduler(tmp_path)
    assert (await _run(sched, {"mode": "chatty"}))[0] == "completed"
    await asyncio.sleep(0)
    for _ in range(20):
        if messages:
            break
        await asyncio.sleep(0.02)
    assert messages == [("origmech", {"event": "application_removed", "payload": {"name": "x"}})]


def test_agent_state_configuration_reads_as_attributes():
    from mlsysops.agents.compat import OriginalAgentState

    state = OriginalAgentState("n1", configuration={"node": "n1", "cluster": "edge-1"})
    assert state.configuration.node == "n1" and state.configuration["cluster"] == "edge-1"
    with pytest.raises(AttributeError, match="has no 'continuum'"):
        state.configuration.continuum  # noqa: B018 - the read is the test


def test_our_mechanisms_are_not_wrapped(tmp_path):
    (tmp_path / "ours.py").write_text("def initialize(cores=1):\n    pass\n\nasync def apply(c):\n    return True\n")
    (mech,) = MechanismRegistry().load_directory(tmp_path)
    assert not isinstance(mech.target, OriginalMechanism)


def test_mechanism_directories_honour_enabled(tmp_path):
    (tmp_path / "a.py").write_text(MECHANISM.replace("{name}", "a"))
    (tmp_path / "b.py").write_text(MECHANISM.replace("{name}", "b"))
    loaded = MechanismRegistry().load_directory(tmp_path, only=["b"])
    assert [m.name for m in loaded] == ["b"]


# -- policies ---------------------------------------------------------------------------------------------
def test_original_file_names():
    assert original_policy_name("x/policy-relocateComponents.py") == "relocateComponents"
    assert original_policy_name("policy-a-b.py") == "a-b"           # text after the first dash
    assert original_policy_name("relocation.py") is None


def test_packages_are_read_statically_and_reported_not_installed(tmp_path):
    path = tmp_path / "policy-p.py"
    path.write_text(textwrap.dedent('''
        def initialize():
            initialContext = {"scope": "global", "packages": ["numpy==1.0", "left-pad"]}
            return initialContext

        async def analyze(c, a, s, m, t, ml):
            return False, c

        async def plan(c, a, s, m, t, ml):
            return {}, c
    '''))
    assert wanted_packages(path) == ["numpy==1.0", "left-pad"]
    reg = PolicyRegistry([tmp_path], entry_point_group=None)
    (change,) = reg.load_all()
    assert change.kind == "added" and change.name == "p"
    assert "wants packages ['numpy==1.0', 'left-pad'], not installed" in change.detail


def test_a_policy_without_scope_is_refused_with_the_reason(tmp_path):
    (tmp_path / "policy-noscope.py").write_text(
        "def initialize():\n    return {}\nasync def analyze(*a):\n    return False, a[0]\n"
        "async def plan(*a):\n    return {}, a[0]\n")
    reg = PolicyRegistry([tmp_path], entry_point_group=None)
    (change,) = reg.load_all()
    assert change.kind == "failed" and "needs scope 'application' or 'global'" in change.detail


def test_engine_context_keeps_the_policy_context_and_reads_intervals():
    mod = type("M", (), {})()
    mod.initialize = lambda: {"scope": "global", "configuration": {"analyze_interval": "1d"},
                              "telemetry": {"metrics": ["m"], "system_scrape_internval": "5s"},
                              "mechanisms": ["not-ours"], "mine": 1}
    mod.analyze = mod.plan = lambda *a: None
    ctx = OriginalPolicy(mod, "x").initialize()
    assert ctx["configuration"] == {"analyze_interval": 86400}
    assert ctx["telemetry"] == {"metrics": ["m"], "system_scrape_interval": "5s"}
    assert "mechanisms" not in ctx and ctx["original"]["mine"] == 1


CONTINUUM_VIEW = {"now": 0.0, "description": {"continuum_id": "c"}, "app_models": {},
                  "clusters": {"edge-1": {}, "cloud-1": {}}, "assignments": {"a": {"web": "cloud-1"}}}
CLUSTER_VIEW = {"cluster_id": "edge-1", "now": 0.0, "description": {"cluster_id": "edge-1", "nodes": ["n1"]},
                "nodes": {"n1": {"model": None, "alive": True}, "n2": {"model": None, "alive": False}},
                "instances": [{"instance_id": "i1", "app": "a", "component": "web", "node": "n1",
                               "status": "running"}], "app_models": {"a": None}}
NODE_VIEW = {"node": "n1", "now": 0.0, "description": {"name": "n1", "continuum_layer": "edge"},
             "cpu_utilization": [0.5], "instances": [{"instance_id": "i1", "app": "a", "component": "web"}]}


def test_shapes_per_layer():
    app = {"name": "a", "components": [{"metadata": {"name": "web"}}], "policies": None}
    assert shapes.application_description("continuum", app, "application") == [
        {"name": "a", "components": [{"metadata": {"name": "web"}}]}]
    assert [a["name"] for a in shapes.application_description("continuum", {"b": app, "a": app}, "global")] == \
        ["a", "a"]
    (cr,) = shapes.application_description("cluster", app, "application")
    assert cr["spec"]["components"][0]["metadata"]["name"] == "web" and cr["app_uid"] == "a"
    assert shapes.application_description("node", app, "application") == []      # nothing runs here
    local = {**app, "instances": [{"instance_id": "i1", "component": "web", "state": "running", "node": "n1"}]}
    (entry,) = shapes.application_description("node", local, "application")
    assert entry["component_name"] == "web" and entry["pod_spec"]["instance_id"] == "i1"
    assert entry["spec"] == {"name": "a", "components": [{"metadata": {"name": "web"}}]}
    assert shapes.system_description("continuum", CONTINUUM_VIEW) == {
        "MLSysOpsContinuum": {"continuum_id": "c", "clusters": ["cloud-1", "edge-1"]}}
    assert shapes.system_description("cluster", CLUSTER_VIEW)["MLSysOpsCluster"]["nodes"] == ["n1", "n2"]
    assert shapes.system_description("node", NODE_VIEW) == {"MLSysOpsNode": NODE_VIEW["description"]}
    state = shapes.fluidity_state(CLUSTER_VIEW, [cr["spec"]])
    assert state["applications"]["a"]["components"]["web"]["node_placed"] == "n1"
    assert state["nodes"]["n2"]["ready"] is False and state["nodes"]["n1"]["components"] == ["a/web"]


@aio
async def test_telemetry_is_the_original_dict_with_an_async_query(monkeypatch):
    monkeypatch.setenv("LOCAL_OTEL_ENDPOINT", "127.0.0.1:9999")
    k = Knowledge()
    t0 = float(int(time.time()) - 10)
    k.record("system.cpu.utilization", 0.2, {"node": "n1"}, ts=t0)
    k.record("system.cpu.utilization", 0.4, {"node": "n1"}, ts=t0 + 1)
    k.record("response_time_ms", 12.0, {"app": "a"}, ts=t0 + 1.2)
    tel = shapes.telemetry_dict(Telemetry(k))
    assert tel["prometheus_endpoint"] == "127.0.0.1:9999" and "grafana_endpoint" in tel
    latest = await tel["query"](latest=True)
    assert latest["system.cpu.utilization"].values[0] == 0.4 and latest["response_time_ms"].values[0] == 12.0
    assert len(tel["dataframe"]) == 2 and not tel["dataframe"].empty
    ranged = await tel["query"](start_time=t0 + 0.5, end_time=t0 + 2)
    assert ranged.to_dict("records") == [{"timestamp": t0 + 1, "response_time_ms": 12.0,
                                          "system.cpu.utilization": 0.4}]
    with pytest.raises(ValueError, match="empty"):
        await shapes.telemetry_dict(Telemetry(Knowledge()))["query"](latest=True)
    assert frame_from_telemetry(Telemetry(Knowledge())).empty and isinstance(latest, MetricFrame)


def test_original_mechanism_names_resolve_to_ours():
    plan = {"clusterPlacement": {"action": {"component": "edge-1"},
                                 "app": [{"name": "a", "components": [{"metadata": {"name": "web"}}]}]}}
    ours, resolved = translate_plan("continuum", plan, {"cluster_dispatch"}, CONTINUUM_VIEW)
    assert resolved == {"clusterPlacement": "cluster_dispatch"}
    assert ours == {"cluster_dispatch": {"app": "a", "assign": {"web": "edge-1"}, "previous": {"web": "cloud-1"}}}
    proxy = {"fluidity_proxy": {"name": "a", "deployment_plan": {
        "web": [{"action": "move", "src_host": "n1", "target_host": "n2"}]}}}
    ours, _ = translate_plan("node", proxy, {"relocation_proposal"}, NODE_VIEW)
    assert ours["relocation_proposal"] == {"app": "a", "component": "web", "instance_id": "i1", "node": "n1",
                                           "reason": "original plan: move to n2"}
    # a name registered as it is (an original mechanism module loaded under its name) is used as it is
    assert translate_plan("node", proxy, {"fluidity_proxy"}, NODE_VIEW)[1] == {}
    with pytest.raises(PlanTranslationError, match="unknown cluster"):
        translate_plan("continuum", {"clusterPlacement": {"action": {"component": "x"}, "app": [{"name": "a"}]}},
                       set(), CONTINUUM_VIEW)


@aio
async def test_an_original_policy_drives_our_engine(tmp_path):
    """A directory policy in the original contract, one cycle through the real engine and scheduler."""
    (tmp_path / "policy-relocateOne.py").write_text(textwrap.dedent('''
        from mlsysops.logger_util import logger
        from mlsysops.utilities import evaluate_condition

        def initialize():
            return {"scope": "application", "mechanisms": ["fluidity"], "configuration": {"analyze_interval": "1s"}}

        async def analyze(context, application_description, system_description, mechanisms, telemetry, ml):
            latest = await telemetry["query"](latest=True)
            rt = latest["response_time_ms"].values[0]
            target = application_description[0]["spec"]["components"][0]["qos_metrics"][0]["target"]
            logger.test("rt %s target %s", rt, target)
            return evaluate_condition(target, rt, "lower_than"), context

        async def plan(context, application_description, system_description, mechanisms, telemetry, ml):
            cr = application_description[0]
            placed = mechanisms["fluidity"]["state"]["applications"][cr["name"]]["components"]["web"]["node_placed"]
            other = [n for n in system_description["MLSysOpsCluster"]["nodes"] if n != placed][0]
            return {"fluidity": {"name": cr["name"], "deployment_plan": {"initial_plan": False, "web": [
                {"action": "move", "src_host": placed, "target_host": other}]}}}, context
    '''))
    commands = []

    class Fluidity:
        async def apply(self, command):
            commands.append(command)
            return True

    k = Knowledge()
    k.record("response_time_ms", 80.0, {"app": "a", "component": "web"})
    policies = PolicyRegistry([tmp_path], entry_point_group=None)
    policies.load_all()
    mechanisms = MechanismRegistry()
    mechanisms.register("fluidity", Fluidity())
    app = {"name": "a", "components": [{"metadata": {"name": "web"}, "qos_metrics": [
        {"application_metric_id": "response_time_ms", "target": 50, "relation": "lower_or_equal"}]}]}
    engine = MAPEEngine("edge-1", k, policies, mechanisms, DecisionLog("edge-1"), assets=lambda: {"a": app},
                        system_description=lambda: CLUSTER_VIEW, rescan_interval=None)
    await engine.refresh_mechanisms()
    assert await engine.run_cycle("relocateOne", "a") == "completed"
    assert commands == [{"name": "a", "deployment_plan": {"initial_plan": False, "web": [
        {"action": "move", "src_host": "n1", "target_host": "n2"}]}}]


# -- helper modules ---------------------------------------------------------------------------------------
def test_helper_modules_original_plugins_import(caplog):
    from mlsysops.events import MessageEvents
    from mlsysops.logger_util import logger
    from mlsysops.utilities import evaluate_condition

    assert evaluate_condition(1, 2, "lower_than") and evaluate_condition(2, 2, "lower_or_equal")
    assert evaluate_condition(3, 2, "greater_than") and evaluate_condition(2, 2, "greater_or_equal")
    assert evaluate_condition(2, 2, "equal") and not evaluate_condition(3, 2, "lower_than")
    with pytest.raises(ValueError, match="expected one of"):
        evaluate_condition(1, 2, "<")
    assert MessageEvents.PLAN_EXECUTED.value == "plan_executed"
    with caplog.at_level(5, logger="mlsysops.plugins.original"):
        logger.info("hello %s", "policy")
        logger.test("a test-level line")
    assert [r.getMessage() for r in caplog.records][-2:] == ["hello policy", "a test-level line"]


def test_mlstelemetry_stand_in_records_through_opentelemetry():
    from mlstelemetry import MLSTelemetry

    client = MLSTelemetry("policy_cpu", "policy_cpu")
    client.pushMetric("compat_requests", "counter", 2)
    client.pushMetric("compat_requests", "counter", 3)
    client.pushMetric("compat_load", "gauge", 0.7)
    client.pushMetric("compat_seen", "async_counter", 11)
    got = client.getLocalMetrics()
    assert got["compat_requests"] == 5 and got["compat_load"] == 0.7 and got["compat_seen"] == 11
    assert client.getMetric("compat_load") == 0.7
    with pytest.raises(ValueError, match="Unknown instrument type"):
        client.pushMetric("x", "histogram", 1)
    with pytest.raises(NotImplementedError, match="telemetry\\['query'\\]"):
        client.getTelemetryRange("x", 0, 1)


@aio
async def test_a_policy_changing_its_analyze_interval_at_runtime_is_followed(tmp_path):
    """The original dynamicPlacement slows itself to 30 s while a change settles: the engine reads the
    interval from the context the policy returned, not only from initialize()'s."""
    (tmp_path / "policy-slowDown.py").write_text(textwrap.dedent('''
        def initialize():
            return {"scope": "global", "configuration": {"analyze_interval": "1s"}}

        async def analyze(context, application_description, system_description, mechanisms, telemetry, ml):
            context["configuration"]["analyze_interval"] = "30s"
            return False, context

        async def plan(context, *args):
            return {}, context
    '''))
    policies = PolicyRegistry([tmp_path], entry_point_group=None)
    policies.load_all()
    engine = MAPEEngine("edge-1", Knowledge(), policies, MechanismRegistry(), DecisionLog("edge-1"),
                        assets=dict, system_description=lambda: CLUSTER_VIEW, rescan_interval=None)
    engine.start()
    try:
        def next_run():
            pairs = engine.status()["pairs"]
            return pairs and pairs[0]["runs"] >= 1 and pairs[0]["next_run"]
        due = await until(next_run, 10, "the pair never ran")
        assert due - time.time() > 20      # 30 s from the cycle, not the 1 s initialize() asked for
    finally:
        await engine.stop()
