"""`/api/v1/decisions`: the decision log of the whole slice, read over the protocol (the continuum asks its
clusters, which answer for themselves and their nodes), the same in both run modes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from mlsysops.agents.tree_reads import DecisionsQuery
from mlsysops.continuum.api.bodies import not_found
from mlsysops.continuum.api.decision_reads import decision_response
from mlsysops.continuum.api.deps import MAX_DECISIONS, Backend
from mlsysops.continuum.api.loop_bridge import on_api_thread

router = APIRouter(tags=["decisions"])


@router.get("/decisions", response_model=list[dict[str, Any]], responses={404: {"description": "unknown agent"}})
@on_api_thread
async def decisions(request: Request, backend: Backend, agent: str | None = None, app: str | None = None, policy: str | None = None,
                    stage: str | None = None, outcome: str | None = None, since: float | None = None,
                    until: float | None = None,
                    exclude_outcome: Annotated[list[str] | None, Query(
                        max_length=16, description="leave these outcomes out (e.g. no_plan: the analyses that "
                                                   "found nothing to do)")] = None,
                    limit: int = Query(100, ge=1, le=MAX_DECISIONS)) -> Response:
    """Decision records of every agent of the slice, newest last; an agent that could not be asked or did
    not answer in time has a row `stage: query, outcome: unanswered` saying why."""
    def check() -> None:    # on the agents' loop: their state
        known = backend.known_agents() | set(backend.agents())
        if agent is not None and agent not in known:
            raise not_found("agent", agent, known)

    return await decision_response(request.app, backend, DecisionsQuery(
        agent=agent, app=app, policy=policy, stage=stage, outcome=outcome, since=since, until=until, limit=limit,
        exclude_outcomes=exclude_outcome or []), check)
