"""`/api/v1/sim`: the simulated continuum of `mlsysops up` (404 where the process has none)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from mlsysops.continuum.api.bodies import jsonable
from mlsysops.continuum.api.deps import Backend
from mlsysops.continuum.api.models import FaultRequest, FaultResult
from mlsysops.sim.fault_requests import apply_fault

router = APIRouter(tags=["sim"])


def _sim(backend: Backend) -> Any:
    if backend.sim is None:
        raise HTTPException(404, "no simulator in this process: send faults to the simulator host "
                                 "(mlsysops sim serve)")
    return backend.sim


@router.post("/sim/faults", response_model=FaultResult, responses={404: {}, 422: {}})
async def inject_fault(fault: FaultRequest, backend: Backend) -> FaultResult:
    """Inject a fault into the simulated continuum (`mlsysops up` only)."""
    body = fault.model_dump(exclude_none=True)
    try:
        done = apply_fault(_sim(backend), backend.sim_nodes(), body)
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(422, str(exc).strip("'\"")) from None
    backend.continuum.record_event(f"fault injected: {done}", inputs=body)
    return FaultResult(injected=done)


@router.get("/sim", responses={404: {}})
async def sim_snapshot(backend: Backend) -> JSONResponse:
    """The whole simulated continuum: nodes, instances, faults."""
    return JSONResponse(jsonable(_sim(backend).snapshot()))
