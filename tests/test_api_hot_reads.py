"""The hottest reads (decisions, telemetry) are answered by the API thread from bytes it holds: a fresh
answer costs the agents' loop nothing, so it comes back even while that loop is held (here: by a blocking
request made from the loop itself, which a read that needed the loop could never answer). A write drops
the held answers, and a telemetry change is seen at once."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from mlsysops.continuum.api_auth import Role
from tests.support import formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]

TOKEN = "hot-" + uuid.uuid4().hex
FAST = {"all": {"heartbeat": 1.0, "monitor": 0.5, "status_report": 1.0}}
HOUR = 3600.0   # held answers stay fresh for the whole test: nothing here depends on its speed


async def test_fresh_hot_reads_need_nothing_from_the_agents_loop(prosody: Any) -> None:
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.cli.slice_runtime import SliceRuntime
    from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
    from tests.support import DEMO

    rt = SliceRuntime(load_slice(DEMO), xmpp_port=prosody.port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides=FAST)
    await rt.start()
    backend = ApiBackend(runtime=rt, read_max_age=HOUR)
    server = ApiServer(create_app(backend, {TOKEN: Role.admin}), port=0)
    try:
        url = await server.start()
        await until(lambda: formed(rt), 30, "hierarchy did not form")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        paths = ["/api/v1/decisions?limit=50", "/api/v1/telemetry?limit=20"]
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=15) as http:
            warm = {p: (await http.get(p)).content for p in paths}
            fetches = backend.served.fetches
            # this loop (the agents') is held until each blocking request returns
            with httpx.Client(base_url=url, headers=headers, timeout=10) as blocking:
                for p in paths:
                    r = blocking.get(p)
                    assert r.status_code == 200 and r.content == warm[p], p
            assert backend.served.fetches == fetches

            # telemetry: a changed history is a new answer at once, although the held one is still fresh
            rt.continuum.slice_telemetry.record("probe.metric", 42.0, {"node": "probe-node", "cluster": "edge-1"})
            rows = (await http.get("/api/v1/telemetry", params={"metric": "probe.metric"})).json()
            assert [r["latest"] for r in rows] == [42.0]

            # a write drops the held answers: the next read is built again
            assert (await http.get(paths[0])).content == warm[paths[0]]
            before = backend.served.fetches
            assert (await http.delete("/api/v1/apps/no-such-app")).status_code == 404
            assert (await http.get(paths[0])).status_code == 200
            assert backend.served.fetches == before + 1

            # an unknown agent is still a 404 with what is known (checked on the agents' loop)
            r = await http.get("/api/v1/decisions", params={"agent": "nope"})
            assert r.status_code == 404 and "known" in r.json()["detail"]
    finally:
        await server.stop()
        await rt.stop()


async def test_the_process_tuning_lasts_while_a_threaded_server_runs() -> None:
    """Shorter GIL turns and a larger young generation while any threaded API server runs; the process's
    own settings come back when the last one stops (servers may overlap: module fixtures do)."""
    import gc
    import sys

    from fastapi import FastAPI

    from mlsysops.continuum.api import server as api_server

    class _Backend:
        agents_loop = None

    def app() -> FastAPI:
        a = FastAPI()
        a.state.backend = _Backend()
        return a

    switch, thresholds = sys.getswitchinterval(), gc.get_threshold()
    first, second = api_server.ApiServer(app()), api_server.ApiServer(app())
    await first.start()
    await second.start()
    assert sys.getswitchinterval() <= api_server.GIL_SWITCH_INTERVAL
    assert gc.get_threshold()[0] >= api_server.GC_YOUNG_THRESHOLD
    await first.stop()
    assert sys.getswitchinterval() <= api_server.GIL_SWITCH_INTERVAL     # the second still runs
    await second.stop()
    assert (sys.getswitchinterval(), gc.get_threshold()) == (switch, thresholds)
