"""Network latency model, link degradation, node crash/recover, fault log and clearing."""

from __future__ import annotations

import pytest

from mlsysops.sim import (
    EventKind,
    InstanceState,
    SimClock,
    SimContinuum,
    SimEvent,
    SimNodeSpec,
    UnknownNodeError,
)

GIB = 2**30


def make_sim() -> SimContinuum:
    specs = [
        SimNodeSpec("e1", "c1", "edge"),
        SimNodeSpec("e2", "c1", "edge"),
        SimNodeSpec("f1", "c1", "far_edge"),
        SimNodeSpec("cl", "cloud-dc", "cloud"),
        SimNodeSpec("geo-a", "g1", "edge", location=(22.0, 39.0)),
        SimNodeSpec("geo-b", "g2", "edge", location=(23.7, 37.9)),
        SimNodeSpec("geo-c", "g2", "edge", location=(2.35, 48.85)),
    ]
    return SimContinuum.from_specs(specs, seed=5, clock=SimClock.manual())


def test_latency_grows_with_network_distance() -> None:
    sim = make_sim()
    same_node = sim.latency_ms("e1", "e1")
    same_cluster = sim.latency_ms("e1", "e2")
    cross_layer_in_cluster = sim.latency_ms("e1", "f1")
    cross_layer_cross_cluster = sim.latency_ms("e1", "cl")
    assert 0 < same_node < same_cluster < cross_layer_in_cluster < cross_layer_cross_cluster
    assert sim.latency_ms("cl", "f1") > sim.latency_ms("cl", "e1")  # far edge has the slowest access


def test_latency_is_symmetric_and_deterministic() -> None:
    a, b = make_sim(), make_sim()
    names = [n.name for n in a.nodes()]
    ma = a.latency_matrix()
    assert ma == b.latency_matrix(names)
    for i in range(len(names)):
        for j in range(len(names)):
            assert ma[i][j] == ma[j][i]


def test_geographic_distance_adds_latency() -> None:
    sim = make_sim()
    near = sim.latency_ms("geo-a", "geo-b")  # ~200 km
    far = sim.latency_ms("geo-b", "geo-c")  # ~2100 km, same cluster though
    no_geo = sim.latency_ms("e1", "cl")
    assert near > sim.config.inter_cluster_ms + 2 * sim.config.access_ms["edge"]
    assert far > near
    assert far - sim.config.intra_cluster_ms == pytest.approx(2100 * sim.config.ms_per_km, rel=0.05)
    cfg = sim.config
    assert no_geo == cfg.inter_cluster_ms + cfg.access_ms["edge"] + cfg.access_ms["cloud"]


def test_latency_of_unknown_node() -> None:
    with pytest.raises(UnknownNodeError):
        make_sim().latency_ms("e1", "ghost")


def test_degrade_link_between_nodes_with_expiry() -> None:
    sim = make_sim()
    base = sim.latency_ms("e1", "e2")
    sim.degrade_link("e1", "e2", 50.0, duration_s=1.0)
    assert sim.latency_ms("e1", "e2") == pytest.approx(base + 50.0)
    assert sim.latency_ms("e2", "e1") == pytest.approx(base + 50.0)
    assert sim.latency_ms("e1", "f1") == pytest.approx(make_sim().latency_ms("e1", "f1"))
    sim.advance(0.99)
    assert sim.latency_ms("e1", "e2") == pytest.approx(base + 50.0)
    sim.advance(0.01)
    assert sim.latency_ms("e1", "e2") == pytest.approx(base)


def test_degrade_link_by_layer_and_wildcard_stacks() -> None:
    sim = make_sim()
    clean = make_sim()
    sim.degrade_link("cloud", "*", 10.0)
    sim.degrade_link("far_edge", "cloud", 5.0)
    assert sim.latency_ms("e1", "cl") == pytest.approx(clean.latency_ms("e1", "cl") + 10.0)
    assert sim.latency_ms("cl", "f1") == pytest.approx(clean.latency_ms("cl", "f1") + 15.0)
    assert sim.latency_ms("e1", "e2") == pytest.approx(clean.latency_ms("e1", "e2"))
    assert sim.latency_ms("cl", "cl") == pytest.approx(clean.latency_ms("cl", "cl"))  # loopback unaffected
    with pytest.raises(UnknownNodeError):
        sim.degrade_link("e1", "fog", 1.0)


