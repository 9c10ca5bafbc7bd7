"""The mlsysops wire protocol: envelopes, kinds, performatives and payload schemas.

Wire format (one SPADE message per envelope):

* metadata: ``ontology=mlsysops``, ``performative`` (FIPA subset), ``kind``, ``protocol`` (version);
* body: JSON ``{"v": 1, "id": "<hex>", "reply_to": "<hex>"|null, "body": {...}}``.

Payload schemas live in an open registry (:func:`register_payload`) keyed by ``(kind, performative)``;
``performative=None`` registers a model for every performative of that kind that has no exact entry.
A kind is *known* when it is a :class:`Kind` member or has a registered payload. Known kinds without a
model for the given performative carry a free-form dict. FAILURE and REFUSE always carry
:class:`ErrorBody`. Bodies above :data:`MAX_MESSAGE_BYTES` are rejected on both ends: prosody and ejabberd
kill the sender's stream above 256 KiB, and nothing in the control plane should be that large.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from mlsysops.agents.spade_lite import Message

ONTOLOGY = "mlsysops"
PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_DIGEST_BYTES = 8 * 1024

META_ONTOLOGY = "ontology"
META_PERFORMATIVE = "performative"
META_KIND = "kind"
META_PROTOCOL = "protocol"


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
    PLAN_PROPOSE = "plan.propose"
    STATUS_REPORT = "status.report"
    TELEMETRY_REPORT = "telemetry.report"
    CONFIG_UPDATE = "config.update"
    PING = "ping"
    DECISIONS_QUERY = "decisions.query"
    SIM_FAULT = "sim.fault"


def new_id() -> str:
    return uuid.uuid4().hex


class Envelope(BaseModel):
    """One protocol message, transport-independent. ``body`` is the (validated) JSON payload."""

    model_config = ConfigDict(frozen=True)

    kind: str
    performative: Performative
    id: str = Field(default_factory=new_id)
    reply_to: str | None = None
    version: int = PROTOCOL_VERSION
    sender: str = ""
    body: dict[str, Any] = Field(default_factory=dict)
    _payload: BaseModel | None = PrivateAttr(default=None)

    @property
    def payload(self) -> BaseModel | None:
        """The validated payload model instance, when a model is registered for this kind."""
        return self._payload

    def reply(self, performative: Performative, body: dict[str, Any] | None = None) -> Envelope:
        """An envelope answering this one (same kind, ``reply_to`` = this id)."""
        return Envelope(kind=self.kind, performative=performative, reply_to=self.id, body=body or {})

    def failure(self, reason: str) -> Envelope:
        return self.reply(Performative.FAILURE, {"reason": reason})


# ------------------------------------------------------------------------------------------------
# payload registry
# ------------------------------------------------------------------------------------------------
_REGISTRY: dict[tuple[str, Performative | None], type[BaseModel]] = {}


def register_payload(kind: str | Kind, performative: Performative | str | None,
                     model: type[BaseModel]) -> None:
    """Declare the schema of ``kind`` bodies for ``performative`` (None: any performative)."""
    perf = Performative(performative) if performative is not None else None
    _REGISTRY[(str(kind), perf)] = model


_ERROR_PERFORMATIVES = (Performative.FAILURE, Performative.REFUSE)


def payload_model(kind: str, performative: Performative) -> type[BaseModel] | None:
    if performative in _ERROR_PERFORMATIVES:
        return _REGISTRY.get((kind, performative), ErrorBody)
    return _REGISTRY.get((kind, performative)) or _REGISTRY.get((kind, None))


def is_known_kind(kind: str) -> bool:
    return kind in Kind._value2member_map_ or any(k == kind for k, _ in _REGISTRY)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<body>"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def validate_body(kind: str, performative: Performative,
                  body: dict[str, Any]) -> tuple[dict[str, Any], BaseModel | None]:
    """Validate ``body``; return (normalised dict, model instance or None). Raises ProtocolError."""
    if performative not in _ERROR_PERFORMATIVES and not is_known_kind(kind):
        raise ProtocolError(f"unknown kind {kind!r}", kind=kind, performative=performative.value)
    model = payload_model(kind, performative)
    if model is None:
        return body, None
    try:
        inst = model.model_validate(body)
    except ValidationError as exc:
        raise ProtocolError(
            f"invalid body for {kind}/{performative.value}: {_describe_validation(exc)}",
            kind=kind, performative=performative.value,
        ) from None
    return inst.model_dump(mode="json"), inst


# ------------------------------------------------------------------------------------------------
# encoding
# ------------------------------------------------------------------------------------------------
def encode(env: Envelope, to: str, sender: str | None = None) -> Message:
    """Envelope -> SPADE message. Validates the body first so bugs surface at the sender."""
    body, _ = validate_body(env.kind, env.performative, env.body)
    text = json.dumps({"v": env.version, "id": env.id, "reply_to": env.reply_to, "body": body},
                      separators=(",", ":"), default=str)
    size = len(text.encode())
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"message too large: {size} bytes > {MAX_MESSAGE_BYTES} (send a reference, not the data)",
            msg_id=env.id, kind=env.kind, performative=env.performative.value,
        )
    msg = Message(to=to, sender=sender or env.sender or None, body=text)
    msg.set_metadata(META_ONTOLOGY, ONTOLOGY)
    msg.set_metadata(META_PERFORMATIVE, env.performative.value)
    msg.set_metadata(META_KIND, env.kind)
    msg.set_metadata(META_PROTOCOL, str(env.version))
    return msg


def decode(msg: Message) -> Envelope:
    """SPADE message -> validated Envelope, or ProtocolError with a precise reason."""
    sender = str(msg.sender) if msg.sender else None
    kind = msg.get_metadata(META_KIND)
    perf_raw = msg.get_metadata(META_PERFORMATIVE)
    text = msg.body or ""

    # Recover the id early so even a rejected request can be answered.
    msg_id: str | None = None
    reply_to_hint: str | None = None
    data: Any = None
    json_error: str | None = None
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        json_error = f"message too large: {len(text.encode())} bytes > {MAX_MESSAGE_BYTES}"
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

    if msg.get_metadata(META_ONTOLOGY) != ONTOLOGY:
        raise fail(f"wrong ontology {msg.get_metadata(META_ONTOLOGY)!r}, expected {ONTOLOGY!r}")
    version = msg.get_metadata(META_PROTOCOL)
    if version != str(PROTOCOL_VERSION):
        raise fail(f"unsupported protocol version {version!r}, expected {PROTOCOL_VERSION}")
    if not kind:
        raise fail("missing kind")
    try:
        performative = Performative(perf_raw)
    except ValueError:
        raise fail(f"unknown performative {perf_raw!r}") from None
    if performative not in _ERROR_PERFORMATIVES and not is_known_kind(kind):
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
    try:
        body, inst = validate_body(kind, performative, payload)
    except ProtocolError as exc:
        raise fail(exc.reason) from None
    env = Envelope(kind=kind, performative=performative, id=msg_id, reply_to=reply_to,
                   version=PROTOCOL_VERSION, sender=sender or "", body=body)
    env._payload = inst
    return env


# ------------------------------------------------------------------------------------------------
# built-in payloads
# ------------------------------------------------------------------------------------------------
class Role(StrEnum):
    CONTINUUM = "continuum"
    CLUSTER = "cluster"
    NODE = "node"
    FAR_EDGE = "far_edge"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Body of FAILURE and REFUSE (any kind)."""

    reason: str
    detail: dict[str, Any] | None = None


