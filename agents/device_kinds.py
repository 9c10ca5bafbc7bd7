"""Protocol kinds between a gateway node agent and its cluster, for devices that cannot run an agent.

A node agent that is a gateway (see `node/device_gateway.py` for the device side) speaks for its devices:

* ``device.join`` (request, gateway -> cluster): ``{"device", "description"}``, the device as an MLSysOpsNode
  (layer far_edge, its sensors, labels ``gateway:<node>`` and ``service-slots:<n>``). Sent again after the
  gateway re-registers; idempotent.
* ``device.leave`` (request, gateway -> cluster): ``{"device", "reason", "lost"}``; ``lost`` true is a loss
  (last will, missed heartbeats: the cluster's lost-node path), false an unregister (the node is removed).
* ``device.status`` (inform, gateway -> cluster): ``{"device", "instances"}``, what the device runs.
* ``device.command`` (request, cluster -> gateway): ``{"device", "op": "deploy"|"remove", "instance_id",
  "app", "component"}``, answered once the device replied.

The gateway's heartbeat digest lists its live devices (``devices``): that is what keeps them alive at the
cluster, so a lost gateway loses its devices by the ordinary missed-heartbeat rule.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlsysops.agents.authorization import FROM_CHILDREN, FROM_PARENT, register_rule
from mlsysops.agents.payloads import Accepted, InstanceReport
from mlsysops.agents.protocol import Performative, register_payload

DEVICE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class DeviceKind(StrEnum):
    JOIN = "device.join"
    LEAVE = "device.leave"
    STATUS = "device.status"
    COMMAND = "device.command"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceJoin(_Body):
    device: str = Field(pattern=DEVICE_NAME)
    description: dict[str, Any]


class DeviceLeave(_Body):
    device: str = Field(pattern=DEVICE_NAME)
    reason: str = Field(min_length=1, max_length=512)
    lost: bool


class DeviceStatus(_Body):
    device: str = Field(pattern=DEVICE_NAME)
    instances: list[InstanceReport] = Field(default_factory=list, max_length=64)


class DeviceCommand(_Body):
    device: str = Field(pattern=DEVICE_NAME)
    op: Literal["deploy", "remove"]
    instance_id: str = Field(min_length=1, max_length=128)
    app: str | None = None
    component: str | None = None


def device_key(device: str, gateway_jid: str) -> str:
    """The membership key of a device: a bare-JID-shaped name no agent account has (``+via+``)."""
    local, _, domain = gateway_jid.partition("@")
    return f"{device}+via+{local}@{domain}".lower()


for _kind, _model in ((DeviceKind.JOIN, DeviceJoin), (DeviceKind.LEAVE, DeviceLeave),
                      (DeviceKind.COMMAND, DeviceCommand)):
    register_payload(_kind, Performative.REQUEST, _model)
    register_payload(_kind, Performative.INFORM, Accepted)
register_payload(DeviceKind.STATUS, Performative.INFORM, DeviceStatus)
register_rule(DeviceKind.JOIN, FROM_CHILDREN)
register_rule(DeviceKind.LEAVE, FROM_CHILDREN)
register_rule(DeviceKind.STATUS, FROM_CHILDREN)
register_rule(DeviceKind.COMMAND, FROM_PARENT)
