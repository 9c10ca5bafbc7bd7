"""The API's thread and the agents' loop: HTTP on one, agent state on the other.

`ApiServer` serves the app on its own thread and event loop, so parsing, validating and encoding requests
and responses never delays an agent's heartbeat handling. Agent state (dicts the agents' loop mutates) is
only touched on the agents' loop: every endpoint runs there (`bridge_router`), and returns a JSON-ready
copy, which the API thread encodes. Request bodies are read on the API thread first (a body read is I/O of
the API's loop). With no agents' loop set on the backend (`agents_loop`: the app served in the agents'
loop, or through an ASGI transport in a test) endpoints run where they are called.

A hot read (`on_api_thread`) runs on the API thread instead: it answers from bytes the API thread holds
(`ApiBackend.served`) and hops to the agents' loop only to build a new answer, so a thousand requests a
second cost the agents' loop one hop per refresh instead of one per request.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute, APIRouter

T = TypeVar("T")


def agents_loop(app: FastAPI) -> asyncio.AbstractEventLoop | None:
    backend = getattr(app.state, "backend", None)
    return getattr(backend, "agents_loop", None)


def _loop_of(kw: dict[str, Any]) -> asyncio.AbstractEventLoop | None:
    """The agents' loop of the app serving this call: from its backend or its request."""
    for value in kw.values():
        if isinstance(value, Request):
            return agents_loop(value.app)
        loop = getattr(value, "agents_loop", None)
        if isinstance(loop, asyncio.AbstractEventLoop):
            return loop
    return None   # an endpoint that sees neither touches no agent state (health, static pages)


def _elsewhere(loop: asyncio.AbstractEventLoop | None) -> bool:
    if loop is None or loop.is_closed():
        return False
    try:
        return asyncio.get_running_loop() is not loop
    except RuntimeError:    # a worker thread of the API (sync endpoint)
        return True


async def on_agents(app: FastAPI, make: Callable[[], Awaitable[T]]) -> T:
    """Await `make()` on the agents' loop (here when there is none, or this is it)."""
    return await _on(agents_loop(app), make)


async def _on(loop: asyncio.AbstractEventLoop | None, make: Callable[[], Awaitable[T]]) -> T:
    if not _elsewhere(loop):
        return await make()
    assert loop is not None
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_run(make), loop))


async def _run(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def _detached(result: Any) -> Any:
    """A copy the API thread may encode while the agents go on changing their state."""
    if isinstance(result, Response) or result is None:
        return result
    return jsonable_encoder(result)


def _wrap(call: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(call):
        @functools.wraps(call)
        async def endpoint(**kw: Any) -> Any:
            loop = _loop_of(kw)
            if not _elsewhere(loop):
                return await call(**kw)
            for value in kw.values():
                if isinstance(value, Request) and value.method not in ("GET", "HEAD"):
                    await value.body()   # cached on the request; read here, on the API's loop
            return await _on(loop, lambda: _detached_call(call, kw))
        return endpoint

    @functools.wraps(call)
    def sync_endpoint(**kw: Any) -> Any:   # FastAPI runs it in a worker thread of the API
        loop = _loop_of(kw)
        if loop is None or loop.is_closed():
            return call(**kw)

        async def run() -> Any:
            return _detached(call(**kw))
        return asyncio.run_coroutine_threadsafe(run(), loop).result()
    return sync_endpoint


async def _detached_call(call: Callable[..., Awaitable[Any]], kw: dict[str, Any]) -> Any:
    return _detached(await call(**kw))


def on_api_thread(call: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an endpoint that touches agent state only through `on_agents` (left on the API's loop)."""
    call.__bridged__ = True   # type: ignore[attr-defined]
    return call


def bridge_router(router: APIRouter) -> APIRouter:
    """Make the router's endpoints run on the agents' loop of the backend that serves them (before the
    router is included: inclusion builds the handlers from `route.endpoint`), except `on_api_thread` ones.
    Idempotent."""
    for route in router.routes:
        if isinstance(route, APIRoute) and not getattr(route.endpoint, "__bridged__", False):
            wrapped = _wrap(route.endpoint)
            wrapped.__bridged__ = True   # type: ignore[attr-defined]
            route.endpoint = wrapped
            route.dependant.call = wrapped
    return router