class RegisterRequest(_Payload):
    role: Role
    agent_id: str = Field(min_length=1, max_length=256)
    description: dict[str, Any] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)


class MembershipSettings(BaseModel):
    """What a parent tells its child; extra fields allowed so layers can add their own."""

    model_config = ConfigDict(extra="allow")

    heartbeat_interval: float = Field(gt=0)
    liveness_misses: int = Field(ge=1)


class RegisterReply(_Payload):
    accepted: bool
    reason: str | None = None
    settings: MembershipSettings | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def _check_small(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), default=str).encode())
    if size > MAX_DIGEST_BYTES:
        raise ValueError(f"digest too large: {size} bytes > {MAX_DIGEST_BYTES}")
    return value


class Heartbeat(_Payload):
    seq: int = Field(ge=0)
    digest: dict[str, Any] = Field(default_factory=dict)

    @field_validator("digest")
    @classmethod
    def _digest_is_small(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_small(value)


class HeartbeatAck(_Payload):
    seq: int = Field(ge=0)


class Ping(_Payload):
    sent_at: float


class Pong(_Payload):
    sent_at: float
    received_at: float


register_payload(Kind.REGISTER, Performative.REQUEST, RegisterRequest)
register_payload(Kind.REGISTER, Performative.INFORM, RegisterReply)
register_payload(Kind.HEARTBEAT, Performative.REQUEST, Heartbeat)
register_payload(Kind.HEARTBEAT, Performative.INFORM, HeartbeatAck)
register_payload(Kind.PING, Performative.REQUEST, Ping)
register_payload(Kind.PING, Performative.INFORM, Pong)
