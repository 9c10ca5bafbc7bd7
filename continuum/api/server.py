"""Serving the API on its own thread and event loop (no signal handling of its own).

The agents' loop carries liveness (heartbeats, presence, the watchdog): an HTTP request must never hold
it up. So uvicorn runs on a thread of its own with its own loop, and each endpoint runs on the agents' loop
only for the time it reads or changes agent state (`mlsysops.continuum.api.loop_bridge`). `threaded=False`
keeps the former shape (a task of the running loop) for embedders that want one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handling: the process that embeds it owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """Serves an ASGI app, by default on a thread of its own. The socket is bound in `start()`, so a busy
    port raises OSError there (uvicorn itself would exit the process)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, threaded: bool = True) -> None:
        self.app, self.host, self.port = app, host, port
        self.threaded = threaded
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

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
        self._server = _QuietServer(config)
        if self.threaded:
            self.app.state.backend.agents_loop = asyncio.get_running_loop()   # see loop_bridge
            self._thread = threading.Thread(target=self._serve_in_thread, args=(sock,), name="mlsysops-api",
                                            daemon=True)
            self._thread.start()
        else:
            self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._stopped_early():
                raise RuntimeError("the API server stopped during startup") from self._error
            if time.monotonic() > deadline:
                raise TimeoutError("the API server did not start")
            await asyncio.sleep(0.01)
        return self.url

    def _serve_in_thread(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:   # noqa: BLE001 - reported by start()/stop() on the caller's side
            self._error = exc

    def _stopped_early(self) -> bool:
        if self._task is not None and self._task.done():
            self._task.result()
            return True
        return self._thread is not None and not self._thread.is_alive()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5.0)
            except TimeoutError:
                self._task.cancel()
        if self._thread is not None:
            # endpoints still running on this loop must be able to finish: wait without blocking it
            await asyncio.to_thread(self._thread.join, 5.0)
            if self._thread.is_alive():
                self._server.force_exit = True
                await asyncio.to_thread(self._thread.join, 2.0)
        if self.threaded:
            self.app.state.backend.agents_loop = None
        self._server = self._task = self._thread = None
