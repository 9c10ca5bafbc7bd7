"""Model registry, cards and the ONNX format: round trip across a restart, and every kind of bad input
refused with the model, version and field named while the previous version keeps serving."""

from __future__ import annotations

import numpy as np
import pytest

from mlsysops.agents.ml.card import check_features, parse_card
from mlsysops.agents.ml.errors import ModelError
from mlsysops.agents.ml.formats import load_model
from mlsysops.agents.ml.registry import ModelRegistry
from tests.ml_support import card, onnx_linear, original_card

X = np.array([[0.5, 1.0], [0.1, 0.2], [1.0, 2.0]])


def test_round_trip_upload_version_promote_rollback_and_restart(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.add_version("rt", "onnx", onnx_linear([1.0, 1.0], 0.0), card(), stage="production")
    v2 = reg.add_version("rt", "onnx", onnx_linear([2.0, 3.0], 1.0), card())
    assert (v1.version, v1.stage, v2.version, v2.stage) == (1, "production", 2, "candidate")
    assert reg.load("rt")[0].version == 1
    reg.promote("rt", 2, reason="better")
    info, model = reg.load("rt")
    assert info.version == 2 and np.allclose(model.predict(X), X @ [2.0, 3.0] + 1.0, atol=1e-5)
    assert reg.get("rt", 1).stage == "archived"
    reg.add_version("rt", "onnx", onnx_linear([4.0, 4.0], 0.0), card())
    reg.promote("rt", 3)
    assert reg.rollback("rt", reason="regressed").version == 2      # walks back one promotion ...
    assert reg.rollback("rt").version == 1                          # ... and another
    with pytest.raises(ModelError, match="nothing to roll back"):
        reg.rollback("rt")
    reg.add_observations([{"name": "rt", "version": 1, "ts": 5.0, "features": {"cpu": 1, "load": 2},
                           "prediction": 3.0, "observed": 4.0}], agent="c1")
    sha = {v.version: v.sha256 for v in reg.versions("rt")}
    reg.close()

    again = ModelRegistry(tmp_path)                                  # a restart keeps everything
    assert [(v.version, v.stage) for v in again.versions("rt")] == [(1, "production"), (2, "archived"),
                                                                     (3, "archived")]
    assert {v.version: v.sha256 for v in again.versions("rt")} == sha
    info, model = again.load("rt")
    assert info.version == 1 and np.allclose(model.predict(X), X.sum(axis=1), atol=1e-5)
    actions = [h["action"] for h in again.history("rt")]
    assert actions[:2] == ["rollback", "rollback"] and actions.count("promote") == 3
    live = {m["version"]: m["live"] for m in again.metrics("rt")}
    assert live[1] == {"observations": 1, "mae": 1.0, "rmse": 1.0, "last": 5.0}
    assert again.describe("rt")["production"] == 1
    again.close()


def test_corrupt_artifact_is_refused_and_production_keeps_serving(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.add_version("rt", "onnx", onnx_linear([1.0, 1.0], 0.0), card(), stage="production")
    v2 = reg.add_version("rt", "onnx", onnx_linear([2.0, 2.0], 0.0), card())
    with open(v2.path, "r+b") as f:      # a bit flips on disk
        f.seek(10)
        f.write(b"\x00\xff")
    with pytest.raises(ModelError) as err:
        reg.promote("rt", 2)
    assert (err.value.model, err.value.version, err.value.field) == ("rt", 2, "artifact")
    assert "corrupt" in str(err.value) and v2.path in str(err.value)
    info, model = reg.load("rt")
    assert info.version == 1 and np.allclose(model.predict(X), X.sum(axis=1), atol=1e-5)


@pytest.mark.parametrize(("artifact", "crd", "field", "words"), [
    (b"not an onnx graph", card(), "artifact", "onnxruntime cannot load it"),
    (onnx_linear([1.0, 1.0, 1.0], 0.0), card(), "card.inputs", "the card lists 2 inputs"),
    (onnx_linear([1.0, 1.0], 0.0), {"inputs": [], "output": {"name": "y"}}, "card.inputs", "at least 1"),
    (onnx_linear([1.0, 1.0], 0.0), {**card(), "inputs": [{"name": "cpu"}, {"name": "cpu"}]}, "card.inputs",
     "duplicate"),
    (onnx_linear([1.0, 1.0], 0.0), {**card(), "unexpected": 1}, "card.unexpected", "Extra inputs"),
    (onnx_linear([1.0, 1.0], 0.0), {**card(), "format": "pickle"}, "card.format", "the upload says 'onnx'"),
    (onnx_linear([1.0, 1.0], 0.0), {"modelname": "x", "featurelist": [{"feature_name": "a", "kind": 0}]},
     "featurelist", "exactly one feature of kind 1"),
])
def test_bad_uploads_name_model_version_and_field(tmp_path, artifact, crd, field, words):
    reg = ModelRegistry(tmp_path)
    reg.add_version("rt", "onnx", onnx_linear([1.0, 1.0], 0.0), card(), stage="production")
    with pytest.raises(ModelError) as err:
        reg.add_version("rt", "onnx", artifact, crd)
    assert (err.value.model, err.value.version, err.value.field) == ("rt", 2, field)
    assert words in str(err.value) and str(err.value).startswith("model rt version 2: ")
    assert reg.version_numbers("rt") == [1] and reg.load("rt")[0].version == 1    # nothing else changed


def test_unknown_format_and_bad_names(tmp_path):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelError, match="format: unknown format 'pickle'"):
        reg.add_version("rt", "pickle", b"x", {**card(), "format": "pickle"})
    with pytest.raises(ModelError, match="name: expected"):
        reg.add_version("../etc", "onnx", onnx_linear([1.0, 1.0], 0.0), card())
    with pytest.raises(ModelError, match="unknown model"):
        reg.get("nothing")


def test_onnx_import_from_sklearn_with_the_original_card(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    Xtr = rng.uniform(0, 1, (200, 3)).astype(np.float32)
    ytr = Xtr @ np.array([3.0, -1.0, 0.5]) + 2.0
    sk = LinearRegression().fit(Xtr, ytr)
    artifact = to_onnx(sk, Xtr[:1], target_opset=17).SerializeToString()
    feats = ["size", "hour", "minute"]
    reg = ModelRegistry(tmp_path)
    info = reg.add_version("download", "onnx", artifact, original_card(feats, "download_time_ms"), stage="production")
    c = info.card
    assert [f["name"] for f in c["inputs"]] == feats and c["output"]["name"] == "download_time_ms"
    assert c["hyperparameters"] == {"max_depth": 3} and c["original"]["modelname"] == "GradientBoostingRegressor"
    _, model = reg.load("download")
    Xte = rng.uniform(0, 1, (20, 3))
    assert np.allclose(model.predict(Xte), sk.predict(Xte.astype(np.float32)), atol=1e-4)
    mean, spread = model.predict_with_uncertainty(Xte)
    assert mean.shape == spread.shape == (20,) and np.isnan(spread).all()   # unknown, not a made-up 0
    x, base = Xte[0], Xte.mean(axis=0)
    phi = model.attributions(x, base)
    assert phi.shape == (3,)
    assert np.isclose(phi.sum(), model.predict(x)[0] - model.predict(base)[0], atol=1e-4)
    assert np.allclose(phi, sk.coef_ * (x - base), atol=1e-4)               # linear: Shapley = w * dx


def test_sampled_shapley_sums_to_the_difference_for_many_features():
    from mlsysops.agents.ml.shapley import shapley

    w = np.arange(1.0, 13.0)

    def f(X):
        return np.asarray(X) @ w + np.asarray(X)[:, 0] * np.asarray(X)[:, 1]
    x, b = np.ones(12), np.zeros(12)
    phi = shapley(f, x, b)
    assert np.isclose(phi.sum(), f(x[None])[0] - f(b[None])[0])


def test_card_features_must_match_the_policy():
    c = parse_card(card(["cpu", "load"]), name="rt", format="onnx", version=3)
    check_features(c, ["cpu", "load"])
    with pytest.raises(ModelError) as err:
        check_features(c, ["cpu", "latency_ms"])
    assert err.value.field == "card.inputs" and "missing ['latency_ms']" in str(err.value)
    assert str(err.value).startswith("model rt version 3")


def test_load_model_checks_the_models_features_against_the_card():
    from tests.ml_support import TinyLinear

    art = TinyLinear(np.array([1.0, 2.0]), 0.0, ["a", "b"]).to_bytes()
    with pytest.raises(ModelError, match="card.inputs: the card lists"):
        load_model("test-linear", art, parse_card(card(["cpu", "load"]), name="m", format="test-linear"))
