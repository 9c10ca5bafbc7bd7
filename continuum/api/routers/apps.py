"""`/api/v1/apps`: submit, replace, list, read and remove applications; their decision history."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from mlsysops.agents.descriptions import DescriptionError, MLSysOpsApp
from mlsysops.agents.tree_reads import DecisionsQuery
from mlsysops.continuum.api import views
from mlsysops.continuum.api.bodies import (
    DESCRIPTION_BODY,
    PERSIST_RESPONSES,
    invalid,
    issue,
    jsonable,
    not_found,
    read_one,
)
from mlsysops.continuum.api.decision_reads import decision_rows
from mlsysops.continuum.api.deps import API_PREFIX, MAX_DECISIONS, Backend
from mlsysops.continuum.api.models import (
    AppAccepted,
    AppDetail,
    AppExplanation,
    AppRemoved,
    AppSummary,
    ComponentStatus,
    TrafficRoute,
)

router = APIRouter(tags=["apps"])


async def accept(backend: Backend, request: Request, response: Response, name: str | None) -> AppAccepted:
    """Accept the app in the body; `name` (PUT) must match it and allows replacing a different one."""
    cont = backend.continuum
    doc = await read_one(request, cont.inventory, MLSysOpsApp)
    if name is not None and doc.name != name:
        raise issue(f"the description names app {doc.name!r}, the URL {name!r}", path="name",
                    value=doc.name, expected=repr(name))
    existing = cont.app_docs.get(doc.name)
    warnings = jsonable([w.to_dict() for w in doc.warnings])
    n = len(doc.spec.components)
    if existing == doc.kubernetes_form:
        response.status_code = 200
        return AppAccepted(name=doc.name, result="unchanged", components=n, warnings=warnings)
    if existing is not None and name is None:
        raise HTTPException(409, f"app {doc.name!r} exists with a different description; "
                                 f"PUT {API_PREFIX}/apps/{doc.name} replaces it")
    try:
        await cont.submit_app_async(doc)
    except DescriptionError as exc:
        raise invalid(exc) from None
    response.status_code = 201 if existing is None else 200
    return AppAccepted(name=doc.name, result="created" if existing is None else "replaced", components=n,
                       warnings=warnings)


@router.post("/apps", response_model=AppAccepted, status_code=201, openapi_extra=DESCRIPTION_BODY,
             responses={200: {"description": "identical re-submission", "model": AppAccepted},
                        409: {"description": "an app of that name exists with a different description"},
                        422: {"description": "invalid description (issues with field paths)"},
                        **PERSIST_RESPONSES})
async def submit_app(request: Request, response: Response, backend: Backend) -> AppAccepted:
    """Submit an application (idempotent: an identical re-submission is 200)."""
    return await accept(backend, request, response, None)


@router.put("/apps/{name}", response_model=AppAccepted, openapi_extra=DESCRIPTION_BODY,
            responses={201: {"description": "created", "model": AppAccepted},
                       422: {"description": "invalid description, or its name differs from the URL"},
                       **PERSIST_RESPONSES})
async def put_app(name: str, request: Request, response: Response, backend: Backend) -> AppAccepted:
    """Create or replace an application."""
    return await accept(backend, request, response, name)


@router.get("/apps", response_model=list[AppSummary])
async def list_apps(backend: Backend) -> list[AppSummary]:
    cont = backend.continuum
    out = []
    for name in sorted(cont.apps):
        comps = cont.app_status(name)
        out.append(AppSummary(name=name, submitted=cont.submitted.get(name), components=len(comps),
                              status=dict(Counter(s["status"] for s in comps.values()))))
    return out


@router.get("/apps/{name}", response_model=AppDetail, responses={404: {}})
async def get_app(name: str, backend: Backend) -> AppDetail:
    cont = backend.continuum
    if name not in cont.apps:
        raise not_found("app", name)
    return AppDetail(name=name, submitted=cont.submitted.get(name), description=cont.app_docs[name],
                     components={c: ComponentStatus(**s) for c, s in cont.app_status(name).items()})


@router.get("/apps/{name}/explain", response_model=AppExplanation, responses={404: {}})
async def explain(name: str, backend: Backend, component: str | None = None) -> AppExplanation:
    """Why the app (or one component) is or is not running as desired: the dominant reason per component,
    its evidence and a next step, from the slice's decision records and reports."""
    from mlsysops.continuum.explain import explain_app

    cont = backend.continuum
    status = cont.app_status(name)
    if name not in cont.apps and not status:
        raise not_found("app", name)
    if component is not None and component not in status:
        raise not_found("component", component, set(status))
    records = await decision_rows(backend, DecisionsQuery(app=name, limit=300, exclude_outcomes=["no_plan"]))
    plans = await decision_rows(backend, DecisionsQuery(app=name, stage="plan", limit=20))
    # node losses are the clusters' events, about no app
    losses = [r for r in await decision_rows(backend, DecisionsQuery(stage="event", limit=200))
              if " lost" in str(r.get("reason"))]
    nodes = {n: m for per in cont.cluster_nodes.values() for n, m in per.items()}
    alive = {n.name: n.alive for n in views.all_nodes(cont).values()}
    out = explain_app(name, cont.apps.get(name), status, records + plans + losses, nodes, alive, component)
    return AppExplanation(**out)


@router.get("/apps/{name}/routes", response_model=list[TrafficRoute], responses={404: {}})
async def app_routes(name: str, backend: Backend) -> list[TrafficRoute]:
    """For each component with callers, where each calling cluster's traffic goes: its own cluster
    (`local`), the serving cluster's exposed endpoints (`endpoints`) or nowhere yet (`none`)."""
    cont = backend.continuum
    if name not in cont.apps:
        raise not_found("app", name)
    return [TrafficRoute(**row) for row in cont.traffic.view(name)]


@router.delete("/apps/{name}", response_model=AppRemoved, status_code=202,
               responses={404: {}, **PERSIST_RESPONSES})
async def delete_app(name: str, backend: Backend) -> AppRemoved:
    """Remove an application: clusters are told to remove its components (status becomes `removed`)."""
    if not await backend.continuum.remove_app(name):
        raise not_found("app", name)
    return AppRemoved(name=name)


@router.get("/apps/{name}/events", responses={404: {}})
async def app_events(name: str, backend: Backend, stage: str | None = None, outcome: str | None = None,
                     policy: str | None = None, since: float | None = None,
                     exclude_outcome: Annotated[list[str] | None, Query(max_length=16)] = None,
                     limit: int = Query(100, ge=1, le=MAX_DECISIONS)) -> list[dict[str, Any]]:
    """Decision records about the app of every agent of the slice (read over the protocol), newest last;
    filtered like `/decisions`."""
    cont = backend.continuum
    if name not in cont.apps and not cont.app_status(name):
        raise not_found("app", name)
    return await decision_rows(backend, DecisionsQuery(app=name, stage=stage, outcome=outcome, policy=policy,
                                                       since=since, exclude_outcomes=exclude_outcome or [], limit=limit))
