"""Decision records as the API returns them: the slice's records (over the protocol, see
`ApiBackend.decisions`), newest last, and one `stage: query, outcome: unanswered` row per agent that could
not be asked or did not answer, so a missing agent shows in `mlsysops get decisions` instead of vanishing."""

from __future__ import annotations

import time
from typing import Any

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
