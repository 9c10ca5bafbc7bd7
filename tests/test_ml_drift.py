"""Drift detectors on synthetic shifts: they fire on a shift and stay quiet without one."""

from __future__ import annotations

import numpy as np
import pytest

from mlsysops.agents.ml.drift import DriftMonitor, KSWindow, PageHinkley, ks_statistic, psi


def test_ks_statistic_bounds():
    a = np.arange(100.0)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a, a + 1000) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_ks_window_fires_on_a_shift_only(seed):
    rng = np.random.default_rng(seed)
    ks = KSWindow(rng.normal(0, 1, 500), window=60)
    assert all((r is None or r[0] <= r[1]) for r in (ks.update(v) for v in rng.normal(0, 1, 200)))
    results = [ks.update(v) for v in rng.normal(1.5, 1, 60)]
    d, crit = results[-1]
    assert d > crit


def test_psi_reads_major_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 2000)
    assert psi(ref, rng.normal(0, 1, 500)) < 0.1
    assert psi(ref, rng.normal(1.0, 1, 500)) > 0.25


@pytest.mark.parametrize("seed", range(3))
def test_page_hinkley_on_a_mean_shift(seed):
    rng = np.random.default_rng(seed)
    ph = PageHinkley(delta=0.5, threshold=20.0)
    assert max(ph.update(abs(v)) for v in rng.normal(0, 1, 500)) < 20.0
    fired_after = next(i for i, v in enumerate(rng.normal(6, 1, 50)) if ph.update(abs(v)) > 20.0)
    assert fired_after < 10


def test_monitor_alarm_names_detector_feature_statistic():
    rng = np.random.default_rng(0)
    mon = DriftMonitor.for_training_data("qos", 2, "response_time_ms", {"queue": rng.uniform(1, 2, 300)}, window=40)
    for _ in range(100):
        assert mon.observe_inputs({"queue": float(rng.uniform(1, 2))}) is None
        assert mon.observe_error(10 + float(rng.normal(0, 1)), 10.0, 1.0) is None
    alarm = None
    for _ in range(40):
        alarm = alarm or mon.observe_error(30.0, 10.0, 1.0)
    assert alarm is not None and alarm.detector == "page-hinkley" and alarm.feature == "response_time_ms"
    assert alarm.statistic > alarm.threshold
    assert "page-hinkley drift on response_time_ms" in str(alarm)
    mon2 = DriftMonitor.for_training_data("qos", 2, "response_time_ms", {"queue": rng.uniform(1, 2, 300)}, window=40)
    alarm2 = None
    for _ in range(40):
        alarm2 = alarm2 or mon2.observe_inputs({"queue": float(rng.uniform(3, 4))})
    assert alarm2 is not None and alarm2.detector == "ks" and alarm2.feature == "queue"


def test_page_hinkley_with_a_reference_level_catches_a_stream_wrong_from_the_start():
    rng = np.random.default_rng(0)
    wrong = [abs(v) for v in rng.normal(6, 1, 40)]
    running = PageHinkley(delta=1.0, threshold=20.0)
    assert max(running.update(v) for v in wrong) < 20.0            # no change inside the stream: silent
    fixed = PageHinkley(delta=1.0, threshold=20.0, reference_mean=0.8)
    assert max(fixed.update(v) for v in wrong) > 20.0
    calm = PageHinkley(delta=1.0, threshold=20.0, reference_mean=0.8)
    assert max(calm.update(abs(v)) for v in rng.normal(0, 1, 500)) < 20.0
