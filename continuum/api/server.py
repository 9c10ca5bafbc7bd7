"""Serving the API as a task of the running event loop (no threads, no signal handling of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class _InLoopServer(uvicorn.Server):
    """uvicorn without its signal handling: the process that embeds it owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """Serves an ASGI app as a task of the running event loop. The socket is bound in `start()`, so a
    busy port raises OSError there (uvicorn itself would exit the process)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> str:
        sock = socket.create_server((self.host, self.port), family=socket.AF_INET6 if ":" in self.host
                                    else socket.AF_INET)
        # asyncio turns Nagle off only on sockets created with proto=IPPROTO_TCP, which create_server's
        # are not: without this a keep-alive client waits ~40 ms (delayed ACK) for every small response.
        # Accepted connections inherit the option.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = _InLoopServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the API server stopped during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("the API server did not start")
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 5.0)
        except TimeoutError:
            self._task.cancel()
        self._server = self._task = None
