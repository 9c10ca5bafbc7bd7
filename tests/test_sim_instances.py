"""Instance lifecycle: startup timing, idempotent deploy, capacity, remove, move, history."""

from __future__ import annotations

import pytest

from mlsysops.sim import (
    DuplicateInstanceError,
    EventKind,
    InstanceNotActiveError,
    InstanceState,
    InsufficientCapacityError,
    NodeDownError,
    SimClock,
    SimConfig,
    SimContinuum,
    SimEvent,
    SimNodeSpec,
    UnknownInstanceError,
    UnknownNodeError,
)

GIB = 2**30


def make_sim(config: SimConfig | None = None) -> SimContinuum:
    specs = [
        SimNodeSpec("cloud-1", "c1", "cloud", cpu_cores=8, memory_bytes=16 * GIB),
        SimNodeSpec("edge-1", "c1", "edge", cpu_cores=2, memory_bytes=2 * GIB),
        SimNodeSpec("edge-2", "c1", "edge", cpu_cores=2, memory_bytes=2 * GIB),
        SimNodeSpec("far-1", "c2", "far_edge", cpu_cores=1, memory_bytes=GIB),
        SimNodeSpec("instant", "c2", "edge", startup_s=0.0),
    ]
    return SimContinuum.from_specs(specs, seed=7, clock=SimClock.manual(), config=config)


def test_instance_becomes_running_after_node_startup() -> None:
    sim = make_sim()
    inst = sim.deploy("a-0", "app", "web", "edge-1", 0.5, GIB // 4)
    assert inst.state is InstanceState.STARTING
    assert inst.running_at == pytest.approx(0.4)
    sim.advance(0.39)
    assert sim.instance("a-0").state is InstanceState.STARTING
    sim.advance(0.01)
    assert sim.instance("a-0").state is InstanceState.RUNNING


def test_transition_time_is_the_due_time_not_the_read_time() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "far-1", 0.5, GIB // 4)
    sim.clock.advance(10.0)
    inst = sim.instance("a-0")
    assert inst.state is InstanceState.RUNNING
    assert inst.state_since == pytest.approx(0.6)


def test_startup_depends_on_layer() -> None:
    sim = make_sim()
    sim.deploy("c", "app", "web", "cloud-1", 0.5, GIB // 4)
    sim.deploy("f", "app", "web", "far-1", 0.5, GIB // 4)
    sim.advance(0.35)
    assert sim.instance("c").state is InstanceState.RUNNING
    assert sim.instance("f").state is InstanceState.STARTING


def test_zero_startup_is_running_immediately() -> None:
    sim = make_sim()
    assert sim.deploy("i", "app", "web", "instant", 0.1, 1000).state is InstanceState.RUNNING


def test_deploy_same_spec_is_idempotent() -> None:
    sim = make_sim()
    events: list[SimEvent] = []
    sim.subscribe(events.append)
    first = sim.deploy("a-0", "app", "web", "edge-1", 1.0, GIB, interactions=["db"])
    sim.advance(0.1)
    again = sim.deploy("a-0", "app", "web", "edge-1", 1.0, GIB, interactions=["db"])
    assert again.created_at == first.created_at == 0.0
    assert [e.kind for e in events] == [EventKind.INSTANCE_STARTING]
    assert len(sim.instances()) == 1
    # the retry does not double-book capacity: one more GiB still fits on the 2 GiB node
    sim.deploy("a-1", "app", "web", "edge-1", 1.0, GIB)


def test_deploy_same_id_different_spec_is_rejected() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "edge-1", 1.0, GIB)
    with pytest.raises(DuplicateInstanceError):
        sim.deploy("a-0", "app", "web", "edge-2", 1.0, GIB)
    with pytest.raises(DuplicateInstanceError):
        sim.deploy("a-0", "app", "web", "edge-1", 0.5, GIB)
    assert sim.instance("a-0").node == "edge-1"


def test_memory_over_capacity_is_rejected_and_changes_nothing() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "edge-1", 0.5, int(1.5 * GIB))
    with pytest.raises(InsufficientCapacityError, match="memory"):
        sim.deploy("a-1", "app", "web", "edge-1", 0.5, GIB)
    with pytest.raises(UnknownInstanceError):
        sim.instance("a-1")
    assert [i.instance_id for i in sim.instances(node="edge-1")] == ["a-0"]
    sim.remove("a-0")  # capacity is freed by removal
    sim.deploy("a-1", "app", "web", "edge-1", 0.5, GIB)


def test_cpu_requests_over_capacity_are_rejected() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "edge-1", 1.5, 1000)
    with pytest.raises(InsufficientCapacityError, match="cpu"):
        sim.deploy("a-1", "app", "web", "edge-1", 0.6, 1000)
    sim.deploy("a-2", "app", "web", "edge-1", 0.5, 1000)  # exactly full is fine


