"""Training jobs: fit a model on the slice's recorded telemetry in a worker process, promote it only if it
beats production on held-back data.

A job (on demand: `TrainingService.submit`; on a schedule: `set_schedule(name, every)`, kept in the
registry so it survives a restart) runs like this:

1. rows = `rows_for(name)` on the agent's loop (a copy: the worker never sees live state). The rows the
   continuum supplies (`MLConnectorService.training_rows`): the observations agents reported for the model
   (`{"kind": "observation", "model", "version", "ts", "t" (= ts), "agent", "features": {name: value}, "prediction",
   "observed"}`) followed by the slice's telemetry windows (`{"kind": "sample", "metric", "labels", "ts",
   "value"}`), each group oldest first;
2. in a worker process (`spawn`, so nothing of the agent's loop or threads is inherited): the rows are
   sorted by `ts` and the trainer (`TRAINERS[name]` of `mlsysops.agents.ml.trainers`, or
   `"module:attribute"`) builds one `Dataset` from them (`dataset_from_telemetry`, rows kept in time
   order). Its newest `holdout` fraction is held back (a time split: the model is judged on data newer
   than what it learnt from, as it will be used; the Dataset is cut by slicing every field as long as `y`,
   or by its own `subset(slice)`). The trainer fits on the older part with the job's seed and
   `evaluate`s the new model and the current production model on the held-back part (same rows);
3. back on the loop, the new version is stored as a candidate and promoted only if there is no production
   version or its `score` (lower is better) is strictly below production's. The job (scores, reason, data
   window) is stored and recorded as a decision event.

A job that fails (too few rows, a trainer that raises, a result that does not load) is stored as `failed`
with a `ModelError` message naming model, trainer and field; no version is added, production keeps serving.
Reproducible: the same rows, trainer and seed give the same artifact (the trainer's contract).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mlsysops.agents.ml.errors import ModelError
from mlsysops.agents.ml.registry import ModelRegistry

log = logging.getLogger(__name__)

HOLDOUT = 0.25
MIN_ROWS = 8
SCHEDULE_TICK = 1.0          # how often due schedules are looked at


def resolve_trainer(ref: str) -> Any:
    """`name` in mlsysops.agents.ml.trainers.TRAINERS, or `module:attribute`."""
    if ":" in ref:
        mod, _, attr = ref.partition(":")
        target: Any = importlib.import_module(mod)
        for part in attr.split("."):
            target = getattr(target, part)
        return target
    try:
        trainers = importlib.import_module("mlsysops.agents.ml.trainers").TRAINERS
    except ModuleNotFoundError:
        trainers = {}
    if ref not in trainers:
        raise KeyError(f"unknown trainer {ref!r}; known: {sorted(trainers)} (or give module:attribute)")
    return trainers[ref]


def run_job(name: str, trainer_ref: str, rows: list[dict[str, Any]], seed: int, holdout: float,
            production: tuple[str, bytes, dict[str, Any]] | None) -> dict[str, Any]:
    """The worker side of a job (module level: it is pickled by name into the worker process)."""
    from mlsysops.agents.ml.formats import load_model

    started = time.perf_counter()
    try:
        trainer = resolve_trainer(trainer_ref)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(name, None, "trainer", str(exc)) from None
    rows = sorted(rows, key=lambda r: float(r.get("ts") or 0.0))
    stage = "dataset_from_telemetry"
    try:
        dataset = trainer.dataset_from_telemetry(rows)
        n = len(dataset.y)
        if n < MIN_ROWS:
            raise ModelError(name, None, "rows", f"{n} training examples in {len(rows)} telemetry rows, "
                             f"at least {MIN_ROWS} needed")
        cut = min(n - 1, max(1, int(round(n * (1.0 - holdout)))))
        train_ds, held_ds = _subset(dataset, 0, cut), _subset(dataset, cut, n)
        stage = "fit"
        model = trainer.fit(train_ds, seed)
        stage = "evaluate"
        metrics = {k: float(v) for k, v in trainer.evaluate(model, held_ds).items()}
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the trainer's failure is the job's verdict
        raise ModelError(name, None, f"trainer {trainer_ref}.{stage}", f"{type(exc).__name__}: {exc}") from None
    if "score" not in metrics:
        raise ModelError(name, None, f"trainer {trainer_ref}.evaluate", f"no 'score' in {sorted(metrics)}")
    prod_metrics, prod_error = None, None
    if production is not None:
        try:
            prod_model = load_model(*production)
            prod_metrics = {k: float(v) for k, v in trainer.evaluate(prod_model, held_ds).items()}
        except Exception as exc:  # noqa: BLE001 - recorded; the candidate is then not promoted automatically
            prod_error = f"{type(exc).__name__}: {exc}"
    units = dict(getattr(train_ds, "units", None) or {})
    window = _window(train_ds, rows)
    card = {
        "inputs": [{"name": f, "unit": str(units.get(f, ""))} for f in model.feature_names],
        "output": {"name": model.output_name, "unit": str(units.get(model.output_name, ""))},
        "training_data": {"start": window[0], "end": window[1], "rows": cut},
        "metrics": metrics, "trainer": trainer_ref, "seed": seed, "owner": "mlsysops training",
        "description": f"trained by {trainer_ref} (seed {seed}) on {cut} examples, judged on the newest {n - cut}",
    }
    return {"format": model.format, "artifact": model.to_bytes(), "card": card, "metrics": metrics,
            "production_metrics": prod_metrics, "production_error": prod_error, "held_rows": n - cut,
            "train_rows": cut, "train_seconds": time.perf_counter() - started, "pid": os.getpid()}


def _subset(ds: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of a Dataset: every array field as long as `y` is sliced (X, y, timestamps ...)."""
    if callable(getattr(ds, "subset", None)):
        return ds.subset(slice(start, stop))
    if not dataclasses.is_dataclass(ds):
        raise TypeError(f"a Dataset must be a dataclass or have subset(slice), not {type(ds).__name__}")
    n = len(ds.y)
    changes = {}
    for f in dataclasses.fields(ds):
        value = getattr(ds, f.name)
        if hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, (str, dict)) \
                and f.name != "feature_names" and len(value) == n:
            changes[f.name] = value[start:stop]
    ts = changes.get("ts", changes.get("timestamps"))
    if ts is not None and len(ts) and any(f.name == "window" for f in dataclasses.fields(ds)):
        changes["window"] = (float(ts[0]), float(ts[-1]))
    return dataclasses.replace(ds, **changes)


