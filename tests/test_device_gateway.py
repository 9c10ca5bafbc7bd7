"""The device gateway over a real mosquitto broker, with simulated devices speaking protocol v1 on loopback.

What is covered: a device announces and is known with its resources; a service is deployed and removed
through the gateway and shows in the device's heartbeats; slots are enforced; a killed device (socket
closed, no DISCONNECT) is lost through its last will, a silent one through missed heartbeats; unregister;
bad payloads are dropped, counted and logged once per device and field, and change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import pytest_asyncio

from mlsysops.node.device_gateway import DeviceCommandError, DeviceGateway
from mlsysops.sim.mqtt_device import SimMqttDevice
from tests.support import until

pytestmark = [pytest.mark.asyncio(loop_scope="session")]
GW = "edge-rpi-1"


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(mosquitto: Any) -> Any:
    gw = DeviceGateway(GW, host=mosquitto.host, port=mosquitto.port, command_timeout=3.0)
    events: list[tuple[str, str]] = []
    gw.on_change(lambda event, device, rec: events.append((event, device)))
    await gw.start()
    await asyncio.wait_for(gw.connected.wait(), 10)
    gw.events = events
    yield gw
    await gw.stop()


def device(mosquitto: Any, name: str, **kw: Any) -> SimMqttDevice:
    return SimMqttDevice(name, GW, host=mosquitto.host, port=mosquitto.port, **kw)


async def test_announce_deploy_and_lost_by_last_will(gateway: DeviceGateway, mosquitto: Any) -> None:
    dev = device(mosquitto, "mcu-1", slots=1, sensors=[{"type": "temperature", "model": "ds18b20"}])
    await dev.start()
    rec = await until(lambda: gateway.devices.get("mcu-1"), 10, "device announced")
    assert rec.announce.slots == 1 and rec.announce.sensors[0].model == "ds18b20"
    await until(lambda: gateway.devices["mcu-1"].seq >= 2, 10, "heartbeats arrive")

    await gateway.deploy("mcu-1", "farm.sampler.1", "farm", "sampler")
    await until(lambda: [s["state"] for s in gateway.devices["mcu-1"].services] == ["running"], 10,
                "the deployed service runs on the device")
    with pytest.raises(DeviceCommandError, match="slots in use"):
        await gateway.deploy("mcu-1", "farm.sampler.2", "farm", "sampler")
    await gateway.deploy("mcu-1", "farm.sampler.1", "farm", "sampler")   # idempotent
    await gateway.remove("mcu-1", "farm.sampler.1")
    await until(lambda: gateway.devices["mcu-1"].services == [], 10, "the removed service is gone")
    await gateway.deploy("mcu-1", "farm.sampler.3", "farm", "sampler")

    dev.kill()
    await until(lambda: not gateway.devices["mcu-1"].alive, 10, "the broker's last will marks it lost")
    assert gateway.devices["mcu-1"].lost_reason.startswith("last will")
    assert ("lost", "mcu-1") in gateway.events
    with pytest.raises(DeviceCommandError, match="not connected"):
        await gateway.deploy("mcu-1", "farm.sampler.4", "farm", "sampler")


async def test_silent_device_is_lost_after_missed_heartbeats(gateway: DeviceGateway, mosquitto: Any) -> None:
    dev = device(mosquitto, "mcu-2", heartbeat_s=0.2)
    await dev.start()
    await until(lambda: (gateway.devices.get("mcu-2") or None) and gateway.devices["mcu-2"].seq >= 1, 10,
                "heartbeating")
    dev.hang()   # connected, but no more heartbeats
    rec = await until(lambda: not gateway.devices["mcu-2"].alive and gateway.devices["mcu-2"], 10,
                      "lost after missed heartbeats")
    assert rec.lost_reason.startswith("missed 3 heartbeats")
    dev.hung = False   # heartbeats again: back without a new announce
    await until(lambda: gateway.devices["mcu-2"].alive, 10, "a device heard again after missed heartbeats is back")
    assert gateway.events.count(("joined", "mcu-2")) == 2
    await dev.stop()


async def test_unregister(gateway: DeviceGateway, mosquitto: Any) -> None:
    dev = device(mosquitto, "mcu-3")
    await dev.start()
    await until(lambda: "mcu-3" in gateway.alive(), 10, "announced")
    await dev.unregister()
    await until(lambda: "mcu-3" not in gateway.devices, 10, "forgotten after unregister")
    assert ("left", "mcu-3") in gateway.events and ("lost", "mcu-3") not in gateway.events


async def test_bad_payloads_are_dropped_logged_once_and_change_nothing(gateway: DeviceGateway, mosquitto: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    dev = device(mosquitto, "mcu-4", slots=2)
    await dev.start()
    await until(lambda: "mcu-4" in gateway.alive(), 10, "announced")
    before = gateway.devices["mcu-4"]
    seq = before.seq
    caplog.set_level(logging.WARNING, logger="mlsysops.node.device_gateway")
    start = gateway.rejected
    garbage = [("announce", b"not json"), ("announce", b"[1, 2]"), ("announce", {"v": 2, "slots": 1}),
               ("announce", {"v": 1, "firmware": "x", "slots": -1}),
               ("announce", {"v": 1, "firmware": "x", "slots": 1, "sensors": [{"type": "lidar"}]}),
               ("heartbeat", {"v": 1, "seq": 1, "services": [{"instance_id": "a"}]}),
               ("heartbeat", {"v": 1, "seq": 1, "surprise": True}),
               ("announce", {"v": 1, "firmware": "x", "slots": -1})]   # same field again: not logged again
    for message, payload in garbage:
        await dev.publish(message, payload)
    await dev._client.publish(f"mlsysops/v1/{GW}/Bad_Name/announce", b"{}", qos=1)
    await until(lambda: gateway.rejected - start >= len(garbage) + 1, 10, "every bad message counted")
    logs = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert any("announce: <payload>: not JSON" in m for m in logs)
    assert any("announce: v: expected protocol version 1, got 2" in m for m in logs)
    assert any("announce: sensors.0.type" in m for m in logs)
    assert any("heartbeat: services.0.app" in m for m in logs)
    assert any("heartbeat: surprise" in m for m in logs)
    assert any("topic: device name 'Bad_Name'" in m for m in logs)
    assert sum("announce: slots" in m for m in logs) == 1
    assert gateway.devices["mcu-4"] is before and before.alive and before.announce.slots == 2
    await until(lambda: gateway.devices["mcu-4"].seq > seq + 1, 10, "the device is still heard")
    await dev.stop()
