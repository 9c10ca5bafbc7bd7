"""`/api/v1/models...`: the slice's model registry (list, describe, upload, train, promote, roll back,
metrics per version). Mutations need an admin token (like every POST/PUT/DELETE of the API).

A refused upload or action answers 422 with `{"detail": {"model", "version", "field", "message", "error"}}`;
an unknown model, version or job 404. Uploads are JSON: the card (ours or the original ML connector's) and
the artifact as base64, at most `MAX_UPLOAD_BYTES` decoded.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from mlsysops.agents.ml.card import NAME_PATTERN
from mlsysops.agents.ml.errors import ModelError
from mlsysops.agents.ml.registry import MAX_ARTIFACT_BYTES
from mlsysops.continuum.api.bodies import jsonable, not_found
from mlsysops.continuum.api.deps import Backend

router = APIRouter(tags=["models"])
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="model name")]
MAX_UPLOAD_BYTES = MAX_ARTIFACT_BYTES


class ModelUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = Field("onnx", min_length=1, max_length=64, description="onnx, or a format trained here")
    card: dict[str, Any] = Field(description="the model card (ours, or the original ML connector's JSON card)")
    artifact: str = Field(min_length=1, max_length=(MAX_UPLOAD_BYTES * 4) // 3 + 4, description="base64 bytes")
    promote: bool = Field(False, description="make it the production version at once")


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, le=2**31 - 1)
    trainer: str | None = Field(None, max_length=256, description="default: the trainer of the latest version")
    every: float | None = Field(None, ge=1.0, le=366 * 86400, description="also retrain every N seconds from now on")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    reason: str = Field("operator", max_length=512)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("operator", max_length=512)


def _service(backend: Any) -> Any:
    svc = getattr(backend.continuum, "ml_service", None)
    if svc is None:
        raise HTTPException(503, "this continuum agent hosts no ML connector")
    return svc


def _known(svc: Any, name: str) -> None:
    if not svc.registry.has(name):
        raise not_found("model", name, svc.registry.names())


def refused(exc: ModelError) -> HTTPException:
    return HTTPException(422, jsonable(exc.to_dict()))


@router.get("/models")
async def list_models(backend: Backend) -> list[dict[str, Any]]:
    """Every model: production and latest version, format, inputs and output."""
    return jsonable(_service(backend).list())


@router.get("/models/{name}", responses={404: {}})
async def describe_model(name: ModelName, backend: Backend) -> dict[str, Any]:
    """One model: its versions (card, stage, sha256), stage history, recent training jobs, schedule."""
    svc = _service(backend)
    _known(svc, name)
    return jsonable(svc.describe(name))


@router.get("/models/{name}/versions/{version}", responses={404: {}})
async def get_version(name: ModelName, version: Annotated[int, Path(ge=1)], backend: Backend) -> dict[str, Any]:
    svc = _service(backend)
    _known(svc, name)
    if version not in svc.registry.version_numbers(name):
        raise not_found(f"version of model {name}:", str(version), map(str, svc.registry.version_numbers(name)))
    return jsonable(svc.version(name, version))


@router.post("/models/{name}/versions", status_code=201, responses={422: {}})
async def upload_version(name: ModelName, body: ModelUpload, backend: Backend) -> dict[str, Any]:
    """Add a version (ONNX + card): loaded and checked against its card before it is stored."""
    try:
        artifact = base64.b64decode(body.artifact, validate=True)
    except (binascii.Error, ValueError):
        raise refused(ModelError(name, None, "artifact", "not valid base64")) from None
    try:
        return jsonable(await _service(backend).upload(name, body.format, artifact, body.card, promote=body.promote))
    except ModelError as exc:
        raise refused(exc) from None


@router.post("/models/{name}/train", status_code=202, responses={404: {}, 422: {}})
async def train(name: ModelName, body: TrainRequest, backend: Backend) -> dict[str, Any]:
    """Start a training job (in a worker process); with `every`, retrain on that schedule too."""
    svc = _service(backend)
    try:
        if body.every is not None:
            svc.schedule(name, body.every, trainer=body.trainer, seed=body.seed, remote=True)
        return jsonable(svc.train(name, seed=body.seed, trainer=body.trainer, remote=True))
    except ModelError as exc:
        raise refused(exc) from None


@router.delete("/models/{name}/schedule", responses={404: {}})
async def unschedule(name: ModelName, backend: Backend) -> dict[str, Any]:
    svc = _service(backend)
    _known(svc, name)
    return jsonable(svc.schedule(name, None))


@router.get("/models/{name}/jobs/{job_id}", responses={404: {}})
async def get_job(name: ModelName, job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")],
                  backend: Backend) -> dict[str, Any]:
    job = _service(backend).training.job(job_id)
    if job is None or job["name"] != name:
        raise not_found("training job", job_id)
    return jsonable(job)


@router.post("/models/{name}/promote", responses={404: {}, 422: {}})
async def promote(name: ModelName, body: PromoteRequest, backend: Backend) -> dict[str, Any]:
    """Make a version the production one (the one it replaces is archived)."""
    svc = _service(backend)
    _known(svc, name)
    try:
        return jsonable(svc.promote(name, body.version, reason=body.reason))
    except ModelError as exc:
        raise refused(exc) from None


@router.post("/models/{name}/rollback", responses={404: {}, 422: {}})
async def rollback(name: ModelName, backend: Backend, body: RollbackRequest | None = None) -> dict[str, Any]:
    """Undo the last promotion still in force: the version it replaced serves again."""
    svc = _service(backend)
    _known(svc, name)
    try:
        return jsonable(svc.rollback(name, reason=(body or RollbackRequest()).reason))
    except ModelError as exc:
        raise refused(exc) from None


@router.get("/models/{name}/metrics", responses={404: {}})
async def metrics(name: ModelName, backend: Backend) -> list[dict[str, Any]]:
    """Per version: held-out metrics from its card, and the live error of what the agents reported."""
    svc = _service(backend)
    _known(svc, name)
    return jsonable(svc.metrics(name))
