"""The original MLSysOps northbound API over ours, driven by the original `mls` CLI (PyPI `mlsysops-cli`) as
a subprocess against a running simulated slice, and the auth rule for a CLI that sends no token.

The CLI is installed into a virtualenv of its own (its import package is `mlsysops_cli`, and it pins
its own dependencies): $MLSYSOPS_MLS_VENV, default ~/.cache/mlsysops/venv-mls, created here when missing.
The test skips only when that install fails because PyPI cannot be reached."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from mlsysops.agents.slice_config import ApiConfig, load_slice
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role
from tests.support import DEMO, formed, until

aio = pytest.mark.asyncio(loop_scope="session")
TOKEN = "compat-nb-" + uuid.uuid4().hex
VENV = Path(os.environ.get("MLSYSOPS_MLS_VENV", Path.home() / ".cache" / "mlsysops" / "venv-mls"))
APP = """\
MLSysOpsApp:
  name: mls-cli-app
  components:
    - metadata: {name: worker, uid: worker-v1}
      node_placement: {continuum_layer: [edge]}
      qos_metrics:
        - {application_metric_id: response_time_ms, target: 100, relation: lower_or_equal}
      containers:
        - image: registry.example.org/worker:1
          platform_requirements:
            cpu: {requests: 200m}
            memory: {requests: 64Mi}
"""


def mls_cli() -> Path:
    """The `mls` executable of the CLI's own virtualenv (installed from PyPI when missing)."""
    exe = VENV / "bin" / "mls"
    if exe.exists():
        return exe
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
    res = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "mlsysops-cli"], capture_output=True,
                         text=True, timeout=600)
    if res.returncode != 0:
        text = res.stdout + res.stderr
        if any(s in text for s in ("Could not find a version", "Failed to establish", "Temporary failure",
                                   "Network is unreachable", "No matching distribution")):
            pytest.skip(f"PyPI unreachable, cannot install mlsysops-cli: {text.strip().splitlines()[-1]}")
        raise AssertionError(f"pip install mlsysops-cli failed:\n{text}")
    return exe


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def slice_for_mls(prosody):
    from mlsysops.cli.slice_runtime import SliceRuntime

    fast = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides=fast)
    await rt.start()
    server = ApiServer(create_app(ApiBackend(runtime=rt), {TOKEN: Role.admin}, original_cli=True), port=0)
    try:
        await server.start()
        await until(lambda: formed(rt), 20, "hierarchy did not form")
        yield rt, server
    finally:
        await server.stop()
        await rt.stop()


async def mls(server: ApiServer, *args: str) -> str:
    """Run the original CLI without blocking the loop the slice and its API run on."""
    env = {**os.environ, "MLS_API_IP": "127.0.0.1", "MLS_API_PORT": str(server.port), "KARMADA_HOST_IP": "127.0.0.1"}
    # in a worker thread: the slice and its API run on this loop and must keep answering
    res = await asyncio.to_thread(subprocess.run, [str(mls_cli()), *args], env=env, capture_output=True,
                                  text=True, timeout=120)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    return text


@aio
async def test_the_original_mls_cli_drives_a_running_slice(slice_for_mls, tmp_path):
    rt, server = slice_for_mls
    await asyncio.to_thread(mls_cli)
    app_file = tmp_path / "app.yaml"
    app_file.write_text(APP)

    out = await mls(server, "apps", "deploy-app", "--path", str(app_file))
    assert "DESCRIPTION UPLOADED SUCCESSFULLY!" in out and '"app_id":"mls-cli-app"' in out.replace(" ", "")
    assert "mls-cli-app" in rt.continuum.apps

    async def running() -> bool:
        return "Running" in await mls(server, "apps", "get-app-status", "mls-cli-app")
    await until(running, 60, "app not running per `mls apps get-app-status`", interval=0.5)

    out = await mls(server, "apps", "list-all")
    assert "mls-cli-app" in out and "Running" in out
    out = await mls(server, "apps", "get-app-details", "mls-cli-app")
    st = rt.continuum.app_status("mls-cli-app")["worker"]
    assert f"{st['nodes'][0]} / {st['cluster']}" in out and "worker" in out   # where it really runs
    async def measured() -> str:
        text = await mls(server, "apps", "get-app-performance", "mls-cli-app")
        return text if "response_time_ms" in text and "No Data" not in text else ""
    out = await until(measured, 30, "no QoS value in `mls apps get-app-performance`", interval=0.5)
    shown = float(out.split("response_time_ms")[1].split("|")[1].split()[0])
    assert shown > 0 and rt.continuum.slice_telemetry.latest("response_time_ms", app="mls-cli-app") is not None

    out = await mls(server, "infra", "list-infra", "--type", "Cluster")
    assert "'id': 'edge-1'" in out and "'id': 'cloud-1'" in out
    out = await mls(server, "manage", "ping-agent")
    assert "Ping Successful!" in out and "3/3 agents answered" in out

    out = await mls(server, "manage", "set-mode", "--mode", "1")
    assert "'name': 'ml'" in out
    await until(lambda: all(a.mode == "ml" for a in [*rt.clusters.values(), *rt.nodes.values()]), 10,
                "ml mode did not reach every agent")
    await mls(server, "manage", "set-mode", "--mode", "0")
    assert rt.continuum.mode == "heuristic"

    out = await mls(server, "apps", "remove-app", "mls-cli-app")
    assert "AppID:mls-cli-app  status updated to 'To_be_removed'" in out
    out = await mls(server, "apps", "get-app-status", "unknown-app")
    assert "ERROR. Reason: app 'unknown-app' not found" in out


@aio
async def test_token_less_requests_only_from_loopback_and_only_when_enabled(slice_for_mls):
    rt, _ = slice_for_mls
    backend = ApiBackend(runtime=rt)

    async def get(app, path: str, peer: str, token: str | None = None) -> int:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            return (await c.get(path, headers=headers)).status_code

    enabled = create_app(backend, {TOKEN: Role.admin}, original_cli=True)
    disabled = create_app(backend, {TOKEN: Role.admin})
    assert await get(enabled, "/apps/list_all/", "127.0.0.1") == 200
    assert await get(enabled, "/apps/list_all/", "::1") == 200
    assert await get(enabled, "/apps/list_all/", "10.1.2.3") == 401          # not loopback
    assert await get(enabled, "/api/v1/apps", "127.0.0.1") == 401            # our API keeps its tokens
    assert await get(enabled, "/apps/list_all/", "127.0.0.1", "wrong") == 401  # a wrong token is not "none"
    assert await get(disabled, "/apps/list_all/", "127.0.0.1") == 401
    assert await get(disabled, "/apps/list_all/", "10.1.2.3", TOKEN) == 200


def test_original_cli_needs_a_loopback_listener():
    assert ApiConfig(original_cli=True, host="::1").original_cli
    with pytest.raises(ValueError, match="host must be a loopback address"):
        ApiConfig(original_cli=True, host="0.0.0.0")
