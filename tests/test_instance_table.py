"""The cluster's instance table: its writers keep the invariants, its readers cannot write."""

from __future__ import annotations

import pytest

from mlsysops.cluster.instance_table import InstanceTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def inst(iid: str, node: str = "n1", **extra: object) -> dict[str, object]:
    return {"instance_id": iid, "app": "a", "component": "c", "node": node, **extra}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> InstanceTable:
    return InstanceTable(clock=clock)


def test_adopt_inserts_only_unknown_instances(table: InstanceTable) -> None:
    assert table.adopt(inst("i1", cpu_request_cores=0.5, memory_request_bytes=2**20), "running")
    assert not table.adopt(inst("i1", node="n2"), "deploying")
    row = table["i1"]
    assert (row["node"], row["status"], row["since"]) == ("n1", "running", 100.0)
    assert (row["cpu_request_cores"], row["memory_request_bytes"]) == (0.5, 2**20)
    assert "retrying" not in row
    table.adopt(inst("i2"), "failed", "ImagePullBackOff", retrying=True)
    assert (table["i2"]["reason"], table["i2"]["retrying"]) == ("ImagePullBackOff", True)


def test_readers_get_read_only_rows(table: InstanceTable) -> None:
    table.adopt(inst("i1"), "running")
    with pytest.raises(TypeError):
        table["i1"]["status"] = "failed"   # type: ignore[index]
    with pytest.raises(TypeError):
        table["i2"] = {}                   # type: ignore[index]
    assert dict(table["i1"])["status"] == "running" and list(table) == ["i1"] and len(table) == 1
    assert table == {"i1": dict(table["i1"])} and InstanceTable() == {}


def test_since_moves_only_when_status_or_reason_changes(table: InstanceTable, clock: Clock) -> None:
    table.adopt(inst("i1"), "deploying")
    clock.now = 110.0
    assert not table.set_status("i1", "deploying")
    assert table["i1"]["since"] == 100.0
    assert table.set_status("i1", "deploying", "Unschedulable")
    assert table["i1"]["since"] == 110.0
    assert not table.set_status("unknown", "running")
    assert "unknown" not in table


def test_leaving_failed_drops_retrying(table: InstanceTable) -> None:
    table.adopt(inst("i1"), "running")
    table.set_status("i1", "failed", "CrashLoopBackOff", retrying=True)
    assert table["i1"]["retrying"] is True
    table.set_status("i1", "failed", "CrashLoopBackOff", retrying=False)   # unchanged status, flag updated
    assert table["i1"]["retrying"] is False
    table.set_status("i1", "failed", "CrashLoopBackOff", retrying=True)
    table.set_status("i1", "running")
    assert "retrying" not in table["i1"]


def test_placed_never_downgrades_a_running_instance(table: InstanceTable, clock: Clock) -> None:
    table.placed(inst("i1", cpu_request_cores=0.25))
    assert (table["i1"]["status"], table["i1"]["cpu_request_cores"]) == ("deploying", 0.25)
    table.set_status("i1", "running")
    clock.now = 120.0
    table.placed(inst("i1", node="n2"))
    assert (table["i1"]["status"], table["i1"]["node"], table["i1"]["since"]) == ("running", "n1", 100.0)
    table.set_status("i1", "lost", "node n1 lost")
    table.placed(inst("i1", node="n2"))          # a lost row is replaced by the new placement
    assert (table["i1"]["status"], table["i1"]["node"], table["i1"]["reason"]) == ("deploying", "n2", None)


def test_mark_lost_takes_only_active_instances_of_the_node(table: InstanceTable) -> None:
    table.adopt(inst("run"), "running")
    table.adopt(inst("dep"), "deploying")
    table.adopt(inst("fail"), "failed")
    table.adopt(inst("other", node="n2"), "running")
    assert sorted(table.mark_lost("n1", "node n1 lost: heartbeat")) == ["dep", "run"]
    assert {iid: table[iid]["status"] for iid in table} == {
        "run": "lost", "dep": "lost", "fail": "failed", "other": "running"}
    assert table["run"]["reason"] == "node n1 lost: heartbeat"
    assert table.on_node("n1", ("lost",)) == ["run", "dep"]


def test_removed_rows_stay(table: InstanceTable) -> None:
    table.adopt(inst("i1"), "running")
    table.remove("i1", "replaced by i2")
    assert (table["i1"]["status"], table["i1"]["reason"]) == ("removed", "replaced by i2")
    assert not table.adopt(inst("i1"), "running")   # a late report does not resurrect it
    assert table["i1"]["status"] == "removed"
