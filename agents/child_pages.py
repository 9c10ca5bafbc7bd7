"""Children's descriptions and states, fetched on demand in bounded pages (`children.query`).

A parent with thousands of children cannot carry them in one message (the protocol's limit is 64 KiB, and
a node's description is ~600 B): a cluster registers with its own description and a *count* of nodes,
heartbeats a constant-size summary with a version of its nodes' states, and its parent pages through
`children.query` whenever it needs the descriptions (at join) or the version moved (a node joined or was
lost). Every page stays under :data:`PAGE_BYTES`, whatever the number of children.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlsysops.agents.authorization import FROM_PARENT, register_rule
from mlsysops.agents.protocol import MAX_MESSAGE_BYTES, Performative, register_payload

CHILDREN_QUERY = "children.query"
PAGE_BYTES = MAX_MESSAGE_BYTES // 2       # room for the envelope and JSON escaping on the wire
MAX_PAGES = 10_000                        # a reader's guard against a peer that never ends its listing


class ChildrenQuery(BaseModel):
    """One page of the children, by name order, after `after` (None: from the first)."""

    what: Literal["descriptions", "states"] = "states"
    after: str | None = None


class ChildrenPage(BaseModel):
    items: list[dict[str, Any]] = Field(default_factory=list)
    next: str | None = None      # the `after` of the following page; None: this was the last one
    version: int = 0             # the states' version when this page was built
    total: int = 0


register_payload(CHILDREN_QUERY, Performative.REQUEST, ChildrenQuery)
register_payload(CHILDREN_QUERY, Performative.INFORM, ChildrenPage)
register_rule(CHILDREN_QUERY, FROM_PARENT)


def page(items: Iterable[tuple[str, dict[str, Any]]], after: str | None, *, version: int, total: int,
         limit_bytes: int = PAGE_BYTES) -> ChildrenPage:
    """The items (``(name, item)`` sorted by name) after ``after`` that fit in ``limit_bytes``; at least one,
    so a listing always advances (a single item larger than a page is the sender's error at encode)."""
    out: list[dict[str, Any]] = []
    size, last = 0, None
    for name, item in items:
        if after is not None and name <= after:
            continue
        cost = len(json.dumps(item, separators=(",", ":"), default=str)) + 1
        if out and size + cost > limit_bytes:
            return ChildrenPage(items=out, next=last, version=version, total=total)
        out.append(item)
        size, last = size + cost, name
    return ChildrenPage(items=out, next=None, version=version, total=total)


async def fetch_all(agent: Any, jid: str, what: str, *, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int]:
    """Every page of ``jid``'s children (``what``), and the version of the last page."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    version = 0
    for _ in range(MAX_PAGES):
        reply = await agent.request(jid, CHILDREN_QUERY, ChildrenQuery(what=what, after=after), timeout=timeout)
        body = ChildrenPage.model_validate(reply.body)
        items.extend(body.items)
        version = body.version
        if body.next is None:
            return items, version
        after = body.next
    raise RuntimeError(f"{jid}: more than {MAX_PAGES} pages of {what}")
