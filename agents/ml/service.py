"""The ML connector service of the continuum agent: the slice's registry, its training jobs, and the data
they learn from. The continuum's `MLConnectorClient` serves its own policies and its children from it.

Training rows (`training_rows`): the observations reported for the model, then the slice's telemetry
windows (what the continuum keeps from the clusters' digests, `ContinuumAgent.slice_telemetry`) - see
`mlsysops.agents.ml.training` for their shape.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mlsysops.agents.ml.errors import ModelError
from mlsysops.agents.ml.registry import ModelRegistry, check_name
from mlsysops.agents.ml.training import TrainingService


def builtin_trainers() -> list[str]:
    try:
        from mlsysops.agents.ml.trainers import TRAINERS  # mlpol's; absent until merged
    except ModuleNotFoundError:
        return []
    return sorted(TRAINERS)


class MLConnectorService:
    def __init__(self, agent: Any, root: Path | None, *, telemetry: Any = None) -> None:
        self.agent = agent
        self.registry = ModelRegistry(root)
        self.telemetry = telemetry        # a Knowledge with the slice's windows (None: observations only)
        self.training = TrainingService(self.registry, self.training_rows, record=self._record)
        if not self.registry.persistent:
            self._record("info", "no state directory: models are kept only while this agent runs", {})

    def _record(self, outcome: str, reason: str, inputs: dict[str, Any]) -> None:
        self.agent.record_event(reason, outcome=outcome, inputs=inputs)

    def start(self) -> None:
        self.training.start()

    async def stop(self) -> None:
        await self.training.stop()
        self.registry.close()

    def training_rows(self, name: str) -> list[dict[str, Any]]:
        rows = self.registry.observations(name)
        know = self.telemetry
        if know is not None:
            for metric in know.metrics():
                for key, samples in know.series(metric).items():
                    labels = dict(key)
                    rows.extend({"kind": "sample", "metric": metric, "labels": labels, "ts": ts, "value": v}
                                for ts, v in samples)
        return rows

    # -- what the REST API drives ----------------------------------------------------------------------
    async def upload(self, name: str, format: str, artifact: bytes, card: dict[str, Any], *,
                     promote: bool = False, owner: str = "") -> dict[str, Any]:
        """Check the version in a worker thread (loading a large ONNX graph takes a while), store it here."""
        check_name(name)
        if owner and isinstance(card, dict):
            card = {**card, "owner": card.get("owner") or owner}
        prepared = await asyncio.to_thread(self.registry.prepare, name, format, artifact, card,
                                           self.registry.next_version(name))
        info = self.registry.commit(prepared, source="upload")
        self._record("info", f"model {name} v{info.version} uploaded ({format}, {info.size} bytes)",
                     {"model": name, "version": info.version, "sha256": info.sha256})
        if promote:
            info = self.registry.promote(name, info.version, reason="uploaded with promote")
            self._record("info", f"model {name} v{info.version} promoted to production (upload)",
                         {"model": name, "version": info.version})
        return info.to_dict()

    def promote(self, name: str, version: int, reason: str = "operator") -> dict[str, Any]:
        before = self.registry.production_version(name)
        info = self.registry.promote(name, version, reason=reason)
        self._record("info", f"model {name} v{version} promoted to production (was v{before}): {reason}",
                     {"model": name, "version": version, "previous": before})
        return info.to_dict()

    def rollback(self, name: str, reason: str = "operator") -> dict[str, Any]:
        before = self.registry.production_version(name)
        info = self.registry.rollback(name, reason=reason)
        self._record("info", f"model {name} rolled back from v{before} to v{info.version}: {reason}",
                     {"model": name, "version": info.version, "previous": before})
        return info.to_dict()

    def train(self, name: str, *, seed: int = 0, trainer: str | None = None, remote: bool = False) -> dict[str, Any]:
        """Queue a job. `remote` (REST, XMPP): the trainer must be a built-in name or the model's own."""
        check_name(name)
        if remote:
            self._check_remote_trainer(name, trainer)
        return self.training.submit(name, seed=seed, trainer=trainer)

    def _check_remote_trainer(self, name: str, trainer: str | None) -> None:
        """A remote caller may not make this process import a module of its choosing: only the names of
        `TRAINERS`, or the `module:attribute` a version of the model already records (set in-process)."""
        if trainer is None:
            return
        recorded = {v.card.get("trainer") for v in self.registry.versions(name)}
        if trainer in recorded or trainer in builtin_trainers():
            return
        raise ModelError(name, None, "trainer", f"unknown trainer {trainer!r}; built-in: {builtin_trainers()}"
                         + (f", this model's: {sorted(t for t in recorded if t)}" if any(recorded) else ""))

    def schedule(self, name: str, every: float | None, *, trainer: str | None = None, seed: int = 0,
                 remote: bool = False) -> dict[str, Any]:
        check_name(name)
        if remote:
            self._check_remote_trainer(name, trainer)
        self.training.set_schedule(name, every, trainer=trainer, seed=seed)
        return {"name": name, "every": every, "trainer": trainer, "seed": seed}

    def list(self) -> list[dict[str, Any]]:
        return [self.registry.summary(n) for n in self.registry.names()]

    def describe(self, name: str) -> dict[str, Any]:
        return self.registry.describe(name)

    def version(self, name: str, version: int) -> dict[str, Any]:
        return self.registry.get(name, version).to_dict()

    def metrics(self, name: str) -> list[dict[str, Any]]:
        if not self.registry.has(name):
            raise ModelError(name, None, "name", f"unknown model; known: {self.registry.names()}")
        return self.registry.metrics(name)
