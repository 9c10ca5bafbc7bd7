"""Helpers shared by the slice-level tests: await a condition, and run the demo slice with its REST API."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"


async def until(predicate: Any, timeout: float, message: str, interval: float = 0.05) -> Any:
    """Await `predicate()` (sync or async) until truthy and return it; AssertionError(message) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(interval)


def formed(rt: SliceRuntime) -> bool:
    """Every cluster agent registered with the continuum and every node alive in its cluster."""
    h = rt.hierarchy()
    return all(c["registered"] for c in h.values()) and \
        sum(sum(1 for alive in c["nodes"].values() if alive) for c in h.values()) == len(rt.spec.nodes)


async def app_components(http: Any, app: str) -> dict[str, dict[str, Any]]:
    """Per component the status the REST API reports (empty while the app is unknown)."""
    r = await http.get(f"/api/v1/apps/{app}")
    return r.json()["components"] if r.status_code == 200 else {}


@contextlib.asynccontextmanager
async def demo_slice(xmpp_port: int, overrides: dict[str, dict[str, Any]],
                     tokens: dict[str, Role]) -> AsyncIterator[tuple[SliceRuntime, str]]:
    """The demo slice (every message over the given XMPP server) and its API on a free port."""
    rt = SliceRuntime(load_slice(DEMO), xmpp_port=xmpp_port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides={k: dict(v) for k, v in overrides.items()})
    await rt.start()
    server = ApiServer(create_app(ApiBackend(runtime=rt), tokens), port=0)
    try:
        url = await server.start()
        yield rt, url
    finally:
        await server.stop()
        await rt.stop()
