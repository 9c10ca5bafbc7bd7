"""The node agent's side of being a gateway: devices (`DeviceGateway`, MQTT) relayed to the cluster.

Each device event goes up at once (``device.join`` / ``device.leave`` / ``device.status``,
`agents/device_kinds.py`); after every (re)registration with the cluster all live devices are joined again
(idempotent), so a restarted cluster re-learns them. The cluster's ``device.command`` runs on the device
and is answered with its reply. Every relayed event is also a decision-log event of the node agent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlsysops.agents.agent_base import HandlerError, RequestError
from mlsysops.agents.device_kinds import DeviceCommand, DeviceJoin, DeviceKind, DeviceLeave, DeviceStatus
from mlsysops.agents.payloads import Accepted, InstanceReport
from mlsysops.node.device_gateway import DeviceCommandError, DeviceGateway, DeviceRecord, device_description

CONNECT_WAIT = 10.0   # seconds a starting node agent waits for its gateway's broker


class GatewayLink:
    def __init__(self, agent: Any, gateway: DeviceGateway) -> None:
        self.agent = agent
        self.gateway = gateway
        gateway.on_change(self._changed)
        agent.on(DeviceKind.COMMAND, self._on_command)
        agent.membership.on_registered(self._rejoin)

    async def start(self) -> None:
        """Start the gateway and wait (at most `CONNECT_WAIT` s) until it is subscribed at its broker. An
        unreachable broker does not hold the node agent back: the gateway keeps retrying on its own."""
        await self.gateway.start()
        try:
            await asyncio.wait_for(self.gateway.connected.wait(), CONNECT_WAIT)
        except TimeoutError:
            self.agent.log.warning("device gateway: broker %s:%d not reached within %gs; retrying in the "
                                   "background", self.gateway.host, self.gateway.port, CONNECT_WAIT)

    async def stop(self) -> None:
        self.gateway.off_change(self._changed)   # the gateway may outlive this agent (`mlsysops up` restarts it)
        await self.gateway.stop()

    async def _send(self, kind: str, body: Any) -> None:
        if not self.agent.membership.connected:
            return   # joined again at the next registration (_rejoin)
        try:
            await self.agent.request(self.agent.parent, kind, body, timeout=5.0)
        except RequestError as exc:
            self.agent.log.warning("%s to %s failed: %s", kind, self.agent.parent, exc)

    async def _join(self, rec: DeviceRecord) -> None:
        desc = device_description(self.agent.node, self.agent.description.cluster_id, rec)
        await self._send(DeviceKind.JOIN, DeviceJoin(device=rec.name, description=desc))
        await self._status(rec)

    async def _status(self, rec: DeviceRecord) -> None:
        if not self.agent.membership.connected:
            return
        instances = [InstanceReport(instance_id=s["instance_id"], app=s["app"], component=s["component"],
                                    node=rec.name, status=s["state"]) for s in rec.services]
        await self.agent.inform(self.agent.parent, DeviceKind.STATUS, DeviceStatus(device=rec.name,
                                                                                   instances=instances))

    async def _rejoin(self, _reply: Any) -> None:
        for name in self.gateway.alive():
            await self._join(self.gateway.devices[name])

    async def _changed(self, event: str, device: str, rec: DeviceRecord) -> None:
        self.agent.record_event(f"device {device} {event}" + (f": {rec.lost_reason}" if rec.lost_reason else ""),
                                inputs={"device": device, "event": event, "services": rec.services})
        if event == "joined":
            await self._join(rec)
        elif event == "services":
            await self._status(rec)
        elif event in ("lost", "left"):
            await self._send(DeviceKind.LEAVE, DeviceLeave(device=device, reason=rec.lost_reason or event,
                                                           lost=event == "lost"))

    async def _on_command(self, env: Any) -> dict[str, Any]:
        cmd = env.payload
        assert isinstance(cmd, DeviceCommand)
        try:
            if cmd.op == "deploy":
                await self.gateway.deploy(cmd.device, cmd.instance_id, cmd.app or "?", cmd.component or "?")
            else:
                await self.gateway.remove(cmd.device, cmd.instance_id)
        except DeviceCommandError as exc:
            raise HandlerError(str(exc)) from None
        return Accepted(detail={"device": cmd.device}).model_dump()
