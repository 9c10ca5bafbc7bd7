"""The API's read cache: answers at most `max_age` old, one fan-out per question at a time, nothing kept
from before a state change. The clock is a variable of the test and fan-outs finish when the test says
so: no test here depends on how fast the machine is."""

from __future__ import annotations

import asyncio

import pytest

from mlsysops.continuum.api.read_cache import Fresh, ReadCache
from tests.support import until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(30)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FanOut:
    """A fetch that answers `n` (its call number) when released; counts how often it was started."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        n = self.calls
        await self.release.wait()
        return n


async def test_concurrent_readers_share_one_fan_out():
    clock, fetch = Clock(), FanOut()
    cache = ReadCache(1.0, clock=clock)
    readers = [asyncio.ensure_future(cache.get("q", fetch)) for _ in range(5)]
    await until(lambda: fetch.calls == 1, 5, "the fan-out did not start")
    await asyncio.sleep(0)           # let every reader reach the cache
    assert fetch.calls == 1 and not any(r.done() for r in readers)
    fetch.release.set()
    assert await asyncio.gather(*readers) == [1] * 5
    assert cache.fetches == 1


async def test_an_answer_is_reused_up_to_max_age_and_never_after():
    clock, fetch = Clock(), FanOut()
    fetch.release.set()
    cache = ReadCache(1.0, clock=clock)
    assert await cache.get("q", fetch) == 1
    clock.now += 1.0                  # exactly max_age old: still fresh enough
    assert await cache.get("q", fetch) == 1
    clock.now += 0.001                # older than max_age: asked again
    assert await cache.get("q", fetch) == 2
    assert await cache.get("other", fetch) == 3      # another question, another fan-out


async def test_age_counts_from_when_the_fan_out_started():
    clock, fetch = Clock(), FanOut()
    cache = ReadCache(1.0, clock=clock)
    first = asyncio.ensure_future(cache.get("q", fetch))
    await until(lambda: fetch.calls == 1, 5, "the fan-out did not start")
    clock.now += 0.8                  # a slow fan-out: its answer is already 0.8 s old when it arrives
    fetch.release.set()
    assert await first == 1
    clock.now += 0.3                  # 1.1 s after it started: too old, although it arrived 0.3 s ago
    assert await cache.get("q", fetch) == 2


async def test_a_reader_does_not_join_a_fan_out_that_started_too_long_ago():
    clock, fetch = Clock(), FanOut()
    cache = ReadCache(1.0, clock=clock)
    slow = asyncio.ensure_future(cache.get("q", fetch))
    await until(lambda: fetch.calls == 1, 5, "the fan-out did not start")
    clock.now += 1.5
    late = asyncio.ensure_future(cache.get("q", fetch))
    await until(lambda: fetch.calls == 2, 5, "the late reader joined the old fan-out")
    fetch.release.set()
    assert (await slow, await late) == (1, 2)


async def test_invalidate_forgets_answers_and_fan_outs_under_way():
    clock, fetch = Clock(), FanOut()
    fetch.release.set()
    cache = ReadCache(1.0, clock=clock)
    assert await cache.get("q", fetch) == 1
    cache.invalidate()
    assert await cache.get("q", fetch) == 2           # same instant, but after a state change
    fetch.release.clear()
    before = asyncio.ensure_future(cache.get("q2", fetch))
    await until(lambda: fetch.calls == 3, 5, "the fan-out did not start")
    cache.invalidate()                               # the state changes while a fan-out is under way
    after = asyncio.ensure_future(cache.get("q2", fetch))
    await until(lambda: fetch.calls == 4, 5, "a reader after the change joined the fan-out from before it")
    fetch.release.set()
    assert (await before, await after) == (3, 4)
    assert await cache.get("q2", fetch) == 4           # the answer from after the change is kept


async def test_a_failed_fan_out_is_not_kept_and_a_gone_reader_does_not_cancel_the_others():
    clock = Clock()
    cache = ReadCache(1.0, clock=clock)
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("cluster unreachable")

    with pytest.raises(RuntimeError):
        await cache.get("q", failing)
    with pytest.raises(RuntimeError):
        await cache.get("q", failing)
    assert calls == 2

    fetch = FanOut()
    gone = asyncio.ensure_future(cache.get("p", fetch))
    stays = asyncio.ensure_future(cache.get("p", fetch))
    await until(lambda: fetch.calls == 1, 5, "the fan-out did not start")
    gone.cancel()
    fetch.release.set()
    assert await stays == 1 and gone.cancelled()


async def test_zero_max_age_still_coalesces_concurrent_readers():
    clock, fetch = Clock(), FanOut()
    cache = ReadCache(0.0, clock=clock)
    a = asyncio.ensure_future(cache.get("q", fetch))
    b = asyncio.ensure_future(cache.get("q", fetch))
    await until(lambda: fetch.calls == 1, 5, "the fan-out did not start")
    fetch.release.set()
    assert (await a, await b) == (1, 1)
    clock.now += 0.001
    assert await cache.get("q", fetch) == 2


async def test_refresh_ahead_answers_at_once_and_refreshes_in_the_background():
    clock, fetch = Clock(), FanOut()
    fetch.release.set()
    cache = ReadCache(1.0, clock=clock, refresh_ahead=0.5)
    assert await cache.get("q", fetch) == 1
    clock.now += 0.4                  # young: no refresh
    assert await cache.get("q", fetch) == 1 and fetch.calls == 1
    fetch.release.clear()
    clock.now += 0.2                  # past half of max_age: answered at once, one refresh started
    assert await cache.get("q", fetch) == 1
    assert await cache.get("q", fetch) == 1
    await until(lambda: fetch.calls == 2, 5, "no refresh started")
    await asyncio.sleep(0)
    assert fetch.calls == 2           # one refresh at a time
    fetch.release.set()
    await until(lambda: cache._running == {}, 5, "the refresh did not finish")
    assert await cache.get("q", fetch) == 2
    clock.now += 1.5                  # nobody read for longer than max_age: the reader waits, as without
    fetch.release.clear()
    late = asyncio.ensure_future(cache.get("q", fetch))
    await until(lambda: fetch.calls == 3, 5, "no fan-out for a too old answer")
    assert not late.done()
    fetch.release.set()
    assert await late == 3


async def test_a_failed_refresh_keeps_the_answer_until_max_age():
    clock = Clock()
    cache = ReadCache(1.0, clock=clock, refresh_ahead=0.5)
    answers = [1]

    async def flaky() -> int:
        if not answers:
            raise RuntimeError("cluster unreachable")
        return answers.pop()

    assert await cache.get("q", flaky) == 1
    clock.now += 0.7
    assert await cache.get("q", flaky) == 1            # refresh starts, and fails
    await until(lambda: cache._running == {}, 5, "the refresh did not finish")
    assert await cache.get("q", flaky) == 1            # still within max_age
    clock.now += 0.4
    with pytest.raises(RuntimeError):
        await cache.get("q", flaky)


async def test_an_answer_cached_further_down_keeps_its_own_age():
    """A fetch that answers a `Fresh` (the agents' cache behind the API thread's): its start counts, and
    `newer_than` asks past an answer already held."""
    clock = Clock()
    inner = ReadCache(1.0, clock=clock)
    outer = ReadCache(1.0, clock=clock)
    inner_fetch = FanOut()
    inner_fetch.release.set()
    assert await inner.get("q", inner_fetch) == 1           # the agents' cache has an answer from t=100
    clock.now += 0.8

    async def through(newer_than: float | None = None) -> Fresh:
        return await inner.get_fresh("q", inner_fetch, newer_than=newer_than)

    assert await outer.get("q", through) == 1
    clock.now += 0.3                  # 1.1 s after the *inner* fan-out: too old for the outer as well
    held = outer._done["q"].started
    assert held == 100.0
    assert await outer.get("q", lambda: through(newer_than=held)) == 2
    assert inner_fetch.calls == 2
