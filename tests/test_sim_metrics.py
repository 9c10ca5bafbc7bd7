"""Workload, node metrics, QoS model, determinism and scale."""

from __future__ import annotations

import time

import pytest

from mlsysops.sim import NODE_METRICS, SimClock, SimContinuum, SimNodeSpec

GIB = 2**30
OTEL_NAMES = {
    "system.cpu.utilization",
    "system.memory.usage",
    "system.memory.utilization",
    "system.network.io.receive",
    "system.network.io.transmit",
    "system.cpu.frequency",
}


def make_sim(seed: int = 3) -> SimContinuum:
    specs = [
        SimNodeSpec("n1", "c1", "edge", cpu_cores=4, memory_bytes=8 * GIB, cpu_freqs_hz=[1.0e9, 2.0e9]),
        SimNodeSpec("n2", "c1", "edge", cpu_cores=4, memory_bytes=8 * GIB),
        SimNodeSpec("n3", "c2", "cloud", cpu_cores=16, memory_bytes=32 * GIB, speed=2.0),
    ]
    return SimContinuum.from_specs(specs, seed=seed, clock=SimClock.manual())


def running_target(sim: SimContinuum, node: str = "n1") -> None:
    sim.deploy("t", "app", "svc", node, 0.5, GIB // 2, base_response_ms=10.0)
    sim.advance(1.0)


def test_node_metrics_names_and_ranges() -> None:
    sim = make_sim()
    sim.deploy("a", "app", "svc", "n1", 1.0, GIB)
    sim.advance(1.0)
    m = sim.node_metrics("n1")
    assert OTEL_NAMES <= set(m)
    assert set(m) <= set(NODE_METRICS)
    assert 0.0 < m["system.cpu.utilization"] <= 1.0
    assert m["sim.cpu.used_cores"] == pytest.approx(m["system.cpu.utilization"] * 4)
    assert m["system.memory.limit"] == 8 * GIB
    assert 0 < m["system.memory.usage"] < m["system.memory.limit"]
    assert m["system.memory.utilization"] == pytest.approx(m["system.memory.usage"] / (8 * GIB))
    assert m["system.network.io.receive"] > 0 and m["system.network.io.transmit"] > 0
    assert m["system.cpu.frequency"] == 2.0e9
    assert m["sim.instances.running"] == 1.0
    assert "system.cpu.frequency" not in sim.node_metrics("n2")  # no frequency table


def test_instances_add_cpu_memory_and_network_use() -> None:
    busy_sim, empty_sim = make_sim(), make_sim()  # same seed: same node noise at the same time
    busy_sim.deploy("a", "app", "svc", "n1", 2.0, 2 * GIB, activity=1.0)
    busy_sim.deploy("b", "app", "svc", "n1", 1.0, 2 * GIB, activity=1.0)
    busy_sim.advance(1.0)
    empty_sim.advance(1.0)
    base, busy = empty_sim.node_metrics("n1"), busy_sim.node_metrics("n1")
    assert base["system.cpu.utilization"] < 0.1  # background only
    assert busy["sim.cpu.demand_cores"] > base["sim.cpu.demand_cores"] + 2.0
    assert busy["system.memory.usage"] > base["system.memory.usage"] + 2 * GIB
    assert busy["system.network.io.receive"] > base["system.network.io.receive"]
    assert busy["sim.node.power"] > base["sim.node.power"]


def test_starting_instances_use_less_than_running() -> None:
    sim = make_sim()
    sim.deploy("a", "app", "svc", "n1", 2.0, 2 * GIB, activity=1.0)
    starting = sim.component_metrics("a")
    assert starting["running"] == 0.0
    assert "response_time_ms" not in starting
    assert starting["cpu_usage_cores"] == pytest.approx(0.6)
    sim.advance(1.0)
    running = sim.component_metrics("a")
    assert running["running"] == 1.0
    assert running["cpu_usage_cores"] > starting["cpu_usage_cores"]
    assert running["memory_usage_bytes"] > starting["memory_usage_bytes"]
    sim.remove("a")
    assert sim.component_metrics("a")["cpu_usage_cores"] == 0.0


def test_cpu_use_bursts_at_most_to_limit() -> None:
    sim = make_sim()
    sim.deploy("a", "app", "svc", "n3", 1.0, GIB, activity=5.0)
    sim.advance(1.0)
    for _ in range(20):
        assert sim.component_metrics("a")["cpu_usage_cores"] <= 1.5 + 1e-9
        sim.advance(0.37)


def test_response_time_monotonic_in_node_load() -> None:
    sim = make_sim()
    running_target(sim)
    sim.deploy("filler", "other", "hog", "n1", 2.0, GIB, activity=0.0)
    sim.advance(1.0)
    rts, utils = [], []
    for activity in (0.0, 0.3, 0.6, 1.0, 1.5):
        sim.set_activity("filler", activity)
        m = sim.component_metrics("t")
        rts.append(m["response_time_ms"])
        utils.append(m["node_cpu_utilization"])
    assert rts == sorted(rts) and rts[0] < rts[-1]
    assert utils == sorted(utils)
    assert rts[0] >= 10.0 * 0.9  # base / speed, minus at most the response noise


def test_load_spike_raises_response_time_monotonically_even_past_saturation() -> None:
    sim = make_sim()
    running_target(sim)
    before = sim.component_metrics("t")["response_time_ms"]
    rts = [before]
    for _ in range(4):  # 2, 4, 6, 8 extra cores on a 4-core node: saturates, then overloads
        sim.load_spike("n1", 2.0, duration_s=5.0)
        rts.append(sim.component_metrics("t")["response_time_ms"])
    assert all(a < b for a, b in zip(rts, rts[1:]))
    assert sim.node_metrics("n1")["system.cpu.utilization"] == 1.0
    assert sim.node_metrics("n1")["sim.cpu.demand_cores"] > 8.0
    sim.advance(5.0)  # spikes expire
    assert sim.node_metrics("n1")["sim.cpu.demand_cores"] < 1.5


def test_slow_node_scales_compute_time_and_expires() -> None:
    sim = make_sim()
    running_target(sim)
    normal = sim.component_metrics("t")["response_time_ms"]
    sim.slow_node("n1", 3.0, duration_s=2.0)
    slow = sim.component_metrics("t")["response_time_ms"]
    assert slow == pytest.approx(3.0 * normal)
    assert sim.node_metrics("n1")["sim.node.slowdown"] == 3.0
    sim.slow_node("n1", 2.0)  # stacks multiplicatively
    assert sim.component_metrics("t")["response_time_ms"] == pytest.approx(6.0 * normal)
    sim.advance(2.0)
    assert sim.node_metrics("n1")["sim.node.slowdown"] == 2.0


def test_faster_node_answers_faster() -> None:
    a, b = make_sim(), make_sim()
    running_target(a, "n2")
    running_target(b, "n3")  # speed 2, 16 cores
    assert b.component_metrics("t")["response_time_ms"] < a.component_metrics("t")["response_time_ms"]


def test_cpu_frequency_trades_speed_for_power() -> None:
    sim = make_sim()
    running_target(sim)
    fast = sim.component_metrics("t")["response_time_ms"]
    fast_node = sim.node_metrics("n1")
    sim.set_cpu_frequency("n1", 1.0e9)
    assert sim.cpu_frequency("n1") == 1.0e9
    slow = sim.component_metrics("t")["response_time_ms"]
    slow_node = sim.node_metrics("n1")
    assert slow > 2 * fast * 0.99
    assert slow_node["system.cpu.frequency"] == 1.0e9
    assert slow_node["system.cpu.utilization"] > fast_node["system.cpu.utilization"]
    assert slow_node["sim.node.power"] < fast_node["sim.node.power"]
    with pytest.raises(ValueError):
        sim.set_cpu_frequency("n1", 1.5e9)
    with pytest.raises(ValueError):
        sim.set_cpu_frequency("n2", 1.0e9)


def test_response_time_includes_latency_to_nearest_callee() -> None:
    sim = make_sim()
    sim.deploy("fe", "shop", "frontend", "n1", 0.2, GIB // 4, interactions=["backend"])
    sim.advance(1.0)
    m = sim.component_metrics("fe")
    assert m["missing_peers"] == 1.0
    assert m["network_latency_ms"] == pytest.approx(sim.config.missing_peer_penalty_ms)
    sim.deploy("be-far", "shop", "backend", "n3", 0.2, GIB // 4)
    sim.advance(1.0)
    far = sim.component_metrics("fe")
    assert far["missing_peers"] == 0.0
    assert far["network_latency_ms"] == pytest.approx(sim.latency_ms("n1", "n3"))
    sim.deploy("be-near", "shop", "backend", "n1", 0.2, GIB // 4)
    sim.advance(1.0)
    near = sim.component_metrics("fe")
    assert near["network_latency_ms"] == pytest.approx(sim.latency_ms("n1", "n1"))
    assert near["response_time_ms"] < far["response_time_ms"]
    # callees do not inherit the caller's latency (edges are directed)
    assert sim.component_metrics("be-far")["network_latency_ms"] == 0.0


def test_set_interactions_replaces_the_call_graph() -> None:
    sim = make_sim()
    sim.deploy("fe", "shop", "frontend", "n1", 0.2, GIB // 4, interactions=["backend"])
    sim.deploy("db", "shop", "db", "n3", 0.2, GIB // 4)
    sim.advance(1.0)
    assert sim.interactions("shop") == [("frontend", "backend")]
    sim.set_interactions("shop", [("frontend", "db")])
    assert sim.interactions("shop") == [("frontend", "db")]
    m = sim.component_metrics("fe")
    assert m["missing_peers"] == 0.0
    assert m["network_latency_ms"] == pytest.approx(sim.latency_ms("n1", "n3"))


def _trace(seed: int, read_every_step: bool) -> list[object]:
    sim = make_sim(seed)
    sim.deploy("a", "app", "svc", "n1", 1.0, GIB, interactions=["db"])
    sim.deploy("b", "app", "db", "n3", 2.0, GIB)
    out: list[object] = []
    for step in range(30):
        sim.advance(0.13)
        if step == 10:
            sim.load_spike("n1", 1.0, 1.0)
        if read_every_step or step == 29:
            out.append((sim.all_node_metrics(), sim.component_metrics("a"), sim.component_metrics("b")))
    return out


def test_same_seed_and_steps_give_identical_metrics() -> None:
    assert _trace(11, True) == _trace(11, True)


def test_reads_do_not_perturb_the_noise() -> None:
    assert _trace(11, True)[-1] == _trace(11, False)[-1]


def test_different_seed_gives_different_noise() -> None:
    a, b = _trace(11, False)[-1], _trace(12, False)[-1]
    assert a[1]["cpu_usage_cores"] != b[1]["cpu_usage_cores"]
    assert a[0]["n2"]["system.cpu.utilization"] != b[0]["n2"]["system.cpu.utilization"]


def test_metrics_vary_over_time() -> None:
    sim = make_sim()
    running_target(sim)
    samples = set()
    for _ in range(10):
        sim.advance(0.5)
        samples.add(round(sim.component_metrics("t")["cpu_usage_cores"], 9))
    assert len(samples) > 5


def test_thousand_nodes_five_thousand_instances_metrics_fast() -> None:
    layers = ["cloud", "edge_infrastructure", "edge", "far_edge"]
    specs = [
        SimNodeSpec(f"n{i}", f"c{i % 20}", layers[i % 4], cpu_cores=16, memory_bytes=64 * GIB,
                    cpu_freqs_hz=[1e9, 2e9])
        for i in range(1000)
    ]
    sim = SimContinuum.from_specs(specs, seed=1, clock=SimClock.manual())
    for j in range(5000):
        sim.deploy(f"i{j}", f"app{j % 100}", f"comp{j % 7}", f"n{j % 1000}", 1.0, GIB,
                   interactions=[f"comp{(j + 1) % 7}"])
    sim.advance(1.0)
    timings = []
    for _ in range(3):
        sim.clock.advance(0.1)  # a new time: no cached loads
        t0 = time.perf_counter()
        metrics = sim.all_node_metrics()
        timings.append(time.perf_counter() - t0)
    assert len(metrics) == 1000
    assert sum(m["sim.instances.running"] for m in metrics.values()) == 5000
    assert min(timings) < 0.1, timings


def test_noise_is_per_instance_and_per_seed() -> None:
    def usage(seed: int) -> tuple[float, float]:
        sim = make_sim(seed)
        sim.deploy("a", "app", "svc", "n3", 1.0, GIB, activity=0.6)  # same mean activity for both
        sim.deploy("b", "app", "svc", "n3", 1.0, GIB, activity=0.6)
        sim.advance(1.7)
        return sim.component_metrics("a")["cpu_usage_cores"], sim.component_metrics("b")["cpu_usage_cores"]

    a1, b1 = usage(1)
    a2, _ = usage(2)
    assert a1 != b1
    assert a1 != a2
    assert usage(1) == (a1, b1)
