"""FastAPI dependencies of the routers: the backend an app was built over (`app.state.backend`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from mlsysops.continuum.api.backend import ApiBackend

API_PREFIX = "/api/v1"
MAX_DECISIONS = 1000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def backend_of(request: Request) -> ApiBackend:   # async: a sync dependency costs a worker thread hop
    return request.app.state.backend


Backend = Annotated[ApiBackend, Depends(backend_of)]


async def invalidate_reads_on_write(request: Request) -> AsyncIterator[None]:
    """A state-changing request drops the backend's cached reads before and after it runs, so a read
    after the action never reuses an answer from before it (`ApiBackend.reads`)."""
    write = request.method not in SAFE_METHODS
    if write:
        _invalidate(request.app.state.backend)
    yield
    if write:
        _invalidate(request.app.state.backend)


def _invalidate(backend: ApiBackend) -> None:
    """The API thread's encoded answers here (this is their loop); the agents' cache on the agents' loop,
    where it lives (queued in order before/after the endpoint's own call)."""
    backend.served.invalidate()
    loop = backend.agents_loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(backend.invalidate_reads)
    else:
        backend.invalidate_reads()
