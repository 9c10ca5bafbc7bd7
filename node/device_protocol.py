"""The device protocol (v1): how a microcontroller-class device talks to the node agent that is its gateway.

Transport: MQTT 3.1.1 over a broker the gateway and its devices share (mosquitto in the tests). Every topic
is ``mlsysops/v1/<gateway>/<device>/<message>``; ``<gateway>`` is the gateway's node name, ``<device>`` the
device's name (``[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?``, like a Kubernetes node name). Payloads are JSON
objects with ``"v": 1``; unknown fields are refused, so a typo is an error, not a silent default.

Device -> gateway:

* ``announce`` (QoS 1): ``{"v": 1, "firmware": "embserve-0.4", "sensors": [{"type": "temperature",
  "model": "ds18b20"}], "slots": 2, "freq_hz": [32e6, 64e6], "labels": ["site:farm"],
  "heartbeat_s": 1.0}`` -- joins (or re-joins, replacing what the gateway knew). ``sensors[].type`` is one of
  the node description's sensor kinds; ``slots`` is how many services the device can run at once.
* ``heartbeat`` (QoS 0): ``{"v": 1, "seq": 7, "services": [{"instance_id": "a.c.1", "app": "a",
  "component": "c", "state": "running"}]}`` -- every ``heartbeat_s``; states: starting, running, failed.
* ``status``: the device's MQTT *last will*, registered at connect: ``{"v": 1, "state": "offline"}``. The
  broker publishes it when the device's connection dies without a clean disconnect.
* ``unregister`` (QoS 1): ``{"v": 1}`` -- leaves for good (its services stop).
* ``reply`` (QoS 1): ``{"v": 1, "id": "<command id>", "ok": true}`` or ``{..., "ok": false, "error": "..."}``.

Gateway -> device:

* ``cmd`` (QoS 1): ``{"v": 1, "id": "<hex>", "op": "deploy", "instance_id": "...", "app": "...",
  "component": "..."}`` or ``{"v": 1, "id": "<hex>", "op": "remove", "instance_id": "..."}``. Commands are
  idempotent on the device (a deploy of a running instance id, a remove of an unknown one: ``ok``).

Accounts: on a broker that authenticates (the embedded one does by default), a device logs in as its own
name and may read and write only ``mlsysops/v1/<gateway>/<device>/#``; a gateway logs in as ``gw.<node>`` and
may use ``mlsysops/v1/<node>/#`` (`gateway_user`, `account_topics`). What a client publishes elsewhere the broker drops, so a
device cannot speak for another one.

A device is lost when its last will arrives or after ``liveness_misses`` (3) heartbeat intervals without a
heartbeat; one lost for silence that heartbeats again is back without a new announce, one lost by its last will
announces again when it reconnects. Anything that does not validate is a :class:`DeviceMessageError` naming the topic and the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

VERSION = 1
ROOT = f"mlsysops/v{VERSION}"
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SENSOR_KINDS = ("camera", "temperature", "accelerometer", "humidity", "sound", "co2", "barometer", "air_quality")
DEVICE_MESSAGES = ("announce", "heartbeat", "status", "unregister", "reply")
MAX_PAYLOAD = 8192   # a microcontroller's message; anything bigger is garbage


class DeviceMessageError(ValueError):
    """A device message that does not follow the protocol: ``field`` is where, ``reason`` what."""

    def __init__(self, device: str, message: str, field: str, reason: str) -> None:
        super().__init__(f"device {device} {message}: {field}: {reason}")
        self.device, self.message, self.field, self.reason = device, message, field, reason


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1]


class Sensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["camera", "temperature", "accelerometer", "humidity", "sound", "co2", "barometer",
                  "air_quality"]
    model: str | None = Field(None, max_length=64)


class Announce(_Msg):
    firmware: str = Field(min_length=1, max_length=64)
    sensors: list[Sensor] = Field(default_factory=list, max_length=16)
    slots: int = Field(ge=0, le=64)
    freq_hz: list[float] = Field(default_factory=list, max_length=16)
    labels: list[str] = Field(default_factory=list, max_length=32)
    heartbeat_s: float = Field(1.0, gt=0, le=300)


class Service(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance_id: str = Field(min_length=1, max_length=128)
    app: str = Field(min_length=1, max_length=128)
    component: str = Field(min_length=1, max_length=128)
    state: Literal["starting", "running", "failed"]


class Heartbeat(_Msg):
    seq: int = Field(ge=0)
    services: list[Service] = Field(default_factory=list, max_length=64)


class Status(_Msg):
    state: Literal["online", "offline"]


class Unregister(_Msg):
    pass


class Reply(_Msg):
    id: str = Field(min_length=1, max_length=64)
    ok: bool
    error: str | None = Field(None, max_length=512)


class Command(_Msg):
    id: str = Field(min_length=1, max_length=64)
    op: Literal["deploy", "remove"]
    instance_id: str = Field(min_length=1, max_length=128)
    app: str | None = None
    component: str | None = None


MODELS: dict[str, type[_Msg]] = {"announce": Announce, "heartbeat": Heartbeat, "status": Status,
                                 "unregister": Unregister, "reply": Reply}


def topic(gateway: str, device: str, message: str) -> str:
    return f"{ROOT}/{gateway}/{device}/{message}"


def gateway_user(gateway: str) -> str:
    """The gateway's broker account (a dot: no device name can take it)."""
    return f"gw.{gateway}"


def account_topics(gateway: str, device: str | None = None) -> str:
    """The topic filter a gateway (`device` None) or one of its devices may use on the broker."""
    return f"{ROOT}/{gateway}/#" if device is None else f"{ROOT}/{gateway}/{device}/#"


def subscription(gateway: str) -> str:
    """What the gateway subscribes to: every device message addressed to it."""
    return f"{ROOT}/{gateway}/+/+"


def parse_topic(gateway: str, value: str) -> tuple[str, str]:
    """``(device, message)`` of a topic under ``gateway``; raises DeviceMessageError."""
    parts = value.split("/")
    device = parts[3] if len(parts) == 5 else "?"
    if len(parts) != 5 or "/".join(parts[:3]) != f"{ROOT}/{gateway}":
        raise DeviceMessageError(device, "?", "topic", f"expected {ROOT}/{gateway}/<device>/<message>, got {value}")
    if not NAME.match(device):
        raise DeviceMessageError(device, parts[4], "topic", f"device name {device!r} is not a valid node name")
    if parts[4] not in DEVICE_MESSAGES and parts[4] != "cmd":
        raise DeviceMessageError(device, parts[4], "topic", f"unknown message {parts[4]!r}; expected one of "
                                 f"{list(DEVICE_MESSAGES)}")
    return device, parts[4]


def decode(device: str, message: str, payload: bytes) -> _Msg:
    """Validate one device message (JSON object, version, schema); raises DeviceMessageError."""
    if len(payload) > MAX_PAYLOAD:
        raise DeviceMessageError(device, message, "<payload>", f"{len(payload)} bytes, more than {MAX_PAYLOAD}")
    try:
        body: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeviceMessageError(device, message, "<payload>", f"not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise DeviceMessageError(device, message, "<payload>", f"expected a JSON object, got {type(body).__name__}")
    if body.get("v") != VERSION:
        raise DeviceMessageError(device, message, "v", f"expected protocol version {VERSION}, got {body.get('v')!r}")
    try:
        return MODELS[message].model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DeviceMessageError(device, message, ".".join(str(p) for p in err["loc"]) or "<payload>",
                                 err["msg"]) from None


def encode(msg: BaseModel) -> bytes:
    return json.dumps(msg.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode()
