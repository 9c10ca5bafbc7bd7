"""`/healthz` and `/readyz`: probes, open without a token."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from mlsysops.continuum.api.deps import Backend
from mlsysops.continuum.api.models import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(ok=True, time=time.time())


@router.get("/readyz", response_model=Readiness, responses={503: {"description": "no cluster agent registered and alive"}})
async def readyz(response: Response, backend: Backend) -> Readiness:
    """Readiness: at least one cluster agent is registered and alive."""
    cont = backend.continuum
    alive = sum(1 for c in cont.children.children() if c.alive and c.jid in cont.jid_clusters)
    if not alive:
        response.status_code = 503
    return Readiness(ready=alive > 0, clusters_alive=alive, clusters_known=len(cont.cluster_jids))
