"""Reads of an agent's subtree over the protocol: decision records and telemetry collection plans.

An agent answers `decisions.query` / `telemetry.config.query` for itself; asked for its subtree
(`subtree=true`) it also asks every live child, with half of its own time budget (`reply_within`), merges
the answers and names every child that did not answer, and why (`unanswered`), so a silent child is
reported, never dropped. Whether the agents share a process or not, the answer is the same: it is built
from messages, not from Python objects.

Replies stay under the protocol's message limit (`MAX_EXPORT_BYTES`): a reply holds the newest records
that fit and says `truncated`; the reader pages back in time with `until` (`collect_decisions(...,
pages=N)`). A record too large on its own travels without its bulky fields (inputs, alternatives, ...).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from mlsysops.agents.agent_base import RequestFailed, RequestTimeout
from mlsysops.agents.authorization import FROM_PARENT, register_rule
from mlsysops.agents.protocol import Kind, Performative, register_payload
from mlsysops.agents.wire import Role

MAX_EXPORT_BYTES = 48 * 1024
DEFAULT_REPLY_WITHIN = 2.0
TELEMETRY_CONFIG_QUERY = "telemetry.config.query"
BULKY_FIELDS = ("inputs", "chosen", "alternatives", "explanation")
LEAF_ROLES = (Role.NODE, Role.FAR_EDGE)   # no decision logs below them (a gateway's devices keep none)


class DecisionsQuery(BaseModel):
    """Filters of a decision-log read (all optional); `limit` newest matching records, oldest first."""

    agent: str | None = None
    app: str | None = None
    policy: str | None = None
    stage: str | None = None
    outcome: str | None = None
    exclude_outcomes: list[str] = Field(default_factory=list, max_length=16)
    since: float | None = None
    until: float | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    subtree: bool = Field(False, description="also the records of the children (and theirs)")
    reply_within: float = Field(DEFAULT_REPLY_WITHIN, gt=0, le=60)


class TelemetryConfigQuery(BaseModel):
    """Whose collection plans (`CollectionPlan.describe()`) to return; None: every agent asked."""

    agents: list[str] | None = Field(None, max_length=1000)
    subtree: bool = False
    reply_within: float = Field(DEFAULT_REPLY_WITHIN, gt=0, le=60)


register_payload(Kind.DECISIONS_QUERY, Performative.REQUEST, DecisionsQuery)
register_payload(TELEMETRY_CONFIG_QUERY, Performative.REQUEST, TelemetryConfigQuery)
register_rule(TELEMETRY_CONFIG_QUERY, FROM_PARENT)


@dataclass(slots=True)
class DecisionsPage:
    """Records (oldest first), whether older matching ones were left out, and who did not answer;
    `as_of`: wall-clock time the read started (records newer than that may be missing), when known."""

    records: list[dict[str, Any]]
    truncated: bool = False
    unanswered: dict[str, str] = field(default_factory=dict)
    as_of: float | None = None

    def to_body(self, agent_id: str) -> dict[str, Any]:
        return {"agent": agent_id, "records": self.records, "truncated": self.truncated,
                "unanswered": self.unanswered}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> DecisionsPage:
        records = [r for r in body.get("records") or [] if isinstance(r, dict) and "ts" in r]
        return cls(records, bool(body.get("truncated")), dict(body.get("unanswered") or {}))


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str))


def _fitting(record: dict[str, Any], budget: int | None) -> dict[str, Any]:
    """The record, or (when it alone exceeds `budget`) the record with its bulky fields summarised."""
    if budget is None or _size(record) <= budget // 2:
        return record
    slim = dict(record)
    for name in BULKY_FIELDS:
        if slim.get(name) is not None:
            slim[name] = {"omitted": f"{_size(slim[name])} bytes, too large for a protocol reply"}
    return slim


def budget_page(records: list[dict[str, Any]], limit: int, budget: int | None) -> tuple[list[dict[str, Any]], bool]:
    """The newest `limit` of `records` (oldest first) that fit `budget` bytes; True when some were cut."""
    kept: list[dict[str, Any]] = []
    size = 0
    newest = records[-limit:]
    for rec in reversed(newest):
        rec = _fitting(rec, budget)
        n = _size(rec)
        if budget is not None and kept and size + n > budget:
            kept.reverse()
            return kept, True
        kept.append(rec)
        size += n
    kept.reverse()
    return kept, False


def merge_pages(pages: list[DecisionsPage], limit: int, budget: int | None) -> DecisionsPage:
    """One page from several sources. Below the oldest record of a truncated source the merge would be
    incomplete, so it stops there (the reader pages on from the oldest record returned)."""
    horizon = max((p.records[0]["ts"] for p in pages if p.truncated and p.records), default=None)
    by_id: dict[str, dict[str, Any]] = {}
    for page in pages:
        for rec in page.records:
            by_id[str(rec.get("id") or id(rec))] = rec
    records = sorted(by_id.values(), key=lambda r: r["ts"])
    if horizon is not None:
        records = [r for r in records if r["ts"] >= horizon]
    kept, cut = budget_page(records, limit, budget)
    unanswered = {k: v for page in pages for k, v in page.unanswered.items()}
    truncated = (cut or any(p.truncated for p in pages)) and len(kept) < limit
    return DecisionsPage(kept, truncated, unanswered)


def own_decisions(agent: Any, q: DecisionsQuery) -> list[dict[str, Any]]:
    """`agent`'s own records matching `q` (its in-memory decision log)."""
    if q.agent not in (None, agent.agent_id):
        return []
    log = agent.decision_log
    filters = {"app": q.app, "policy": q.policy, "stage": q.stage, "outcome": q.outcome, "since": q.since,
               "until": q.until}
    if not q.exclude_outcomes:
        return [_exported(r) for r in log.query(limit=q.limit, **filters)]
    skip = set(q.exclude_outcomes)
    wanted = [r for r in log.query(limit=max(len(log), 1), **filters) if r.outcome not in skip]
    return [_exported(r) for r in wanted[-q.limit:]]


