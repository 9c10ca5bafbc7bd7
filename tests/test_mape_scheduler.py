"""Plan scheduler: conflict rule, per-mechanism serialisation, execution outcomes."""

import asyncio
import time
from typing import Any

import pytest

from mlsysops.agents.mape.decision_log import DecisionLog
from mlsysops.agents.mape.plugins import MechanismRegistry
from mlsysops.agents.mape.scheduler import Plan, PlanScheduler, interpret_apply_result, resolve_conflicts


class Probe:
    """Mechanism that counts concurrent apply() calls and returns a scripted result."""

    def __init__(self, result: Any = True, delay: float = 0.0, raises: bool = False) -> None:
        self.result, self.delay, self.raises = result, delay, raises
        self.in_flight = 0
        self.max_in_flight = 0
        self.commands: list[Any] = []
        self.finished: list[float] = []

    async def apply(self, command: Any) -> Any:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            self.commands.append(command)
            self.finished.append(time.monotonic())
            if self.raises:
                raise RuntimeError("substrate said no")
            return self.result
        finally:
            self.in_flight -= 1

    def get_state(self) -> dict:
        return {"applied": len(self.commands)}


def make(**mechs: Probe) -> tuple[PlanScheduler, DecisionLog, list]:
    reg = MechanismRegistry()
    for name, m in mechs.items():
        reg.register(name, m)
    log = DecisionLog("sched-test")
    executed: list = []
    sched = PlanScheduler(
        reg, log, execute_timeout=0.5, on_executed=lambda p, m, o, d: executed.append((p.id, m, o))
    )
    return sched, log, executed


def test_conflict_rule_priority_then_fifo() -> None:
    t = time.time()
    low = Plan("p_low", "app", {"placement": 1}, priority=0, created=t)
    high = Plan("p_high", "app", {"placement": 2}, priority=5, created=t + 1)
    tie_late = Plan("p_tie_late", "other", {"placement": 3}, priority=1, created=t + 2)
    tie_early = Plan("p_tie_early", "other", {"placement": 4}, priority=1, created=t + 1)
    other_mech = Plan("p_freq", "app", {"cpufreq": 5}, priority=0, created=t)
    accepted, discarded = resolve_conflicts([low, high, tie_late, tie_early, other_mech])
    assert {p.policy for p in accepted} == {"p_high", "p_tie_early", "p_freq"}
    lost = {p.policy: [w.policy for w in ws] for p, ws in discarded}
    assert lost == {"p_low": ["p_high"], "p_tie_late": ["p_tie_early"]}


def test_partial_overlap_discards_whole_plan() -> None:
    a = Plan("a", "app", {"placement": 1}, priority=2)
    b = Plan("b", "app", {"placement": 2, "cpufreq": 3}, priority=1)
    c = Plan("c", "app", {"cpufreq": 4}, priority=0)
    accepted, discarded = resolve_conflicts([c, b, a])
    assert [p.policy for p in accepted] == ["a", "c"]  # b lost placement, so c gets cpufreq
    assert [(p.policy, [w.policy for w in ws]) for p, ws in discarded] == [("b", ["a"])]


def test_interpret_apply_result() -> None:
    assert interpret_apply_result(None)[0] == "completed"
    assert interpret_apply_result(True)[0] == "completed"
    assert interpret_apply_result({"ok": True, "detail": "d"}) == ("completed", "d")
    assert interpret_apply_result(False)[0] == "failed"
    assert interpret_apply_result({"ok": False, "detail": "no room"}) == ("failed", "no room")
    assert interpret_apply_result("done")[0] == "failed"


