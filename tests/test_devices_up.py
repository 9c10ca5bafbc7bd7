"""`mlsysops up` with devices behind a gateway, from the slice config alone: the SliceRuntime of
examples/slices/devices.yaml (every agent over a real prosody server) starts a real mosquitto broker,
`edge-rpi-1`'s node agent as the gateway and two simulated MQTT devices. The devices show up as far-edge nodes
of edge-1 at the continuum and in the REST API (what `mlsysops get nodes` prints), a component is placed on
one of them through the gateway, the gateway node crashes and recovers (its devices are lost, then back), and
stopping the runtime leaves no broker process; `mlsysops up` itself leaves none after Ctrl-C or a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from mlsysops.continuum.api_auth import Role
from tests.support import app_components, child_processes, demo_slice, formed, until, until_blocking
from tests.test_cli_up import _mlsysops, _server_pids

pytestmark = [pytest.mark.xmpp, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "slices" / "devices.yaml"
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5, "digest_interval": 0.5,
                "node_grace": 0.5}}
TOKEN = "admin-" + uuid.uuid4().hex
DEVICES = ("mcu-a", "mcu-b")


async def listed(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    r = await http.get("/api/v1/nodes")
    r.raise_for_status()
    return {n["name"]: n for n in r.json()}


@pytest.mark.asyncio(loop_scope="session")
async def test_up_starts_the_slice_configs_devices_as_nodes_and_stop_leaves_no_broker(prosody: Any) -> None:
    async with demo_slice(prosody.port, FAST, {TOKEN: Role.admin}, path=EXAMPLE) as (rt, url):
        broker = rt.devices.broker
        assert broker is not None and broker.pid in child_processes("mosquitto")
        with pytest.raises(aiomqtt.MqttError):   # accounts by default: a client without one is refused
            async with aiomqtt.Client(broker.host, broker.port):
                pass
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            async def devices_alive() -> dict[str, dict[str, Any]] | None:
                rows = await listed(http)
                return rows if all((rows.get(d) or {}).get("alive") for d in DEVICES) else None

            rows = await until(devices_alive, 40, "both devices listed by the API as alive nodes")
            await until(lambda: formed(rt), 20, "every node and device alive in the hierarchy `up` shows")
            assert set(DEVICES) <= set(rt.hierarchy()["edge-1"]["nodes"])
            assert {(rows[d]["cluster"], rows[d]["layer"]) for d in DEVICES} == {("edge-1", "far_edge")}
            assert rows["edge-rpi-1"]["layer"] == "edge" and len(rows) == len(rt.spec.nodes) + 2
            spec = (await http.get("/api/v1/nodes/mcu-b")).json()["description"]["spec"]
            assert {"gateway:edge-rpi-1", "service-slots:2", "zone:field", "runtime:embserve"} <= set(spec["labels"])
            assert [next(iter(s)) for s in spec["sensors"]] == ["temperature", "humidity"]
            assert set(DEVICES) <= set(rt.continuum.cluster_nodes["edge-1"])

            rt.apply_file(ROOT / "examples" / "devices" / "farm-sampler.yaml")

            async def sampler() -> dict[str, Any] | None:
                st = (await app_components(http, "farm")).get("sampler") or {}
                return st if st.get("status") == "running" else None

            st = await until(sampler, 40, "the sampler runs on a device, placed through the gateway")
            [host] = st["nodes"]
            assert host in DEVICES
            assert [s["component"] for s in rt.devices.devices[host].services.values()] == ["sampler"]

            rt.fail_node("edge-rpi-1")   # the gateway's host is gone: so are its devices, at the cluster
            await until(lambda: not set(DEVICES) & rt.clusters["edge-1"]._alive_nodes(), 30,
                        "the devices are lost with their gateway")
            rt.recover_node("edge-rpi-1")   # a fresh node agent, the same gateway: the devices are heard again
            await until(devices_alive, 40, "the devices are back with their recovered gateway")
        pid = broker.pid
    assert rt.devices is None and not broker.alive and pid not in child_processes("mosquitto")


def _up_devices(tmp_path: Path) -> tuple[subprocess.Popen, dict[str, Any], Path]:
    """`mlsysops up examples/slices/devices.yaml` with a private HOME and TMPDIR, once both devices are alive
    nodes in its API; returns the process, its run.json and the broker's workdir."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(parents=True)
    text = EXAMPLE.read_text().replace("demo/", f"{EXAMPLE.parent}/demo/").replace("port: 8080", "port: 0")
    (tmp_path / "devices.yaml").write_text(text)
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp)}
    proc = subprocess.Popen([*_mlsysops(), "up", str(tmp_path / "devices.yaml"), "--no-progress"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_file = tmp_path / ".mlsysops" / "demo-devices" / "run.json"
    until_blocking(run_file.exists, 60, "mlsysops up did not start")
    run = json.loads(run_file.read_text())
    token = Path(run["token_file"]).read_text().strip()

    def devices_alive() -> bool:
        req = urllib.request.Request(f"{run['api']}/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            rows = {n["name"]: n for n in json.loads(resp.read())}
        return all((rows.get(d) or {}).get("alive") and rows[d]["layer"] == "far_edge" for d in DEVICES)

    until_blocking(devices_alive, 60, "the devices are not alive far-edge nodes in up's API")
    [workdir] = list(tmp.glob("mlsysops-mqtt-*"))
    assert _server_pids(workdir), "no mosquitto process names the broker's workdir"
    return proc, run, workdir


@pytest.mark.timeout(150)
def test_up_ends_with_no_broker_left_after_ctrl_c_or_a_kill(tmp_path: Path) -> None:
    proc, _run, workdir = _up_devices(tmp_path / "clean")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "MQTT: embedded broker on 127.0.0.1:" in out and "devices: mcu-a, mcu-b behind edge-rpi-1" in out
    assert not _server_pids(workdir) and not workdir.exists()   # stopped, and its workdir removed

    proc, _run, workdir = _up_devices(tmp_path / "killed")
    proc.kill()   # no clean stop at all: the broker dies with its parent
    proc.communicate(timeout=30)
    until_blocking(lambda: not _server_pids(workdir), 10, "mosquitto outlived a killed `mlsysops up`")