def _exported(record: Any) -> dict[str, Any]:
    """The record's fields as a dict, sharing (not deep-copying, as `to_dict` does) its values: an export
    is serialised or copied before anyone could change it, and the deep copy was most of a read's cost."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _lost(child: Any) -> str:
    return f"agent lost: {child.lost_reason or 'no heartbeat'}"


def _children(agent: Any) -> list[Any]:
    children = getattr(agent, "children", None)
    return children.children() if children is not None else []


def _relevant_children(agent: Any, wanted: str | None) -> list[Any]:
    """The children whose subtree may hold `wanted`'s records (all of them when no agent is named): the
    named child alone when it is one, else every child that has children of its own. A sibling that
    cannot hold them is not asked, so its silence is not reported as a gap in `wanted`'s records."""
    children = _children(agent)
    if wanted is None:
        return children
    named = [c for c in children if c.agent_id == wanted]
    return named or [c for c in children if c.role not in LEAF_ROLES]


async def _ask_decisions(agent: Any, child: Any, q: DecisionsQuery, wait: float, pages: int) -> DecisionsPage:
    """Up to `pages` pages of `child`'s subtree records (newest first, paging back with `until`)."""
    out = DecisionsPage([])
    seen: set[str] = set()
    until = q.until
    deadline = time.monotonic() + wait
    for _ in range(pages):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            out.truncated = True
            break
        body = q.model_copy(update={"until": until, "subtree": True, "reply_within": remaining})
        try:
            reply = await agent.request(child.jid, Kind.DECISIONS_QUERY, body, timeout=remaining, retries=0)
        except RequestTimeout:
            out.unanswered[child.agent_id] = f"no answer to decisions.query within {wait:g}s"
            out.truncated = bool(out.records)
            break
        except RequestFailed as exc:
            out.unanswered[child.agent_id] = f"decisions.query failed: {exc}"
            break
        page = DecisionsPage.from_body(reply.body)
        new = [r for r in page.records if str(r.get("id")) not in seen]
        seen.update(str(r.get("id")) for r in new)
        out.records = new + out.records
        out.unanswered.update(page.unanswered)
        out.truncated = page.truncated and len(out.records) < q.limit
        if not out.truncated or not new:
            break
        until = page.records[0]["ts"]
    return out


