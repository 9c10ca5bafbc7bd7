"""Devices behind a gateway: how long a device takes to join the cluster and how long its loss takes to show.

One process: prosody and mosquitto on loopback, the demo slice's `edge-1` cluster agent and `edge-rpi-1` node
agent as the gateway (1 s heartbeats), simulated MQTT devices (1 s heartbeats). Each round a new device
connects and announces (the same device reconnecting after its loss; join: until the cluster counts it as an alive node; the gateway's own view is the
baseline), then it is killed (TCP dropped, no DISCONNECT: the broker's last will) and the loss is timed at the
gateway and at the cluster. Prints a table (median, p95, max) and a last line of key=value pairs.

    python benchmarks/device_gateway.py --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PW = uuid.uuid4().hex


async def wait(pred, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def row(name: str, values: list[float]) -> str:
    v = sorted(values)
    p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
    return f"| {name:<36} | {statistics.median(v) * 1000:8.0f} | {p95 * 1000:8.0f} | {v[-1] * 1000:8.0f} |"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()

    from mlsysops.agents.slice_config import load_slice
    from mlsysops.agents.xmpp_prosody import ProsodyServer
    from mlsysops.cli.slice_assembly import SliceAssembly
    from mlsysops.mechanisms.sim_placement import sim_node_spec
    from mlsysops.node.device_gateway import DeviceGateway
    from mlsysops.node.substrate import SimNodeSubstrate
    from mlsysops.sim import SimContinuum
    from mlsysops.sim.mqtt_device import SimMqttDevice
    from mlsysops.substrates.mqtt.broker import MosquittoBroker

    tmp = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    server = ProsodyServer(tmp / "prosody")
    server.start_sync()
    broker = MosquittoBroker()
    broker.start()
    port = broker.port
    spec = load_slice(ROOT / "examples/slices/demo.yaml")
    asm = SliceAssembly(spec, password=PW, suffix="-" + uuid.uuid4().hex[:6], xmpp_port=server.port,
                        force_xmpp=True, overrides={"all": {"heartbeat": 1.0, "liveness_misses": 3}})
    sim = SimContinuum.from_specs([sim_node_spec(n) for n in spec.nodes.values()], seed=1)
    gateway = DeviceGateway("edge-rpi-1", port=port)
    cluster = asm.cluster_agent("edge-1", asm.placement_for("edge-1", sim=sim))
    node = asm.node_agent("edge-rpi-1", SimNodeSubstrate(sim, "edge-rpi-1"), device_gateway=gateway)
    join_gw, join_cl, lost_gw, lost_cl = [], [], [], []
    try:
        await cluster.start_agent(timeout=15)
        await node.start_agent(timeout=15)
        await wait(lambda: node.membership.connected)
        for _round in range(a.rounds):
            # the same device each round, reconnecting after its loss: dead devices stay lost children of the
            # cluster, and 60 % of them lost would read as a full disruption (nothing declared lost then)
            name = "mcu-0"
            dev = SimMqttDevice(name, "edge-rpi-1", port=port, heartbeat_s=1.0)
            t0 = time.monotonic()
            await dev.start()
            await wait(lambda: name in gateway.alive())
            join_gw.append(time.monotonic() - t0)   # both from the device's connect
            await wait(lambda: name in cluster._alive_nodes())
            join_cl.append(time.monotonic() - t0)
            t1 = time.monotonic()
            dev.kill()
            lost_gw.append(await wait(lambda: not gateway.devices[name].alive))
            await wait(lambda: any(c.agent_id == name and not c.alive and not c.held
                                   for c in cluster.children.children()))
            lost_cl.append(time.monotonic() - t1)
    finally:
        await node.stop()
        await cluster.stop()
        broker.stop()
        server.stop_sync()
    print(f"{a.rounds} rounds of one device, 1 s heartbeats (cluster and devices), prosody + mosquitto on loopback")
    print("| stage (ms)                           |   median |      p95 |      max |")
    print("|--------------------------------------|----------|----------|----------|")
    print(row("join: seen by the gateway", join_gw))
    print(row("join: alive node at the cluster", join_cl))
    print(row("loss (last will): at the gateway", lost_gw))
    print(row("loss (last will): at the cluster", lost_cl))
    print(f"rounds={a.rounds} join_ms={statistics.median(join_cl) * 1000:.0f} "
          f"lost_ms={statistics.median(lost_cl) * 1000:.0f} lost_p95_ms="
          f"{sorted(lost_cl)[min(len(lost_cl) - 1, round(0.95 * (len(lost_cl) - 1)))] * 1000:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
