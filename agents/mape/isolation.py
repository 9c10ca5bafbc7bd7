"""Isolation of plugin calls: timeouts, exception capture, result validation, failure backoff.

Every call into a policy or mechanism goes through `call_plugin()`:
- coroutine functions are awaited under `asyncio.wait_for(timeout)`;
- plain functions run in a daemon thread each (not the loop, not a ThreadPoolExecutor: pool threads are joined
  at interpreter exit, so one hung plugin would hang shutdown). A hung sync call cannot be killed; its thread
  stays parked until the function returns. At most `MAX_STUCK_THREADS` such threads may be outstanding; past
  that, further sync calls are refused (outcome "error") instead of leaking threads without bound;
- a sync function that returns an awaitable has it awaited within the remaining time;
- exceptions become a one-line summary plus the innermost frames; nothing propagates to the caller.

Policies do not use `call_plugin` directly: `Policy.call()` (plugins.py) runs a file policy in its worker
process (`sandbox.PolicyWorker`) and a built-in one (module, entry point, registered object: code installed
with the agent) on its own `PolicyLoop`: a thread with its own event loop, so a blocking call, also inside
`async def`, stalls that policy and never the agent's loop. A call that overruns is abandoned with outcome
"timeout"; while the thread is still stuck in it, further calls are refused at once (also "timeout") rather
than queued behind it. The agent's objects among its arguments (telemetry, ml_connector) are `AgentBound`:
their calls run on the agent's loop. A thread cannot be killed nor its memory bounded: that is what the worker process is
for, and why files and uploads use it.

Memory of a built-in is *accounted* instead (`PolicyLoop(memory_mb=...)`): the agent's RSS is read before and
after every call and the difference added to the policy's balance (memory freed during a later call pays it
back; a balance never goes below 0). A call that leaves the balance above the budget ends as
`memory_exceeded` (limit and balance recorded) and the engine disables the policy at once: memory a thread
keeps cannot be taken back the way a worker's can, so running it again could only grow the agent further.
The account is by coincidence, not by owner: whatever the agent allocates during the policy's call counts
too, which is why the budget (`SandboxLimits.builtin_memory_mb`, 512 MiB) is far above anything a healthy
decision retains.

Backoff (`FailureBackoff`): after `threshold` consecutive failures of a key (the engine uses (policy, asset)),
the key is blocked for base * 2**(failures - threshold) seconds, capped at `cap`. One success resets it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlsysops.agents.contracts.errors import PluginContractError
from mlsysops.agents.contracts.explanation import Explanation, normalize_explanation

__all__ = ["AgentBound", "CallResult", "FailureBackoff", "PluginContractError", "PolicyLoop", "agent_rss_mb", "bind_to_agent",
           "call_plugin",
           "outstanding_threads",
           "summarize_exception", "validate_analyze_result", "validate_plan_result"]

MAX_STUCK_THREADS = 32
_outstanding_threads = 0
_outstanding_lock = threading.Lock()


@dataclass(slots=True)
class CallResult:
    """Outcome of one isolated call: status "ok" (value set), "error", "timeout" or "memory_exceeded"
    (reason set; for the last two `limit` is the bound, seconds or MiB, and `measured` what was seen)."""

    status: Literal["ok", "error", "timeout", "memory_exceeded"]
    value: Any = None
    reason: str = ""
    traceback: str = ""
    duration: float = 0.0
    limit: float | None = None
    measured: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def summarize_exception(exc: BaseException, frames: int = 3) -> tuple[str, str]:
    """(one-line summary naming type, message and innermost location; short traceback of the last frames)."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = ""
    if tb:
        last = tb[-1]
        where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
    msg = str(exc)
    if len(msg) > 300:
        msg = msg[:300] + "..."
    summary = f"{type(exc).__name__}: {msg}{where}"
    short_tb = "".join(traceback.format_list(tb[-frames:])) + f"{type(exc).__name__}: {msg}"
    return summary, short_tb


