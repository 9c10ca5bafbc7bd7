"""Policies that block, overrun or misbehave cannot freeze or exhaust the agent (engine level, real worker
processes): file policies in a sandboxed worker each, built-ins on a loop thread of their own."""

from __future__ import annotations

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
from mlsysops.agents.mape.sandbox import SandboxLimits
from tests import support

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]
until = functools.partial(support.until, timeout=30.0, interval=0.02)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


class Signals:
    """Handed to policies as `ml_connector`: an agent-side object a worker calls back into."""

    def __init__(self) -> None:
        self.started = 0
        self.endpoint = "http://ml-connector:8090"

    def start(self) -> str:
        self.started += 1
        return "go"


class Recorder:
    def __init__(self) -> None:
        self.commands: list[Any] = []

    async def apply(self, command: Any) -> bool:
        self.commands.append(command)
        return True


def write(folder: Path, name: str, body: str, scope: str = "global", interval: float = 0.1) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(f"""
        import time
        def initialize():
            return {{"scope": "{scope}", "configuration": {{"analyze_interval": {interval}}},
                    "mechanisms": ["placement"]}}
        async def plan(context, app, system, mechanisms, telemetry, ml_connector):
            return {{"placement": {{"n": context.get("n")}}}}, context
    """) + textwrap.dedent(body))
    return path


def engine_for(folder: Path, *, timeout: float = 0.5, disable_after: int | None = 3, memory_mb: int = 1024,
               backoff: FailureBackoff | None = None, monitor: Any = None) -> tuple[MAPEEngine, DecisionLog, Any]:
    reg = PolicyRegistry([folder], entry_point_group=None, agent_id="iso", sandbox=SandboxLimits(memory_mb))
    reg.load_all()
    mechs = MechanismRegistry()
    rec = Recorder()
    mechs.register("placement", rec)
    log = DecisionLog("iso")
    k = Knowledge()
    k.record("cpu_load", 0.25, {"node": "n1"})
    engine = MAPEEngine("iso", k, reg, mechs, log, assets=dict, system_description=lambda: {"nodes": ["n1"]},
                        ml_connector=Signals(), plugin_timeout=timeout, monitor_interval=0.05,
                        rescan_interval=0.05, default_analyze_interval=0.1, disable_after=disable_after,
                        backoff=backoff or FailureBackoff(threshold=1, base=0.05, cap=0.2), monitor=monitor)
    return engine, log, rec


BLOCKING = """
async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
    ml_connector.start()
    time.sleep(20)          # blocking, inside async def
    return False, context
"""


