"""Helpers shared by the tests: await a condition (async, or blocking for tests that drive subprocesses),
build placement value objects, and run the demo slice with its REST API.

One definition of each: a test module binds its own defaults with `functools.partial` if it needs them
rather than writing another loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsysops.agents.placement.types import ComponentRequest, NodeView

if TYPE_CHECKING:   # the slice helpers' imports are heavy; unit tests that only wait should not pay for them
    from mlsysops.cli.slice_runtime import SliceRuntime
    from mlsysops.continuum.api_auth import Role

AGENT_PASSWORD = secrets.token_urlsafe(16)
"""The one password of every test agent in a run. Agents register on the run's test servers (which allow it),
and slice JIDs repeat across tests (`cluster-edge-1@localhost`): one password lets a later test's agent log
in to the account an earlier test's agent created."""

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
GI = 1 << 30


# -- waiting on a condition -----------------------------------------------------------------------------
async def until(predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition",
                interval: float = 0.05) -> Any:
    """Await `predicate()` (sync or async) until truthy and return that value. After `timeout` seconds an
    AssertionError says `message`, the timeout and the last value seen. Tests never sleep blindly."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}: not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


def until_blocking(predicate: Callable[[], Any], timeout: float, message: str = "condition",
                   interval: float = 0.2, ignoring: tuple[type[BaseException], ...] = (OSError,)) -> Any:
    """`until` for synchronous tests that watch another process (CLI, `mlsysops up`): errors of the kinds in
    `ignoring` (e.g. the server not listening yet) count as "not yet"."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while True:
        try:
            value = predicate()
        except ignoring as exc:
            value = exc
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}: not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


def child_processes(name: str) -> list[int]:
    """Live processes called `name` whose parent is this test process (what a runtime here left behind)."""
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:   # it ended meanwhile
            continue
        if not stat:
            continue
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == name and int(fields[1]) == me and fields[0] != "Z":
            out.append(int(entry.name))
    return out


# -- placement value objects ----------------------------------------------------------------------------
def node_view(name: str = "node-1", **fields: Any) -> NodeView:
    """A schedulable node: 4 cores and 8 GiB free unless `fields` say otherwise."""
    fields.setdefault("cpu_capacity", 4.0)
    fields.setdefault("memory_capacity", 8 * GI)
    return NodeView(name=name, **fields)


def component_request(name: str = "web", **fields: Any) -> ComponentRequest:
    """What component `name` of app "app" asks for; nothing unless `fields` say otherwise."""
    return ComponentRequest(app="app", name=name, **fields)


# -- the demo slice -------------------------------------------------------------------------------------
def formed(rt: SliceRuntime) -> bool:
    """Every cluster agent registered with the continuum and every node (and device) alive in its cluster."""
    h = rt.hierarchy()
    devices = len(rt.devices.devices) if rt.devices is not None else 0
    return all(c["registered"] for c in h.values()) and \
        sum(sum(1 for alive in c["nodes"].values() if alive) for c in h.values()) == len(rt.spec.nodes) + devices


async def app_components(http: Any, app: str) -> dict[str, dict[str, Any]]:
    """Per component the status the REST API reports (empty while the app is unknown)."""
    r = await http.get(f"/api/v1/apps/{app}")
    return r.json()["components"] if r.status_code == 200 else {}


@contextlib.asynccontextmanager
async def demo_slice(xmpp_port: int, overrides: dict[str, dict[str, Any]],
                     tokens: dict[str, Role], path: Path = DEMO) -> AsyncIterator[tuple[SliceRuntime, str]]:
    """The demo slice, or the slice at `path` (every message over the given XMPP server), and its API on a
    free port."""
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.cli.slice_runtime import SliceRuntime
    from mlsysops.continuum.api import ApiBackend, ApiServer, create_app

    rt = SliceRuntime(load_slice(path), xmpp_port=xmpp_port, force_xmpp=True,
                      jid_suffix="-" + uuid.uuid4().hex[:6], overrides={k: dict(v) for k, v in overrides.items()})
    await rt.start()
    server = ApiServer(create_app(ApiBackend(runtime=rt), tokens), port=0)
    try:
        url = await server.start()
        yield rt, url
    finally:
        await server.stop()
        await rt.stop()
