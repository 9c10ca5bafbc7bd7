"""`mlsysops up` with devices behind a gateway, from the slice config alone: the SliceRuntime of
examples/slices/devices.yaml (every agent over a real prosody server) starts a real mosquitto broker,
`edge-rpi-1`'s node agent as the gateway and two simulated MQTT devices. The devices show up as far-edge nodes
of edge-1 at the continuum and in the REST API (what `mlsysops get nodes` prints), a component is placed on
one of them through the gateway, the gateway node crashes and recovers (its devices are lost, then back), and
stopping the runtime leaves no broker process."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlsysops.continuum.api_auth import Role
from tests.support import app_components, child_processes, demo_slice, formed, until

pytestmark = [pytest.mark.xmpp, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]
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


async def test_up_starts_the_slice_configs_devices_as_nodes_and_stop_leaves_no_broker(prosody: Any) -> None:
    async with demo_slice(prosody.port, FAST, {TOKEN: Role.admin}, path=EXAMPLE) as (rt, url):
        broker = rt.devices.broker
        assert broker is not None and broker.pid in child_processes("mosquitto")
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
