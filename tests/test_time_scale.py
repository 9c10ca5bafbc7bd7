"""One scaled clock: `substrate.time_scale` speeds up the simulator and the agents' simulated intervals
alike, never below their real-time floors, and leaves real-work budgets (execute/plugin timeouts) alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsysops.agents.managed_agent import REAL_FLOORS, AgentSettings, scaled
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_assembly import SliceAssembly

DEMO = Path(__file__).resolve().parents[1] / "examples" / "slices" / "demo.yaml"


def test_scaled_divides_simulated_durations_down_to_their_floors() -> None:
    base = AgentSettings(heartbeat=1.0, monitor=1.0, analyze=2.0, eviction_timeout=30.0, execute_timeout=10.0)
    fast = scaled(base, 20)
    assert fast.analyze == pytest.approx(0.1) and fast.eviction_timeout == pytest.approx(1.5)
    assert fast.heartbeat == REAL_FLOORS["heartbeat"]          # 1/20 s would be below what a loop keeps
    assert fast.execute_timeout == 10.0 and fast.plugin_timeout == base.plugin_timeout
    assert scaled(base, 1.0) is base
    assert scaled(AgentSettings(heartbeat=0.1), 20).heartbeat == 0.1   # never slower than asked
    with pytest.raises(ValueError, match="time_scale"):
        scaled(base, 0)


def test_a_slice_time_scale_reaches_every_layer_but_not_overrides() -> None:
    spec = load_slice(DEMO)
    spec.config.substrate.time_scale = 10
    assembly = SliceAssembly(spec, overrides={"all": {"heartbeat": 0.5}})
    assert assembly.time_scale == 10
    for layer in ("continuum", "cluster", "node"):
        s = assembly.settings(layer)
        assert s.analyze == pytest.approx(spec.config.intervals.analyze / 10)
        assert s.heartbeat == 0.5       # an override is real seconds, as asked


def test_a_scaled_slice_scales_a_lost_nodes_grace_down_to_its_floor() -> None:
    base = AgentSettings(node_grace=10.0)
    assert scaled(base, 5).node_grace == pytest.approx(2.0)
    assert scaled(base, 20).node_grace == REAL_FLOORS["node_grace"]     # not 0.5 s: below its floor
    assert scaled(base, 20).time_scale == 20 and base.time_scale == 1.0


def test_a_policys_own_analyze_interval_is_simulated_time() -> None:
    """Built-in placement policies declare `analyze_interval: 2.0`; at 20x it must not stay 2 real seconds
    (every placement waited for it: pending for 2-4 s of wall time, 40-80 simulated seconds)."""
    from mlsysops.agents.mape import DecisionLog, Knowledge, MAPEEngine, MechanismRegistry, PolicyRegistry

    policies = PolicyRegistry(modules=["mlsysops.policies.static_placement"], entry_point_group=None)
    policies.load_all()
    pol = policies.get("static_placement")
    assert pol is not None and pol.interval == 2.0

    def engine(scale: float) -> MAPEEngine:
        return MAPEEngine("n1", Knowledge(), policies, MechanismRegistry(), DecisionLog("n1"), assets=dict,
                          system_description=dict, default_analyze_interval=0.7, time_scale=scale,
                          interval_floor=0.1)

    assert engine(1.0)._interval(pol) == 2.0
    assert engine(10.0)._interval(pol) == pytest.approx(0.2)
    assert engine(50.0)._interval(pol) == 0.1                # the real floor
    assert engine(50.0)._interval(None) == 0.7               # the agent's default is already real seconds
