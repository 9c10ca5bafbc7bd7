"""MAPE engine: full cycle, isolation of bad policies, hot reload, per-app selection, triggers, backoff."""

import asyncio
import functools
import os
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlsysops.agents.mape import (
    DecisionLog,
    FailureBackoff,
    Knowledge,
    MAPEEngine,
    MechanismRegistry,
    PolicyRegistry,
)
from tests import support

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
pytestmark = pytest.mark.asyncio


# the engine's steps are milliseconds apart: poll often; the timeout only matters when a step never comes
# (the whole suite in one process sees GC pauses of seconds)
until = functools.partial(support.until, timeout=10.0, interval=0.01)


class Scripted:
    """Policy object whose analyze behaviour is chosen per test; counts calls and concurrency."""

    def __init__(
        self,
        scope: str = "application",
        interval: float = 0.1,
        behaviour: str = "ok",
        needed: bool = False,
        plan: dict | None = None,
        mechanisms: list | None = None,
        analyze_delay: float = 0.0,
        priority: int = 0,
        metrics: list | None = None,
    ) -> None:
        self.scope, self.interval, self.behaviour = scope, interval, behaviour
        self.needed, self.plan_dict, self.mechanisms = needed, plan or {}, mechanisms or []
        self.analyze_delay, self.priority, self.metrics = analyze_delay, priority, metrics or []
        self.calls: list[tuple[float, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()

    def initialize(self) -> dict:
        return {
            "scope": self.scope,
            "configuration": {"analyze_interval": self.interval},
            "mechanisms": self.mechanisms,
            "priority": self.priority,
            "telemetry": {"metrics": self.metrics},
        }

    async def _async_analyze(self, context, app, system, mechanisms, telemetry, ml):
        self.calls.append((time.monotonic(), app))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.analyze_delay:
                await asyncio.sleep(self.analyze_delay)
            if self.behaviour == "raise":
                raise RuntimeError("policy bug")
            if self.behaviour == "hang":
                await asyncio.sleep(3600)
            if self.behaviour == "garbage":
                return "yes please"
            context["n"] = context.get("n", 0) + 1
            return self.needed, context
        finally:
            self.in_flight -= 1

    def _sync_hang(self, context, app, system, mechanisms, telemetry, ml):
        self.calls.append((time.monotonic(), app))
        self.release.wait(10)
        return False, context

    @property
    def analyze(self):
        return self._sync_hang if self.behaviour == "sync_hang" else self._async_analyze

    async def plan(self, context, app, system, mechanisms, telemetry, ml):
        return dict(self.plan_dict), context, {"chosen_because": "scripted"}


class Recorder:
    def __init__(self) -> None:
        self.commands: list = []

    async def apply(self, command):
        self.commands.append(command)
        return True

    def get_state(self):
        return {"applied": len(self.commands)}

    def get_options(self):
        return {"nodes": ["n1", "n2"]}


def build(
    policies: dict[str, Any] | None = None, apps: dict | None = None, dirs: list | None = None, **kw: Any
) -> tuple[MAPEEngine, PolicyRegistry, DecisionLog, Knowledge, Recorder]:
    reg = PolicyRegistry(dirs or [], entry_point_group=None, agent_id="t")
    for name, obj in (policies or {}).items():
        reg.register(name, obj)
    reg.load_all()
    mechs = MechanismRegistry()
    rec = Recorder()
    mechs.register("placement", rec)
    log = DecisionLog("t")
    k = Knowledge()
    k.apps.update(apps or {})
    k.system.update({"nodes": ["n1", "n2"]})
    opts = {
        "monitor_interval": 0.05,
        "rescan_interval": 0.05,
        "default_analyze_interval": 0.1,
        "plugin_timeout": 0.2,
        "execute_timeout": 1.0,
    }
    opts.update(kw)
    engine = MAPEEngine(
        "t", k, reg, mechs, log, assets=lambda: k.apps, system_description=lambda: k.system, **opts
    )
    return engine, reg, log, k, rec


async def test_full_cycle_with_reference_style_policy_file() -> None:
    # policy files run in a worker process: the 0.2 s timeout of the hang tests is too tight on a loaded machine
    engine, reg, log, k, rec = build(apps={"app1": {"name": "app1"}}, dirs=[FIXTURES / "policies"],
                                     plugin_timeout=5.0)
    reg.disable("global_sync")
    k.record("cpu_load", 0.42, {"node": "n1"})
    engine.start()
    try:
        await until(lambda: rec.commands)
        assert rec.commands[0] == {"app": "app1", "node": "n1"}
        await until(lambda: log.query(stage="execute"))
        plan_rec = log.query(stage="plan", outcome="planned")[0]
        assert plan_rec.policy == "always_place" and plan_rec.app == "app1"
        assert plan_rec.explanation == {"why": "fixture always places", "load": 0.42}
        assert log.query(stage="schedule", outcome="accepted")[0].plan_id == plan_rec.plan_id
        exe = log.query(stage="execute")[0]
        assert exe.outcome == "completed" and exe.plan_id == plan_rec.plan_id
        ana = log.query(stage="analyze")[0]
        assert ana.outcome == "plan_needed" and ana.inputs["telemetry"] == {"cpu_load": 0.42}
        await until(lambda: k.mechanisms.get("placement", {}).get("state") == {"applied": 1})
        assert k.mechanisms["placement"]["options"] == {"nodes": ["n1", "n2"]}
        assert engine.required_metrics() == ["cpu_load"] and engine.scrape_interval() == 1.0
        def pair_status() -> dict:
            return next(p for p in engine.status()["pairs"] if p["policy"] == "always_place")

        # the cycle's outcome is set when the cycle returns, a moment after its execute record
        await until(lambda: pair_status()["last_outcome"] is not None)
        pair = pair_status()
        assert pair["asset"] == "app1" and pair["last_outcome"] == "completed" and pair["runs"] >= 1
        st = engine.status()
        assert {e["name"] for e in st["load_errors"]} == {"bad_scope", "broken_import"}
        start_event = log.query(stage="event")[0]
        assert "always_place" in start_event.reason and "broken_import" in start_event.reason
    finally:
        await engine.stop()


@pytest.mark.parametrize("behaviour", ["raise", "hang", "sync_hang", "garbage"])
async def test_bad_policy_is_isolated_and_others_keep_running(behaviour: str) -> None:
    bad = Scripted(behaviour=behaviour, interval=0.05)
    good = Scripted(interval=0.05)
    engine, _, log, _, _ = build(
        {"bad": bad, "good": good}, apps={"a": {}}, backoff=FailureBackoff(threshold=100)
    )
    engine.start()
    try:
        expected = {"raise": "error", "hang": "timeout", "sync_hang": "timeout", "garbage": "error"}[
            behaviour
        ]
        await until(lambda: len(log.query(policy="bad", stage="analyze", outcome=expected)) >= 2)
        failure = log.query(policy="bad", stage="analyze")[-1]
        assert failure.outcome == expected
        if behaviour == "raise":
            assert "RuntimeError: policy bug" in failure.reason
        if behaviour == "garbage":
            assert "analyze must return" in failure.reason
        if behaviour.endswith("hang"):
            assert "0.2s" in failure.reason
        n = len(good.calls)
        await until(lambda: len(good.calls) >= n + 3)  # the good policy is unaffected
        assert engine.running and not log.query(policy="good", outcome="error")
    finally:
        bad.release.set()
        await engine.stop()


async def test_failing_policy_is_backed_off() -> None:
    bad = Scripted(behaviour="raise", interval=0.01)
    engine, _, log, _, _ = build({"bad": bad}, apps={"a": {}}, backoff=FailureBackoff(threshold=2, base=0.5))
    engine.start()
    try:
        await until(lambda: len(bad.calls) >= 2)
        await asyncio.sleep(0.2)
        assert len(bad.calls) == 2  # blocked for 0.5 s instead of running every 10 ms
        assert "backing off 0.5s" in log.query(policy="bad")[-1].reason
        pair = engine.status()["pairs"][0]
        assert pair["consecutive_failures"] == 2 and pair["backoff_remaining"] > 0
        await until(lambda: len(bad.calls) >= 3)
    finally:
        await engine.stop()


async def test_plan_for_unknown_or_undeclared_mechanism_is_rejected() -> None:
    pol = Scripted(needed=True, plan={"teleport": 1}, interval=5)
    pol2 = Scripted(needed=True, plan={"placement": 1}, mechanisms=["cpufreq"], interval=5)
    engine, _, log, _, rec = build({"p": pol, "p2": pol2}, apps={"a": {}})
    assert await engine.run_cycle("p", "a") == "error"
    assert await engine.run_cycle("p2", "a") == "error"
    errs = log.query(stage="plan", outcome="error")
    assert "unknown mechanism 'teleport'" in errs[0].reason and "did not declare" in errs[1].reason
    assert rec.commands == []


async def test_per_app_policy_selection_and_global_scope() -> None:
    a, b = Scripted(interval=5), Scripted(interval=5)
    g = Scripted(scope="global", interval=5)
    apps = {"only_a": {"policies": ["a"]}, "both": {}, "dict_form": {"policies": [{"name": "b"}]}}
    engine, reg, _log, k, _ = build({"a": a, "b": b, "g": g}, apps=apps)
    engine.start()
    try:
        expected = {("a", "only_a"), ("a", "both"), ("b", "both"), ("b", "dict_form"), ("g", None)}
        assert {(p["policy"], p["asset"]) for p in engine.status()["pairs"]} == expected
        await until(lambda: len(g.calls) == 1 and len(a.calls) == 2 and len(b.calls) == 2)
        assert set(g.calls[0][1]) == set(apps)  # global scope sees all apps
        # app removal and policy disable stop their loops
        del k.apps["both"]
        reg.disable("b")
        engine.reconcile()
        assert {(p["policy"], p["asset"]) for p in engine.status()["pairs"]} == {("a", "only_a"), ("g", None)}
    finally:
        await engine.stop()


async def test_trigger_runs_now_and_coalesces() -> None:
    pol = Scripted(interval=30, analyze_delay=0.1)
    engine, _, log, _, _ = build({"p": pol}, apps={"x": {}, "y": {}})
    engine.start()
    try:
        await until(lambda: len(pol.calls) == 2)  # first cycle of both pairs at start
        await until(lambda: pol.in_flight == 0)
        t0 = time.monotonic()
        assert engine.trigger("x", reason="node lost") == 1
        await until(lambda: len(pol.calls) == 3, timeout=1.0)
        assert time.monotonic() - t0 < 0.5  # well before the 30 s interval
        assert pol.calls[-1][1] == {}
        # while that cycle runs, five more triggers make exactly one more cycle
        for _ in range(5):
            engine.trigger("x", reason="again")
        await until(lambda: len(pol.calls) == 4)
        await asyncio.sleep(0.3)
        assert len(pol.calls) == 4 and pol.max_in_flight <= 2  # two pairs may overlap, one pair never
        ana = log.query(policy="p", app="x", stage="analyze")
        assert "trigger: node lost" in ana[1].reason
        assert engine.trigger(reason="all") == 2
    finally:
        await engine.stop()


async def test_cycles_of_one_pair_never_overlap() -> None:
    pol = Scripted(interval=0.01, analyze_delay=0.03)
    engine, _, _, _, _ = build({"p": pol}, apps={"x": {}})
    engine.start()
    try:
        results = await asyncio.gather(*(engine.run_cycle("p", "x", reason="manual") for _ in range(4)))
        for _ in range(10):
            engine.trigger("x")
            await asyncio.sleep(0.005)
        await until(lambda: len(pol.calls) >= 8)
        assert results == ["no_plan"] * 4 and pol.max_in_flight == 1
    finally:
        await engine.stop()


def _write(path: Path, needed: bool, interval: float = 0.05) -> None:
    path.write_text(
        textwrap.dedent(f"""
        def initialize():
            return {{"scope": "application", "configuration": {{"analyze_interval": {interval}}},
                    "mechanisms": ["placement"]}}
        async def analyze(context, app, system, mechanisms, telemetry, ml):
            return {needed}, context
        async def plan(context, app, system, mechanisms, telemetry, ml):
            return {{"placement": "from-file"}}, context
    """)
    )
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000 * (1 + int(needed))))