@pytest.mark.asyncio
async def test_losers_are_recorded_discarded_with_winner() -> None:
    mech = Probe()
    sched, log, executed = make(placement=mech)
    low = Plan("p_low", "app", {"placement": "low"}, priority=0)
    high = Plan("p_high", "app", {"placement": "high"}, priority=5)
    f_low, f_high = sched.submit(low), sched.submit(high)
    r_low, r_high = await asyncio.wait_for(asyncio.gather(f_low, f_high), 5)
    assert r_low.status == "discarded" and high.id in r_low.reason and "p_high" in r_low.reason
    assert r_high.status == "completed"
    assert mech.commands == ["high"]
    rec = log.query(outcome="discarded")
    assert len(rec) == 1 and rec[0].plan_id == low.id and high.id in rec[0].reason
    assert rec[0].alternatives == [high.id]
    acc = log.query(outcome="accepted")
    assert len(acc) == 1 and acc[0].plan_id == high.id and low.id in acc[0].reason
    assert executed == [(high.id, "placement", "completed")]


@pytest.mark.asyncio
async def test_one_command_at_a_time_per_mechanism_others_concurrent() -> None:
    slow, other = Probe(delay=0.05), Probe(delay=0.05)
    sched, _log, _ = make(placement=slow, cpufreq=other)
    futs = [sched.submit(Plan(f"p{i}", f"app{i}", {"placement": i})) for i in range(4)]
    # a later cycle: same assets and mechanism, so no conflict only because it is another cycle
    await asyncio.sleep(0.01)
    futs += [sched.submit(Plan(f"q{i}", f"app{i}", {"placement": 10 + i})) for i in range(2)]
    futs += [sched.submit(Plan("f", "app0", {"cpufreq": "x"}))]
    results = await asyncio.wait_for(asyncio.gather(*futs), 5)
    assert all(r.status == "completed" for r in results)
    assert slow.max_in_flight == 1
    assert slow.commands == [0, 1, 2, 3, 10, 11]  # acceptance order
    assert other.max_in_flight == 1 and other.commands == ["x"]
    # cpufreq did not wait for the placement queue: it finished before the placement commands did
    assert other.finished[0] < slow.finished[-1]
    assert sched.cycles >= 2


@pytest.mark.asyncio
async def test_execution_outcomes_timeout_failed_never_completed() -> None:
    sched, log, executed = make(
        hang=Probe(delay=5),
        false=Probe(result=False),
        boom=Probe(raises=True),
        notok=Probe(result={"ok": False, "detail": "no capacity"}),
        fine=Probe(result={"ok": True}),
    )
    plans = {name: Plan("pol", name, {name: "cmd"}) for name in ("hang", "false", "boom", "notok", "fine")}
    plans["ghost"] = Plan("pol", "ghost", {"ghost": "cmd"})
    results = await asyncio.wait_for(asyncio.gather(*(sched.submit(p) for p in plans.values())), 5)
    status = {r.plan.asset: r.status for r in results}
    assert status == {
        "hang": "timeout",
        "false": "failed",
        "boom": "failed",
        "notok": "failed",
        "fine": "completed",
        "ghost": "failed",
    }
    by_mech = {r.mechanism: r for r in log.query(stage="execute")}
    assert by_mech["hang"].outcome == "timeout"
    assert by_mech["boom"].outcome == "failed" and "substrate said no" in by_mech["boom"].reason
    assert by_mech["notok"].outcome == "failed" and "no capacity" in by_mech["notok"].reason
    assert by_mech["ghost"].outcome == "failed" and "not registered" in by_mech["ghost"].reason
    assert [r.mechanism for r in log.query(outcome="completed")] == ["fine"]
    assert sorted(o for _, _, o in executed).count("completed") == 1


@pytest.mark.asyncio
async def test_worst_outcome_wins_for_multi_mechanism_plan_and_drain_stop() -> None:
    sched, _log, _ = make(a=Probe(), b=Probe(result=False))
    fut = sched.submit(Plan("pol", "app", {"a": 1, "b": 2}))
    await sched.drain(timeout=5)
    res = fut.result()
    assert res.status == "failed" and res.commands["a"].outcome == "completed"
    with pytest.raises(ValueError):
        sched.submit(Plan("pol", "app", {}))
    slow = Probe(delay=10)
    sched2, _, _ = make(s=slow)
    fut2 = sched2.submit(Plan("pol", "app", {"s": 1}))
    await asyncio.sleep(0.02)
    assert list(sched2.status()["executing"]) == ["s"]
    await sched2.stop()
    assert fut2.cancelled()
