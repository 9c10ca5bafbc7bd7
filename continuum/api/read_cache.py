"""Short-lived, coalescing cache of the API's reads of other agents (decision records, collection plans).

A read of other agents fans out over the protocol (continuum -> clusters -> nodes) and costs tens of
milliseconds and a burst of messages; the dashboard stream, `mlsysops get decisions -w` and `mlsysops events`
repeat the same reads every second. So an answer is reused while it is at most `max_age` seconds old
(measured from when its fan-out started), and readers that ask while a fan-out for the same question is
under way wait for that one instead of starting their own. Like a Prometheus scrape, a read may thus be up
to `max_age` old; a failed fan-out is not kept (the next reader tries again), and `invalidate()` (called
after every state-changing API request) drops everything, so a read after an action never reuses an answer
from before it.

Two options serve readers that must not wait (the API thread's own copy, `ApiBackend.served`):
`refresh_ahead` (a fraction of `max_age`): a hit older than that starts one fan-out in the background and
is answered at once, so steady readers never wait for a fan-out and an answer is still never older than
`max_age`. A fetch may answer a `Fresh` of its own (an answer cached further down): its age counts from when
*that* fan-out started, and `get(..., newer_than=t)` asks for an answer that started after `t`.
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
                 max_entries: int = 256, refresh_ahead: float | None = None) -> None:
        if max_age < 0:
            raise ValueError(f"max_age: must be >= 0, got {max_age}")
        if refresh_ahead is not None and not 0 < refresh_ahead < 1:
            raise ValueError(f"refresh_ahead: a fraction of max_age in (0, 1), got {refresh_ahead}")
        self.max_age = max_age
        self.refresh_ahead = refresh_ahead
        self._clock = clock
        self._max_entries = max_entries
        self._done: dict[Hashable, Fresh] = {}
        self._running: dict[Hashable, tuple[float, asyncio.Task[Fresh]]] = {}
        self._generation = 0
        self.fetches = 0          # fan-outs started (observability and tests)

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[Any]], *,
                  newer_than: float | None = None) -> Any:
        return (await self.get_fresh(key, fetch, newer_than=newer_than)).value

    async def get_fresh(self, key: Hashable, fetch: Callable[[], Awaitable[Any]], *,
                        newer_than: float | None = None) -> Fresh:
        """As `get`, with the answer's start time (this cache's clock)."""
        now = self._clock()

        def usable(started: float) -> bool:
            return now - started <= self.max_age and (newer_than is None or started > newer_than)

        hit = self._done.get(key)
        if hit is not None and usable(hit.started):
            if self.refresh_ahead is not None and now - hit.started > self.refresh_ahead * self.max_age \
                    and key not in self._running:
                self._start(key, fetch, now)       # in the background: this reader has its answer
            return hit
        running = self._running.get(key)
        if running is not None and usable(running[0]):
            task = running[1]
        else:      # none under way, or one that started too long ago to answer within the bound
            task = self._start(key, fetch, now)
        # shielded: a reader that goes away (client disconnect) must not cancel the others' answer
        return await asyncio.shield(task)

    def started(self, key: Hashable) -> float | None:
        """When the held answer to `key` started (fresh or not), or None."""
        hit = self._done.get(key)
        return None if hit is None else hit.started

    def _start(self, key: Hashable, fetch: Callable[[], Awaitable[Any]], now: float) -> asyncio.Task[Fresh]:
        task = asyncio.ensure_future(self._fetch(key, fetch, now, self._generation))
        task.add_done_callback(_retrieve)      # every reader may be gone when it fails
        self._running[key] = (now, task)
        return task

    async def _fetch(self, key: Hashable, fetch: Callable[[], Awaitable[Any]], started: float,
                     generation: int) -> Fresh:
        self.fetches += 1
        try:
            answer = await fetch()
            fresh = answer if isinstance(answer, Fresh) else Fresh(answer, started)
        finally:
            running = self._running.get(key)
            if running is not None and running[1] is asyncio.current_task():
                del self._running[key]
        if generation == self._generation:    # not invalidated while under way
            if len(self._done) >= self._max_entries:
                self._evict(self._clock())
            if key not in self._done or self._done[key].started <= fresh.started:
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
