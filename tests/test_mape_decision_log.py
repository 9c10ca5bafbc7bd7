"""Decision log: bounded memory, query filters, digest of inputs, SQLite persistence and reload."""

import asyncio
import sqlite3
import time

import pytest

from mlsysops.agents.mape.decision_log import DecisionLog, digest


def test_record_fields_and_validation() -> None:
    log = DecisionLog("agent-a")
    rec = log.record(
        "plan",
        "planned",
        "because",
        policy="p1",
        app="app1",
        plan_id="x1",
        chosen={"placement": {"node": "n1"}},
        alternatives=[{"node": "n2", "score": 3}],
        explanation={"score": 87},
    )
    assert rec.agent == "agent-a" and rec.stage == "plan" and rec.outcome == "planned"
    assert rec.id and abs(rec.ts - time.time()) < 5
    assert rec.to_dict()["explanation"] == {"score": 87}
    with pytest.raises(ValueError, match="stage"):
        log.record("dance", "info", "x")
    with pytest.raises(ValueError, match="outcome"):
        log.record("plan", "maybe", "x")


def test_memory_is_bounded_but_counts_are_not() -> None:
    log = DecisionLog("a", capacity=5)
    for i in range(12):
        log.record("analyze", "no_plan", f"r{i}")
    assert len(log) == 5
    assert [r.reason for r in log.query()] == [f"r{i}" for i in range(7, 12)]
    assert log.counts() == {"no_plan": 12}


def test_query_filters() -> None:
    log = DecisionLog("a")
    log.record("analyze", "plan_needed", "1", policy="p1", app="x")
    log.record("plan", "planned", "2", policy="p1", app="x", plan_id="P")
    log.record("execute", "failed", "3", policy="p2", app="y", mechanism="m", plan_id="P")
    mid = time.time()
    log.record("execute", "completed", "4", policy="p2", app="x", mechanism="m")
    assert [r.reason for r in log.query(app="x")] == ["1", "2", "4"]
    assert [r.reason for r in log.query(policy="p2", outcome="failed")] == ["3"]
    assert [r.reason for r in log.query(stage="execute")] == ["3", "4"]
    assert [r.reason for r in log.query(since=mid)] == ["4"]
    assert [r.reason for r in log.query(until=mid)] == ["1", "2", "3"]
    assert [r.reason for r in log.query(limit=2)] == ["3", "4"]
    assert [r.reason for r in log.query(plan_id="P", mechanism="m")] == ["3"]
    assert log.query(agent="other") == []
    d = log.to_dict(limit=1)
    assert d["size"] == 4 and len(d["records"]) == 1 and d["counts"]["failed"] == 1


def test_inputs_are_digested() -> None:
    big = {
        "name": "app",
        "blob": "x" * 10_000,
        "nodes": list(range(1000)),
        "deep": {"a": {"b": {"c": {"d": {"e": 1}}}}},
    }
    log = DecisionLog("a")
    rec = log.record("analyze", "no_plan", "r", inputs=big)
    stored = rec.inputs
    assert stored["name"] == "app"
    assert len(stored["blob"]) < 400 and "chars" in stored["blob"]
    assert len(stored["nodes"]) == 21 and "items" in stored["nodes"][-1]
    assert isinstance(stored["deep"]["a"]["b"]["c"], str)  # depth cut with a summary
    assert len(repr(stored)) < 2000
    assert digest(3.5) == 3.5 and digest(None) is None


def test_listener_errors_do_not_break_recording() -> None:
    log = DecisionLog("a")
    seen = []
    log.add_listener(lambda r: seen.append(r.reason))
    log.add_listener(lambda r: 1 / 0)
    log.record("event", "info", "hello")
    assert seen == ["hello"] and len(log) == 1


@pytest.mark.asyncio
async def test_persisted_in_batches_and_reloaded(tmp_path) -> None:
    db = tmp_path / "d" / "decisions.db"
    log = DecisionLog("agent-a", sqlite_path=db, flush_interval=0.05)
    for i in range(30):
        log.record("execute", "completed" if i % 2 else "failed", f"r{i}", app="x", inputs={"i": i})
    # written in the background, without an explicit flush
    for _ in range(100):
        with sqlite3.connect(db) as c:
            if c.execute("SELECT count(*) FROM decisions").fetchone()[0] == 30:
                break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("records were not persisted in the background")
    log.record("event", "info", "last")
    await log.flush()
    log.close()
    log.close()  # idempotent

    other = DecisionLog("agent-b", sqlite_path=db)
    other.record("event", "info", "b's own")
    other.close()

    again = DecisionLog("agent-a", capacity=10, sqlite_path=db)
    loaded = again.load_recent(5)
    assert [r.reason for r in loaded] == ["r26", "r27", "r28", "r29", "last"]
    assert loaded[0].inputs == {"i": 26} and loaded[0].agent == "agent-a"
    assert [r.reason for r in again.query(outcome="failed")] == ["r26", "r28"]
    again.load_recent(5)  # no duplicates on a second reload
    assert len(again) == 5
    assert len(again.load_recent(100, all_agents=True)) == 32
    again.close()


def test_close_without_loop_writes_pending(tmp_path) -> None:
    db = tmp_path / "x.db"
    log = DecisionLog("a", sqlite_path=db)
    log.record("event", "info", "sync use")
    log.close()
    reopened = DecisionLog("a", sqlite_path=db)
    assert [r.reason for r in reopened.load_recent(10)] == ["sync use"]
    reopened.close()
