"""Policy uploads over the real API of a demo slice (agents over prosody): checked without running the
module in the agent, admin token only, kept in the state directory and running again after a restart."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role
from tests.support import AGENT_PASSWORD, DEMO, formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]
FAST = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
ADMIN, READER = "admin-" + uuid.uuid4().hex, "reader-" + uuid.uuid4().hex
URL = "/api/v1/policies/edge-1"

GOOD = """
def initialize():
    return {"scope": "global", "configuration": {"analyze_interval": "200ms"}}
async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    context["runs"] = context.get("runs", 0) + 1
    return False, context
async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    return {}, context
"""


@contextlib.asynccontextmanager
async def slice_with_api(port: int, state: Path, suffix: str, overrides: dict[str, dict[str, Any]] | None = None
                         ) -> AsyncIterator[tuple[SliceRuntime, str]]:
    merged = {k: dict(v) for k, v in FAST.items()} | (overrides or {})
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=port, force_xmpp=True, jid_suffix=suffix, state_dir=state,
                      overrides=merged)
    rt.assembly.password = AGENT_PASSWORD    # the accounts outlive the first runtime on the session prosody
    await rt.start()
    server = ApiServer(create_app(ApiBackend(runtime=rt), {ADMIN: Role.admin, READER: Role.read}), port=0)
    try:
        url = await server.start()
        await until(lambda: formed(rt), 30, "hierarchy did not form")
        yield rt, url
    finally:
        await server.stop()
        await rt.stop()


def analyses(agent: Any, since: float, policy: str = "probe") -> list[Any]:
    return agent.decision_log.query(policy=policy, stage="analyze", since=since)


async def test_upload_is_checked_without_running_it_and_survives_a_restart(prosody, tmp_path) -> None:
    state, suffix = tmp_path / "state", "-" + uuid.uuid4().hex[:6]
    marker = tmp_path / "module-body-ran"
    writes_marker = f"open({str(marker)!r}, 'w').write('owned')\n"
    async with slice_with_api(prosody.port, state, suffix) as (rt, url):
        edge = rt.clusters["edge-1"]
        admin = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        reader = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {READER}"}, timeout=30)
        async with admin, reader:
            r = await reader.put(f"{URL}/probe", content=GOOD)
            assert r.status_code == 403

            r = await admin.put(f"{URL}/probe", content="def initialize():\n    return {\n")
            assert r.status_code == 422 and "probe.py line 2" in r.json()["detail"], r.text

            # rejected by the static check: the body (which writes a file) never runs anywhere
            r = await admin.put(f"{URL}/probe", content=writes_marker + GOOD.replace("async def plan", "async def nplan"))
            assert r.status_code == 422 and "def plan(" in r.json()["detail"], r.text
            r = await admin.put(f"{URL}/probe", content=writes_marker + GOOD.replace(
                "async def analyze(context,", "async def analyze("))
            assert r.status_code == 422 and "analyze() must accept the 6 arguments" in r.json()["detail"]
            # passes the static check, rejected when loaded: the body ran only in the confined worker, where
            # writing outside its private folder is refused
            r = await admin.put(f"{URL}/probe", content=writes_marker + GOOD)
            assert r.status_code == 422 and "PermissionError" in r.json()["detail"], r.text
            tolerant = f"try:\n    {writes_marker}except OSError:\n    pass\n"
            r = await admin.put(f"{URL}/probe", content=tolerant + GOOD.replace('"global"', '"sideways"'))
            assert r.status_code == 422 and "sideways" in r.json()["detail"], r.text
            assert not marker.exists()
            assert edge.policies.get("probe") is None
            assert not list((state / "cluster" / "uploaded-policies").rglob("*.py"))

            # the original framework's file name is accepted; the policy runs in a worker process
            r = await admin.post(f"{URL}/policy-probe.py", content=GOOD)
            assert r.status_code == 200, r.text
            assert r.json()["policy"] == "probe" and r.json()["result"] == "added"
            listed = {p["name"]: p for p in (await admin.get("/api/v1/policies")).json()["edge-1"]}
            assert listed["probe"]["isolation"]["kind"] == "process" and listed["probe"]["enabled"]
            started = time.time()
            await until(lambda: analyses(edge, started), 30, "the uploaded policy did not run")
            saved = Path(r.json()["path"])
            assert saved.is_file() and saved.parent.is_relative_to(state)

    restarted = time.time()
    async with slice_with_api(prosody.port, state, suffix) as (rt, url):
        edge = rt.clusters["edge-1"]
        pol = edge.policies.get("probe")
        assert pol is not None and pol.worker is not None, "upload not reloaded after the restart"
        await until(lambda: analyses(edge, restarted), 30, "the reloaded upload did not run")
        assert rt.clusters["cloud-1"].policies.get("probe") is None   # uploaded to edge-1 only


BLOCKING = GOOD.replace("    context[\"runs\"]", "    import time\n    time.sleep(20)\n    context[\"runs\"]")


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def test_an_uploaded_policy_blocking_20s_does_not_stall_its_agent(prosody, tmp_path) -> None:
    assert "time.sleep(20)" in BLOCKING
    async with slice_with_api(prosody.port, tmp_path / "state", "-" + uuid.uuid4().hex[:6],
                              {"cluster": {"plugin_timeout": 60.0}}) as (rt, url):
        edge = rt.clusters["edge-1"]
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
            assert (await c.put(f"{URL}/sleepy", content=BLOCKING)).status_code == 200
            await until(lambda: edge.policies.get("sleepy").worker.busy, 30, "the policy did not start")
            worker = edge.policies.get("sleepy").worker
            seen_by_parent = next(ch for ch in rt.continuum.children.children() if ch.agent_id == "edge-1")
            first = seen_by_parent.last_heartbeat
            # edge-1 answers requests over XMPP and keeps heartbeating while its policy sleeps in analyze
            for _ in range(3):
                r = await c.post("/api/v1/ping", json={"agent": "edge-1"})
                assert r.status_code == 200 and r.json()["transport"] == "xmpp", r.text
            await until(lambda: seen_by_parent.last_heartbeat >= first + 3, 30, "edge-1 stopped heartbeating")
            assert seen_by_parent.alive and worker.busy and not analyses(edge, 0, "sleepy")
            # disabling it takes effect at once: the call is abandoned and the worker killed
            pid = worker.pid
            assert (await c.post(f"{URL}/sleepy/disable")).status_code == 200
            await until(lambda: gone(pid), 30, "the stuck worker was not killed")
            assert not analyses(edge, 0, "sleepy")