def test_deploy_onto_unknown_or_crashed_node_is_rejected() -> None:
    sim = make_sim()
    with pytest.raises(UnknownNodeError):
        sim.deploy("a-0", "app", "web", "nowhere", 0.1, 1000)
    sim.crash_node("edge-1")
    with pytest.raises(NodeDownError):
        sim.deploy("a-0", "app", "web", "edge-1", 0.1, 1000)
    assert sim.instances() == []


def test_bad_requests_are_rejected() -> None:
    sim = make_sim()
    with pytest.raises(ValueError):
        sim.deploy("a-0", "app", "web", "edge-1", -1, 1000)
    with pytest.raises(ValueError):
        sim.deploy("a-0", "app", "web", "edge-1", 1, 1000, base_response_ms=0)


def test_remove_stops_and_is_idempotent() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "edge-1", 0.5, GIB)
    sim.advance(1.0)
    assert sim.remove("a-0") is True
    inst = sim.instance("a-0")
    assert inst.state is InstanceState.STOPPED
    assert inst.state_since == 1.0
    assert sim.remove("a-0") is False
    assert sim.remove("never") is False
    assert sim.node_metrics("edge-1")["sim.instances.running"] == 0.0


def test_redeploy_of_terminal_id_starts_afresh() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "edge-1", 0.5, GIB)
    sim.advance(1.0)
    sim.remove("a-0")
    inst = sim.deploy("a-0", "app", "web", "edge-2", 0.5, GIB)
    assert inst.state is InstanceState.STARTING
    assert inst.node == "edge-2"
    assert inst.created_at == 1.0
    sim.advance(0.4)
    assert sim.instance("a-0").state is InstanceState.RUNNING


def test_move_restarts_on_target_and_frees_source() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "edge-1", 2.0, 2 * GIB)
    sim.advance(1.0)
    moved = sim.move("a-0", "edge-2")
    assert moved.node == "edge-2"
    assert moved.state is InstanceState.STARTING
    assert moved.running_at == pytest.approx(1.4)
    sim.deploy("b-0", "app", "web", "edge-1", 2.0, 2 * GIB)  # source is free again
    with pytest.raises(InsufficientCapacityError):
        sim.move("b-0", "edge-2")
    assert sim.move("a-0", "edge-2").node == "edge-2"  # no-op
    sim.advance(0.4)
    assert sim.instance("a-0").state is InstanceState.RUNNING
    sim.remove("a-0")
    with pytest.raises(InstanceNotActiveError):
        sim.move("a-0", "edge-1")


def test_stale_transition_after_move_is_ignored() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app", "web", "cloud-1", 0.5, GIB)  # would be running at 0.3
    sim.advance(0.1)
    sim.move("a-0", "far-1")  # now running at 0.1 + 0.6
    sim.advance(0.3)
    assert sim.instance("a-0").state is InstanceState.STARTING
    sim.advance(0.3)
    assert sim.instance("a-0").state is InstanceState.RUNNING


def test_instances_filters() -> None:
    sim = make_sim()
    sim.deploy("a-0", "app-a", "web", "edge-1", 0.5, 1000)
    sim.deploy("a-1", "app-a", "db", "edge-2", 0.5, 1000)
    sim.deploy("b-0", "app-b", "web", "edge-1", 0.5, 1000)
    sim.remove("b-0")
    assert {i.instance_id for i in sim.instances(node="edge-1")} == {"a-0", "b-0"}
    assert {i.instance_id for i in sim.instances(app="app-a")} == {"a-0", "a-1"}
    assert {i.instance_id for i in sim.instances(state="stopped")} == {"b-0"}
    assert {i.instance_id for i in sim.instances(node="edge-1", state=InstanceState.STARTING)} == {"a-0"}


def test_terminal_history_is_bounded() -> None:
    sim = make_sim(SimConfig(max_terminal_instances=2))
    for i in range(4):
        sim.deploy(f"x-{i}", "app", "web", "cloud-1", 0.1, 1000)
        sim.remove(f"x-{i}")
    assert [i.instance_id for i in sim.instances()] == ["x-2", "x-3"]
    with pytest.raises(UnknownInstanceError):
        sim.instance("x-0")
