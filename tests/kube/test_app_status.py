"""agents/kube/app_status.py against the real apiserver: MLSysOpsApp spec (SSA) and status (subresource)
round-trip, writes only on change, component and app removal, and a server that goes away and comes back
(a TCP proxy in front of the apiserver, stopped and restarted)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlparse

import pytest
from kubernetes.aio import client as k
from kubernetes.aio import config as kcfg

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.agents.descriptions.loader import load_file, to_k8s
from mlsysops.continuum.kube_app_mirror import AppStatusMirror, merge_diff, phase_of
from mlsysops.substrates.kubernetes.crds import GROUP, VERSION
from tests.kube.harness import free_port, until, write_kubeconfig

aio = pytest.mark.asyncio(loop_scope="session")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "apps" / "env-monitor.yaml"


def env_monitor() -> MLSysOpsApp:
    app = load_file(EXAMPLE)[0].spec
    assert isinstance(app, MLSysOpsApp)
    return app


async def read_cr(api: k.ApiClient, ns: str, name: str = "env-monitor") -> dict | None:
    try:
        return await k.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, "mlsysopsapps", name)
    except k.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_phase_of() -> None:
    assert phase_of([]) == "Pending"
    assert phase_of(["running", "running"]) == "Running"
    assert phase_of(["running", "removed"]) == "Running"
    assert phase_of(["running", "deploying"]) == "Pending"
    assert phase_of(["running", "relocating"]) == "Degraded"
    assert phase_of(["running", "failed"]) == "Degraded"
    assert phase_of(["failed", "failed"]) == "Failed"


def test_merge_diff() -> None:
    old = {"phase": "Pending", "components": {"a": {"status": "deploying", "reason": "x"}, "b": {"status": "running"}},
           "conditions": [{"type": "Ready", "status": "False"}], "extra": 1}
    new = {"phase": "Running", "components": {"a": {"status": "running"}, "b": {"status": "running"}},
           "conditions": [{"type": "Ready", "status": "True"}]}
    assert merge_diff(old, new) == {"phase": "Running", "extra": None,
                                    "components": {"a": {"status": "running", "reason": None}},
                                    "conditions": [{"type": "Ready", "status": "True"}]}
    assert merge_diff(new, new) == {}
    assert merge_diff({}, new) == new


@aio
async def test_spec_and_status_round_trip(kube_client, kube_ns) -> None:
    app = env_monitor()
    mirror = AppStatusMirror(kube_client, kube_ns)
    mirror.set_app(app)
    mirror.set_component("env-monitor", "aggregator", "running", cluster="edge-1", nodes=["edge-server-1"],
                         since=1_800_000_000)
    mirror.set_component("env-monitor", "sensor-reader", "deploying", cluster="edge-1", nodes=["edge-rpi-1"],
                         reason="placed by filter+score")
    assert await mirror.sync(), mirror.last_error
    assert mirror.crds_ready and mirror.writes == 2 and not mirror.pending

    cr = await read_cr(kube_client, kube_ns)
    assert cr is not None and cr["spec"] == to_k8s(app)["spec"]
    assert cr["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "mlsysops"}
    assert {f["manager"] for f in cr["metadata"]["managedFields"]} == {"mlsysops"}
    status = cr["status"]
    assert status["phase"] == "Pending" and status["observedGeneration"] == cr["metadata"]["generation"]
    assert status["components"]["aggregator"] == {"status": "running", "cluster": "edge-1",
                                                  "nodes": ["edge-server-1"], "since": "2027-01-15T08:00:00Z"}
    reader = status["components"]["sensor-reader"]
    assert reader["reason"] == "placed by filter+score" and reader["status"] == "deploying"
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Degraded"]["status"] == "False"
    assert conds["Ready"]["message"] == "1/2 components running (sensor-reader: deploying)"
    assert status == mirror.status_of("env-monitor")

    # all running -> Running, Ready flips (new transition time), Degraded keeps its time
    degraded_since = conds["Degraded"]["lastTransitionTime"]
    mirror.clock = lambda: 1_900_000_000
    mirror.set_component("env-monitor", "sensor-reader", "running", cluster="edge-1", nodes=["edge-rpi-1"])
    assert await mirror.sync()
    status = (await read_cr(kube_client, kube_ns))["status"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Running" and "reason" not in status["components"]["sensor-reader"]
    assert conds["Ready"] == {"type": "Ready", "status": "True", "reason": "Running",
                              "message": "2/2 components running", "lastTransitionTime": "2030-03-17T17:46:40Z"}
    assert conds["Degraded"]["lastTransitionTime"] == degraded_since

    # a spec change re-applies it and bumps observedGeneration; the status survives the spec update
    changed = app.model_copy(update={"policies": ["relocate-on-failure"]})
    mirror.set_app(changed)
    assert await mirror.sync()
    cr = await read_cr(kube_client, kube_ns)
    assert cr["spec"]["policies"] == ["relocate-on-failure"] and cr["status"]["phase"] == "Running"
    assert cr["status"]["observedGeneration"] == cr["metadata"]["generation"]


@aio
async def test_no_write_when_unchanged(kube_client, kube_ns) -> None:
    mirror = AppStatusMirror(kube_client, kube_ns)
    mirror.set_app(env_monitor())
    mirror.set_component("env-monitor", "aggregator", "running", cluster="edge-1", nodes=["a"])
    assert await mirror.sync()
    before = (await read_cr(kube_client, kube_ns))["metadata"]["resourceVersion"]
    writes = mirror.writes
    for _ in range(5):   # what an agent does every tick
        mirror.set_app(env_monitor())
        mirror.set_component("env-monitor", "aggregator", "running", cluster="edge-1", nodes=["a"])
        assert not mirror.pending
        assert await mirror.sync()
    assert mirror.writes == writes
    assert (await read_cr(kube_client, kube_ns))["metadata"]["resourceVersion"] == before


@aio
async def test_component_removal_and_app_deletion(kube_client, kube_ns) -> None:
    mirror = AppStatusMirror(kube_client, kube_ns)
    mirror.set_app(env_monitor())
    mirror.set_components("env-monitor", [
        {"component": "aggregator", "status": "running", "cluster": "edge-1", "nodes": ["a"]},
        {"component": "sensor-reader", "status": "failed", "reason": "node lost"}])
    assert await mirror.sync()
    assert (await read_cr(kube_client, kube_ns))["status"]["phase"] == "Degraded"
    mirror.remove_component("env-monitor", "sensor-reader")
    assert await mirror.sync()
    status = (await read_cr(kube_client, kube_ns))["status"]
    assert set(status["components"]) == {"aggregator"} and status["phase"] == "Running"

    mirror.remove_app("env-monitor")
    assert await mirror.sync()
    assert await read_cr(kube_client, kube_ns) is None
    assert mirror.status_of("env-monitor") is None
    mirror.remove_app("env-monitor")   # already gone: fine
    assert await mirror.sync()


@aio
async def test_recreated_after_external_delete(kube_client, kube_ns) -> None:
    mirror = AppStatusMirror(kube_client, kube_ns)
    mirror.set_app(env_monitor())
    mirror.set_component("env-monitor", "aggregator", "running")
    assert await mirror.sync()
    await k.CustomObjectsApi(kube_client).delete_namespaced_custom_object(GROUP, VERSION, kube_ns,
                                                                          "mlsysopsapps", "env-monitor")
    mirror.set_component("env-monitor", "aggregator", "relocating")
    assert not await mirror.sync()      # the status patch finds no object
    assert await mirror.sync()          # re-applied with its status
    cr = await read_cr(kube_client, kube_ns)
    assert cr["status"]["components"]["aggregator"]["status"] == "relocating"


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the apiserver; `stop()` closes the port and every open connection."""

    def __init__(self, target: str) -> None:
        url = urlparse(target)
        self.host, self.target_port = url.hostname or "127.0.0.1", url.port or 443
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()
            self.writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@aio
