"""The mlsysops wire format, with no dependency beyond the standard library.

One XMPP message per envelope:

* metadata (SPADE's XEP-0004 form titled ``spade:x:metadata``): ``ontology=mlsysops``, ``performative``
  (FIPA subset), ``kind``, ``protocol`` (version);
* body: JSON ``{"v": 1, "id": "<hex>", "reply_to": "<hex>"|null, "body": {...}}``.

`protocol` (pydantic payload schemas, SPADE messages) and the far-edge agent (slixmpp only) both build on
this module, so the two speak the same bytes without the far edge importing pydantic or SPADE. What is
checked here is the frame; whether a body fits its kind's schema is `protocol.validate_body`'s business.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ONTOLOGY = "mlsysops"
PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_DIGEST_BYTES = 8 * 1024

META_ONTOLOGY = "ontology"
META_PERFORMATIVE = "performative"
META_KIND = "kind"
META_PROTOCOL = "protocol"

SPADE_X_METADATA = "spade:x:metadata"   # the title of the data form that carries the metadata
XDATA_NS = "jabber:x:data"


class ProtocolError(Exception):
    """A message violates the protocol. ``reason`` is precise enough to send back to the peer.

    ``msg_id``/``sender``/``kind`` are filled when they could be recovered, so the receiver can still
    answer with a FAILURE that references the offending request.
    """

    def __init__(self, reason: str, *, msg_id: str | None = None, sender: str | None = None,
                 kind: str | None = None, performative: str | None = None,
                 reply_to: str | None = None) -> None:
        super().__init__(reason)
        self.reply_to = reply_to
        self.reason = reason
        self.msg_id = msg_id
        self.sender = sender
        self.kind = kind
        self.performative = performative


class Performative(StrEnum):
    REQUEST = "request"
    AGREE = "agree"
    REFUSE = "refuse"
    INFORM = "inform"
    FAILURE = "failure"
    SUBSCRIBE = "subscribe"
    CANCEL = "cancel"


class Kind(StrEnum):
    REGISTER = "register"
    HEARTBEAT = "heartbeat"
    APP_DEPLOY = "app.deploy"
    APP_REMOVE = "app.remove"
    APP_STATUS = "app.status"
    APP_ROUTES = "app.routes"
    PLAN_PROPOSE = "plan.propose"
    STATUS_REPORT = "status.report"
    TELEMETRY_REPORT = "telemetry.report"
    CONFIG_UPDATE = "config.update"
    NODE_KNOB = "node.knob"
    PING = "ping"
    DECISIONS_QUERY = "decisions.query"
    SIM_FAULT = "sim.fault"


class Role(StrEnum):
    CONTINUUM = "continuum"
    CLUSTER = "cluster"
    NODE = "node"
    FAR_EDGE = "far_edge"


ERROR_PERFORMATIVES = (Performative.FAILURE, Performative.REFUSE)
REPLY_PERFORMATIVES = frozenset({Performative.INFORM, Performative.FAILURE, Performative.REFUSE,
                                 Performative.AGREE})


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded message before its body is checked against a schema."""

    kind: str
    performative: Performative
    id: str
    reply_to: str | None
    body: dict[str, Any] = field(default_factory=dict)
    sender: str = ""
    version: int = PROTOCOL_VERSION

    def error(self, reason: str) -> ProtocolError:
        """A ProtocolError carrying what this frame recovered (so the FAILURE can reference it)."""
        return ProtocolError(reason, msg_id=self.id, sender=self.sender or None, kind=self.kind,
                             performative=self.performative.value, reply_to=self.reply_to)


def metadata(kind: str, performative: Performative | str, version: int = PROTOCOL_VERSION) -> dict[str, str]:
    return {META_ONTOLOGY: ONTOLOGY, META_PERFORMATIVE: str(performative), META_KIND: str(kind),
            META_PROTOCOL: str(version)}


def encode_text(msg_id: str, reply_to: str | None, body: dict[str, Any], *, version: int = PROTOCOL_VERSION,
                kind: str = "", performative: str = "") -> str:
    """The JSON body of one message; ProtocolError when it would exceed :data:`MAX_MESSAGE_BYTES`."""
    text = json.dumps({"v": version, "id": msg_id, "reply_to": reply_to, "body": body},
                      separators=(",", ":"), default=str)
    size = len(text.encode())
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"message too large: {size} bytes > {MAX_MESSAGE_BYTES} (send a reference, not the data)",
            msg_id=msg_id, kind=kind or None, performative=performative or None,
        )
    return text


def decode_frame(meta: Mapping[str, str | None], text: str | None, sender: str | None,
                 known_kind: Callable[[str], bool]) -> Frame:
    """Metadata + JSON text -> Frame, or ProtocolError with a precise reason (and what could be recovered)."""
    kind = meta.get(META_KIND)
    perf_raw = meta.get(META_PERFORMATIVE)
    text = text or ""

    # Recover the id early so even a rejected request can be answered.
    msg_id: str | None = None
    reply_to_hint: str | None = None
    data: Any = None
    json_error: str | None = None
    size = len(text.encode())
    if size > MAX_MESSAGE_BYTES:
        json_error = f"message too large: {size} bytes > {MAX_MESSAGE_BYTES}"
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            json_error = f"invalid JSON body: {exc.msg} at position {exc.pos}"
    if isinstance(data, dict):
        if isinstance(data.get("id"), str):
            msg_id = data["id"]
        if isinstance(data.get("reply_to"), str):
            reply_to_hint = data["reply_to"]

    def fail(reason: str) -> ProtocolError:
        return ProtocolError(reason, msg_id=msg_id, sender=sender, kind=kind, performative=perf_raw,
                             reply_to=reply_to_hint)

    if meta.get(META_ONTOLOGY) != ONTOLOGY:
        raise fail(f"wrong ontology {meta.get(META_ONTOLOGY)!r}, expected {ONTOLOGY!r}")
    version = meta.get(META_PROTOCOL)
    if version != str(PROTOCOL_VERSION):
        raise fail(f"unsupported protocol version {version!r}, expected {PROTOCOL_VERSION}")
    if not kind:
        raise fail("missing kind")
    try:
        performative = Performative(perf_raw)
    except ValueError:
        raise fail(f"unknown performative {perf_raw!r}") from None
    if performative not in ERROR_PERFORMATIVES and not known_kind(kind):
        raise fail(f"unknown kind {kind!r}")
    if json_error is not None:
        raise fail(json_error)
    if not isinstance(data, dict):
        raise fail(f"body must be a JSON object, got {type(data).__name__}")
    if data.get("v") != PROTOCOL_VERSION:
        raise fail(f"unsupported body version {data.get('v')!r}, expected {PROTOCOL_VERSION}")
    if msg_id is None or not msg_id:
        raise fail("missing or invalid 'id'")
    reply_to = data.get("reply_to")
    if reply_to is not None and not isinstance(reply_to, str):
        raise fail("'reply_to' must be a string or null")
    payload = data.get("body", {})
    if not isinstance(payload, dict):
        raise fail(f"'body' must be a JSON object, got {type(payload).__name__}")
    return Frame(kind=kind, performative=performative, id=msg_id, reply_to=reply_to, body=payload,
                 sender=sender or "")


def digest_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())
