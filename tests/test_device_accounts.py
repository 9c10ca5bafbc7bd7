"""Broker accounts for devices (a real mosquitto with a password file and an ACL): a client without an
account or with a wrong password is refused, and a device logged in as itself cannot speak for another
device, so the gateway never hears the forged announce."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiomqtt
import pytest
import pytest_asyncio

from mlsysops.node import device_protocol as proto
from mlsysops.node.device_gateway import DeviceGateway
from mlsysops.sim.mqtt_device import SimMqttDevice
from mlsysops.substrates.mqtt.broker import Account, MosquittoBroker
from tests.support import until

pytestmark = [pytest.mark.asyncio(loop_scope="session")]
GW = "edge-rpi-1"
ANNOUNCE = {"v": 1, "firmware": "forged", "sensors": [{"type": "temperature"}], "slots": 1, "freq_hz": [64e6],
            "labels": [], "heartbeat_s": 1.0}


@pytest.fixture(scope="module")
def guarded() -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(accounts={
        proto.gateway_user(GW): Account("gw-secret", (proto.account_topics(GW),)),
        "mcu-a": Account("a-secret", (proto.account_topics(GW, "mcu-a"),)),
    })
    broker.start()
    yield broker
    broker.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(guarded: MosquittoBroker) -> Any:
    gw = DeviceGateway(GW, host=guarded.host, port=guarded.port, username=proto.gateway_user(GW),
                       password="gw-secret")
    await gw.start()
    await asyncio.wait_for(gw.connected.wait(), 10)
    yield gw
    await gw.stop()


@pytest.mark.parametrize("username,password", [(None, None), ("mcu-a", "wrong"), ("nobody", "x")])
async def test_clients_without_a_valid_account_are_refused(guarded: MosquittoBroker, username, password) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(guarded.host, guarded.port, username=username, password=password):
            pass


async def test_a_device_cannot_speak_for_another(gateway: DeviceGateway, guarded: MosquittoBroker) -> None:
    async with aiomqtt.Client(guarded.host, guarded.port, username="mcu-a", password="a-secret") as client:
        # its own account, another device's topic: the broker drops it
        await client.publish(proto.topic(GW, "mcu-b", "announce"), json.dumps(ANNOUNCE), qos=1)
        # then the same client speaks for itself: that arrives, and after the forged one would have
        await client.publish(proto.topic(GW, "mcu-a", "announce"), json.dumps(ANNOUNCE), qos=1)
        await until(lambda: "mcu-a" in gateway.devices, 10, "its own announce")
    assert "mcu-b" not in gateway.devices and gateway.rejected == 0


async def test_a_simulated_device_logs_in_as_itself(gateway: DeviceGateway, guarded: MosquittoBroker) -> None:
    dev = SimMqttDevice("mcu-a", GW, host=guarded.host, port=guarded.port, password="a-secret")
    await dev.start()
    try:
        await until(lambda: gateway.devices.get("mcu-a") and gateway.devices["mcu-a"].seq >= 1, 10,
                    "the device's heartbeats arrive")
        await gateway.deploy("mcu-a", "farm.sampler.1", "farm", "sampler")   # commands reach it (read ACL)
    finally:
        await dev.stop()
