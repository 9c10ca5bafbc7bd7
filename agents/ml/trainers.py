"""Trainers: recorded telemetry -> `Dataset` -> `Model`, and how a model is scored.

`TRAINERS[name]` is what the training worker runs for a model of that name. A trainer is deterministic
for a seed (the built-in ones are closed-form, so the seed changes nothing, but it is part of the
contract for trainers that sample).

Telemetry rows (`dataset_from_telemetry`) are the observations a policy reports for its model, one per
(instance, decision cycle), oldest first::

    {"t": 1700000000.0,                                   # when it was observed (seconds)
     "features": {"queue": 1.4, "kind=jetson": 1.0, ...},  # the model's inputs, by name (absent = 0)
     "observed": 41.5}                                     # the outcome (the model's output), e.g. ms

which is exactly what `ml_connector.report(name, version, features, prediction, observed)` carries.
Rows with a missing or non-finite `observed` are skipped (and counted in `Dataset.skipped`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mlsysops.agents.ml.model import Model, PolynomialRidge
from mlsysops.agents.ml.qos_features import QOS_OUTPUT, qos_terms


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    t_start: float | None = None
    t_end: float | None = None
    skipped: int = 0
    t: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return int(self.y.size)

    def window(self) -> dict[str, float | None]:
        return {"start": self.t_start, "end": self.t_end, "rows": len(self)}

    def split(self, holdout: float = 0.25) -> tuple[Dataset, Dataset]:
        """Oldest (1 - holdout) for training, newest `holdout` held back (time order, no shuffling: the
        held-back part is the future the model has not seen)."""
        n = len(self)
        cut = max(1, min(n - 1, int(round(n * (1.0 - holdout))))) if n > 1 else n
        return self.subset(slice(0, cut)), self.subset(slice(cut, n))

    def subset(self, rows: slice | np.ndarray) -> Dataset:
        t = self.t[rows] if self.t.size else np.zeros(0)
        return Dataset(self.X[rows], self.y[rows], list(self.feature_names),
                       float(t.min()) if t.size else None, float(t.max()) if t.size else None, 0, t)

    def aligned(self, feature_names: Sequence[str]) -> np.ndarray:
        """X with columns in the order of `feature_names` (absent ones 0): to score another model."""
        index = {n: i for i, n in enumerate(self.feature_names)}
        out = np.zeros((len(self), len(feature_names)))
        for j, name in enumerate(feature_names):
            if name in index:
                out[:, j] = self.X[:, index[name]]
        return out


def vectorize(features: Mapping[str, float], feature_names: Sequence[str]) -> np.ndarray:
    """One feature dict as a vector in the model's order (absent features are 0)."""
    return np.array([float(features.get(n, 0.0)) for n in feature_names])


def rows_to_dataset(rows: Iterable[Mapping[str, Any]], feature_names: Sequence[str] | None = None) -> Dataset:
    kept: list[Mapping[str, Any]] = []
    skipped = 0
    for row in rows:
        obs = row.get("observed")
        if not isinstance(obs, (int, float)) or isinstance(obs, bool) or not math.isfinite(obs):
            skipped += 1
            continue
        kept.append(row)
    names = list(feature_names) if feature_names is not None else sorted(
        {n for row in kept for n in row.get("features", {})})
    X = np.array([vectorize(row.get("features", {}), names) for row in kept]).reshape(len(kept), len(names))
    y = np.array([float(row["observed"]) for row in kept])
    t = np.array([float(row.get("t", 0.0)) for row in kept])
    return Dataset(X, y, names, float(t.min()) if t.size else None, float(t.max()) if t.size else None,
                   skipped, t)


def regression_metrics(model: Model, dataset: Dataset) -> dict[str, float]:
    """mae, rmse and `score` (= mae; lower is better) of `model` on `dataset`."""
    if len(dataset) == 0:
        return {"mae": math.inf, "rmse": math.inf, "score": math.inf, "rows": 0.0}
    err = model.predict(dataset.aligned(model.feature_names)) - dataset.y
    mae = float(np.mean(np.abs(err)))
    return {"mae": mae, "rmse": float(math.sqrt(float(np.mean(err ** 2)))), "score": mae,
            "rows": float(len(dataset))}


