"""The Model protocol's built-in numpy model: exact attributions, uncertainty, bytes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mlsysops.agents.ml.explain import Option, explain_options
from mlsysops.agents.ml.model import Model, ModelFormatError, PolynomialRidge, sampling_shapley
from mlsysops.agents.ml.trainers import TRAINERS, Dataset, rows_to_dataset

NAMES = ["a", "b", "c", "d"]
TERMS = [(0,), (0, 1), (2, 2), (0, 1, 3), (3,)]


def fitted(seed: int = 0) -> tuple[PolynomialRidge, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.5, 2.0, size=(300, 4))
    y = 2 * X[:, 0] + 3 * X[:, 0] * X[:, 1] + X[:, 2] ** 2 + 0.5 * X[:, 0] * X[:, 1] * X[:, 3] + rng.normal(0, 0.1, 300)
    return PolynomialRidge.fit(X, y, name="m", feature_names=NAMES, output_name="y", terms=TERMS, alpha=0.1), X


def test_satisfies_the_protocol_and_fits():
    model, X = fitted()
    assert isinstance(model, Model)
    assert model.format == "mlsysops-linear"
    pred = model.predict(X)
    assert pred.shape == (300,)
    mean, std = model.predict_with_uncertainty(X[:5])
    assert np.allclose(mean, pred[:5]) and np.all(std > 0)


@pytest.mark.parametrize("seed", range(5))
def test_attributions_sum_to_prediction_minus_baseline_exactly(seed):
    model, X = fitted(seed)
    rng = np.random.default_rng(100 + seed)
    x, baseline = X[rng.integers(300)], X[rng.integers(300)]
    phi = model.attributions(x, baseline)
    assert phi.shape == (4,)
    assert phi.sum() == pytest.approx(float(model.predict(x)[0] - model.predict(baseline)[0]), abs=1e-9)


def test_attributions_are_the_exact_shapley_values():
    """Against brute force over all coalitions (the definition), for a product term with interactions."""
    import itertools
    import math

    model, X = fitted(3)
    x, b = X[0], X[1]
    n = len(x)

    def v(coalition):
        z = b.copy()
        z[list(coalition)] = x[list(coalition)]
        return float(model.predict(z)[0])

    for i in range(n):
        others = [j for j in range(n) if j != i]
        exact = sum(math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
                    * (v((*s, i)) - v(s)) for k in range(n) for s in itertools.combinations(others, k))
        assert model.attributions(x, b)[i] == pytest.approx(exact, abs=1e-9)


def test_sampling_shapley_sums_and_approaches_exact():
    model, X = fitted(1)
    x, b = X[2], X[3]
    approx = sampling_shapley(model.predict, x, b, permutations=400, seed=0)
    assert approx.sum() == pytest.approx(float(model.predict(x)[0] - model.predict(b)[0]), abs=1e-9)
    assert np.allclose(approx, model.attributions(x, b), atol=0.15)


def test_bytes_round_trip_and_card():
    model, X = fitted()
    again = PolynomialRidge.from_bytes(model.to_bytes(), {"name": "m", "version": 7, "inputs": [{"name": n} for n in NAMES]})
    assert again.version == 7 and again.feature_names == NAMES
    assert np.allclose(again.predict(X[:10]), model.predict(X[:10]))
    assert np.allclose(again.predict_with_uncertainty(X[:3])[1], model.predict_with_uncertainty(X[:3])[1])


@pytest.mark.parametrize("blob, card, field", [
    (b"\x00not json", {"name": "qos", "version": 3}, "not mlsysops-linear JSON"),
    (b'{"format": "onnx"}', {"name": "qos", "version": 3}, "format"),
    (b'{"format": "mlsysops-linear", "name": "x"}', {"name": "qos", "version": 3}, "field"),
])
def test_corrupt_model_names_model_version_and_field(blob, card, field):
    with pytest.raises(ModelFormatError, match=rf"model qos version 3: .*{field}"):
        PolynomialRidge.from_bytes(blob, card)


def test_card_inputs_must_match_features():
    model, _ = fitted()
    with pytest.raises(ModelFormatError, match="card inputs .* do not match"):
        PolynomialRidge.from_bytes(model.to_bytes(), {"name": "m", "version": 1, "inputs": ["a", "b", "x", "d"]})


def test_wrong_width_is_a_clear_error():
    model, _ = fitted()
    with pytest.raises(ValueError, match=r"expected X of shape \(n, 4\)"):
        model.predict(np.zeros((2, 3)))


def test_trainer_from_telemetry_rows_is_deterministic():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        node = ["n1", "n2"][i % 2]
        q = float(rng.uniform(1, 3))
        rows.append({"t": float(i), "features": {"comp=a/web": 1.0, f"kind={node}": 1.0, f"node={node}": 1.0,
                                                  "queue": q, "net_ms": 1.0},
                     "observed": (10 if node == "n1" else 25) * q + 1.0 + float(rng.normal(0, 0.3))})
    rows.append({"t": 999.0, "features": {"queue": 1.0}, "observed": float("nan")})
    trainer = TRAINERS["qos-response-time"]
    data = trainer.dataset_from_telemetry(rows)
    assert isinstance(data, Dataset) and len(data) == 200 and data.skipped == 1
    assert data.window() == {"start": 0.0, "end": 199.0, "rows": 200}
    a, b = trainer.fit(data, seed=1), trainer.fit(data, seed=1)
    assert a.to_bytes() == b.to_bytes()
    metrics = trainer.evaluate(a, data)
    assert metrics["score"] == metrics["mae"] and metrics["mae"] < 2.0


def test_trainer_refuses_too_little_data():
    data = rows_to_dataset([{"t": 0.0, "features": {"queue": 1.0}, "observed": 1.0}])
    with pytest.raises(ValueError, match="model qos-response-time: training data: 1 rows"):
        TRAINERS["qos-response-time"].fit(data, seed=0)


def test_explanation_of_a_choice():
    model, X = fitted()
    opts = [Option(f"n{i}", X[i], float(model.predict(X[i])[0]), 0.2) for i in range(4)]
    chosen = min(opts, key=lambda o: o.prediction)
    out = explain_options(model, opts, chosen.name, target=10.0)
    assert out["model"] == "m" and out["chosen"]["option"] == chosen.name
    assert out["best_rejected"]["option"] != chosen.name
    base = out["baseline_prediction"]
    for side in ("chosen", "best_rejected"):
        assert sum(out[side]["attributions"].values()) == pytest.approx(out[side]["prediction"] - base, abs=1e-2)
        lo, hi = out[side]["interval_90"]
        assert lo < out[side]["prediction"] < hi
