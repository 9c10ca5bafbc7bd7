"""Short-lived, coalescing cache of the API's reads of other agents (decision records, collection plans).

A read of other agents fans out over the protocol (continuum -> clusters -> nodes) and costs tens of
milliseconds and a burst of messages; the dashboard stream, `mlsysops get decisions -w` and `mlsysops events`
repeat the same reads every second. So an answer is reused while it is at most `max_age` seconds old
(measured from when its fan-out started), and readers that ask while a fan-out for the same question is
under way wait for that one instead of starting their own. Like a Prometheus scrape, a read may thus be up
to `max_age` old; a failed fan-out is not kept (the next reader tries again), and `invalidate()` (called
after every state-changing API request) drops everything, so a read after an action never reuses an answer
from before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_AGE = 1.0     # seconds; the dashboard stream's default interval


@dataclass(frozen=True, slots=True)
class Fresh:
    """A shared answer and the monotonic time its fan-out started (callers must not mutate `value`)."""

    value: Any
    started: float


class ReadCache:
    """`get(key, fetch)`: the answer to `key` at most `max_age` old, one `fetch()` per key at a time."""

    def __init__(self, max_age: float = DEFAULT_MAX_AGE, *, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = 256) -> None:
        if max_age < 0:
            raise ValueError(f"max_age: must be >= 0, got {max_age}")
        self.max_age = max_age
        self._clock = clock
        self._max_entries = max_entries
        self._done: dict[Hashable, Fresh] = {}
        self._running: dict[Hashable, tuple[float, asyncio.Task[Fresh]]] = {}
        self._generation = 0
        self.fetches = 0          # fan-outs started (observability and tests)

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> Any:
        now = self._clock()
        hit = self._done.get(key)
        if hit is not None and now - hit.started <= self.max_age:
            return hit.value
        running = self._running.get(key)
        if running is not None and now - running[0] <= self.max_age:
            task = running[1]
        else:      # none under way, or one that started too long ago to answer within the bound
            task = asyncio.ensure_future(self._fetch(key, fetch, now, self._generation))
            task.add_done_callback(_retrieve)      # every reader may be gone when it fails
            self._running[key] = (now, task)
        # shielded: a reader that goes away (client disconnect) must not cancel the others' answer
        return (await asyncio.shield(task)).value

    async def _fetch(self, key: Hashable, fetch: Callable[[], Awaitable[Any]], started: float,
                     generation: int) -> Fresh:
        self.fetches += 1
        try:
            fresh = Fresh(await fetch(), started)
        finally:
            running = self._running.get(key)
            if running is not None and running[1] is asyncio.current_task():
                del self._running[key]
        if generation == self._generation:    # not invalidated while under way
            if len(self._done) >= self._max_entries:
                self._evict(self._clock())
            if key not in self._done or self._done[key].started <= started:
                self._done[key] = fresh
        return fresh

    def _evict(self, now: float) -> None:
        for k in [k for k, f in self._done.items() if now - f.started > self.max_age]:
            del self._done[k]
        while len(self._done) >= self._max_entries:
            del self._done[next(iter(self._done))]

    def invalidate(self) -> None:
        """Forget every answer; fan-outs under way still answer their readers but are not kept."""
        self._done.clear()
        self._running.clear()
        self._generation += 1


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
