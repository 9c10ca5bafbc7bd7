"""SimClock and the plain data types of sim/."""

from __future__ import annotations

import json
import types

import pytest

import mlsysops.sim.clock as clock_mod
from mlsysops.sim import DEFAULT_STARTUP_S, InstanceState, SimClock, SimNodeSpec


def test_manual_clock_moves_only_on_advance() -> None:
    c = SimClock.manual(start=5.0)
    assert c.mode == "manual"
    assert c.now() == 5.0
    assert c.now() == 5.0
    assert c.advance(0.25) == 5.25
    assert c.now() == 5.25
    with pytest.raises(ValueError):
        c.advance(-0.1)


def test_realtime_clock_follows_monotonic_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"t": 100.0}
    monkeypatch.setattr(clock_mod, "time", types.SimpleNamespace(monotonic=lambda: fake["t"]))
    c = SimClock.realtime(scale=10.0)
    assert c.now() == 0.0
    fake["t"] = 100.5
    assert c.now() == pytest.approx(5.0)
    c.advance(2.0)  # a jump on top of real time
    assert c.now() == pytest.approx(7.0)


def test_clock_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SimClock("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SimClock.realtime(scale=0)


def test_node_spec_defaults_by_layer_and_validation() -> None:
    cloud = SimNodeSpec("c", "k", "cloud")
    far = SimNodeSpec("f", "k", "far_edge")
    custom = SimNodeSpec("x", "k", "edge", startup_s=2.0)
    assert cloud.startup_s == DEFAULT_STARTUP_S["cloud"] == 0.3
    assert far.startup_s == 0.6
    assert custom.startup_s == 2.0
    with pytest.raises(ValueError, match="layer"):
        SimNodeSpec("bad", "k", "fog")
    with pytest.raises(ValueError, match="cpu_cores"):
        SimNodeSpec("bad", "k", cpu_cores=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        SimNodeSpec("bad", "k", memory_bytes=0)
    with pytest.raises(ValueError, match="speed"):
        SimNodeSpec("bad", "k", speed=-1)


def test_node_spec_normalises_and_serialises() -> None:
    spec = SimNodeSpec("n", "k", cpu_freqs_hz=[2e9, 1e9], location=(22, 39), sensors=["camera"])
    assert spec.cpu_freqs_hz == [1e9, 2e9]
    assert spec.location == (22.0, 39.0)
    d = json.loads(json.dumps(spec.as_dict()))
    assert d["location"] == [22.0, 39.0]
    assert d["sensors"] == ["camera"]
    assert d["startup_s"] == DEFAULT_STARTUP_S["edge"]


def test_instance_state_terminal() -> None:
    assert not InstanceState.STARTING.terminal
    assert not InstanceState.RUNNING.terminal
    assert InstanceState.FAILED.terminal
    assert InstanceState.STOPPED.terminal
    assert InstanceState("running") is InstanceState.RUNNING
