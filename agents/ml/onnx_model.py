"""Imported ONNX models, served by onnxruntime (imported lazily: agents that never load one never pay for it).

The graph must take one float tensor of shape (n, len(card.inputs)) (the batch dimension may be symbolic)
and give the prediction as its output named in the card (or its first output) of shape (n,) or (n, 1) -
a regressor, or a classifier's label/score output. The input columns are the card's inputs in order.
Loading checks all of that and runs the graph once on a zero row, so a model that loads but cannot run is
refused at upload, not at the first decision.

Uncertainty: an ONNX regressor gives no interval, so `predict_with_uncertainty` returns the card's held-out
`rmse` (or `std`) as a constant spread, and NaN when the card has neither (unknown, never a made-up 0).
Attributions: Shapley values against a baseline (`mlsysops.agents.ml.shapley`), exact up to 10 inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlsysops.agents.ml.card import ModelCard
from mlsysops.agents.ml.errors import ModelError
from mlsysops.agents.ml.formats import register_format
from mlsysops.agents.ml.shapley import shapley

FORMAT = "onnx"
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


class OnnxModel:
    format = FORMAT

    def __init__(self, session: Any, artifact: bytes, card: ModelCard, input_name: str, output_name: str,
                 dtype: Any) -> None:
        self._session = session
        self._artifact = artifact
        self.card = card
        self.name = card.name
        self.version = card.version or 0
        self.feature_names = card.feature_names
        self.output_name = card.output.name
        self._input = input_name
        self._output = output_name
        self._dtype = dtype
        spread = card.metrics.get("rmse", card.metrics.get("std"))
        self._spread = float(spread) if spread is not None else float("nan")

    @classmethod
    def from_bytes(cls, b: bytes, card: dict[str, Any]) -> OnnxModel:
        import onnxruntime as ort

        c = ModelCard.model_validate(card)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1     # one decision at a time; threads only add latency on a busy node
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(bytes(b), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for every kind of bad graph
            raise ModelError(c.name, c.version, "artifact",
                             f"onnxruntime cannot load it: {str(exc).splitlines()[0][:300]}") from None
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise ModelError(c.name, c.version, "artifact.inputs",
                             f"the graph takes {len(inputs)} inputs {[i.name for i in inputs]}; expected one "
                             f"float tensor of {len(c.inputs)} columns")
        inp = inputs[0]
        if inp.type not in _FLOAT_TYPES:
            raise ModelError(c.name, c.version, "artifact.inputs", f"input {inp.name!r} is {inp.type}, expected "
                             "tensor(float) or tensor(double)")
        shape = list(inp.shape or [])
        width = shape[1] if len(shape) == 2 else None
        if len(shape) != 2 or (isinstance(width, int) and width != len(c.inputs)):
            raise ModelError(c.name, c.version, "card.inputs",
                             f"the graph's input {inp.name!r} has shape {shape}, the card lists {len(c.inputs)} "
                             f"inputs {c.feature_names}")
        outputs = [o.name for o in sess.get_outputs()]
        out = c.output.name if c.output.name in outputs else outputs[0]
        model = cls(sess, bytes(b), c, inp.name, out, _FLOAT_TYPES[inp.type])
        try:
            y = model.predict(np.zeros((1, len(c.inputs))))
        except Exception as exc:  # noqa: BLE001
            raise ModelError(c.name, c.version, "artifact",
                             f"the graph does not run on a row of {len(c.inputs)} inputs: {exc}") from None
        if y.shape != (1,):
            raise ModelError(c.name, c.version, "card.output",
                             f"output {out!r} gives {y.shape[0]} values per row, expected 1")
        return model

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=self._dtype)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"model {self.name} v{self.version} takes (n, {len(self.feature_names)}) "
                             f"{self.feature_names}, got shape {X.shape}")
        (y,) = self._session.run([self._output], {self._input: X})
        y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)
        return y[:, 0] if y.shape[1] == 1 else y     # several columns: refused at load (card.output)

    def predict_with_uncertainty(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self.predict(X)
        return mean, np.full(mean.shape, self._spread)

    def attributions(self, x: np.ndarray, baseline: np.ndarray) -> np.ndarray:
        return shapley(self.predict, x, baseline)

    def to_bytes(self) -> bytes:
        return self._artifact


register_format(FORMAT, OnnxModel.from_bytes)