async def test_a_blocking_async_policy_does_not_delay_the_agent_and_its_removal_is_prompt(tmp_path) -> None:
    path = write(tmp_path, "sleepy", BLOCKING)
    ticks = []

    async def monitor() -> None:   # the agent's own Monitor hook: runs on the agent's loop
        ticks.append(time.monotonic())

    engine, log, _ = engine_for(tmp_path, timeout=60, monitor=monitor)
    signals = engine.ml_connector
    engine.start()
    try:
        await until(lambda: signals.started == 1, message="the policy did not start its blocking call")
        seen = len(ticks)
        # the agent's loop answers (here: Monitor keeps ticking, each a round trip through the loop) while the
        # policy sits in time.sleep(20) in its worker
        await until(lambda: len(ticks) >= seen + 5, message="the agent's loop stalled while the policy blocks")
        assert not log.query(stage="analyze"), "the blocking analyze returned early"
        worker = engine.policies.get("sleepy").worker
        pid = worker.pid
        assert pid is not None
        # removing the file takes effect while the policy is stuck: rescan runs on the (free) agent loop
        path.unlink()
        await until(lambda: "sleepy" not in engine.policies, message="removal of a stuck policy")
        await until(lambda: not Path(f"/proc/{pid}").exists() or
                    Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", message="worker not killed")
    finally:
        await engine.stop()


async def test_a_new_version_of_a_stuck_policy_takes_over_at_once(tmp_path) -> None:
    path = write(tmp_path, "stuck", BLOCKING.replace("time.sleep(20)", "time.sleep(600)"))
    engine, log, rec = engine_for(tmp_path, timeout=900)
    engine.start()
    try:
        await until(lambda: engine.ml_connector.started == 1, message="the policy did not start its blocking call")
        write(tmp_path, "stuck", """
            async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
                context["n"] = "v2"
                return True, context
        """)
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        # the old version would sit in time.sleep(600): the plan can only come from the new one, and only
        # if the stuck call was abandoned (a pair's cycles never overlap)
        await until(lambda: rec.commands, message="the new version did not take over")
        assert rec.commands[0] == {"n": "v2"}
        assert not log.query(stage="analyze", outcome="error")   # the abandoned call is no failure
    finally:
        await engine.stop()


async def test_a_blocking_policy_is_recorded_as_timeout_backed_off_then_disabled(tmp_path, capsys) -> None:
    write(tmp_path, "sleepy", BLOCKING)
    write(tmp_path, "fine", """
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            return False, context
    """)
    engine, log, _ = engine_for(tmp_path, timeout=0.3, disable_after=3)
    engine.start()
    try:
        await until(lambda: not engine.policies.get("sleepy").enabled, message="policy not disabled")
        timeouts = log.query(stage="analyze", outcome="timeout")
        assert len(timeouts) == 3 and all(r.policy == "sleepy" for r in timeouts)
        assert timeouts[0].inputs["limit"] == 0.3 and timeouts[0].inputs["unit"] == "s"
        assert timeouts[0].inputs["measured"] >= 0.3
        assert "did not return within 0.3s" in timeouts[0].reason and "killed" in timeouts[0].reason
        assert any("backing off" in r.reason for r in timeouts)
        described = {d["name"]: d for d in engine.status()["policies"]}["sleepy"]
        assert described["enabled"] is False
        assert "disabled after 3 consecutive overruns" in described["disabled_reason"]
        event = next(r for r in log.query(stage="event") if "disabled after" in r.reason)
        assert event.policy == "sleepy" and event.outcome == "error"
        # `mlsysops policy list` shows why (the table it prints from the API's answer)
        from mlsysops.cli.client_cmd import COLUMNS, Kind, Output, _emit, _rows

        capsys.readouterr()
        _emit(_rows(Kind.policies, {"iso": engine.policies.list()}), Output.table, *COLUMNS[Kind.policies])
        table = capsys.readouterr().out
        assert "DISABLED BECAUSE" in table and "disabled after 3 consecutive overruns" in table
        # the other policy kept running throughout
        await until(lambda: len([r for r in log.query(stage="analyze", outcome="no_plan")
                                 if r.policy == "fine"]) >= 3)
        # a new version of the file gets a fresh start
        fixed = write(tmp_path, "sleepy", """
            async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
                return False, context
        """)
        os.utime(fixed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        await until(lambda: engine.policies.get("sleepy").enabled, message="new version not enabled")
        assert engine.policies.get("sleepy").disabled_reason is None
        await until(lambda: [r for r in log.query(stage="analyze", outcome="no_plan") if r.policy == "sleepy"])
    finally:
        await engine.stop()


async def test_a_memory_hog_is_stopped_at_the_limit_and_the_agent_stays_small(tmp_path) -> None:
    write(tmp_path, "hog", """
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            chunks = []
            while True:
                chunks.append(bytearray(16 * 2**20))
    """)
    before = rss_mb()
    engine, log, _ = engine_for(tmp_path, timeout=30, memory_mb=256, disable_after=2)
    engine.start()
    try:
        await until(lambda: not engine.policies.get("hog").enabled, message="hog not disabled")
        over = log.query(stage="analyze", outcome="memory_exceeded")
        assert len(over) == 2
        assert over[0].inputs["limit"] == 256 and over[0].inputs["unit"] == "MiB"
        assert 128 < over[0].inputs["measured"] <= 256     # the address space it reached, within the limit
        assert "memory limit of 256 MiB" in over[0].reason
        assert "memory_exceeded" in engine.policies.get("hog").disabled_reason
        assert rss_mb() - before < 100        # the agent did not grow with the policy
    finally:
        await engine.stop()


async def test_raise_garbage_and_unsafe_replies_stay_in_the_worker(tmp_path) -> None:
    marker = tmp_path / "pwned"
    write(tmp_path, "raises", """
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            raise RuntimeError("policy bug")
    """)
    write(tmp_path, "garbage", """
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            return "yes please"
    """)
    write(tmp_path, "evil", f"""
        import os
        class Payload:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            return True, {{"x": Payload()}}
    """)
    engine, log, rec = engine_for(tmp_path, disable_after=None)
    engine.start()
    try:
        await until(lambda: {r.policy for r in log.query(stage="analyze", outcome="error")} >=
                    {"raises", "garbage", "evil"})
        errors = {r.policy: r.reason for r in log.query(stage="analyze", outcome="error")}
        assert "RuntimeError: policy bug" in errors["raises"]
        assert "must return (bool, dict)" in errors["garbage"]
        assert "only plain data is accepted" in errors["evil"] and "system" in errors["evil"]
        assert not marker.exists() and not rec.commands
    finally:
        await engine.stop()


async def test_telemetry_and_agent_objects_reach_the_worker_through_callbacks(tmp_path) -> None:
    write(tmp_path, "reader", """
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            context["n"] = [telemetry.latest("cpu_load", node="n1"), telemetry["cpu_load"], sorted(telemetry),
                            len(telemetry), ml_connector.start(), system["nodes"], ml_connector.endpoint]
            return True, context
    """)
    engine, log, rec = engine_for(tmp_path)
    engine.start()
    try:
        await until(lambda: rec.commands)
        assert rec.commands[0] == {"n": [0.25, 0.25, ["cpu_load"], 1, "go", ["n1"], "http://ml-connector:8090"]}
    finally:
        await engine.stop()


async def test_a_blocking_builtin_policy_runs_on_its_own_thread_not_the_agent_loop() -> None:
    release = threading.Event()

    class Blocking:
        calls = 0

        def initialize(self) -> dict:
            return {"scope": "global", "configuration": {"analyze_interval": 0.05}}

        async def analyze(self, context, *rest):
            Blocking.calls += 1
            release.wait(20)     # blocks its loop thread, never the agent's
            return False, context

        async def plan(self, context, *rest):
            return {}, context

    reg = PolicyRegistry([], entry_point_group=None)
    reg.register("blocking", Blocking())
    log = DecisionLog("iso")
    engine = MAPEEngine("iso", Knowledge(), reg, MechanismRegistry(), log, assets=dict,
                        system_description=dict, plugin_timeout=0.2, default_analyze_interval=0.05,
                        backoff=FailureBackoff(threshold=10), disable_after=None)
    engine.start()
    try:
        loop_turns = 0
        await until(lambda: len(log.query(stage="analyze", outcome="timeout")) >= 3)
        for _ in range(10):
            await asyncio.sleep(0.01)
            loop_turns += 1
        assert loop_turns == 10 and Blocking.calls == 1      # later calls refused while it is stuck
        refused = log.query(stage="analyze", outcome="timeout")[-1].reason
        assert "still inside analyze" in refused
        release.set()
        await until(lambda: Blocking.calls >= 2, message="the policy did not run again once unstuck")
    finally:
        release.set()
        await engine.stop()


async def test_original_contract_telemetry_dict_with_an_async_query_works_in_the_worker(tmp_path) -> None:
    """The original framework hands `telemetry` as a dict whose "query" is an async function of the agent;
    in the worker it is a stand-in: reading keys and awaiting query() call back into the agent."""
    from mlsysops.agents.mape.sandbox import PolicyWorker

    write(tmp_path, "original", """
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            rows = await telemetry["query"](latest=True)
            return True, {"endpoint": telemetry["prometheus_endpoint"], "rows": rows}
    """)
    calls = []

    async def query(latest: bool = False) -> list[dict]:
        calls.append(asyncio.get_running_loop())
        return [{"metric": "cpu", "value": 0.5, "latest": latest}]

    agent_loop = asyncio.get_running_loop()
    telemetry = {"prometheus_endpoint": "http://localhost:9090", "query": query}
    worker = PolicyWorker("original", tmp_path / "original.py")
    try:
        await asyncio.to_thread(worker.load)
        res = await worker.call("analyze", ({}, {}, {}, {}, telemetry, None), 10.0)
        assert res.ok, res.reason
        assert res.value == (True, {"endpoint": "http://localhost:9090",
                                    "rows": [{"metric": "cpu", "value": 0.5, "latest": True}]})
        assert calls == [agent_loop]          # query ran in the agent, on its loop
    finally:
        worker.close()


async def test_agent_objects_handed_to_a_builtin_are_used_on_the_agent_loop() -> None:
    """A built-in runs on its own loop thread; the telemetry view and an ml_connector whose async client is
    bound to the agent's loop are still used there (no race with the agent, no foreign-loop error)."""
    agent_thread = threading.current_thread()
    ready = asyncio.Event()              # bound to the agent's loop
    used_in: list[threading.Thread] = []

    class Connector:
        async def predict(self, x: float) -> float:
            used_in.append(threading.current_thread())
            ready.set()
            await asyncio.wait_for(ready.wait(), 1)
            return x * 2

    class UsesAgentObjects:
        def initialize(self) -> dict:
            return {"scope": "global", "configuration": {"analyze_interval": 0.05}, "mechanisms": ["placement"]}

        async def analyze(self, context, app, system, mechanisms, telemetry, ml):
            context["n"] = [await ml.predict(telemetry.latest("cpu_load", node="n1")), sorted(telemetry),
                            threading.current_thread() is not agent_thread]
            return True, context

        async def plan(self, context, *rest):
            return {"placement": {"n": context["n"]}}, context

    reg = PolicyRegistry([], entry_point_group=None)
    reg.register("builtin", UsesAgentObjects())
    mechs = MechanismRegistry()
    rec = Recorder()
    mechs.register("placement", rec)
    k = Knowledge()
    k.record("cpu_load", 0.25, {"node": "n1"})
    engine = MAPEEngine("iso", k, reg, mechs, DecisionLog("iso"), assets=dict, system_description=dict,
                        ml_connector=Connector(), plugin_timeout=5, default_analyze_interval=0.05)
    engine.start()
    try:
        await until(lambda: rec.commands)
        assert rec.commands[0] == {"n": [0.5, ["cpu_load"], True]}
        assert used_in == [agent_thread]
    finally:
        await engine.stop()


async def test_a_worker_cannot_read_the_agents_secrets_or_write_outside_its_folder(tmp_path_factory,
                                                                                    monkeypatch) -> None:
    from mlsysops.agents.mape.sandbox import PolicyWorker

    secrets_dir = tmp_path_factory.mktemp("state")
    # the folder an agent was started from is on its import path (`python -m`): not the worker's to read
    monkeypatch.syspath_prepend(str(secrets_dir))
    token = secrets_dir / "api-token"
    token.write_text("admin-secret")
    folder = tmp_path_factory.mktemp("policy")
    write(folder, "snoop", f"""
        import os, tempfile
        def attempt(fn):
            try:
                fn()
                return "allowed"
            except OSError as exc:
                return type(exc).__name__
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            private = os.path.join(tempfile.gettempdir(), "scratch")
            return False, {{
                "token": attempt(lambda: open({str(token)!r}).read()),
                "agent_environ": attempt(lambda: open("/proc/{os.getpid()}/environ").read()),
                "write_state": attempt(lambda: open({str(secrets_dir / "planted")!r}, "w").write("x")),
                "write_private_tmp": attempt(lambda: open(private, "w").write("x")),
                "env_password": os.environ.get("MLSYSOPS_XMPP_PASSWORD", "absent"),
            }}
    """)
    os.environ["MLSYSOPS_XMPP_PASSWORD"] = "agent-secret"
    worker = PolicyWorker("snoop", folder / "snoop.py")
    try:
        await asyncio.to_thread(worker.load)
        if "Landlock" not in worker.confinement or "unrestricted" in worker.confinement:
            pytest.skip(f"no filesystem confinement on this kernel: {worker.confinement}")
        res = await worker.call("analyze", ({}, {}, {}, {}, None, None), 10.0)
        assert res.ok, res.reason
        assert res.value[1] == {"token": "PermissionError", "agent_environ": "PermissionError",
                                "write_state": "PermissionError", "write_private_tmp": "allowed",
                                "env_password": "absent"}
        assert not (secrets_dir / "planted").exists()
    finally:
        del os.environ["MLSYSOPS_XMPP_PASSWORD"]
        worker.close()


async def test_a_model_from_the_ml_connector_is_used_inside_the_worker(tmp_path) -> None:
    """`await ml_connector.get_model(name)` runs in the agent; the model (plain picklable object) comes back
    to the worker by value, so predicting runs in the sandbox, not on the agent's loop."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    from mlsysops.agents.mape.sandbox import PolicyWorker

    model = sklearn.LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 2.0, 4.0])

    class Connector:
        async def get_model(self, name: str, version: int | None = None) -> object:
            return model if name == "load" else None

    write(tmp_path, "ml", """
        import os
        async def analyze(context, app, system, mechanisms, telemetry, ml_connector):
            m = await ml_connector.get_model("load")
            return True, {"prediction": float(m.predict([[3.0]])[0]), "pid": os.getpid(),
                          "missing": await ml_connector.get_model("other")}
    """)
    worker = PolicyWorker("ml", tmp_path / "ml.py")
    try:
        await asyncio.to_thread(worker.load)
        res = await worker.call("analyze", ({}, {}, {}, {}, None, Connector()), 30.0)
        assert res.ok, res.reason
        ctx = res.value[1]
        assert round(ctx["prediction"], 6) == 6.0 and ctx["missing"] is None
        assert ctx["pid"] == worker.pid != os.getpid()
    finally:
        worker.close()


async def test_a_builtin_policy_that_keeps_memory_is_disabled_at_its_budget_and_a_transient_one_is_not() -> None:
    kept: list[bytes] = []

    class Hog:
        def initialize(self) -> dict:
            return {"scope": "global", "configuration": {"analyze_interval": 0.05}}

        async def analyze(self, context, *rest):
            kept.append(b"\x01" * (16 << 20))       # 16 MiB more on every call, kept
            return False, context

        async def plan(self, context, *rest):
            return {}, context

    class Transient(Hog):
        async def analyze(self, context, *rest):
            scratch = b"\x01" * (32 << 20)          # 32 MiB used and given back within the call
            return len(scratch) < 0, context

    def engine_for(name: str, policy: object) -> tuple[PolicyRegistry, DecisionLog, MAPEEngine]:
        reg = PolicyRegistry([], entry_point_group=None, sandbox=SandboxLimits(builtin_memory_mb=64))
        reg.register(name, policy)
        log = DecisionLog("iso")
        return reg, log, MAPEEngine("iso", Knowledge(), reg, MechanismRegistry(), log, assets=dict,
                                    system_description=dict, plugin_timeout=2.0, default_analyze_interval=0.05,
                                    backoff=FailureBackoff(threshold=10), disable_after=5)

    # one at a time: the account is by coincidence (the agent's RSS during the call), so two built-ins
    # allocating at once would each be charged for the other's memory (see agents/mape/isolation.py)
    reg, log, engine = engine_for("hog", Hog())
    engine.start()
    try:
        await until(lambda: not reg.get("hog").enabled, message="the hog was never disabled")
        over = log.query(stage="analyze", outcome="memory_exceeded")
        assert len(over) == 1 and over[0].policy == "hog"        # disabled at the first, not after 5
        assert over[0].inputs["limit"] == 64 and over[0].inputs["measured"] >= 64
        assert over[0].inputs["unit"] == "MiB"
        assert 3 <= len(kept) <= 8                                 # stopped near 64 MiB, not later
        assert "kept memory past its budget" in reg.get("hog").disabled_reason
        assert any(r.policy == "hog" and "disabled" in r.reason for r in log.query(stage="event"))
        described = reg.get("hog").describe()["isolation"]
        assert described["memory_budget_mb"] == 64 and described["retained_mb"] >= 64
    finally:
        await engine.stop()
    kept.clear()
    reg, log, engine = engine_for("transient", Transient())
    engine.start()
    try:
        await until(lambda: (reg.get("transient").loop is not None and reg.get("transient").loop.calls >= 12),
                    message="the transient policy did not run 12 times")
        assert reg.get("transient").enabled
        assert not log.query(outcome="memory_exceeded")
    finally:
        await engine.stop()
