"""An in-process stand-in for the ML connector: the same method names as `MLConnectorClient`.

Used when an agent has no connector (`ml_connector` None) and by the in-process benchmark: it keeps the
reported outcomes, trains with `TRAINERS[name]` when asked (in a worker thread, never on the event loop)
and serves the newest version that beat the previous one on held-back data. Switching to the real
client is passing it as `ml_connector`; the policy code does not change. It has no registry, no
persistence and no distribution: those are the connector service's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlsysops.agents.ml.model import Model
from mlsysops.agents.ml.trainers import TRAINERS, Trainer


@dataclass
class TrainingRun:
    name: str
    version: int | None
    promoted: bool
    metrics: dict[str, float]
    previous_metrics: dict[str, float] | None
    seconds: float
    rows: int
    error: str | None = None


@dataclass
class LocalMLConnector:
    max_rows: int = 5000
    holdout: float = 0.25
    trainers: Mapping[str, Trainer] = field(default_factory=lambda: TRAINERS)
    models: dict[str, Model] = field(default_factory=dict)
    rows: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    runs: list[TrainingRun] = field(default_factory=list)
    clock: Any = time.time
    retrain_every_s: float | None = None
    """Scheduled retraining: train again once this much (clock) time passed since the last run."""
    _last_trained: dict[str, float] = field(default_factory=dict)
    _trained_until: dict[str, float] = field(default_factory=dict)

    async def get_model(self, name: str, version: int | None = None) -> Model | None:
        model = self.models.get(name)
        if model is None or (version is not None and model.version != version):
            return None
        return model

    def cached(self, name: str) -> Model | None:
        return self.models.get(name)

    async def report(self, name: str, version: int | None, features: Mapping[str, float],
                     prediction: float | None, observed: float, t: float | None = None) -> None:
        buf = self.rows.setdefault(name, deque(maxlen=self.max_rows))
        now = self.clock() if t is None else t
        buf.append({"t": now, "features": dict(features), "observed": observed,
                    "version": version, "prediction": prediction})
        last = self._last_trained.get(name)
        if self.retrain_every_s is not None and name in self.models and last is not None \
                and now - last >= self.retrain_every_s:
            self._last_trained[name] = now
            await asyncio.to_thread(self.train_now, name, 0)

    async def submit_training(self, name: str, *, seed: int = 0) -> TrainingRun:
        """Train on the outcomes reported so far; promote only if it beats the serving version on the
        `holdout` fraction of them held back from the candidate's fit."""
        return await asyncio.to_thread(self.train_now, name, seed)

    def train_now(self, name: str, seed: int = 0) -> TrainingRun:
        trainer = self.trainers[name]
        started = time.perf_counter()
        self._last_trained[name] = self.clock()
        data = trainer.dataset_from_telemetry(list(self.rows.get(name, ())))
        # held back: every k-th of the outcomes the serving version was not trained on, so the
        # comparison is fair to it and the candidate learns from the rest of them (after a change, the
        # outcomes since the change are the ones that matter)
        k = max(2, round(1 / self.holdout))
        since = self._trained_until.get(name, -np.inf) if name in self.models else -np.inf
        recent = data.t > since
        held_rows = recent & (np.cumsum(recent) % k == 0)
        if held_rows.sum() < 5:
            fit_part, held = data.split(self.holdout)
        else:
            fit_part, held = data.subset(~held_rows), data.subset(held_rows)
        current = self.models.get(name)
        try:
            candidate = trainer.fit(fit_part, seed)
        except ValueError as exc:
            run = TrainingRun(name, None, False, {}, None, time.perf_counter() - started, len(data), str(exc))
            self.runs.append(run)
            return run
        metrics = trainer.evaluate(candidate, held)
        previous = trainer.evaluate(current, held) if current is not None else None
        promoted = previous is None or metrics["score"] < previous["score"]
        if promoted:
            candidate = trainer.fit(data, seed)     # the promoted version learns from all of it
            candidate.version = (current.version if current is not None else 0) + 1
            self.models[name] = candidate
            self._trained_until[name] = float(data.t.max()) if data.t.size else -np.inf
        run = TrainingRun(name, candidate.version if promoted else None, promoted, metrics, previous,
                          time.perf_counter() - started, len(data))
        self.runs.append(run)
        return run