def _window(ds: Any, rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    window = getattr(ds, "window", None)
    if callable(window):                  # mlsysops.agents.ml.trainers.Dataset: window() -> {start, end, rows}
        w = window()
        window = (w.get("start"), w.get("end")) if isinstance(w, dict) else w
    if isinstance(window, (tuple, list)) and len(window) == 2:
        return (None if window[0] is None else float(window[0]), None if window[1] is None else float(window[1]))
    stamps = [float(r["ts"]) for r in rows if r.get("ts") is not None]
    return (min(stamps), max(stamps)) if stamps else (None, None)


Recorder = Callable[[str, str, dict[str, Any]], None]   # (outcome, reason, inputs) -> decision record


class TrainingService:
    """Runs jobs for one registry (see the module docstring); lives on the agent's event loop."""

    def __init__(self, registry: ModelRegistry, rows_for: Callable[[str], list[dict[str, Any]]], *,
                 record: Recorder | None = None, holdout: float = HOLDOUT, workers: int = 1) -> None:
        self.registry = registry
        self.rows_for = rows_for
        self.record = record or (lambda outcome, reason, inputs: None)
        self.holdout = holdout
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._schedule_task: asyncio.Task[None] | None = None
        for job in registry.jobs(limit=1000):   # jobs cut short by a restart are not left "running"
            if job["status"] in ("queued", "running"):
                job.update(status="failed", finished=time.time(),
                           detail={**job["detail"], "error": "interrupted: the agent restarted during the job"})
                registry.save_job(job)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    # -- jobs -----------------------------------------------------------------------------------------
    def submit(self, name: str, *, seed: int = 0, trainer: str | None = None) -> dict[str, Any]:
        """Queue a job; returns its row at once (poll `job(id)` or await `wait(id)`)."""
        trainer = trainer or self._trainer_of(name)
        job = {"id": uuid.uuid4().hex[:12], "name": name, "trainer": trainer, "seed": int(seed), "status": "queued",
               "submitted": time.time(), "finished": None, "version": None, "promoted": None, "detail": {}}
        self.registry.save_job(job)
        self._tasks[job["id"]] = asyncio.get_running_loop().create_task(self._run(job), name=f"train:{name}")
        return dict(job)

    def _trainer_of(self, name: str) -> str:
        """The trainer the model's latest version names, else the built-in one of that name."""
        for info in reversed(self.registry.versions(name)):
            if info.card.get("trainer"):
                return str(info.card["trainer"])
        try:
            resolve_trainer(name)
        except KeyError:
            raise ModelError(name, None, "trainer", "no version of this model names its trainer and no "
                             "built-in trainer has its name: give one") from None
        return name

    async def wait(self, job_id: str) -> dict[str, Any]:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)
        job = self.registry.job(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self.registry.job(job_id)

    async def _run(self, job: dict[str, Any]) -> dict[str, Any]:
        name = job["name"]
        try:
            rows = self.rows_for(name)
            production = None
            if self.registry.production_version(name) is not None:
                info, data = self.registry.artifact(name)
                production = (info.format, data, info.card)
            job.update(status="running", detail={"rows": len(rows), "production": production and production[2]["version"]})
            self.registry.save_job(job)
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self._executor(), run_job, name, job["trainer"], rows, job["seed"],
                                                    self.holdout, production)
            except BrokenProcessPool:
                self._pool = None
                raise ModelError(name, None, "worker", "the training process died (out of memory or killed)") from None
            await self._finish(job, result, production)
        except asyncio.CancelledError:
            job.update(status="failed", finished=time.time(), detail={**job["detail"], "error": "cancelled"})
            self.registry.save_job(job)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure ends the job, recorded; production untouched
            msg = str(exc) if isinstance(exc, ModelError) else f"model {name}: training: {type(exc).__name__}: {exc}"
            job.update(status="failed", finished=time.time(), detail={**job["detail"], "error": msg})
            self.registry.save_job(job)
            self.record("error", f"training {name} ({job['trainer']}, seed {job['seed']}) failed: {msg}; "
                        f"production stays v{self.registry.production_version(name)}", {"job": job["id"]})
        finally:
            self._tasks.pop(job["id"], None)
        return job

    async def _finish(self, job: dict[str, Any], result: dict[str, Any], production: Any) -> None:
        name = job["name"]
        prepared = await asyncio.to_thread(self.registry.prepare, name, result["format"], result["artifact"],
                                           result["card"], self.registry.next_version(name))
        info = self.registry.commit(prepared, source="training")
        new, old = result["metrics"]["score"], (result["production_metrics"] or {}).get("score")
        current = production[2]["version"] if production is not None else None
        if current is None:
            promote, why = True, "no production version yet"
        elif old is None:
            promote, why = False, (f"production v{current} could not be scored on the held-back data "
                                   f"({result['production_error']}): promote by hand")
        elif new < old:
            promote, why = True, f"score {new:.4g} < production v{current}'s {old:.4g} on the same held-back rows"
        else:
            promote, why = False, f"score {new:.4g} >= production v{current}'s {old:.4g} on the same held-back rows"
        if promote:
            self.registry.promote(name, info.version, reason=f"training job {job['id']}: {why}")
        job.update(status="succeeded", finished=time.time(), version=info.version, promoted=promote,
                   detail={**job["detail"], "reason": why, "metrics": result["metrics"],
                           "production_metrics": result["production_metrics"], "train_rows": result["train_rows"],
                           "held_rows": result["held_rows"], "train_seconds": result["train_seconds"],
                           "worker_pid": result["pid"]})
        self.registry.save_job(job)
        self.record("info", f"trained {name} v{info.version} ({job['trainer']}, seed {job['seed']}): "
                    + ("promoted" if promote else "kept as candidate") + f": {why}",
                    {"job": job["id"], "model": name, "version": info.version, "metrics": result["metrics"],
                     "production": current, "production_metrics": result["production_metrics"]})

    # -- schedules ------------------------------------------------------------------------------------
    def set_schedule(self, name: str, every: float | None, *, trainer: str | None = None, seed: int = 0) -> None:
        """Retrain `name` every `every` seconds (None: stop). Kept in the registry (restart-proof)."""
        if every is not None and every <= 0:
            raise ModelError(name, None, "every", f"expected seconds > 0, got {every}")
        if every is not None and trainer is None:
            trainer = self._trainer_of(name)
        self.registry.set_schedule(name, every, trainer, seed)

    def start(self) -> None:
        if self._schedule_task is None:
            self._schedule_task = asyncio.get_running_loop().create_task(self._schedule_loop(), name="train-schedule")

    async def _schedule_loop(self) -> None:
        while True:
            now = time.time()
            for s in self.registry.schedules():
                busy = any(not t.done() and t.get_name() == f"train:{s['name']}" for t in self._tasks.values())
                if not busy and now - (s["last_run"] or 0.0) >= s["every"]:
                    self.registry.schedule_ran(s["name"], now)
                    try:
                        self.submit(s["name"], seed=s["seed"], trainer=s["trainer"])
                    except Exception as exc:  # noqa: BLE001 - recorded, the next tick tries again
                        self.record("error", f"scheduled training of {s['name']} not started: {exc}", {})
            await asyncio.sleep(SCHEDULE_TICK)

    async def stop(self) -> None:
        tasks = list(self._tasks.values()) + ([self._schedule_task] if self._schedule_task else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._schedule_task = None
        if self._pool is not None:
            workers = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:     # a job still running is abandoned (recorded as cancelled above)
                proc.terminate()
            self._pool = None
