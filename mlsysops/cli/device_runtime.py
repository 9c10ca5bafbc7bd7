"""Devices behind gateways in a slice run by `mlsysops up` (slice config `devices`).

Starts the MQTT broker (`broker: embedded`: a mosquitto process on loopback, like the embedded XMPP server:
started, awaited ready, stopped with the runtime, no orphan; `external`: the given host/port), one
`DeviceGateway` per gateway node (handed to that node's agent, and kept across the agent's restarts, so a
recovered gateway node hears its devices again), then the simulated devices once every gateway is
subscribed: a device announces once, on connect, and an announce nobody hears is lost.

With `auth` (the default) the embedded broker gets one account per gateway and per device, each with a fresh
random password and only its own topics (`device_protocol.account_topics`): a client without an account is
refused, and a device cannot speak for another. An external broker gets the configured gateway account.

A failed start stops what this runtime started (devices, broker) before it raises `SubstrateError`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from mlsysops.agents.slice_config import DevicesConfig
from mlsysops.cli.slice_assembly import SubstrateError
from mlsysops.node import device_protocol as proto
from mlsysops.node.device_gateway import DeviceGateway
from mlsysops.sim.mqtt_device import SimMqttDevice
from mlsysops.substrates.mqtt.broker import Account, BrokerStartError, MosquittoBroker

log = logging.getLogger(__name__)


def external_password(config: DevicesConfig) -> str | None:
    """The gateways' password for an external broker (`password_file`); SubstrateError naming the file."""
    try:
        return config.gateway_password()
    except OSError as exc:
        raise SubstrateError(f"devices.password_file: cannot read {config.password_file}: {exc.strerror}") from exc


class DeviceRuntime:
    def __init__(self, config: DevicesConfig, *, connect_timeout: float = 15.0) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        self.broker: MosquittoBroker | None = None
        self.host, self.port = config.host, config.port or 0
        self.gateways: dict[str, DeviceGateway] = {}
        self.devices: dict[str, SimMqttDevice] = {}
        self.accounts: dict[str, Account] = {}

    def _make_accounts(self) -> None:
        for gw, devices in self.config.gateways.items():
            self.accounts[proto.gateway_user(gw)] = Account(secrets.token_urlsafe(18), (proto.account_topics(gw),))
            for d in devices:
                self.accounts[d.name] = Account(secrets.token_urlsafe(18), (proto.account_topics(gw, d.name),))

    async def start_broker(self) -> None:
        """The broker (embedded) and the gateways' clients; the node agents start them."""
        user: str | None = None
        password: str | None = None
        if self.config.broker == "embedded":
            if self.config.auth:
                self._make_accounts()
            broker = MosquittoBroker(host=self.config.host, port=self.config.port or 0, accounts=self.accounts)
            try:
                await asyncio.to_thread(broker.start)
            except BrokerStartError as exc:   # it stopped itself; nothing is left behind
                raise SubstrateError(f"devices: {exc}") from exc
            self.broker = broker
            self.port = broker.port
        else:
            user, password = self.config.username, external_password(self.config)
        self.gateways = {}
        for gw in self.config.gateways:
            account = self.accounts.get(proto.gateway_user(gw))
            self.gateways[gw] = DeviceGateway(gw, host=self.host, port=self.port,
                                              username=proto.gateway_user(gw) if account else user,
                                              password=account.password if account else password)

    def gateway_for(self, node: str) -> DeviceGateway | None:
        return self.gateways.get(node)

    async def start_devices(self) -> None:
        """Every simulated device, after its gateway subscribed (the gateways' node agents are running)."""
        try:
            for gw, gateway in self.gateways.items():
                try:
                    await asyncio.wait_for(gateway.connected.wait(), self.connect_timeout)
                except TimeoutError:
                    raise SubstrateError(f"devices: gateway {gw} could not reach the MQTT broker at "
                                         f"{self.host}:{self.port} within {self.connect_timeout:g}s") from None
            for gw, devices in self.config.gateways.items():
                for d in devices:
                    dev = SimMqttDevice(d.name, gw, host=self.host, port=self.port, slots=d.slots,
                                        sensors=[s.model_dump(exclude_none=True) for s in d.sensors],
                                        heartbeat_s=d.heartbeat_s, firmware=d.firmware, labels=list(d.labels),
                                        freq_hz=list(d.freq_hz),
                                        password=self.accounts[d.name].password if d.name in self.accounts else None)
                    self.devices[d.name] = dev
                    try:
                        await dev.start()
                    except TimeoutError:
                        raise SubstrateError(f"devices: device {d.name} could not connect to the MQTT broker at "
                                             f"{self.host}:{self.port}") from None
                    log.info("device %s started behind gateway %s", d.name, gw)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Devices (a clean disconnect), then the broker; idempotent."""
        devices, self.devices = list(self.devices.values()), {}
        await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
        if self.broker is not None:
            broker, self.broker = self.broker, None
            await asyncio.to_thread(broker.stop)