def _run_in_thread(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> asyncio.Future[Any]:
    """Run fn in a new daemon thread; the returned future resolves on the calling loop."""
    global _outstanding_threads
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def deliver(ok: bool, payload: Any) -> None:
        if fut.done():
            return  # the caller timed out already
        if ok:
            fut.set_result(payload)
        else:
            fut.set_exception(payload)

    def runner() -> None:
        global _outstanding_threads
        try:
            value = fn(*args, **kwargs)
            outcome: tuple[bool, Any] = (True, value)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller
            outcome = (False, exc)
        finally:
            with _outstanding_lock:
                _outstanding_threads -= 1
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:
            pass  # loop closed while we were stuck

    with _outstanding_lock:
        if _outstanding_threads >= MAX_STUCK_THREADS:
            raise RuntimeError(f"too many plugin calls still running in threads ({_outstanding_threads})")
        _outstanding_threads += 1
    name = getattr(fn, "__qualname__", "plugin")
    threading.Thread(target=runner, name=f"plugin:{name}", daemon=True).start()
    return fut


def outstanding_threads() -> int:
    """Sync plugin calls currently running in threads (includes hung ones)."""
    return _outstanding_threads


async def call_plugin(
    fn: Callable[..., Any], *args: Any, timeout: float, kwargs: Mapping[str, Any] | None = None
) -> CallResult:
    """Call a plugin function (sync or async) in isolation; never raises (except on cancellation)."""
    kwargs = kwargs or {}
    start = time.monotonic()
    try:
        if inspect.iscoroutinefunction(fn):
            value = await asyncio.wait_for(fn(*args, **kwargs), timeout)
        else:
            value = await asyncio.wait_for(_run_in_thread(fn, args, kwargs), timeout)
            if inspect.isawaitable(value):
                remaining = max(0.0, timeout - (time.monotonic() - start))
                value = await asyncio.wait_for(value, remaining)
    except TimeoutError:
        return CallResult(
            "timeout",
            reason=f"{getattr(fn, '__name__', 'call')} did not return within {timeout:g}s",
            duration=time.monotonic() - start,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - isolation is the point: summarise, never propagate
        summary, tb = summarize_exception(exc)
        return CallResult("error", reason=summary, traceback=tb, duration=time.monotonic() - start)
    return CallResult("ok", value=value, duration=time.monotonic() - start)


_PLAIN = (type(None), bool, int, float, str, bytes, dict, list, tuple, set, frozenset)


def is_async_callable(fn: Any) -> bool:
    """A coroutine function, or an object whose class's __call__ is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        inspect.getattr_static(type(fn), "__call__", None))


class AgentBound:
    """What a policy on a PolicyLoop gets for an object of the agent (the telemetry view, an ml_connector):
    every call runs on the agent's loop, so it never races the agent's own use of the object (Knowledge is
    not thread-safe) and a client bound to the agent's loop keeps working. Async methods stay awaitable;
    callables found in it (the original contract's `telemetry["query"]`) are bound the same way."""

    __slots__ = ("_obj", "_loop")

    def __init__(self, obj: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._obj, self._loop = obj, loop

    def _sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            value = fn(*args, **kwargs)
            return await value if inspect.isawaitable(value) else value

        value = asyncio.run_coroutine_threadsafe(run(), self._loop).result()
        return bind_to_agent(value, self._loop) if callable(value) else value

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if is_async_callable(fn):
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                fut = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop)
                return await asyncio.wrap_future(fut)
            return call_async
        return lambda *args, **kwargs: self._sync(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        return self._wrap(attr) if callable(attr) else attr

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._obj)(*args, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        return self._sync(self._obj.__getitem__, key)

    def __iter__(self) -> Any:
        return iter(self._sync(lambda: list(self._obj)))

    def __len__(self) -> int:
        return self._sync(len, self._obj)

    def __contains__(self, key: Any) -> bool:
        return self._sync(lambda: key in self._obj)


def bind_to_agent(value: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """An argument for a policy on a PolicyLoop: plain data as is (the engine passes copies), agent objects
    and a mapping's callable values as AgentBound."""
    if isinstance(value, dict) and any(callable(v) for v in value.values()):
        return {k: bind_to_agent(v, loop) if callable(v) else v for k, v in value.items()}
    if isinstance(value, _PLAIN):
        return value
    return AgentBound(value, loop)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Body of a PolicyLoop thread: serve until stopped, then drop what is pending and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.close()


def agent_rss_mb() -> float:
    """This process's resident set (MiB) from /proc/self/statm (a few microseconds); 0.0 where unreadable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return 0.0


_PAGE_MB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) / (1 << 20)


class PolicyLoop:
    """A daemon thread running an event loop of its own for one in-process policy (see module docstring)."""

    def __init__(self, name: str, memory_mb: float | None = None) -> None:
        self.name = name
        self.memory_mb = memory_mb          # budget of the agent's RSS growth during this policy's calls
        self.retained_mb = 0.0              # the balance: growth minus what later calls gave back
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._stuck: tuple[threading.Event, float, str] | None = None   # (finished, since, function)
        self.calls = 0

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=_run_loop, args=(loop,), name=f"policy:{self.name}", daemon=True).start()
                self._loop = loop
            return self._loop

    async def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> CallResult:
        fname = getattr(fn, "__name__", "call")
        start = time.monotonic()
        if self._stuck is not None:
            finished, since, stuck_fn = self._stuck
            if not finished.is_set():
                return CallResult("timeout", reason=(
                    f"{fname} not called: {self.name} is still inside {stuck_fn}, which overran its {timeout:g}s "
                    f"{time.monotonic() - since:.0f}s ago (a blocking call)"), limit=timeout,
                    measured=round(time.monotonic() - since, 3))
            self._stuck = None
        finished = threading.Event()

        async def invoke() -> Any:
            try:
                value = fn(*args)
                if inspect.isawaitable(value):
                    value = await value
                return value
            finally:
                finished.set()

        self.calls += 1
        agent_loop = asyncio.get_running_loop()
        args = tuple(bind_to_agent(a, agent_loop) for a in args)
        rss_before = agent_rss_mb()
        cfut = asyncio.run_coroutine_threadsafe(invoke(), self._ensure())
        try:
            value = await asyncio.wait_for(asyncio.wrap_future(cfut), timeout)
        except TimeoutError:
            cfut.cancel()
            self._stuck = (finished, start, fname)
            return CallResult("timeout", reason=f"{fname} did not return within {timeout:g}s",
                              duration=time.monotonic() - start, limit=timeout,
                              measured=round(time.monotonic() - start, 3))
        except asyncio.CancelledError:
            cfut.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - isolation is the point: summarise, never propagate
            summary, tb = summarize_exception(exc)
            over = self._account(rss_before, start)
            return over or CallResult("error", reason=summary, traceback=tb, duration=time.monotonic() - start)
        return self._account(rss_before, start) or CallResult("ok", value=value,
                                                                      duration=time.monotonic() - start)

    def _account(self, rss_before: float, start: float) -> CallResult | None:
        """Add the call's RSS change to the balance; a `memory_exceeded` result once it passes the budget."""
        self.retained_mb = max(0.0, self.retained_mb + agent_rss_mb() - rss_before)
        if self.memory_mb is None or self.retained_mb <= self.memory_mb:
            return None
        return CallResult("memory_exceeded", reason=(
            f"the agent's memory grew by {self.retained_mb:.0f} MiB during {self.name}'s calls and was "
            f"not given back (budget {self.memory_mb:g} MiB for a built-in policy, which shares the agent's "
            "process)"), duration=time.monotonic() - start, limit=self.memory_mb,
            measured=round(self.retained_mb, 1))

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)

    def describe(self) -> dict[str, Any]:
        stuck = self._stuck is not None and not self._stuck[0].is_set()
        return {"kind": "thread", "calls": self.calls, "stuck": stuck, "memory_budget_mb": self.memory_mb,
                "retained_mb": round(self.retained_mb, 1)}


def _is_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    dtype = getattr(value, "dtype", None)  # numpy.bool_ without importing numpy
    return dtype is not None and getattr(dtype, "kind", "") == "b" and getattr(value, "shape", None) == ()


def _explanation_from(parts: tuple[Any, ...] | list[Any], context: dict[str, Any]) -> Explanation | None:
    return normalize_explanation(parts[2] if len(parts) == 3 else None, context)


def validate_analyze_result(value: Any) -> tuple[bool, dict[str, Any], Explanation | None]:
    """(needed, context, explanation) from analyze's return, or PluginContractError naming what is wrong."""
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise PluginContractError(
            f"analyze must return (bool, dict) or (bool, dict, explanation), got {_describe(value)}"
        )
    needed, context = value[0], value[1]
    if not _is_bool(needed):
        raise PluginContractError(f"analyze's first element must be a bool, got {_describe(needed)}")
    if not isinstance(context, dict):
        raise PluginContractError(
            f"analyze's second element (context) must be a dict, got {_describe(context)}"
        )
    return bool(needed), context, _explanation_from(value, context)


def validate_plan_result(
    value: Any, known_mechanisms: set[str] | frozenset[str], declared: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any], Explanation | None]:
    """(plan, context, explanation) from plan's return, or PluginContractError.

    The plan must map registered mechanism names to commands; if the policy declared `mechanisms`, it may
    only plan for those.
    """
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise PluginContractError(
            f"plan must return (dict, dict) or (dict, dict, explanation), got {_describe(value)}"
        )
    plan, context = value[0], value[1]
    if plan is None:
        plan = {}
    if not isinstance(plan, dict):
        raise PluginContractError(
            f"plan's first element must be a dict {{mechanism: command}}, got {_describe(plan)}"
        )
    if not isinstance(context, dict):
        raise PluginContractError(f"plan's second element (context) must be a dict, got {_describe(context)}")
    for name in plan:
        if not isinstance(name, str):
            raise PluginContractError(f"plan key {name!r} is not a mechanism name")
        if name not in known_mechanisms:
            raise PluginContractError(
                f"plan names unknown mechanism {name!r}; registered: {sorted(known_mechanisms)}"
            )
        if declared and name not in declared:
            raise PluginContractError(
                f"plan names mechanism {name!r} the policy did not declare ({declared})"
            )
    return plan, context, _explanation_from(value, context)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:80] + "..."
    return f"{type(value).__name__} {text}"


@dataclass(slots=True)
class _BackoffState:
    failures: int = 0
    blocked_until: float = 0.0


class FailureBackoff:
    """Consecutive-failure counter per key with capped exponential blocking (see module docstring)."""

    def __init__(self, threshold: int = 3, base: float = 1.0, cap: float = 60.0) -> None:
        self.threshold = threshold
        self.base = base
        self.cap = cap
        self._state: dict[Hashable, _BackoffState] = {}

    def failure(self, key: Hashable, now: float | None = None) -> float:
        """Count a failure; return the backoff delay now in force (0 while under the threshold)."""
        now = time.monotonic() if now is None else now
        st = self._state.setdefault(key, _BackoffState())
        st.failures += 1
        if st.failures < self.threshold:
            return 0.0
        delay = min(self.cap, self.base * 2 ** (st.failures - self.threshold))
        st.blocked_until = now + delay
        return delay

    def success(self, key: Hashable) -> None:
        self._state.pop(key, None)

    def failures(self, key: Hashable) -> int:
        st = self._state.get(key)
        return 0 if st is None else st.failures

    def remaining(self, key: Hashable, now: float | None = None) -> float:
        """Seconds the key stays blocked (0 if not blocked)."""
        st = self._state.get(key)
        if st is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, st.blocked_until - now)

    def forget(self, key: Hashable) -> None:
        self._state.pop(key, None)
