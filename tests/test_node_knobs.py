"""Node knobs: cpufreq against a sysfs-layout directory and on this host, NVML without a GPU, the permitted_actions
gate, the simulator's power model and energy counter, and the QoS-aware frequency policy on the simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlsysops.mechanisms.cpufreq import CpuFrequencyMechanism
from mlsysops.mechanisms.gpu_nvml import GpuNvmlMechanism
from mlsysops.mechanisms.knob_gate import PermittedKnob
from mlsysops.mechanisms.sim_cpufreq import SimCpuFrequencyMechanism
from mlsysops.policies import frequency_scaling
from mlsysops.sim import SimClock, SimContinuum, SimNodeSpec
from mlsysops.sim.config import SimConfig
from mlsysops.sim.power import node_power_watts

GHZ = 1e9


def sysfs_tree(root: Path, policies: int = 2, governor: str = "schedutil") -> Path:
    for i in range(policies):
        p = root / "cpufreq" / f"policy{i}"
        p.mkdir(parents=True)
        files = {"scaling_governor": governor, "scaling_available_governors": "performance powersave userspace schedutil",
                 "scaling_min_freq": "800000", "scaling_max_freq": "2400000", "scaling_cur_freq": "1800000",
                 "cpuinfo_min_freq": "800000", "cpuinfo_max_freq": "2400000", "scaling_setspeed": "<unsupported>",
                 "scaling_available_frequencies": "800000 1200000 1800000 2400000", "related_cpus": f"{i}"}
        for name, value in files.items():
            (p / name).write_text(value + "\n")
    return root


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_cpufreq_writes_values_to_a_sysfs_tree(tmp_path: Path) -> None:
    mech = CpuFrequencyMechanism(sysfs_tree(tmp_path))
    state = mech.get_state()
    assert state["supported"] and set(state["policies"]) == {"policy0", "policy1"}
    assert state["policies"]["policy0"]["cur_hz"] == 1.8 * GHZ
    assert run(mech.apply({"command": "set_limits", "min_hz": 1.2 * GHZ, "max_hz": 1.8 * GHZ}))["ok"]
    for i in range(2):
        p = tmp_path / "cpufreq" / f"policy{i}"
        assert (p / "scaling_min_freq").read_text() == "1200000" and (p / "scaling_max_freq").read_text() == "1800000"
    assert run(mech.apply({"command": "set_governor", "governor": "powersave", "policy": "policy1"}))["ok"]
    assert (tmp_path / "cpufreq/policy1/scaling_governor").read_text() == "powersave"
    assert (tmp_path / "cpufreq/policy0/scaling_governor").read_text().strip() == "schedutil"
    # set_speed needs userspace; with "governor": "userspace" it switches first
    refused = run(mech.apply({"command": "set_speed", "hz": 1.2 * GHZ}))
    assert not refused["ok"] and "userspace governor" in refused["detail"]
    assert run(mech.apply({"command": "set_speed", "hz": 1.2 * GHZ, "governor": "userspace", "policy": "policy0"}))["ok"]
    assert (tmp_path / "cpufreq/policy0/scaling_setspeed").read_text() == "1200000"
    assert mech.get_options()["policies"]["policy0"]["frequencies_hz"] == [0.8 * GHZ, 1.2 * GHZ, 1.8 * GHZ, 2.4 * GHZ]


@pytest.mark.parametrize("command, reason", [
    ({"command": "set_limits", "max_hz": 3.0 * GHZ}, "out of range"),
    ({"command": "set_limits", "min_hz": 0.5 * GHZ}, "out of range"),
    ({"command": "set_limits", "min_hz": 2.0 * GHZ, "max_hz": 1.0 * GHZ}, "min_hz"),
    ({"command": "set_limits", "max_hz": "fast"}, "expected a frequency in Hz"),
    ({"command": "set_governor", "governor": "turbo"}, "not available"),
    ({"command": "set_speed", "hz": 1.5 * GHZ, "governor": "userspace"}, "not an available frequency"),
    ({"command": "overclock"}, "expected one of"),
    ({"command": "reset", "policy": "policy9"}, "is not one of"),
])
def test_cpufreq_refuses_out_of_range_and_writes_nothing(tmp_path: Path, command: dict, reason: str) -> None:
    root = sysfs_tree(tmp_path)
    before = {p: p.read_text() for p in root.rglob("*") if p.is_file()}
    result = run(CpuFrequencyMechanism(root).apply(command))
    assert not result["ok"] and reason in result["detail"]
    assert {p: p.read_text() for p in root.rglob("*") if p.is_file()} == before


def test_cpufreq_not_supported_on_this_host() -> None:
    mech = CpuFrequencyMechanism()   # this VM has no cpufreq driver
    if (Path("/sys/devices/system/cpu/cpufreq/policy0/scaling_governor")).exists():
        pytest.skip("this host has a cpufreq driver")
    assert mech.get_state() == {"supported": False, "reason": mech.get_state()["reason"]}
    assert "not supported on this host" in mech.get_state()["reason"]
    result = run(mech.apply({"command": "set_governor", "governor": "powersave"}))
    assert not result["ok"] and "not supported on this host" in result["detail"]


def test_gpu_not_supported_without_a_gpu() -> None:
    mech = GpuNvmlMechanism()
    state = mech.get_state()
    assert state["supported"] is False and "not supported on this host" in state["reason"]
    result = run(mech.apply({"command": "set_power_limit", "watts": 100}))
    assert not result["ok"] and "not supported" in result["detail"]


def test_permitted_actions_gate(tmp_path: Path) -> None:
    inner = CpuFrequencyMechanism(sysfs_tree(tmp_path))
    gate = PermittedKnob(inner, "cpu_frequency", ["gpu_frequency"], "n1")
    result = run(gate.apply({"command": "set_governor", "governor": "powersave"}))
    assert not result["ok"] and "permitted_actions ['gpu_frequency'] do not include cpu_frequency" in result["detail"]
    assert (tmp_path / "cpufreq/policy0/scaling_governor").read_text().strip() == "schedutil"
    assert run(gate.get_state())["permitted"] is False
    assert run(PermittedKnob(inner, "cpu_frequency", ["*"], "n1").apply(
        {"command": "set_governor", "governor": "powersave"}))["ok"]


# -- simulator ---------------------------------------------------------------------------------------
def board_sim(**kw: Any) -> SimContinuum:
    spec = SimNodeSpec("b1", "c1", layer="edge", cpu_cores=4, cpu_freqs_hz=[1.0 * GHZ, 1.5 * GHZ, 2.0 * GHZ])
    return SimContinuum([spec], seed=3, clock=SimClock.manual(), **kw)


def test_power_model_is_idle_plus_cubic_dynamic() -> None:
    cfg = SimConfig()
    idle = node_power_watts(4, 0.0, 1.0, cfg)
    assert idle == pytest.approx(4 * cfg.idle_watts_per_core)
    full = node_power_watts(4, 1.0, 1.0, cfg) - idle
    half_clock = node_power_watts(4, 1.0, 0.5, cfg) - idle
    assert half_clock == pytest.approx(full / 8)


def test_energy_is_the_integral_of_power_and_frequency_lowers_it() -> None:
    fast, slow = board_sim(), board_sim()
    for sim in (fast, slow):
        sim.deploy("i1", "app", "svc", "b1", 1.0, 1 << 30, activity=0.5)
    SimCpuFrequencyMechanism(slow, "b1")
    run(SimCpuFrequencyMechanism(slow, "b1").apply({"command": "set_governor", "governor": "powersave"}))
    for _ in range(40):
        fast.advance(0.5)
        slow.advance(0.5)
    e_fast, e_slow = fast.energy_joules("b1"), slow.energy_joules("b1")
    p_fast = fast.node_metrics("b1")["hw.power"]
    assert e_fast == pytest.approx(p_fast * 20, rel=0.15)      # ~ constant power x 20 s
    assert 0 < e_slow < e_fast
    assert fast.node_metrics("b1")["hw.energy"] == pytest.approx(e_fast)
    # slower clock, longer service time for the CPU-bound component
    assert slow.component_metrics("i1")["response_time_ms"] > fast.component_metrics("i1")["response_time_ms"]


def test_sim_knob_refuses_bad_values() -> None:
    sim = board_sim()
    mech = SimCpuFrequencyMechanism(sim, "b1")
    bad = run(mech.apply({"command": "set_speed", "hz": 1.7 * GHZ, "governor": "userspace"}))
    assert not bad["ok"] and "not an available frequency" in bad["detail"]
    assert sim.cpu_frequency("b1") == 2.0 * GHZ


def _policy_step(sim: SimContinuum, mech: SimCpuFrequencyMechanism, ctx: dict[str, Any]) -> dict[str, Any]:
    system = {"node": "b1", "now": sim.clock.now(), "cpu_frequency_hz": sim.cpu_frequency("b1"),
              "cpu_utilization": [sim.node_metrics("b1")["system.cpu.utilization"]],
              "instances": [{"instance_id": i.instance_id, "app": i.app, "component": i.component,
                             "state": str(i.state), "response_time_ms": sim.component_metrics(i.instance_id).get(
                                 "response_time_ms"), "cpu_usage_cores": 0.0} for i in sim.instances(node="b1")]}
    mechs = {"cpu_frequency": {"state": mech.get_state(), "options": mech.get_options()}}
    needed, ctx = run(frequency_scaling.analyze(ctx, None, system, mechs, None, None))
    if not needed:
        return {}
    out = run(frequency_scaling.plan(ctx, None, system, mechs, None, None))
    cmds = out[0]
    if "cpu_frequency" in cmds:
        assert run(mech.apply(cmds["cpu_frequency"]))["ok"]
    assert out[2]["summary"] and out[2]["alternatives"]
    return cmds


def test_frequency_policy_lowers_the_clock_and_keeps_targets() -> None:
    sim = board_sim()
    sim.deploy("i1", "app", "svc", "b1", 1.0, 1 << 30, base_response_ms=20.0, activity=0.5)
    sim.advance(1.0)
    mech = SimCpuFrequencyMechanism(sim, "b1")
    ctx = frequency_scaling.initialize() | {"targets": {"app/svc": 60.0}}
    for _ in range(10):
        _policy_step(sim, mech, ctx)
        sim.advance(1.0)
        assert sim.component_metrics("i1")["response_time_ms"] <= 60.0
    assert sim.cpu_frequency("b1") < 2.0 * GHZ      # it did lower the clock
    # a tight target: the policy raises again before violating
    ctx["targets"] = {"app/svc": 30.0}
    for _ in range(3):
        _policy_step(sim, mech, ctx)
        sim.advance(1.0)
    assert sim.component_metrics("i1")["response_time_ms"] <= 30.0


def test_frequency_policy_proposes_relocation_when_max_is_not_enough() -> None:
    sim = board_sim()
    sim.deploy("i1", "app", "svc", "b1", 1.0, 1 << 30, base_response_ms=20.0, activity=0.5)
    sim.advance(1.0)
    mech = SimCpuFrequencyMechanism(sim, "b1")
    ctx = frequency_scaling.initialize() | {"targets": {"app/svc": 5.0}}
    cmds = _policy_step(sim, mech, ctx)
    assert cmds["relocation_proposal"]["instance_id"] == "i1"
    assert "top frequency" in cmds["relocation_proposal"]["reason"]


def test_a_spike_reserve_keeps_room_for_an_unseen_spike() -> None:
    def settle(reserve: float) -> tuple[SimContinuum, float]:
        sim = board_sim()
        sim.deploy("i1", "app", "svc", "b1", 1.0, 1 << 30, base_response_ms=20.0, activity=0.5)
        sim.advance(1.0)
        mech = SimCpuFrequencyMechanism(sim, "b1")
        ctx = frequency_scaling.initialize() | {"targets": {"app/svc": 40.0}, "spike_reserve": reserve}
        for _ in range(10):
            _policy_step(sim, mech, ctx)
            sim.advance(0.25)
        return sim, sim.cpu_frequency("b1")

    plain, f_plain = settle(0.0)
    reserved, f_reserved = settle(0.25)
    assert f_reserved > f_plain       # the room costs clock (energy) ...
    for sim in (plain, reserved):     # ... and buys the first moment of a one-core spike, before any analysis
        sim.load_spike("b1", 1.0, 5.0)
        sim.advance(0.25)
    assert plain.component_metrics("i1")["response_time_ms"] > 40.0
    assert reserved.component_metrics("i1")["response_time_ms"] <= 40.0


def test_a_bad_spike_reserve_is_refused_with_the_setting_named() -> None:
    sim = board_sim()
    mech = SimCpuFrequencyMechanism(sim, "b1")
    ctx = frequency_scaling.initialize() | {"spike_reserve": 2}
    system = {"node": "b1", "now": 0.0, "cpu_frequency_hz": 3.0 * GHZ, "cpu_utilization": [0.3], "instances": []}
    mechs = {"cpu_frequency": {"state": mech.get_state(), "options": mech.get_options()}}
    needed, ctx = run(frequency_scaling.analyze(ctx, None, system, mechs, None, None))
    assert not needed and "spike_reserve must be a fraction" in ctx["explanation"]["summary"]
