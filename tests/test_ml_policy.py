"""The QoS-predictive ML policy on the drifting scenario, driven in process with a simulated clock.

The decisions are made by `mlsysops.policies.ml_qos_placement` - the module a cluster agent loads -
from the inputs a cluster agent builds; the sim is the real `SimContinuum` with a `QosProfile` (hidden
per-kind speed, interference, diurnal load, and a node that slows down at `drift_at`).
"""

from __future__ import annotations

import pytest

from benchmarks.ml_scenario import run

pytestmark = pytest.mark.timeout(240)


def test_auto_falls_back_on_injected_drift_and_returns_after_retraining():
    r = run("auto", "auto", seed=0, seconds=200, drift_at=70, warmup_s=90)
    assert r.fallback_t is not None, f"no fallback; transitions {r.transitions}"
    assert r.fallback_t >= r.drift_t, f"fell back before the drift: {r.transitions}"
    fallback = next(t for t in r.transitions if t["state"] == "fallback")
    assert "drift on" in fallback["reason"] and "statistic" in fallback["reason"]
    assert r.restored_t is not None and r.restored_t > r.fallback_t, f"never came back: {r.transitions}"
    back = next(t for t in r.transitions if t["state"] == "ml" and t["t"] > r.fallback_t)
    assert "retrained version" in back["reason"] and "validated" in back["reason"]
    assert r.final_version is not None and r.final_version >= 2


def test_no_fallback_without_drift():
    r = run("auto", "auto", seed=1, seconds=120, drift_at=None, warmup_s=90)
    assert r.fallback_t is None, r.transitions


def test_shadow_acts_on_nothing():
    """Shadow: exactly the heuristic's actions, the model's recorded beside them."""
    heuristic = run("heuristic", "heuristic", seed=2, seconds=90, drift_at=None, warmup_s=90)
    shadow = run("shadow", "shadow", seed=2, seconds=90, drift_at=None, warmup_s=90, keep_explanations=True)
    assert shadow.actions == heuristic.actions
    assert shadow.actions, "the heuristic placed nothing: the comparison would be empty"
    recorded = [e["shadow"] for e in shadow.explanations if "shadow" in e]
    assert recorded and all("would_do" in s and "compare" in s for s in recorded)
    assert all(e["management"]["acting"] == "heuristic" for e in shadow.explanations)


def test_ml_decisions_are_explained():
    r = run("ml", "ml", seed=0, seconds=40, drift_at=None, warmup_s=90, keep_explanations=True)
    notes = [n for e in r.explanations for n in e.get("decisions", []) if n.get("ml")]
    assert notes, "no ML decision recorded"
    for note in notes:
        ml = note["ml"]
        assert ml["model"] == "qos-response-time" and ml["version"] >= 1 and ml["format"] == "mlsysops-linear"
        for side in ("chosen", "best_rejected"):
            got = sum(ml[side]["attributions"].values())
            assert got == pytest.approx(ml[side]["prediction"] - ml["baseline_prediction"], abs=0.01)
            assert 0.0 <= ml[side]["p_violation"] <= 1.0
        assert ml["chosen"]["option"] == note["node"]
        assert "framework" in note     # the placement framework's own explanation (filters, scores)
    assert any("would have been chosen if its" in n["ml"].get("counterfactual", "") for n in notes)
