"""Serving the API on its own thread and event loop (no signal handling of its own).

The agents' loop carries liveness (heartbeats, presence, the watchdog): an HTTP request must never hold
it up. So uvicorn runs on a thread of its own with its own loop, and each endpoint runs on the agents' loop
only for the time it reads or changes agent state (`mlsysops.continuum.api.loop_bridge`). `threaded=False`
keeps the former shape (a task of the running loop) for embedders that want one loop.

The two threads share the GIL. With CPython's default switch interval (5 ms) a busy API thread keeps the
GIL for up to 5 ms each time the agents' thread wakes from I/O, and a decision read that makes hundreds of
such wake-ups took 0.5 s under 50 clients (the agents' loop lagging 170-200 ms). While the threaded server
runs, the process switches every `GIL_SWITCH_INTERVAL` instead: measured with 50 clients on decisions,
loop lag max 172 -> 45 ms, p99 151 -> 74 ms, throughput unchanged (`benchmarks/api_load.py`).

The collector stops both threads too. At ~2,000 requests a second a request's objects outlived the default
700-allocation young generation, were promoted, and every few hundred ms a full collection walked the
agents' heap (25-45 ms each, up to 240 ms wall on a busy machine). A young generation of
`GC_YOUNG_THRESHOLD` lets them die young: no collection over 20 ms in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

GIL_SWITCH_INTERVAL = 0.0005   # seconds; CPython's default is 0.005
GC_YOUNG_THRESHOLD = 50_000    # allocations; CPython's default is 700


class _ProcessTuning:
    """Shorter GIL turns and a larger young generation while any threaded server runs (module docstring);
    the process's own settings come back when the last one stops."""

    def __init__(self) -> None:
        self._users = 0
        self._saved: tuple[float, tuple[int, int, int]] | None = None
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                switch, thresholds = sys.getswitchinterval(), gc.get_threshold()
                self._saved = (switch, thresholds)
                sys.setswitchinterval(min(switch, GIL_SWITCH_INTERVAL))
                gc.set_threshold(max(thresholds[0], GC_YOUNG_THRESHOLD), *thresholds[1:])

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._saved is not None:
                sys.setswitchinterval(self._saved[0])
                gc.set_threshold(*self._saved[1])
                self._saved = None


_tuning = _ProcessTuning()


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
        self._tuned = False

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
            if not self._tuned:
                _tuning.acquire()
                self._tuned = True
            self._thread = threading.Thread(target=self._serve_in_thread, args=(sock,), name="mlsysops-api",
                                            daemon=True)
            self._thread.start()
        else:
            self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + timeout
        try:
            while not self._server.started:
                if self._stopped_early():
                    raise RuntimeError("the API server stopped during startup") from self._error
                if time.monotonic() > deadline:
                    raise TimeoutError("the API server did not start")
                await asyncio.sleep(0.01)
        except BaseException:
            self._untune()     # a caller that saw start() fail may never call stop()
            raise
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
        self._untune()
        self._server = self._task = self._thread = None

    def _untune(self) -> None:
        if self._tuned:
            _tuning.release()
            self._tuned = False
