"""A node agent as the gateway of microcontroller-class devices, over MQTT (protocol: `device_protocol`).

The gateway keeps one record per device (what it announced, its services, when it was last heard) and
tells its listener about every change: ``joined``, ``left`` (unregister), ``lost`` (last will, or
``liveness_misses`` heartbeat intervals of silence), ``services`` (a heartbeat whose services changed).
Commands (deploy/remove a service) go out on the device's ``cmd`` topic and wait for its ``reply``.

A message that does not validate is dropped and counted (``rejected``), and logged once per device,
message and field (a device that repeats the same garbage every second does not flood the log); it
changes nothing the gateway knew about the device. The connection to the broker is retried with capped
backoff; while it is down no device can be heard, so silence then is not counted against the devices.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from mlsysops.node import device_protocol as proto

log = logging.getLogger(__name__)

Listener = Callable[[str, str, "DeviceRecord"], Awaitable[None] | None]


class DeviceCommandError(RuntimeError):
    """A deploy/remove the device refused, or did not answer in time."""


@dataclass
class DeviceRecord:
    name: str
    announce: proto.Announce
    joined_at: float
    last_seen: float                      # monotonic
    alive: bool = True
    lost_reason: str | None = None
    seq: int = -1
    services: list[dict[str, Any]] = field(default_factory=list)


class DeviceGateway:
    def __init__(self, gateway: str, *, host: str = "127.0.0.1", port: int = 1883, liveness_misses: int = 3,
                 command_timeout: float = 5.0, backoff_max: float = 5.0, username: str | None = None,
                 password: str | None = None) -> None:
        self.gateway = gateway
        self.host, self.port = host, port
        self.username, self.password = username, password   # the broker's account for this gateway, if any
        self.liveness_misses = liveness_misses
        self.command_timeout = command_timeout
        self.backoff_max = backoff_max
        self.devices: dict[str, DeviceRecord] = {}
        self.rejected = 0
        self.connected = asyncio.Event()
        self._logged: set[tuple[str, str, str]] = set()
        self._listeners: list[Listener] = []
        self._replies: dict[str, asyncio.Future[proto.Reply]] = {}
        self._client: aiomqtt.Client | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def on_change(self, listener: Listener) -> None:
        """``listener(event, device, record)``; event is joined, left, lost or services."""
        self._listeners.append(listener)

    def off_change(self, listener: Listener) -> None:
        """Stop telling `listener` (a gateway kept across its node agent's restarts has a new link each time)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def alive(self) -> list[str]:
        return sorted(n for n, d in self.devices.items() if d.alive)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="device-gateway"),
                       asyncio.create_task(self._watch(), name="device-liveness")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- commands -----------------------------------------------------------------------------------
    async def deploy(self, device: str, instance_id: str, app: str, component: str) -> None:
        await self._command(device, proto.Command(v=1, id=uuid.uuid4().hex[:16], op="deploy",
                                                  instance_id=instance_id, app=app, component=component))

    async def remove(self, device: str, instance_id: str) -> None:
        await self._command(device, proto.Command(v=1, id=uuid.uuid4().hex[:16], op="remove",
                                                  instance_id=instance_id))

    async def _command(self, device: str, cmd: proto.Command) -> None:
        rec = self.devices.get(device)
        if rec is None or not rec.alive:
            raise DeviceCommandError(f"device {device} is not connected to gateway {self.gateway}")
        if self._client is None or not self.connected.is_set():
            raise DeviceCommandError(f"gateway {self.gateway} is not connected to its broker")
        waiter = asyncio.get_running_loop().create_future()
        self._replies[cmd.id] = waiter
        try:
            await self._client.publish(proto.topic(self.gateway, device, "cmd"), proto.encode(cmd), qos=1)
            reply = await asyncio.wait_for(waiter, self.command_timeout)
        except TimeoutError:
            raise DeviceCommandError(f"device {device} did not answer {cmd.op} {cmd.instance_id} within "
                                     f"{self.command_timeout:g}s") from None
        finally:
            self._replies.pop(cmd.id, None)
        if not reply.ok:
            raise DeviceCommandError(f"device {device} refused {cmd.op} {cmd.instance_id}: {reply.error}")

    # -- broker loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=f"gateway-{self.gateway}",
                                          username=self.username, password=self.password) as client:
                    self._client = client
                    await client.subscribe(proto.subscription(self.gateway), qos=1)
                    self.connected.set()
                    delay = 0.2
                    log.info("gateway %s: connected to broker %s:%d", self.gateway, self.host, self.port)
                    async for message in client.messages:
                        await self._handle(str(message.topic), bytes(message.payload or b""))
            except aiomqtt.MqttError as exc:
                log.warning("gateway %s: broker %s:%d unreachable (%s); retrying in %.1fs",
                            self.gateway, self.host, self.port, exc, delay)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _watch(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if not self.connected.is_set():   # our broker outage is not the devices' silence
                for rec in self.devices.values():
                    rec.last_seen += now - last
            last = now
            for rec in list(self.devices.values()):
                period = rec.announce.heartbeat_s * self.liveness_misses
                if rec.alive and now - rec.last_seen > period:
                    await self._lose(rec, f"missed {self.liveness_misses} heartbeats ({period:g}s)")

    async def _handle(self, topic: str, payload: bytes) -> None:
        try:
            device, message = proto.parse_topic(self.gateway, topic)
            if message == "cmd":
                return   # our own commands, echoed by the broker to nobody but the device
            msg = proto.decode(device, message, payload)
        except proto.DeviceMessageError as exc:
            self._reject(exc)
            return
        rec = self.devices.get(device)
        if isinstance(msg, proto.Announce):
            self.devices[device] = DeviceRecord(device, msg, time.time(), time.monotonic())
            await self._notify("joined", self.devices[device])
        elif rec is None:
            self._reject(proto.DeviceMessageError(device, message, "<device>", "not announced; send announce first"))
        elif isinstance(msg, proto.Heartbeat):
            await self._heartbeat(rec, msg)
        elif isinstance(msg, proto.Status):
            if msg.state == "offline" and rec.alive:
                await self._lose(rec, "last will: connection to the broker lost")
        elif isinstance(msg, proto.Unregister):
            self.devices.pop(device, None)
            rec.alive, rec.lost_reason = False, "unregistered"
            await self._notify("left", rec)
        elif isinstance(msg, proto.Reply):
            waiter = self._replies.get(msg.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)

    async def _heartbeat(self, rec: DeviceRecord, msg: proto.Heartbeat) -> None:
        services = [s.model_dump() for s in msg.services]
        if len(services) > rec.announce.slots:
            self._reject(proto.DeviceMessageError(rec.name, "heartbeat", "services",
                                                  f"{len(services)} services on {rec.announce.slots} slots"))
            return
        rec.seq, rec.last_seen = msg.seq, time.monotonic()
        if not rec.alive:
            if not (rec.lost_reason or "").startswith("missed"):
                return   # after a last will the device reconnects and announces again
            # silent for a while (a stalled gateway or a slow link) but not gone: level-triggered, it is back
            rec.alive, rec.lost_reason, rec.services = True, None, services
            await self._notify("joined", rec)
            return
        if services != rec.services:
            rec.services = services
            await self._notify("services", rec)

    async def _lose(self, rec: DeviceRecord, reason: str) -> None:
        rec.alive, rec.lost_reason = False, reason
        log.warning("gateway %s: device %s lost: %s", self.gateway, rec.name, reason)
        await self._notify("lost", rec)

    def _reject(self, exc: proto.DeviceMessageError) -> None:
        self.rejected += 1
        key = (exc.device, exc.message, exc.field)
        if key not in self._logged:
            if len(self._logged) < 4096:   # bounded: garbage under ever new device names cannot grow it
                self._logged.add(key)
            log.warning("gateway %s: dropped a message: %s", self.gateway, exc)

    async def _notify(self, event: str, rec: DeviceRecord) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(event, rec.name, rec)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("gateway %s: listener failed on %s of %s", self.gateway, event, rec.name)


def device_description(gateway: str, cluster: str | None, rec: DeviceRecord) -> dict[str, Any]:
    """The device as an MLSysOpsNode (Kubernetes form): layer far_edge, its sensors, its gateway and its
    service slots as labels (the slots are its capacity for placement), its MCU frequencies."""
    ann = rec.announce
    labels = [*ann.labels, f"gateway:{gateway}", f"service-slots:{ann.slots}", "runtime:embserve"]
    mcu: dict[str, Any] = {"cores": 1}
    if ann.freq_hz:
        mcu["frequency"] = f"{max(ann.freq_hz) / 1e6:g}MHz"   # the description holds one (the top) frequency
    spec: dict[str, Any] = {
        "continuum_layer": "far_edge", "labels": labels, "availability": "transient",
        "sensors": [{s.type: ({"model": s.model} if s.model else {})} for s in ann.sensors],
        "environment": {"node_type": "bare_metal", "os": "zephyr"},
        "hardware": {"mcu": mcu},
    }
    if cluster:
        spec["cluster_id"] = cluster
    return {"apiVersion": "mlsysops.eu/v1", "kind": "MLSysOpsNode", "metadata": {"name": rec.name}, "spec": spec}
