"""Events (order, timing, isolation, re-entrancy), snapshot and the asyncio runner."""

from __future__ import annotations

import asyncio
import json

import pytest

from mlsysops.sim import EventKind, InstanceState, SimClock, SimContinuum, SimEvent, SimNodeSpec

GIB = 2**30


def make_sim(clock: SimClock | None = None) -> SimContinuum:
    specs = [
        SimNodeSpec("cl", "c0", "cloud", cpu_freqs_hz=[1e9, 2e9], location=(23.7, 37.9)),
        SimNodeSpec("ed", "c1", "edge", sensors=["camera"], labels=["gpu-less"]),
        SimNodeSpec("fe", "c1", "far_edge"),
    ]
    return SimContinuum.from_specs(specs, seed=9, clock=clock or SimClock.manual())


def test_events_are_emitted_in_time_order_with_due_times() -> None:
    sim = make_sim()
    seen: list[SimEvent] = []
    sim.subscribe(seen.append)
    sim.deploy("slow", "app", "x", "fe", 0.1, 1000)  # running at 0.6
    sim.advance(0.1)
    sim.deploy("fast", "app", "x", "cl", 0.1, 1000)  # running at 0.4
    sim.deploy("mid", "app", "x", "ed", 0.1, 1000)  # running at 0.5
    ticked = sim.advance(2.0)
    expected_tail = [
        (0.4, EventKind.INSTANCE_RUNNING, "fast"),
        (0.5, EventKind.INSTANCE_RUNNING, "mid"),
        (0.6, EventKind.INSTANCE_RUNNING, "slow"),
    ]
    assert [(round(e.time, 9), e.kind, e.instance) for e in ticked] == expected_tail
    assert [(round(e.time, 9), e.kind, e.instance) for e in seen] == [
        (0.0, EventKind.INSTANCE_STARTING, "slow"),
        (0.1, EventKind.INSTANCE_STARTING, "fast"),
        (0.1, EventKind.INSTANCE_STARTING, "mid"),
        *expected_tail,
    ]
    assert seen[-1].node == "fe"
    assert seen[-1].detail == {"app": "app", "component": "x"}
    assert sim.tick() == []


def test_reads_deliver_due_events_too() -> None:
    sim = make_sim()
    seen: list[SimEvent] = []
    sim.subscribe(seen.append)
    sim.deploy("a", "app", "x", "cl", 0.1, 1000)
    sim.clock.advance(1.0)
    assert sim.instance("a").state is InstanceState.RUNNING
    assert seen[-1].kind is EventKind.INSTANCE_RUNNING


def test_stop_move_and_node_events() -> None:
    sim = make_sim()
    seen: list[SimEvent] = []
    sim.subscribe(seen.append)
    sim.deploy("a", "app", "x", "cl", 0.1, 1000)
    sim.advance(1.0)
    sim.move("a", "ed")
    sim.advance(1.0)
    sim.remove("a")
    sim.crash_node("fe")
    sim.recover_node("fe")
    assert [(e.kind, e.node) for e in seen] == [
        (EventKind.INSTANCE_STARTING, "cl"),
        (EventKind.INSTANCE_RUNNING, "cl"),
        (EventKind.INSTANCE_STARTING, "ed"),
        (EventKind.INSTANCE_RUNNING, "ed"),
        (EventKind.INSTANCE_STOPPED, "ed"),
        (EventKind.NODE_DOWN, "fe"),
        (EventKind.NODE_UP, "fe"),
    ]
    assert seen[2].detail["from"] == "cl"


def test_failing_subscriber_is_isolated_and_unsubscribe_works() -> None:
    sim = make_sim()
    good: list[SimEvent] = []

    def bad(event: SimEvent) -> None:
        raise RuntimeError("boom")

    sim.subscribe(bad)
    unsubscribe = sim.subscribe(good.append)
    sim.deploy("a", "app", "x", "cl", 0.1, 1000)
    assert len(good) == 1
    unsubscribe()
    unsubscribe()  # harmless twice
    sim.advance(1.0)
    assert len(good) == 1
    assert sim.instance("a").state is InstanceState.RUNNING


def test_reentrant_subscriber_keeps_event_order() -> None:
    sim = make_sim()
    seen: list[tuple[EventKind, str | None]] = []

    def chain(event: SimEvent) -> None:
        seen.append((event.kind, event.instance))
        if event.kind is EventKind.INSTANCE_RUNNING and event.instance == "a":
            sim.deploy("b", "app", "y", "cl", 0.1, 1000)  # react to "a running" by deploying "b"

    sim.subscribe(chain)
    sim.deploy("a", "app", "x", "cl", 0.1, 1000)
    sim.advance(0.3)
    sim.advance(0.3)
    assert seen == [
        (EventKind.INSTANCE_STARTING, "a"),
        (EventKind.INSTANCE_RUNNING, "a"),
        (EventKind.INSTANCE_STARTING, "b"),
        (EventKind.INSTANCE_RUNNING, "b"),
    ]


def test_snapshot_is_json_serialisable_and_complete() -> None:
    sim = make_sim()
    sim.deploy("a", "app", "x", "cl", 0.5, GIB // 4, interactions=["y"])
    sim.deploy("b", "app", "y", "ed", 0.5, GIB // 4)
    sim.advance(1.0)
    sim.slow_node("ed", 2.0, duration_s=5.0)
    sim.degrade_link("*", "far_edge", 3.0)
    sim.crash_node("fe")
    snap = json.loads(json.dumps(sim.snapshot(), allow_nan=False))
    assert snap["time"] == 1.0 and snap["seed"] == 9
    nodes = {n["name"]: n for n in snap["nodes"]}
    assert nodes["cl"]["location"] == [23.7, 37.9]
    assert nodes["cl"]["cpu_frequency_hz"] == 2e9
    assert nodes["ed"]["sensors"] == ["camera"]
    assert nodes["fe"]["up"] is False and nodes["fe"]["metrics"] == {"sim.node.up": 0.0}
    assert nodes["cl"]["metrics"]["sim.instances.running"] == 1.0
    insts = {i["instance_id"]: i for i in snap["instances"]}
    assert insts["a"]["state"] == "running" and insts["a"]["interactions"] == ["y"]
    assert snap["interactions"] == {"app": [["x", "y"]]}
    assert {f["kind"] for f in snap["faults"]["active"]} == {"slow_node", "degrade_link"}
    assert [f["kind"] for f in snap["faults"]["log"]] == ["slow_node", "degrade_link", "crash_node"]


@pytest.mark.asyncio
async def test_run_ticks_in_realtime_until_cancelled() -> None:
    sim = make_sim(SimClock.realtime(scale=10.0))  # cloud startup 0.3 sim s = 0.03 s wall
    running = asyncio.Event()
    sim.subscribe(lambda e: running.set() if e.kind is EventKind.INSTANCE_RUNNING else None)
    task = asyncio.create_task(sim.run(interval=0.01))
    try:
        sim.deploy("a", "app", "x", "cl", 0.1, 1000)
        await asyncio.wait_for(running.wait(), timeout=2.0)
        assert sim.instance("a").state is InstanceState.RUNNING
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_run_rejects_bad_interval() -> None:
    with pytest.raises(ValueError):
        await make_sim().run(interval=0)
