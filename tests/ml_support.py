"""ML test helpers: small ONNX graphs built in the test (onnx helper API / skl2onnx, nothing downloaded) and a
tiny trainer (numpy least squares, format `test-linear`) standing in for mlpol's until theirs is merged.

The trainer is importable by reference (`tests.ml_support:TINY`), so a training worker process finds it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsysops.agents.ml.formats import register_format

FEATURES = ["cpu", "load"]


def onnx_linear(weights: list[float], bias: float, *, inputs: int | None = None, output: str = "y") -> bytes:
    """y = X @ w + b as an ONNX graph taking float (n, len(w)) (or `inputs` columns if given)."""
    from onnx import TensorProto, helper

    w = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    width = inputs if inputs is not None else w.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y2"]),
         helper.make_node("Flatten", ["Y2"], [output], axis=1)],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor("W", TensorProto.FLOAT, list(w.shape), w.flatten().tolist()),
         helper.make_tensor("B", TensorProto.FLOAT, [1], [bias])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def card(features: list[str] = FEATURES, output: str = "y", **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": f, "unit": "1"} for f in features], "output": {"name": output, "unit": "ms"},
            "owner": "tests", **extra}


def original_card(features: list[str] = FEATURES, output: str = "response_ms") -> dict[str, Any]:
    """A card in the original ML connector's form (kind 0 = input, kind 1 = the output)."""
    return {"modelname": "GradientBoostingRegressor", "modelkind": "Regressor",
            "hyperparameter": [{"parameter": "max_depth", "value": 3}],
            "modelperformance": [{"metric": "mae", "order": 1, "threshold": 5}],
            "featurelist": [*({"feature_name": f, "type": "cont", "kind": 0, "units": 0} for f in features),
                            {"feature_name": output, "type": "cont", "kind": 1, "units": 0}],
            "modeltags": ["regression", "test"]}


# -- a tiny trainer --------------------------------------------------------------------------------------
@dataclass
class TinyDataset:
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    ts: np.ndarray
    window: tuple[float, float]


class TinyLinear:
    format = "test-linear"

    def __init__(self, w: np.ndarray, b: float, feature_names: list[str], name: str = "", version: int = 0) -> None:
        self.w, self.b = np.asarray(w, dtype=np.float64), float(b)
        self.feature_names, self.output_name, self.name, self.version = list(feature_names), "y", name, version

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64).reshape(-1, len(self.w)) @ self.w + self.b

    def predict_with_uncertainty(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.predict(X)
        return m, np.zeros_like(m)

    def attributions(self, x: np.ndarray, baseline: np.ndarray) -> np.ndarray:
        return self.w * (np.asarray(x) - np.asarray(baseline))

    def to_bytes(self) -> bytes:
        return json.dumps({"w": self.w.tolist(), "b": self.b, "features": self.feature_names}).encode()

    @classmethod
    def from_bytes(cls, b: bytes, card: dict[str, Any]) -> TinyLinear:
        d = json.loads(b)
        return cls(np.array(d["w"]), d["b"], d["features"], card.get("name", ""), card.get("version") or 0)


register_format(TinyLinear.format, TinyLinear.from_bytes)


class TinyTrainer:
    """Least squares on the `observation` rows (features in FEATURES order, target `observed`)."""

    def dataset_from_telemetry(self, rows: list[dict[str, Any]]) -> TinyDataset:
        obs = [r for r in rows if r.get("kind") == "observation"]
        if not obs:
            raise ValueError("no observation rows")
        X = np.array([[r["features"][f] for f in FEATURES] for r in obs], dtype=np.float64)
        y = np.array([r["observed"] for r in obs], dtype=np.float64)
        ts = np.array([r["ts"] for r in obs], dtype=np.float64)
        return TinyDataset(X, y, list(FEATURES), ts, (ts[0], ts[-1]))

    def fit(self, ds: TinyDataset, seed: int) -> TinyLinear:
        rng = np.random.default_rng(seed)          # a seeded bootstrap: same seed, same model
        idx = rng.integers(0, len(ds.y), len(ds.y))
        A = np.hstack([ds.X[idx], np.ones((len(idx), 1))])
        coef, *_ = np.linalg.lstsq(A, ds.y[idx], rcond=None)
        return TinyLinear(coef[:-1], coef[-1], ds.feature_names)

    def evaluate(self, model: Any, ds: TinyDataset) -> dict[str, float]:
        err = model.predict(ds.X) - ds.y
        mae = float(np.mean(np.abs(err)))
        return {"mae": mae, "rmse": float(np.sqrt(np.mean(err ** 2))), "score": mae}


class FailingTrainer(TinyTrainer):
    def fit(self, ds: TinyDataset, seed: int) -> TinyLinear:
        raise RuntimeError("diverged at step 3")


TINY = TinyTrainer()
FAILING = FailingTrainer()


def observations(n: int, *, w: tuple[float, float] = (2.0, 3.0), b: float = 1.0, t0: float = 1000.0,
                 seed: int = 0, noise: float = 0.05, name: str = "rt") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cpu, load = float(rng.uniform(0, 1)), float(rng.uniform(0, 2))
        y = w[0] * cpu + w[1] * load + b + float(rng.normal(0, noise))
        out.append({"name": name, "version": None, "ts": t0 + i, "features": {"cpu": cpu, "load": load},
                    "prediction": None, "observed": y})
    return out