async def test_server_down_then_back(kube_stack, kube_client, kube_ns, tmp_path) -> None:
    proxy = TcpProxy(kube_stack.server)
    await proxy.start()
    cfg = write_kubeconfig(tmp_path / "via-proxy", f"https://127.0.0.1:{proxy.port}", kube_stack.token)
    api = await kcfg.new_client_from_config(config_file=str(cfg))
    mirror = AppStatusMirror(api, kube_ns, retry_s=0.1)
    try:
        mirror.set_app(env_monitor())
        mirror.set_component("env-monitor", "aggregator", "running", cluster="edge-1")
        assert await mirror.sync()

        await proxy.stop()
        mirror.set_component("env-monitor", "aggregator", "failed", reason="node lost")
        mirror.set_component("env-monitor", "sensor-reader", "failed", reason="node lost")
        assert not await mirror.sync()      # no exception to the agent
        assert mirror.pending and "unreachable" in (mirror.last_error or "")
        mirror.start()                      # keeps retrying in the background
        await asyncio.sleep(0)
        assert (await read_cr(kube_client, kube_ns))["status"]["phase"] == "Running"   # not written yet

        await proxy.start()

        async def written():
            cr = await read_cr(kube_client, kube_ns)
            return cr and cr["status"]["phase"] == "Failed"

        await until(written, timeout=15, message="status written once the server is back")
        # the server may answer before the mirror has recorded the write
        await until(lambda: mirror.last_error is None and not mirror.pending, timeout=5, message="mirror settled")

        await proxy.stop()
        mirror.remove_app("env-monitor")
        await until(lambda: mirror.last_error, timeout=15, message="delete failing while down")
        await proxy.start()
        await until(lambda: _gone(kube_client, kube_ns), timeout=15, message="CR deleted once the server is back")
    finally:
        await mirror.stop(flush=False)
        await proxy.stop()
        await api.close()


async def _gone(api: k.ApiClient, ns: str) -> bool:
    return await read_cr(api, ns) is None
