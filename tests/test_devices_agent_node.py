"""A device gateway in per-process mode, as on a real board: `mlsysops agent node` whose node the slice
config names in `devices.gateways` connects to the external broker given there (a real mosquitto), and a
device that announces itself to that broker becomes a far-edge node of the cluster, listed by the
continuum's API (sim serve, continuum, cluster and node agents each in their own process, over prosody).
An embedded broker is refused by `agent node` with what to set instead."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlsysops.sim.mqtt_device import SimMqttDevice
from tests.support import AGENT_PASSWORD, until
from tests.test_cli_agents import _cmd, _url_line

pytestmark = [pytest.mark.xmpp, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(150)]
NODES = Path(__file__).resolve().parents[1] / "examples/slices/demo/nodes"


def slice_yaml(tmp_path: Path, prosody: Any, devices: str) -> Path:
    path = tmp_path / "slice.yaml"
    path.write_text(textwrap.dedent(f"""
        slice: gateway-procs
        xmpp: {{server: external, host: localhost, port: {prosody.port}, ca_file: {prosody.ca_file}}}
        clusters:
          - {{MLSysOpsCluster: {{cluster_id: edge-1, nodes: []}}}}
        nodes: ["{NODES}/edge-rpi-1.yaml", "{NODES}/edge-rpi-2.yaml"]
        intervals: {{heartbeat: 0.5s, analyze: 0.5s, monitor: 0.2s, status_report: 0.5s}}
        telemetry: {{digest_interval: 0.5s}}
        state_dir: {tmp_path / "state"}
        devices: {devices}
    """))
    return path


def nodes(api: str, token: str) -> dict[str, dict[str, Any]]:
    req = urllib.request.Request(f"{api}/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return {n["name"]: n for n in json.loads(resp.read())}


async def test_agent_node_is_the_gateway_of_devices_on_an_external_broker(prosody, mosquitto, tmp_path):
    path = slice_yaml(tmp_path, prosody, f"{{broker: external, host: {mosquitto.host}, port: {mosquitto.port}, "
                                         f"gateways: {{edge-rpi-1: []}}}}")
    env = {**os.environ, "HOME": str(tmp_path), "MLSYSOPS_XMPP_PASSWORD": AGENT_PASSWORD}
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([*_cmd(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        procs.append(proc)
        return proc

    device = SimMqttDevice("mcu-z", "edge-rpi-1", host=mosquitto.host, port=mosquitto.port,
                           sensors=[{"type": "temperature"}], labels=["zone:lab"])
    try:
        sim_url = _url_line(start("sim", "serve", str(path)), "Simulator: ")
        api = _url_line(start("agent", "continuum", "-c", str(path), "--api-port", "0"), "API: ")
        token = (tmp_path / "state" / "token").read_text().strip()
        start("agent", "cluster", "-c", str(path), "--id", "edge-1", "--sim", sim_url)
        gateway = start("agent", "node", "-c", str(path), "--id", "edge-rpi-1", "--sim", sim_url)
        assert f"device gateway: MQTT broker {mosquitto.host}:{mosquitto.port}" in gateway.stdout.readline()
        start("agent", "node", "-c", str(path), "--id", "edge-rpi-2", "--sim", sim_url)

        def listed() -> dict[str, dict[str, Any]]:
            try:
                return nodes(api, token)
            except OSError:
                return {}

        await until(lambda: asyncio.to_thread(lambda: {"edge-rpi-1", "edge-rpi-2"} <= set(listed())), 60,
                    "the nodes registered")
        await device.start()   # announces once, on connect: a gateway node subscribes before it registers

        async def device_listed() -> dict[str, Any] | None:
            return (await asyncio.to_thread(listed)).get("mcu-z")

        row = await until(device_listed, 30, "the device listed as a node")
        assert row["cluster"] == "edge-1" and row["layer"] == "far_edge", row
    finally:
        await device.stop()
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=30) for proc in procs]
    assert codes == [0] * len(procs)


def test_agent_node_refuses_an_embedded_broker_with_what_to_set(prosody, tmp_path):
    path = slice_yaml(tmp_path, prosody, "{broker: embedded, gateways: {edge-rpi-1: []}}")
    out = subprocess.run([*_cmd(), "agent", "node", "-c", str(path), "--id", "edge-rpi-1", "--sim",
                          "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(tmp_path), "MLSYSOPS_XMPP_PASSWORD": AGENT_PASSWORD})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "an embedded broker runs only under `mlsysops up`" in out.stderr
    assert "devices.broker: external" in out.stderr