def test_link_degradation_reaches_response_time() -> None:
    sim = make_sim()
    sim.deploy("fe", "app", "frontend", "e1", 0.1, GIB // 8, interactions=["backend"])
    sim.deploy("be", "app", "backend", "e2", 0.1, GIB // 8)
    sim.advance(1.0)
    before = sim.component_metrics("fe")
    sim.degrade_link("e1", "e2", 40.0)
    after = sim.component_metrics("fe")
    assert after["network_latency_ms"] == pytest.approx(before["network_latency_ms"] + 40.0)
    assert after["response_time_ms"] == pytest.approx(before["response_time_ms"] + 40.0)


def test_crash_fails_instances_and_hides_metrics() -> None:
    sim = make_sim()
    events: list[SimEvent] = []
    sim.subscribe(events.append)
    sim.deploy("a", "app", "web", "e1", 0.5, GIB // 4)
    sim.deploy("b", "app", "web", "e1", 0.5, GIB // 4)
    sim.deploy("c", "app", "web", "e2", 0.5, GIB // 4)
    sim.advance(1.0)
    events.clear()
    sim.crash_node("e1")
    assert not sim.is_up("e1") and sim.is_up("e2")
    for iid in ("a", "b"):
        inst = sim.instance(iid)
        assert inst.state is InstanceState.FAILED
        assert inst.reason == "node crashed"
    assert sim.instance("c").state is InstanceState.RUNNING
    assert sim.node_metrics("e1") == {"sim.node.up": 0.0}
    assert [(e.kind, e.instance) for e in events] == [
        (EventKind.INSTANCE_FAILED, "a"),
        (EventKind.INSTANCE_FAILED, "b"),
        (EventKind.NODE_DOWN, None),
    ]
    assert events[0].detail["reason"] == "node crashed"
    sim.crash_node("e1")  # idempotent: logged, no new events
    assert len(events) == 3


def test_crash_during_startup_never_reports_running() -> None:
    sim = make_sim()
    sim.deploy("a", "app", "web", "e1", 0.5, GIB // 4)
    sim.advance(0.1)
    sim.crash_node("e1")
    sim.recover_node("e1")
    kinds = [e.kind for e in sim.advance(5.0)]
    assert EventKind.INSTANCE_RUNNING not in kinds
    assert sim.instance("a").state is InstanceState.FAILED


def test_recover_brings_node_back_empty() -> None:
    sim = make_sim()
    sim.deploy("a", "app", "web", "e1", 0.5, GIB // 4)
    sim.advance(1.0)
    sim.crash_node("e1")
    sim.advance(2.0)
    sim.recover_node("e1")
    assert sim.is_up("e1")
    m = sim.node_metrics("e1")
    assert m["sim.node.up"] == 1.0
    assert m["sim.instances.running"] == 0.0
    assert sim.instance("a").state is InstanceState.FAILED
    sim.deploy("a", "app", "web", "e1", 0.5, GIB // 4)  # the failed id can be redeployed
    sim.advance(1.0)
    assert sim.instance("a").state is InstanceState.RUNNING


def test_fault_log_records_everything_in_order() -> None:
    sim = make_sim()
    sim.slow_node("e1", 2.0, duration_s=3.0)
    sim.advance(1.0)
    sim.load_spike("e2", 1.5, 2.0)
    sim.degrade_link("edge", "cloud", 7.0)
    sim.crash_node("f1")
    sim.advance(0.5)
    sim.recover_node("f1")
    sim.clear_faults()
    log = sim.fault_log
    assert [(r.time, r.kind, r.target) for r in log] == [
        (0.0, "slow_node", "e1"),
        (1.0, "load_spike", "e2"),
        (1.0, "degrade_link", "edge<->cloud"),
        (1.0, "crash_node", "f1"),
        (1.5, "recover_node", "f1"),
        (1.5, "clear_faults", "*"),
    ]
    assert log[0].params == {"factor": 2.0, "duration_s": 3.0}
    assert log[1].params == {"cpu_cores": 1.5, "duration_s": 2.0}
    assert log[2].params == {"extra_ms": 7.0, "duration_s": None}
    log.clear()  # a copy: the sim's log is untouched
    assert len(sim.fault_log) == 6


def test_active_faults_and_clear_faults() -> None:
    sim = make_sim()
    clean = make_sim()
    sim.slow_node("e1", 2.0)
    sim.load_spike("e2", 1.0, 10.0)
    sim.degrade_link("e1", "cl", 20.0)
    sim.crash_node("f1")
    active = sim.active_faults()
    assert {(f["kind"], f["target"]) for f in active} == {
        ("slow_node", "e1"),
        ("load_spike", "e2"),
        ("degrade_link", "e1<->cl"),
    }
    sim.clear_faults()
    assert sim.active_faults() == []
    assert sim.is_up("f1")
    assert sim.node_metrics("e1")["sim.node.slowdown"] == 1.0
    assert sim.latency_ms("e1", "cl") == clean.latency_ms("e1", "cl")


def test_fault_arguments_are_validated() -> None:
    sim = make_sim()
    with pytest.raises(UnknownNodeError):
        sim.crash_node("ghost")
    with pytest.raises(UnknownNodeError):
        sim.slow_node("ghost", 2.0)
    with pytest.raises(ValueError):
        sim.slow_node("e1", 0.0)
    with pytest.raises(ValueError):
        sim.load_spike("e1", 1.0, 0.0)
    with pytest.raises(ValueError):
        sim.degrade_link("e1", "e2", -1.0)
    assert sim.fault_log == []