async def test_hot_add_modify_remove_policy_file(tmp_path) -> None:
    engine, _reg, log, _, rec = build(apps={"a": {}}, dirs=[tmp_path], plugin_timeout=5.0)   # (see above)
    engine.start()
    try:
        path = tmp_path / "hot.py"
        _write(path, needed=False)
        await until(lambda: log.query(policy="hot", stage="analyze", outcome="no_plan"))
        assert log.query(stage="event", policy="hot")[0].reason.startswith("policy hot added")
        _write(path, needed=True)
        await until(lambda: "from-file" in rec.commands)
        assert any("modified" in r.reason for r in log.query(stage="event", policy="hot"))
        path.unlink()
        await until(lambda: any("removed" in r.reason for r in log.query(stage="event", policy="hot")))
        assert engine.status()["pairs"] == []
        n = len(log.query(policy="hot", stage="analyze", limit=10_000))
        await asyncio.sleep(0.2)
        assert len(log.query(policy="hot", stage="analyze", limit=10_000)) == n
        # a broken file is an error event and does not disturb the engine
        (tmp_path / "broken.py").write_text("def initialize(:\n")
        await until(lambda: log.query(stage="event", outcome="error", policy="broken"))
        assert engine.running
    finally:
        await engine.stop()


async def test_monitor_hook_and_failures_do_not_stop_monitor() -> None:
    calls = []

    async def monitor() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("scrape failed")

    engine, _, _, _, _ = build({}, monitor=monitor)
    engine.start()
    try:
        await until(lambda: len(calls) >= 4)
        assert engine.status()["monitor_errors"] == 1
    finally:
        await engine.stop()
    assert not engine.running


async def test_on_executed_callback_and_mechanism_failure_is_not_policy_failure() -> None:
    seen = []
    pol = Scripted(needed=True, plan={"placement": "go"}, interval=5)
    engine, _, log, _, rec = build(
        {"p": pol}, apps={"a": {}}, on_executed=lambda plan, m, o, d: seen.append((plan.policy, m, o))
    )
    rec.apply = _failing_apply  # type: ignore[method-assign]
    assert await engine.run_cycle("p", "a") == "failed"
    assert seen == [("p", "placement", "failed")]
    assert engine.backoff.failures(("p", "a")) == 0
    assert log.query(stage="execute")[0].outcome == "failed"
    assert log.query(stage="plan")[0].explanation == {"chosen_because": "scripted"}


async def _failing_apply(command):
    return {"ok": False, "detail": "node full"}
