"""Training jobs in a worker process, from recorded telemetry (observations the agents reported and the
slice's telemetry windows): reproducible for a seed, promoted only when better on held-back data, failures
recorded with the previous version still serving, and schedules that survive a restart.

The trainer is the tiny one of tests/ml_support.py until mlpol's `TRAINERS` are merged."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from mlsysops.agents.mape import Knowledge
from mlsysops.agents.ml.registry import ModelRegistry
from mlsysops.agents.ml.training import TrainingService
from tests.ml_support import observations
from tests.support import until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]
TINY, FAILING = "tests.ml_support:TINY", "tests.ml_support:FAILING"


class _Recorder:
    def __init__(self):
        self.records = []

    def __call__(self, outcome, reason, inputs):
        self.records.append((outcome, reason, inputs))


def _service(tmp_path, recorder=None, telemetry=None):
    from mlsysops.agents.ml.service import MLConnectorService

    class _Agent:
        def record_event(self, reason, outcome="info", inputs=None):
            (recorder or (lambda *a: None))(outcome, reason, inputs)

    return MLConnectorService(_Agent(), tmp_path, telemetry=telemetry)


async def test_training_from_recorded_telemetry_promotes_only_a_better_version(tmp_path):
    rec = _Recorder()
    know = Knowledge(window_size=64)
    for i in range(20):
        know.record("system.cpu.utilization", 0.5, {"node": "n1"}, ts=time.time() - 20 + i)
    svc = _service(tmp_path, rec, telemetry=know)
    try:
        svc.registry.add_observations(observations(300, seed=1), agent="cluster-1")
        rows = svc.training_rows("rt")
        assert {r["kind"] for r in rows} == {"observation", "sample"} and len(rows) == 320
        job = await svc.training.wait(svc.train("rt", seed=7, trainer=TINY)["id"])
        assert job["status"] == "succeeded" and job["version"] == 1 and job["promoted"] is True, job
        assert job["detail"]["reason"] == "no production version yet"
        assert job["detail"]["worker_pid"] != os.getpid()          # trained in a worker process, not here
        info, model = svc.registry.load("rt")
        assert np.allclose(model.predict(np.array([[1.0, 1.0]])), [6.0], atol=0.1)    # 2 + 3 + 1
        card = info.card
        assert card["trainer"] == TINY and card["seed"] == 7 and card["training_data"] == {"start": 1000.0, "end": 1224.0, "rows": 225}
        assert card["inputs"] == [{"name": "cpu", "unit": "", "type": "cont", "description": ""},
                                  {"name": "load", "unit": "", "type": "cont", "description": ""}]
        assert card["metrics"]["score"] < 0.1

        # same data, same seed: the same artifact, and not better than production -> a candidate only
        again = await svc.training.wait(svc.train("rt", seed=7)["id"])    # the trainer comes from the card
        assert again["status"] == "succeeded" and again["promoted"] is False and "score" in again["detail"]["reason"]
        assert svc.registry.get("rt", 2).sha256 == info.sha256 and svc.registry.production_version("rt") == 1

        # the behaviour changes (drift): the newest rows follow another law; a retrained model wins
        svc.registry.add_observations(observations(300, w=(5.0, 0.5), b=4.0, t0=5000.0, seed=2), agent="cluster-1")
        drift = await svc.training.wait(svc.train("rt", seed=7)["id"])
        assert drift["promoted"] is True, drift
        assert drift["detail"]["metrics"]["score"] < drift["detail"]["production_metrics"]["score"]
        assert svc.registry.production_version("rt") == 3
        assert any("promoted" in r[1] and "v3" in r[1] for r in rec.records)
    finally:
        await svc.stop()


async def test_failing_training_is_recorded_and_production_keeps_serving(tmp_path):
    rec = _Recorder()
    svc = _service(tmp_path, rec)
    try:
        svc.registry.add_observations(observations(100), agent="c")
        ok = await svc.training.wait(svc.train("rt", trainer=TINY)["id"])
        assert ok["status"] == "succeeded"
        bad = await svc.training.wait(svc.train("rt", trainer=FAILING)["id"])
        assert bad["status"] == "failed" and bad["version"] is None
        err = bad["detail"]["error"]
        assert err.startswith("model rt: trainer tests.ml_support:FAILING.fit: RuntimeError: diverged"), err
        assert svc.registry.version_numbers("rt") == [1] and svc.registry.production_version("rt") == 1
        assert any(o == "error" and "production stays v1" in r for o, r, _ in rec.records)

        few = _service(tmp_path / "few")
        few.registry.add_observations(observations(3), agent="c")
        job = await few.training.wait(few.train("rt", trainer=TINY)["id"])
        assert job["status"] == "failed" and "rows: 3 training examples in 3 telemetry rows, at least 8" in job["detail"]["error"]
        unknown = await few.training.wait(few.train("rt", trainer="no_such_trainer")["id"])
        assert "trainer: " in unknown["detail"]["error"] and "unknown trainer 'no_such_trainer'" in unknown["detail"]["error"]
        await few.stop()
    finally:
        await svc.stop()


async def test_scheduled_retraining_runs_and_survives_a_restart(tmp_path):
    svc = _service(tmp_path)
    svc.registry.add_observations(observations(60), agent="c")
    svc.schedule("rt", 0.5, trainer=TINY, seed=3)
    svc.start()
    try:
        await until(lambda: len([j for j in svc.registry.jobs("rt") if j["status"] == "succeeded"]) >= 2, 90,
                    "two scheduled jobs did not finish")
    finally:
        await svc.stop()
    again = ModelRegistry(tmp_path)
    try:
        assert again.schedules()[0] | {"last_run": None} == {"name": "rt", "every": 0.5, "trainer": TINY, "seed": 3,
                                                             "last_run": None}
        assert again.production_version("rt") == 1 and len(again.versions("rt")) >= 2
    finally:
        again.close()


async def test_a_job_cut_short_by_a_restart_is_marked_failed(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.save_job({"id": "j1", "name": "rt", "trainer": TINY, "seed": 0, "status": "running", "submitted": 1.0,
                  "detail": {}})
    TrainingService(reg, lambda name: [])
    job = reg.job("j1")
    assert job["status"] == "failed" and "restarted" in job["detail"]["error"]
    reg.close()
    await asyncio.sleep(0)


async def test_the_built_in_trainer_by_model_name_reproducible_and_promoted_on_drift(tmp_path):
    """mlsysops.agents.ml.trainers.TRAINERS["linear"] (mlpol's ridge, format mlsysops-linear), found by the
    model's name, on observations in the rows the continuum supplies."""
    svc = _service(tmp_path)
    try:
        svc.registry.add_observations(observations(300, name="linear", seed=4), agent="cluster-1")
        job = await svc.training.wait(svc.train("linear", seed=0)["id"])
        assert job["status"] == "succeeded" and job["trainer"] == "linear" and job["promoted"], job["detail"]
        info, model = svc.registry.load("linear")
        assert info.format == "mlsysops-linear" and model.feature_names == ["cpu", "load"]
        assert np.allclose(model.predict(np.array([[1.0, 1.0]])), [6.0], atol=0.2)
        assert info.card["training_data"]["rows"] == 225 and info.card["training_data"]["start"] == 1000.0
        x, base = np.array([1.0, 2.0]), np.array([0.5, 1.0])
        phi = model.attributions(x, base)
        assert np.isclose(phi.sum(), model.predict(x[None])[0] - model.predict(base[None])[0])
        again = await svc.training.wait(svc.train("linear", seed=0)["id"])
        assert svc.registry.get("linear", 2).sha256 == info.sha256 and again["promoted"] is False
        svc.registry.add_observations(observations(300, name="linear", w=(-1.0, 4.0), b=0.0, t0=9000.0), agent="c")
        drift = await svc.training.wait(svc.train("linear", seed=0)["id"])
        assert drift["promoted"] is True and svc.registry.production_version("linear") == 3, drift["detail"]
    finally:
        await svc.stop()
