"""`/api/v1/buckets`: the apps' buckets, their replicas and sites, as the stores hold them.

Answers from the `storage` mechanism's state as the continuum's Monitor last read it from the stores
(`as_of`); the detail of one bucket also lists its objects per replica, read from the stores now.
404 when the slice runs no storage service (slice config `storage` absent)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from mlsysops.continuum.api.deps import Backend

router = APIRouter(tags=["storage"])


class StorageSiteView(BaseModel):
    name: str
    region: str = ""
    gdpr: bool = False
    layer: str = "cloud"
    node: str | None = None
    endpoint: str | None = None
    reachable: bool = True
    error: str | None = None


class BucketView(BaseModel):
    name: str = Field(description="The bucket's name on the stores (`<app>-<bucket_id>`).")
    app: str | None = None
    bucket: str | None = None
    declared: bool = Field(description="An accepted app declares it (else: found on a store only).")
    replicas_wanted: int | None = None
    replicas: dict[str, str] = Field(description="site -> replica state (complete, copying, unreachable).")
    copy_in_flight: dict[str, Any] | None = None
    access: list[dict[str, Any]] = Field(default_factory=list, description="Users: rates and p95 latency.")


class BucketDetail(BucketView):
    objects: dict[str, list[dict[str, Any]]] = Field(default_factory=dict, description="site -> objects.")


class StorageView(BaseModel):
    as_of: float | None
    sites: list[StorageSiteView]
    buckets: list[BucketView]


def _state(backend: Any) -> tuple[Any, dict[str, Any]]:
    cont = backend.continuum
    mech = cont.mechanisms.get("storage")
    if mech is None:
        raise HTTPException(404, "this slice runs no storage service (slice config `storage`)")
    entry = cont.knowledge.mechanisms.get("storage") or {}
    return mech.target, entry.get("state") or {}


def _bucket(name: str, row: dict[str, Any], access: dict[str, Any]) -> BucketView:
    key = f"{row.get('app')}/{row.get('bucket')}"
    return BucketView(name=name, app=row.get("app"), bucket=row.get("bucket"), declared=bool(row.get("declared")),
                      replicas_wanted=row.get("replicas_wanted"), replicas=row.get("replicas", {}),
                      copy_in_flight=row.get("copy"), access=access.get(key, []))


@router.get("/buckets", response_model=StorageView, responses={404: {}})
async def list_buckets(backend: Backend) -> StorageView:
    target, state = _state(backend)
    if not state:   # Monitor has not read the stores yet: read them now
        state = await target.get_state()
    access = state.get("access", {})
    return StorageView(as_of=time.time(),
                       sites=[StorageSiteView(name=n, **s) for n, s in sorted(state.get("sites", {}).items())],
                       buckets=[_bucket(n, r, access) for n, r in sorted(state.get("buckets", {}).items())])


@router.get("/buckets/{app}/{bucket}", response_model=BucketDetail, responses={404: {}})
async def get_bucket(app: str, bucket: str, backend: Backend) -> BucketDetail:
    target, _ = _state(backend)
    state = await target.get_state()
    for name, row in state.get("buckets", {}).items():
        if row.get("app") == app and row.get("bucket") == bucket:
            view = _bucket(name, row, state.get("access", {}))
            return BucketDetail(**view.model_dump(), objects=await target.objects(app, bucket))
    known = sorted(f"{r.get('app')}/{r.get('bucket')}" for r in state.get("buckets", {}).values() if r.get("app"))
    raise HTTPException(404, f"bucket {app}/{bucket} not found; known: {known}")
