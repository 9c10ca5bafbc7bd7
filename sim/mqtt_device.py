"""A simulated microcontroller (an embServe-like runtime) as a real MQTT endpoint on a real broker.

It speaks the device protocol v1 (specified in `mlsysops.node.device_protocol`; written again here from the
spec, since the simulator imports no agent code): announce on connect, a heartbeat every
``heartbeat_s`` listing its services, the ``status: offline`` last will, ``unregister`` on a clean leave, and
it runs ``deploy``/``remove`` commands within its service slots. ``kill()`` drops the TCP connection without
a DISCONNECT, so the broker publishes the last will, as when a board loses power.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import aiomqtt

log = logging.getLogger(__name__)
ROOT = "mlsysops/v1"


class SimMqttDevice:
    def __init__(self, name: str, gateway: str, *, host: str = "127.0.0.1", port: int = 1883, slots: int = 1,
                 sensors: list[dict[str, Any]] | None = None, heartbeat_s: float = 0.3,
                 firmware: str = "embserve-sim-1", labels: list[str] | None = None,
                 freq_hz: list[float] | None = None, password: str | None = None) -> None:
        self.name, self.gateway = name, gateway
        self.password = password   # with one, it logs in to the broker as user `name`
        self.host, self.port = host, port
        self.announce = {"v": 1, "firmware": firmware, "sensors": sensors or [{"type": "temperature"}],
                         "slots": slots, "freq_hz": freq_hz or [64e6], "labels": labels or [],
                         "heartbeat_s": heartbeat_s}
        self.services: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.hung = False   # a hung firmware: connected, no heartbeats

    def hang(self) -> None:
        self.hung = True

    def topic(self, message: str) -> str:
        return f"{ROOT}/{self.gateway}/{self.name}/{message}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sim-device-{self.name}")
        await asyncio.wait_for(self.connected.wait(), 10)

    async def publish(self, message: str, payload: bytes | dict[str, Any], qos: int = 1) -> None:
        """Send anything on one of this device's topics (tests send garbage this way)."""
        assert self._client is not None
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self._client.publish(self.topic(message), data, qos=qos)

    async def unregister(self) -> None:
        await self.publish("unregister", {"v": 1})
        await self.stop()

    async def stop(self) -> None:
        """A clean disconnect: no last will."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def kill(self) -> None:
        """Power loss: close the socket under the client, no DISCONNECT, so the broker sends the last will."""
        client = self._client
        sock = client._client.socket() if client is not None else None   # paho's socket; aiomqtt has no API
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)   # not close(): paho still unregisters the descriptor
        # the client notices the dead connection itself and `_run` ends (cancelling it instead leaves paho
        # writing to a descriptor it no longer watches)

    async def _run(self) -> None:
        try:
            await self._session()
        except aiomqtt.MqttError as exc:   # the connection died (kill(), broker gone): the device is off
            log.info("device %s: disconnected (%s)", self.name, exc)
        finally:
            self.connected.clear()
            self._client = None

    async def _session(self) -> None:
        will = aiomqtt.Will(self.topic("status"), json.dumps({"v": 1, "state": "offline"}), qos=1)
        async with aiomqtt.Client(self.host, self.port, identifier=f"device-{self.name}", will=will,
                                  username=self.name if self.password is not None else None, password=self.password,
                                  keepalive=max(1, round(self.announce["heartbeat_s"] * 3))) as client:
            self._client = client
            await client.subscribe(self.topic("cmd"), qos=1)
            await self.publish("announce", self.announce)
            self.connected.set()
            beat = asyncio.create_task(self._heartbeats())
            try:
                async for message in client.messages:
                    await self._command(bytes(message.payload or b""))
            finally:
                beat.cancel()

    async def _heartbeats(self) -> None:
        while True:
            if self.hung:
                await asyncio.sleep(self.announce["heartbeat_s"])
                continue
            self._seq += 1
            await self.publish("heartbeat", {"v": 1, "seq": self._seq, "services": list(self.services.values())},
                               qos=0)
            await asyncio.sleep(self.announce["heartbeat_s"])

    async def _command(self, payload: bytes) -> None:
        try:
            cmd = json.loads(payload)
            cid, op, iid = cmd["id"], cmd["op"], cmd["instance_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("device %s: unreadable command %r", self.name, payload[:80])
            return
        reply: dict[str, Any] = {"v": 1, "id": cid, "ok": True}
        if op == "deploy" and iid not in self.services:
            if len(self.services) >= self.announce["slots"]:
                reply = {"v": 1, "id": cid, "ok": False, "error": f"all {self.announce['slots']} slots in use"}
            else:
                self.services[iid] = {"instance_id": iid, "app": cmd.get("app") or "?",
                                      "component": cmd.get("component") or "?", "state": "running"}
        elif op == "remove":
            self.services.pop(iid, None)
        elif op != "deploy":
            reply = {"v": 1, "id": cid, "ok": False, "error": f"unknown op {op!r}"}
        await self.publish("reply", reply)
