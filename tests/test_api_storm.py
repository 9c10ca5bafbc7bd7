"""An API request storm leaves liveness untouched: the API has its own thread and loop, so while many
clients hammer it no agent is falsely declared lost and every child keeps heartbeating (judged by awaiting
conditions on the agents, not by timing). The clients run on a thread of their own, as a real client
would not share the agents' loop either."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import httpx
import pytest

from mlsysops.continuum.api_auth import Role
from tests.support import demo_slice, formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]

# short liveness (0.6 s): a loop held up by the API for more than that would declare children lost
FAST = {"all": {"heartbeat": 0.2, "liveness_misses": 3, "monitor": 0.5, "status_report": 1.0}}
TOKEN = "storm-" + uuid.uuid4().hex
PATHS = ("/api/v1/decisions?limit=100", "/api/v1/apps", "/api/v1/telemetry", "/api/v1/nodes",
         "/api/v1/dashboard/state")
CLIENTS = 20


def storm(url: str, stop: threading.Event, done: list[int], errors: list[str]) -> None:
    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            n = 0
            while not stop.is_set():
                r = await c.get(PATHS[(i + n) % len(PATHS)])
                n += 1
                if r.status_code != 200:
                    errors.append(f"{r.request.url}: {r.status_code} {r.text[:200]}")
                done[0] += 1

    async def main() -> None:
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))

    asyncio.run(main())


def parents(rt: Any) -> list[Any]:
    return [rt.continuum, *rt.clusters.values()]


async def test_an_api_storm_leaves_liveness_untouched(prosody: Any) -> None:
    async with demo_slice(prosody.port, FAST, {TOKEN: Role.read}) as (rt, url):
        await until(lambda: formed(rt), 30, "hierarchy did not form")
        lost: list[str] = []
        for p in parents(rt):
            p.children.on_lost(lambda child, reason: _note(lost, child, reason))
        seqs = {c.jid: c.seq for p in parents(rt) for c in p.children.children()}
        stop, done, errors = threading.Event(), [0], []
        worker = threading.Thread(target=storm, args=(url, stop, done, errors), daemon=True)
        worker.start()
        try:
            await until(lambda: done[0] >= 1500, 120, "the storm served its requests", interval=0.2)
            # every child heartbeated many times during the storm, and was heard each time
            await until(lambda: all(c.seq >= seqs[c.jid] + 10 for p in parents(rt) for c in p.children.children()),
                        60, "every child kept heartbeating")
        finally:
            stop.set()
            await asyncio.to_thread(worker.join, 30)
        assert not lost, f"falsely declared lost during the storm: {lost}"
        assert all(c.alive for p in parents(rt) for c in p.children.children())
        assert not errors, errors[:5]
        assert rt.continuum.loop_lag.max_s > 0   # the lag was measured (its value is the benchmark's business)


async def _note(lost: list[str], child: Any, reason: str) -> None:
    lost.append(f"{child.agent_id}: {reason}")
