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

The frame itself (constants, kinds, performatives, the JSON body and its checks) is in
:mod:`mlsysops.agents.wire`, which needs nothing but the standard library: the far-edge agent speaks the
same bytes without pydantic or SPADE.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from mlsysops.agents.spade_lite import Message

# The frame (constants, kinds, performatives, JSON body) is dependency-free: the far-edge agent uses it too.
from mlsysops.agents.wire import (  # noqa: F401 - re-exported: this module is where callers import them from
    ERROR_PERFORMATIVES,
    MAX_DIGEST_BYTES,
    MAX_MESSAGE_BYTES,
    META_KIND,
    META_ONTOLOGY,
    META_PERFORMATIVE,
    META_PROTOCOL,
    ONTOLOGY,
    PROTOCOL_VERSION,
    Kind,
    Performative,
    ProtocolError,
    Role,
    decode_frame,
    encode_text,
    metadata,
    new_id,
)


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


_ERROR_PERFORMATIVES = ERROR_PERFORMATIVES


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
    text = encode_text(env.id, env.reply_to, body, version=env.version, kind=env.kind,
                       performative=env.performative.value)
    msg = Message(to=to, sender=sender or env.sender or None, body=text)
    for key, value in metadata(env.kind, env.performative, env.version).items():
        msg.set_metadata(key, value)
    return msg


def decode(msg: Message) -> Envelope:
    """SPADE message -> validated Envelope, or ProtocolError with a precise reason."""
    sender = str(msg.sender) if msg.sender else None
    meta = {key: msg.get_metadata(key) for key in (META_ONTOLOGY, META_PERFORMATIVE, META_KIND, META_PROTOCOL)}
    frame = decode_frame(meta, msg.body, sender, is_known_kind)
    try:
        body, inst = validate_body(frame.kind, frame.performative, frame.body)
    except ProtocolError as exc:
        raise ProtocolError(exc.reason, msg_id=frame.id, sender=sender, kind=frame.kind,
                            performative=meta[META_PERFORMATIVE], reply_to=frame.reply_to) from None
    env = Envelope(kind=frame.kind, performative=frame.performative, id=frame.id, reply_to=frame.reply_to,
                   version=PROTOCOL_VERSION, sender=sender or "", body=body)
    env._payload = inst
    return env


# ------------------------------------------------------------------------------------------------
# built-in payloads
# ------------------------------------------------------------------------------------------------
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
    interval: float | None = Field(default=None, gt=0)   # a new heartbeat interval for the child to follow


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
