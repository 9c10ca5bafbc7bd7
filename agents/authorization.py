"""Who may send what: the sender rule of every message kind, and the names a body may claim.

The rules (one table, :data:`RULES`; checked by ``MLSysOpsAgent`` before any handler runs):

* requests that command an agent (``app.deploy``, ``app.remove``, ``config.update``, ``node.knob``) and queries
  (``decisions.query``, ``telemetry.config.query``) come only from its **parent** (the JID the slice gives
  it: the continuum for a cluster, the cluster for a node);
* reports (``status.report``, ``telemetry.report``, ``plan.propose``) come only from a **registered child**;
* ``register`` and ``heartbeat`` come only from the JIDs **the slice names** as its children (an
  unregistered one's heartbeat is answered "unknown child", so that it registers again);
* ``ping`` is answered to the parent and to the slice's children (liveness checks in both directions);
* ``sim.fault`` and ``app.status`` are not taken from anyone over XMPP (the REST API owns them).

A body naming an identity (``source``, ``node``, ``cluster``, ``agent_id``) must name the sender itself,
as the receiver knows it from the sender's JID: a node cannot report under another node's name.

JIDs compare bare (resources differ between sessions) and case-insensitively, as XMPP does. A kind without a
rule cannot get a handler (``MLSysOpsAgent.on`` raises): a new kind cannot slip in unguarded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mlsysops.agents.protocol import Kind
from mlsysops.agents.slixmpp_lite import JID

NOT_AUTHORIZED = "not authorized"


class Relation(StrEnum):
    """How a sender stands to the receiving agent."""

    PARENT = "parent"
    CHILD = "child"              # registered with this agent
    SLICE_CHILD = "slice_child"  # named by the slice as a child of this agent (registered or not)
    ANYONE = "anyone"            # any sender: an explicit choice, for tests and tools, never a default


@dataclass(frozen=True, slots=True)
class Rule:
    """The relations any one of which lets a sender send a kind (none: nobody may)."""

    name: str
    relations: frozenset[Relation]

    def allows(self, relations: Iterable[Relation]) -> bool:
        return Relation.ANYONE in self.relations or bool(self.relations & set(relations))

    def __str__(self) -> str:
        return self.name


FROM_PARENT = Rule("from_parent", frozenset({Relation.PARENT}))
FROM_CHILDREN = Rule("from_children", frozenset({Relation.CHILD}))
FROM_SLICE = Rule("from_slice", frozenset({Relation.SLICE_CHILD}))
FROM_PARENT_OR_SLICE = Rule("from_parent_or_slice", frozenset({Relation.PARENT, Relation.SLICE_CHILD}))
FROM_ANYONE = Rule("from_anyone", frozenset({Relation.ANYONE}))
FROM_NOBODY = Rule("from_nobody", frozenset())

RULES: dict[str, Rule] = {
    Kind.REGISTER: FROM_SLICE,
    Kind.HEARTBEAT: FROM_SLICE,
    Kind.APP_DEPLOY: FROM_PARENT,
    Kind.APP_REMOVE: FROM_PARENT,
    Kind.APP_STATUS: FROM_NOBODY,
    Kind.APP_ROUTES: FROM_PARENT,
    Kind.PLAN_PROPOSE: FROM_CHILDREN,
    Kind.STATUS_REPORT: FROM_CHILDREN,
    Kind.TELEMETRY_REPORT: FROM_CHILDREN,
    Kind.CONFIG_UPDATE: FROM_PARENT,
    Kind.NODE_KNOB: FROM_PARENT,
    Kind.PING: FROM_PARENT_OR_SLICE,
    Kind.DECISIONS_QUERY: FROM_PARENT,
    Kind.SIM_FAULT: FROM_NOBODY,
}


def register_rule(kind: str | Kind, rule: Rule) -> None:
    """Declare who may send an extension kind (next to its ``register_payload``)."""
    RULES[str(kind)] = rule


def rule_for(kind: str | Kind) -> Rule | None:
    return RULES.get(str(kind))


def norm_jid(jid: str | JID) -> str:
    """The bare JID, lower-cased: how two JIDs of the same account compare."""
    return JID(str(jid)).bare.lower()


def _names(*values: Any) -> list[str]:
    return [v for v in values if isinstance(v, str) and v]


def _items(value: Any) -> list[dict[str, Any]]:
    # the schema has checked the body by now; still, a claim check must never be what crashes
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _status_claims(body: dict[str, Any]) -> list[str]:
    return _names(body.get("source"), *(i.get("node") for i in _items(body.get("instances"))),
                  *(c.get("cluster") for c in _items(body.get("components"))))


CLAIMS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    Kind.REGISTER: lambda b: _names(b.get("agent_id")),
    Kind.STATUS_REPORT: _status_claims,
    Kind.TELEMETRY_REPORT: lambda b: _names(b.get("source"), b.get("node"), b.get("cluster")),
    Kind.PLAN_PROPOSE: lambda b: _names(b.get("node")),
}


def forged_claim(kind: str, body: dict[str, Any], identity: str) -> str | None:
    """The first name in ``body`` that is not ``identity`` (the sender as the receiver knows it)."""
    claims = CLAIMS.get(kind)
    if claims is None:
        return None
    return next((name for name in claims(body) if name != identity), None)


def refusal(sender: str, kind: str, claimed: str | None = None) -> str:
    """The FAILURE reason of a refused message."""
    reason = f"{NOT_AUTHORIZED}: {norm_jid(sender)} may not send {kind}"
    return f"{reason} as {claimed!r}" if claimed is not None else reason