class Trainer(Protocol):
    name: str

    def dataset_from_telemetry(self, rows: Iterable[Mapping[str, Any]]) -> Dataset: ...

    def fit(self, dataset: Dataset, seed: int) -> Model: ...

    def evaluate(self, model: Model, dataset: Dataset) -> dict[str, float]: ...


@dataclass
class QosTrainer:
    """Response time of a component instance on a node (`mlsysops.agents.ml.qos_features`): ridge over
    the interaction terms `qos_terms` picks from the feature names the data has."""

    name: str = "qos-response-time"
    alpha: float = 3.0
    min_rows: int = 20
    half_life_s: float | None = 30.0
    """Recency weighting per node: a row `half_life_s` older than the newest row *of the same node*
    counts half (None: all equal). A node whose behaviour changed is learnt from its recent outcomes
    instead of an average of old and new, while a node that no longer runs anything keeps what was
    learnt about it (its newest rows are still its newest)."""

    def dataset_from_telemetry(self, rows: Iterable[Mapping[str, Any]]) -> Dataset:
        return rows_to_dataset(rows)

    def fit(self, dataset: Dataset, seed: int) -> Model:
        if len(dataset) < self.min_rows:
            raise ValueError(f"model {self.name}: training data: {len(dataset)} rows, need >= {self.min_rows}")
        model = self._fit(dataset)
        # the spread it reports is the one measured on rows it was not fitted on (in-sample residuals of
        # a 60-term model are optimistic): every 4th row held out, so it is the in-distribution error
        # (the unseen-term spread covers what the data never showed)
        held = np.arange(len(dataset)) % 4 == 3
        if (~held).sum() >= self.min_rows and held.sum() >= 5:
            probe = self._fit(dataset.subset(~held))
            model.sigma = max(model.sigma, regression_metrics(probe, dataset.subset(held))["rmse"])
        return model

    def _fit(self, dataset: Dataset) -> PolynomialRidge:
        weight = None
        if self.half_life_s is not None and dataset.t.size == len(dataset):
            newest = np.full(len(dataset), dataset.t.max())
            for j, name in enumerate(dataset.feature_names):
                if name.startswith("node="):
                    rows = dataset.X[:, j] != 0
                    if rows.any():
                        newest[rows] = dataset.t[rows].max()
            weight = np.power(0.5, (newest - dataset.t) / self.half_life_s)
        return PolynomialRidge.fit(dataset.X, dataset.y, name=self.name, feature_names=dataset.feature_names,
                                   output_name=QOS_OUTPUT, terms=qos_terms(dataset.feature_names),
                                   alpha=self.alpha, sample_weight=weight, fit_intercept=False)

    def evaluate(self, model: Model, dataset: Dataset) -> dict[str, float]:
        return regression_metrics(model, dataset)


@dataclass
class LinearTrainer:
    """Plain ridge over every feature (no interactions): for any model whose inputs are additive."""

    name: str = "linear"
    alpha: float = 1.0
    output_name: str = "value"

    def dataset_from_telemetry(self, rows: Iterable[Mapping[str, Any]]) -> Dataset:
        return rows_to_dataset(rows)

    def fit(self, dataset: Dataset, seed: int) -> Model:
        if len(dataset) < 2:
            raise ValueError(f"model {self.name}: training data: {len(dataset)} rows, need >= 2")
        return PolynomialRidge.fit(dataset.X, dataset.y, name=self.name, feature_names=dataset.feature_names,
                                   output_name=self.output_name, alpha=self.alpha)

    def evaluate(self, model: Model, dataset: Dataset) -> dict[str, float]:
        return regression_metrics(model, dataset)


TRAINERS: dict[str, Trainer] = {"qos-response-time": QosTrainer(), "linear": LinearTrainer()}
