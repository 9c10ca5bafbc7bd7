"""Decision records as the API returns them: the slice's records (over the protocol, see
`ApiBackend.decisions`), newest last, and one `stage: query, outcome: unanswered` row per agent that could
not be asked or did not answer, so a missing agent shows in `mlsysops get decisions` instead of vanishing."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import Response

from mlsysops.agents.tree_reads import DecisionsPage, DecisionsQuery
from mlsysops.continuum.api.backend import ApiBackend
from mlsysops.continuum.api.bodies import jsonable


def unanswered_rows(page: DecisionsPage) -> list[dict[str, Any]]:
    now = time.time()
    return [{"id": f"unanswered:{agent}", "ts": now, "agent": agent, "stage": "query", "outcome": "unanswered",
             "reason": why, "policy": None, "mechanism": None, "app": None, "plan_id": None, "inputs": None,
             "chosen": None, "alternatives": None, "explanation": None}
            for agent, why in sorted(page.unanswered.items())]


async def decision_rows(backend: ApiBackend, q: DecisionsQuery) -> list[dict[str, Any]]:
    page = await backend.decisions(q)
    return jsonable(page.records[-q.limit:] + unanswered_rows(page))


async def decision_response(backend: ApiBackend, q: DecisionsQuery) -> Response:
    """`decision_rows` encoded once per shared read (`ApiBackend.reads`, at most `read_max_age` old): every
    reader of the same question within that time gets the same bytes, without encoding them again."""
    page = await backend.decisions(q)
    key = (q.model_dump_json(), q.limit)
    hit = backend.encoded.get(key)
    if hit is None or hit[0] is not page:
        body = json.dumps(jsonable(page.records[-q.limit:] + unanswered_rows(page)), separators=(",", ":")).encode()
        if len(backend.encoded) >= 64:
            backend.encoded.clear()
        hit = backend.encoded[key] = (page, body)
    return Response(content=hit[1], media_type="application/json")
