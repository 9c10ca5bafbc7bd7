"""Wire format, payload registry and validation errors of mlsysops.agents.protocol (no server needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel
from spade.message import Message

from mlsysops.agents import protocol
from mlsysops.agents.protocol import (
    MAX_MESSAGE_BYTES,
    ONTOLOGY,
    PROTOCOL_VERSION,
    Envelope,
    Heartbeat,
    Kind,
    Performative,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    decode,
    encode,
    register_payload,
)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[Any, Any]:
    """A private copy of the payload registry (other modules register strict schemas globally)."""
    copy = {k: v for k, v in protocol._REGISTRY.items()
            if k[0] in (Kind.REGISTER, Kind.HEARTBEAT, Kind.PING)}
    monkeypatch.setattr(protocol, "_REGISTRY", copy)
    return copy


def raw(body: str, *, kind: str = "ping", performative: str = "request", ontology: str = ONTOLOGY,
        version: str = str(PROTOCOL_VERSION)) -> Message:
    msg = Message(to="b@localhost", sender="a@localhost/res", body=body)
    msg.set_metadata("ontology", ontology)
    msg.set_metadata("performative", performative)
    msg.set_metadata("kind", kind)
    msg.set_metadata("protocol", version)
    return msg


def test_encode_sets_metadata_and_json_body() -> None:
    body = {"seq": 3, "digest": {"c": 1}}
    env = Envelope(kind=Kind.HEARTBEAT, performative=Performative.REQUEST, body=body)
    msg = encode(env, to="p@localhost", sender="c@localhost")
    assert msg.get_metadata("ontology") == "mlsysops"
    assert msg.get_metadata("performative") == "request"
    assert msg.get_metadata("kind") == "heartbeat"
    assert msg.get_metadata("protocol") == "1"
    assert json.loads(msg.body) == {"v": 1, "id": env.id, "reply_to": None, "body": body}


def test_round_trip_validates_and_exposes_payload() -> None:
    env = Envelope(kind=Kind.REGISTER, performative=Performative.REQUEST,
                   body={"role": "node", "agent_id": "n1", "description": {"cpu": 4}})
    back = decode(encode(env, to="p@localhost", sender="n1@localhost/r1"))
    assert back.id == env.id and back.kind == "register" and back.performative is Performative.REQUEST
    assert back.sender == "n1@localhost/r1"
    assert isinstance(back.payload, RegisterRequest)
    assert back.body["capabilities"] == []  # defaults filled in by the schema


def test_reply_references_request() -> None:
    req = Envelope(kind="ping", performative=Performative.REQUEST, body={"sent_at": 1.0})
    rep = req.reply(Performative.INFORM, {"sent_at": 1.0, "received_at": 2.0})
    back = decode(encode(rep, to="a@localhost", sender="b@localhost"))
    assert back.reply_to == req.id and back.id != req.id


def test_invalid_json_keeps_sender_and_reason() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(raw("{not json"))
    assert err.value.reason.startswith("invalid JSON body")
    assert err.value.sender == "a@localhost/res"
    assert err.value.msg_id is None


def test_unknown_kind_is_rejected_with_id() -> None:
    with pytest.raises(ProtocolError) as err:
        decode(raw(json.dumps({"v": 1, "id": "abc", "reply_to": None, "body": {}}), kind="bogus.kind"))
    assert err.value.reason == "unknown kind 'bogus.kind'"
    assert err.value.msg_id == "abc"


def test_schema_violation_names_the_field() -> None:
    body = {"v": 1, "id": "x1", "reply_to": None, "body": {"role": "toaster", "agent_id": "n"}}
    with pytest.raises(ProtocolError) as err:
        decode(raw(json.dumps(body), kind="register"))
    assert "invalid body for register/request" in err.value.reason
    assert "role" in err.value.reason
    assert err.value.msg_id == "x1"


def test_extra_fields_are_rejected() -> None:
    body = {"v": 1, "id": "x1", "reply_to": None, "body": {"seq": 1, "surprise": True}}
    with pytest.raises(ProtocolError, match="surprise"):
        decode(raw(json.dumps(body), kind="heartbeat"))


@pytest.mark.parametrize(
    ("kwargs", "body", "fragment"),
    [
        ({"ontology": "other"}, '{"v":1,"id":"a","body":{}}', "wrong ontology"),
        ({"version": "2"}, '{"v":1,"id":"a","body":{}}', "unsupported protocol version"),
        ({"performative": "shout"}, '{"v":1,"id":"a","body":{}}', "unknown performative"),
        ({}, '[1, 2]', "must be a JSON object"),
        ({}, '{"v":1,"body":{}}', "missing or invalid 'id'"),
        ({}, '{"v":2,"id":"a","body":{}}', "unsupported body version"),
        ({}, '{"v":1,"id":"a","body":[]}', "'body' must be a JSON object"),
    ],
)
def test_envelope_errors(kwargs: dict[str, str], body: str, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        decode(raw(body, **kwargs))


def test_oversized_messages_rejected_on_both_ends(registry: dict[Any, Any]) -> None:
    big = {"seq": 1, "digest": {}}
    env = Envelope(kind="status.report", performative=Performative.INFORM,
                   body={"blob": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(ProtocolError, match="message too large"):
        encode(env, to="p@localhost")
    with pytest.raises(ProtocolError, match="message too large"):
        decode(raw(json.dumps({"v": 1, "id": "a", "body": {"b": "x" * MAX_MESSAGE_BYTES}}),
                   kind="status.report", performative="inform"))
    # heartbeat digests have their own, smaller limit
    big["digest"] = {"k": "y" * 9000}
    with pytest.raises(ProtocolError, match="digest too large"):
        encode(Envelope(kind="heartbeat", performative=Performative.REQUEST, body=big), to="p@localhost")


def test_encode_validates_outgoing_body() -> None:
    env = Envelope(kind="register", performative=Performative.REQUEST, body={"role": "node"})
    with pytest.raises(ProtocolError, match="agent_id"):
        encode(env, to="p@localhost")


def test_failure_body_is_checked_and_allowed_for_unknown_kinds() -> None:
    fail = Envelope(kind="never.registered", performative=Performative.FAILURE, reply_to="r",
                    body={"reason": "unknown kind"})
    back = decode(encode(fail, to="a@localhost", sender="b@localhost"))
    assert back.body["reason"] == "unknown kind"
    with pytest.raises(ProtocolError, match="reason"):
        encode(Envelope(kind="ping", performative=Performative.FAILURE, body={}), to="a@localhost")


def test_registry_is_open_for_new_kinds(registry: dict[Any, Any]) -> None:
    class Scale(BaseModel):
        replicas: int

    with pytest.raises(ProtocolError, match="unknown kind"):
        encode(Envelope(kind="test.scale", performative=Performative.REQUEST, body={"replicas": 2}), to="x@y")
    register_payload("test.scale", None, Scale)
    ok = decode(encode(Envelope(kind="test.scale", performative=Performative.REQUEST, body={"replicas": "2"}),
                       to="x@localhost", sender="a@localhost"))
    assert ok.body == {"replicas": 2} and isinstance(ok.payload, Scale)
    with pytest.raises(ProtocolError, match="replicas"):
        encode(Envelope(kind="test.scale", performative=Performative.INFORM, body={"replicas": "many"}),
               to="x@y")


def test_known_kind_without_model_carries_free_dict(registry: dict[Any, Any]) -> None:
    env = Envelope(kind=Kind.APP_DEPLOY, performative=Performative.REQUEST, body={"anything": [1, 2]})
    back = decode(encode(env, to="c@localhost", sender="k@localhost"))
    assert back.body == {"anything": [1, 2]} and back.payload is None


def test_register_reply_settings_allow_layer_extras() -> None:
    reply = RegisterReply.model_validate(
        {"accepted": True,
         "settings": {"heartbeat_interval": 0.2, "liveness_misses": 3, "telemetry_period": 5}})
    assert reply.settings is not None and reply.settings.model_dump()["telemetry_period"] == 5
    with pytest.raises(ValueError):
        RegisterReply.model_validate(
            {"accepted": True, "settings": {"heartbeat_interval": 0, "liveness_misses": 3}})
    assert Heartbeat(seq=0).digest == {}
