"""Devices behind gateways, as the cluster sees them: far-edge nodes whose node agent is another node.

A gateway node agent announces each device (``device.join``) with its MLSysOpsNode description; the
device becomes a node of this cluster's inventory and a child in its membership (under a key no agent
account has, `device_key`), kept alive by the gateway's heartbeats that list it. From there it is a node
like any other: placement sees it (its ``service-slots`` label is its capacity), and its loss (the gateway
reports a last will or missed heartbeats, or the gateway itself is lost) goes through the cluster's
lost-node path (grace, then relocation). An unregister removes the node; what ran there is relocated.
Deploy/remove on a device go to its gateway (``device.command``); what it runs comes back as
``device.status`` and is held here for the placement mechanism's `get_state` (`DevicePlacement`).
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.agent_base import HandlerError
from mlsysops.agents.authorization import norm_jid
from mlsysops.agents.descriptions import DescriptionError, MLSysOpsNode, load_obj
from mlsysops.agents.device_kinds import (
    DeviceCommand,
    DeviceJoin,
    DeviceKind,
    DeviceLeave,
    DeviceStatus,
    device_key,
)
from mlsysops.agents.payloads import Accepted, StatusReport
from mlsysops.agents.protocol import Envelope, Performative, Role


class ClusterDevices:
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.gateways: dict[str, str] = {}                    # device -> its gateway's bare jid
        self.services: dict[str, list[dict[str, Any]]] = {}   # device -> what it last said it runs
        agent.on(DeviceKind.JOIN, self._on_join)
        agent.on(DeviceKind.LEAVE, self._on_leave)
        agent.on(DeviceKind.STATUS, self._on_status, performatives=(Performative.INFORM,))

    def is_device(self, node: str | None) -> bool:
        return node in self.gateways

    def instances(self) -> list[dict[str, Any]]:
        return [{**s, "node": d} for d, services in self.services.items() if d in self.gateways for s in services]

    async def command(self, device: str, op: str, instance_id: str, app: str, component: str) -> None:
        gateway = self.gateways.get(device)
        if gateway is None:
            raise ValueError(f"device {device} has no gateway in cluster {self.agent.cluster_id}")
        await self.agent.request(gateway, DeviceKind.COMMAND,
                                 DeviceCommand(device=device, op=op, instance_id=instance_id, app=app,
                                               component=component), timeout=10.0, retries=0)

    # -- gateway liveness --------------------------------------------------------------------------
    def gateway_heartbeat(self, gateway_jid: str, digest: dict[str, Any]) -> None:
        listed = digest.get("devices")
        for device in listed if isinstance(listed, list) else []:
            if isinstance(device, str) and self.gateways.get(device) == gateway_jid:
                self.agent.children.heard(device_key(device, gateway_jid))

    def gateway_lost(self, gateway_jid: str, gateway: str) -> None:
        for device, gw in self.gateways.items():
            if gw == gateway_jid:
                self.agent.children.declare_lost(device_key(device, gw), f"its gateway {gateway} was lost")

    # -- handlers ----------------------------------------------------------------------------------
    def _gateway(self, env: Envelope, device: str, *, joining: bool = False) -> str:
        gateway = norm_jid(env.sender)
        if self.agent.identity_of(env.sender) is None:
            raise HandlerError(f"{gateway} is not a node of cluster {self.agent.cluster_id}")
        known = self.gateways.get(device)
        if known is not None and known != gateway:
            raise HandlerError(f"device {device} is behind gateway {known}, not {gateway}")
        if known is None and not joining:
            raise HandlerError(f"unknown device {device}: send device.join first")
        return gateway

    async def _on_join(self, env: Envelope) -> dict[str, Any]:
        req = env.payload
        assert isinstance(req, DeviceJoin)
        gateway = self._gateway(env, req.device, joining=True)
        if req.device in self.agent.nodes and req.device not in self.gateways:
            raise HandlerError(f"device {req.device}: a node of that name already exists in {self.agent.cluster_id}")
        try:
            doc = load_obj(req.description, source=f"device.join of {req.device} from {gateway}")
        except DescriptionError as exc:
            raise HandlerError(f"device {req.device}: invalid description: {exc}") from None
        desc = doc.spec
        if not isinstance(desc, MLSysOpsNode) or desc.name != req.device:
            raise HandlerError(f"device {req.device}: expected an MLSysOpsNode named {req.device}")
        if desc.cluster_id not in (None, self.agent.cluster_id):
            raise HandlerError(f"device {req.device}: description.cluster_id {desc.cluster_id!r} is not "
                               f"{self.agent.cluster_id}")
        key = device_key(req.device, gateway)
        new = req.device not in self.gateways
        self.gateways[req.device] = gateway
        if new:
            self.agent.add_node(desc, key)
        else:
            self.agent.nodes[req.device] = desc
        self.agent.children.add_proxied(key, req.device, Role.FAR_EDGE, doc.kubernetes_form)
        return Accepted(detail={"node": req.device}).model_dump()

    async def _on_leave(self, env: Envelope) -> dict[str, Any]:
        req = env.payload
        assert isinstance(req, DeviceLeave)
        gateway = self._gateway(env, req.device)
        if req.lost:
            self.agent.children.declare_lost(device_key(req.device, gateway), req.reason)
            return Accepted().model_dump()
        moving = self.agent.instances.mark_lost(req.device, f"device {req.device} unregistered")
        self.gateways.pop(req.device, None)
        self.services.pop(req.device, None)
        self.agent.forget_node(req.device)
        self.agent.record_event(f"device {req.device} unregistered through {gateway}; {len(moving)} instance(s) "
                                "to relocate", inputs={"instances": moving, "reason": req.reason})
        self.agent.trigger(reason=f"device {req.device} unregistered")
        return Accepted().model_dump()

    async def _on_status(self, env: Envelope) -> None:
        rep = env.payload
        assert isinstance(rep, DeviceStatus)
        try:
            self._gateway(env, rep.device)
        except HandlerError as exc:
            self.agent.log.warning("device.status refused: %s", exc)
            return
        self.services[rep.device] = [{"instance_id": i.instance_id, "app": i.app, "component": i.component,
                                      "state": i.status} for i in rep.instances]
        await self.agent.apply_status(rep.device, StatusReport(source=rep.device, full=True,
                                                               instances=rep.instances))
