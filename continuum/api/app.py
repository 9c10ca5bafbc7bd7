"""The northbound REST API, served by the continuum agent's process (FastAPI on uvicorn).

`create_app(backend, tokens)` builds the app; `ApiServer` runs it on a thread and event loop of its own, and
each endpoint on the agents' loop (`loop_bridge`), so no request delays a heartbeat. The same app serves

* `mlsysops up`: `ApiBackend(runtime=rt)`: every agent of the slice lives in the process, plus the
  simulator (`/api/v1/sim/...`);
* `mlsysops agent continuum`: `ApiBackend(agent)`: only the continuum agent; infrastructure views are
  built from what clusters registered and report in heartbeats, so both modes show the same thing.

Other agents' decision records and telemetry plans are read over the protocol in both modes (the
continuum asks its clusters, which answer for themselves and their nodes; see `ApiBackend`). Such reads
(`/decisions`, `/apps/NAME/events`, `/dashboard/state`, `/stream`, `/telemetry/config`) may be up to
one second old (`ApiBackend(read_max_age=...)`), like a Prometheus scrape: concurrent readers share one
fan-out. Any state-changing request (POST, PUT, DELETE) drops the cached answers.

Errors are `{"detail": ...}`. Invalid descriptions give 422 with the validator's issues (field `path`,
`message`, `expected`, `suggestion`); unknown ids 404; a different app under an existing name 409; a desired-state write that failed 507 (disk full)
or 503, with the cause.
OpenAPI at `/openapi.json`, Swagger UI at `/docs` (served from this process: no CDN);
`/healthz`, `/readyz` and the documentation need no token.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from mlsysops.continuum.api.backend import ApiBackend
from mlsysops.continuum.api.bodies import persist_failed
from mlsysops.continuum.api.deps import API_PREFIX, invalidate_reads_on_write
from mlsysops.continuum.api.loop_bridge import bridge_router
from mlsysops.continuum.api.routers import (
    apps,
    dashboard,
    decisions,
    health,
    infrastructure,
    management,
    models,
    original,
    sim,
    storage,
    telemetry,
)
from mlsysops.continuum.api_auth import READ_METHODS, Role, TokenAuth
from mlsysops.continuum.store import PersistError

V1_ROUTERS = (apps.router, infrastructure.router, decisions.router, management.router, sim.router,
              telemetry.router, dashboard.router, models.router, storage.router)


def create_app(backend: ApiBackend, tokens: dict[str, Role], *, metrics_auth: bool = False,
               original_cli: bool = False) -> FastAPI:
    """The FastAPI app over `backend`; `tokens` maps bearer tokens to roles (see mlsysops.continuum.api_auth);
    `metrics_auth` requires a token on /metrics too; `original_cli` admits token-less requests from loopback
    peers on the original MLSysOps API paths (`routers.original`) only."""

    # Swagger UI from the package's own assets (fastapi-offline), not a CDN: /docs must work on an air-gapped
    # testbed. (No ReDoc: its page loads a logo from Redocly's CDN whatever the options.)
    app = FastAPIOffline(title="mlsysops", version="1", summary="Northbound API of an MLSysOps continuum agent",
                         description=__doc__, static_url="/docs-assets", redoc_url=None)
    app.state.backend = backend
    app.add_exception_handler(PersistError, persist_failed)
    read_auth = Depends(TokenAuth(tokens).dependency())
    app.include_router(bridge_router(health.router))
    for router in V1_ROUTERS:
        app.include_router(bridge_router(router), prefix=API_PREFIX,
                           dependencies=[read_auth, Depends(invalidate_reads_on_write)])
    # the original framework's paths, for its `mls` CLI (which sends no token: see routers.original)
    compat_auth = Depends(TokenAuth(tokens).dependency(tokenless_loopback=original_cli))
    app.include_router(bridge_router(original.router), dependencies=[compat_auth, Depends(invalidate_reads_on_write)])
    app.include_router(bridge_router(telemetry.metrics_router), dependencies=[read_auth] if metrics_auth else [])
    app.include_router(dashboard.page_router)
    dashboard.mount_static(app)
    _document_auth_errors(app)
    return app


_ERROR = {"application/json": {"schema": {"type": "object", "required": ["detail"],
                                           "properties": {"detail": {"type": "string"}}}}}


def _document_auth_errors(app: FastAPI) -> None:
    """Say in the OpenAPI document what TokenAuth answers: 401 on every token-protected operation, 403 on
    the ones a read token may not call (anything but GET/HEAD/OPTIONS)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for ops in schema.get("paths", {}).values():
            for method, op in ops.items():
                if not isinstance(op, dict) or not op.get("security"):
                    continue
                responses = op.setdefault("responses", {})
                responses.setdefault("401", {"description": "missing or unknown bearer token", "content": _ERROR})
                if method.upper() not in READ_METHODS:
                    responses.setdefault("403", {"description": "a read token may not change anything",
                                                 "content": _ERROR})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
