"""A background writer for Kubernetes objects an agent keeps up to date (CR specs, CR status).

Subclasses implement `sync()` (write what differs; False on failure, never raise) and `pending`;
callers change the wanted state synchronously and call `wake()`. `run()` syncs on every wake and, while
the server fails, retries every `retry_s`, so an unreachable API server never blocks or crashes an agent.
"""

from __future__ import annotations

import asyncio
import contextlib


class SyncLoop:
    def __init__(self, *, retry_s: float, name: str) -> None:
        self.retry_s = retry_s
        self._name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def pending(self) -> bool:
        raise NotImplementedError

    async def sync(self) -> bool:
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Sync on every change; while the server fails, retry every `retry_s`."""
        while True:
            self._wake.clear()
            ok = await self.sync()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if ok else self.retry_s):
                    await self._wake.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=self._name)

    async def stop(self, *, flush: bool = True) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if flush and self.pending:
            await self.sync()