async def collect_decisions(agent: Any, q: DecisionsQuery, *, wait: float, budget: int | None,
                            pages: int = 1) -> DecisionsPage:
    """`agent`'s records and, with `q.subtree`, those of its live children (waiting at most `wait`
    seconds for them; `pages` pages each). A lost child is named in `unanswered` without being asked."""
    sources = [DecisionsPage(own_decisions(agent, q))]
    if q.subtree and q.agent != agent.agent_id:
        lost = DecisionsPage([])
        asks = []
        for child in _relevant_children(agent, q.agent):
            if child.alive:
                asks.append(_ask_decisions(agent, child, q, wait, pages))
            else:
                lost.unanswered[child.agent_id] = _lost(child)
        sources += [lost, *await asyncio.gather(*asks)]
    return merge_pages(sources, q.limit, budget)


async def _ask_plans(agent: Any, child: Any, q: TelemetryConfigQuery, wait: float,
                     pages: int) -> dict[str, Any]:
    out: dict[str, Any] = {"agents": {}, "unanswered": {}, "omitted": []}
    wanted = q.agents
    for _ in range(pages):
        body = q.model_copy(update={"agents": wanted, "subtree": True, "reply_within": wait})
        try:
            reply = await agent.request(child.jid, TELEMETRY_CONFIG_QUERY, body, timeout=wait, retries=0)
        except RequestTimeout:
            out["unanswered"][child.agent_id] = f"no answer to {TELEMETRY_CONFIG_QUERY} within {wait:g}s"
            break
        except RequestFailed as exc:
            out["unanswered"][child.agent_id] = f"{TELEMETRY_CONFIG_QUERY} failed: {exc}"
            break
        out["agents"].update(reply.body.get("agents") or {})
        out["unanswered"].update(reply.body.get("unanswered") or {})
        wanted = [a for a in reply.body.get("omitted") or [] if a not in out["agents"]]
        out["omitted"] = wanted
        if not wanted:
            break
    return out


async def collect_plans(agent: Any, q: TelemetryConfigQuery, *, wait: float, budget: int | None,
                        pages: int = 1) -> dict[str, Any]:
    """What `agent` (and with `q.subtree` its live children) collect: `{"agents": {id: plan},
    "unanswered": {id: why}, "omitted": [ids that did not fit this reply: ask for them by name]}`."""
    plans: dict[str, Any] = {}
    unanswered: dict[str, str] = {}
    if q.agents is None or agent.agent_id in q.agents:
        plans[agent.agent_id] = agent.collection.describe()
    if q.subtree:
        asks = []
        for child in _children(agent):
            if q.agents is not None and child.agent_id not in q.agents and child.role in LEAF_ROLES:
                continue     # cannot hold a wanted plan: not asked, so its silence is no gap
            if child.alive:
                asks.append(_ask_plans(agent, child, q, wait, pages))
            elif q.agents is None or child.agent_id in q.agents:
                unanswered[child.agent_id] = _lost(child)
        for answer in await asyncio.gather(*asks):
            plans.update(answer["agents"])
            unanswered.update(answer["unanswered"])
    kept: dict[str, Any] = {}
    omitted: list[str] = []
    size = 0
    for aid, plan in plans.items():
        n = _size(plan) + len(aid)
        if budget is not None and kept and size + n > budget:
            omitted.append(aid)
            continue
        kept[aid] = plan
        size += n
    return {"agents": kept, "unanswered": unanswered, "omitted": omitted}


async def answer_decisions(agent: Any, q: DecisionsQuery) -> dict[str, Any]:
    """The `decisions.query` reply of `agent` (its children get half of the time it was given)."""
    page = await collect_decisions(agent, q, wait=q.reply_within / 2, budget=MAX_EXPORT_BYTES)
    return page.to_body(agent.agent_id)


async def answer_plans(agent: Any, q: TelemetryConfigQuery) -> dict[str, Any]:
    """The `telemetry.config.query` reply of `agent`."""
    return {"agent": agent.agent_id,
            **await collect_plans(agent, q, wait=q.reply_within / 2, budget=MAX_EXPORT_BYTES)}
