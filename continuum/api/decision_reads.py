"""Decision records as the API returns them: the slice's records (over the protocol, see
`ApiBackend.decisions`), newest last, and one `stage: query, outcome: unanswered` row per agent that could
not be asked or did not answer, so a missing agent shows in `mlsysops get decisions` instead of vanishing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import Response

from mlsysops.agents.tree_reads import DecisionsPage, DecisionsQuery
from mlsysops.continuum.api.backend import ApiBackend
from mlsysops.continuum.api.bodies import jsonable
from mlsysops.continuum.api.loop_bridge import on_agents
from mlsysops.continuum.api.read_cache import Fresh


def unanswered_rows(page: DecisionsPage) -> list[dict[str, Any]]:
    now = time.time()
    return [{"id": f"unanswered:{agent}", "ts": now, "agent": agent, "stage": "query", "outcome": "unanswered",
             "reason": why, "policy": None, "mechanism": None, "app": None, "plan_id": None, "inputs": None,
             "chosen": None, "alternatives": None, "explanation": None}
            for agent, why in sorted(page.unanswered.items())]


def _rows(page: DecisionsPage, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` records, then the unanswered rows (a shared page: read, never changed)."""
    return jsonable(page.records[-limit:] + unanswered_rows(page))


async def decision_rows(backend: ApiBackend, q: DecisionsQuery) -> list[dict[str, Any]]:
    return _rows(await backend.decisions(q), q.limit)


async def decision_response(app: Any, backend: ApiBackend, q: DecisionsQuery,
                            check: Callable[[], None] = lambda: None) -> Response:
    """`decision_rows` as the API thread serves them (`ApiBackend.served`): encoded once per read of the
    agents' cache (`ApiBackend.reads`), so every reader within `read_max_age` gets the same bytes; past half
    that age one reader's request rebuilds them in the background. Only a rebuild runs on the agents' loop
    (`check` first there: it raises for a question that cannot be answered)."""
    key = ("decisions", q.model_dump_json())
    held = backend.served.started(key)

    async def page() -> Fresh:
        check()
        return await backend.decisions_fresh(q, newer_than=held)

    async def build() -> Fresh:
        fresh = await on_agents(app, page)
        return Fresh(json.dumps(_rows(fresh.value, q.limit), separators=(",", ":")).encode(), fresh.started)

    return Response(content=await backend.served.get(key, build), media_type="application/json")
