"""FastAPI dependencies of the routers: the backend an app was built over (`app.state.backend`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlsysops.continuum.api.backend import ApiBackend

API_PREFIX = "/api/v1"
MAX_DECISIONS = 1000


def backend_of(request: Request) -> ApiBackend:
    return request.app.state.backend


Backend = Annotated[ApiBackend, Depends(backend_of)]
