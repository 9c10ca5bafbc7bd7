"""Policies in a worker process: the agent side (`PolicyWorker`); the worker is `sandbox_worker`.

One worker per loaded policy, started when the policy is loaded (the module body and initialize() run
there, never in the agent). Calls to one policy are serialised; each has the engine's `timeout`, counted
from when the worker receives it. A watchdog (the deadline of the I/O thread that carries the call) kills
the worker's whole process group when the call overruns, and the next call starts a fresh worker (module
loaded and initialize() run again; the pair's context lives in the agent, so nothing is lost). Memory is
bounded by the worker's RLIMIT_AS: an allocation past it raises MemoryError in the policy, reported as
`memory_exceeded` with the limit and the measured peak, and the worker is replaced.

What crosses the wire: the context, descriptions and mechanism states by value (pickled by the agent);
objects that must stay in the agent (the telemetry view, an ml_connector object) as stand-ins whose calls
come back as callbacks and run on the agent's event loop. Replies are unpickled by
`sandbox_wire.safe_loads` (plain data only).

The I/O of a call runs in a thread of `_IO_POOL`, never on the event loop, so a policy that blocks (also
inside `async def`) or never answers cannot delay the agent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import pickle
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsysops.agents.mape.isolation import CallResult, is_async_callable
from mlsysops.agents.mape.sandbox_wire import HEADER, MAX_FRAME, ProxyRef, UnsafeFrame, encode, safe_loads

log = logging.getLogger(__name__)

_IO_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="policy-io")
_SECRET_ENV = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|PRIVATE|_KEY$|^KEY", re.I)
_MAPPING_METHODS = ("__getitem__", "__iter__", "__len__", "__contains__")
_PLAIN = (type(None), bool, int, float, str, bytes, dict, list, tuple, set, frozenset)


@dataclass(slots=True)
class SandboxLimits:
    """Per-policy limits: a worker's address space (MiB), how long loading (module body + initialize) may
    take, and the agent-RSS growth a built-in policy's calls may account for (`isolation.PolicyLoop`)."""

    memory_mb: int = 1024
    load_timeout: float = 15.0
    builtin_memory_mb: int | None = 512


class SandboxError(Exception):
    """A failure inside the worker, already summarised there (summary + short traceback)."""

    def __init__(self, summary: str, traceback: str = "", status: str = "error") -> None:
        super().__init__(summary)
        self.summary, self.traceback, self.status = summary, traceback, status


class _Deadline(Exception):
    pass


def worker_env() -> dict[str, str]:
    """The agent's environment minus anything that looks like a secret, plus the import path of this
    mlsysops and single-threaded numeric libraries (their thread pools would eat the address-space limit)."""
    env = {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}
    import mlsysops

    pkg_parent = str(Path(mlsysops.__file__).parent.parent)   # the folder that holds this `mlsysops`
    paths = [pkg_parent] + [p for p in sys.path if p and os.path.isdir(p) and _import_root(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _import_root(path: str) -> bool:
    """An entry of the agent's import path the worker may have (it can read what is under it): the
    interpreter's own folders, installed packages, or what the operator put in $PYTHONPATH. Not the folder
    the agent happened to be started from (`python -m` puts it first; it may be a home holding state)."""
    real = os.path.realpath(path)
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    operator = {os.path.realpath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    return (real in operator or any(real == p or real.startswith(p + os.sep) for p in prefixes)
            or os.path.basename(real) in ("site-packages", "dist-packages"))


class PolicyWorker:
    """The worker process of one policy file (see module docstring)."""

    def __init__(self, name: str, path: str | Path, limits: SandboxLimits | None = None,
                 agent_id: str = "") -> None:
        self.name, self.path, self.agent_id = name, str(path), agent_id
        self.limits = limits or SandboxLimits()
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmpdir: str | None = None
        self.functions: dict[str, bool] = {}
        self.confinement = ""
        self.restarts = 0
        self.calls = 0
        self._lock = threading.Lock()
        self._closed = False
        self.last_pid: int | None = None

    # -- process -----------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix=f"mlsysops-policy-{self.name}-")
        env = worker_env()
        env["TMPDIR"] = self.tmpdir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlsysops.agents.mape.sandbox_worker", str(self.limits.memory_mb * 2**20)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, cwd=self.tmpdir, env=env,
            start_new_session=True, close_fds=True)
        self.last_pid = self.proc.pid
        assert self.proc.stdin is not None and self.proc.stdout is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)

    def load(self) -> dict[str, Any]:
        """Start the worker and load the policy there; returns its initialize() context (sync, blocking up
        to `limits.load_timeout`). Raises SandboxError with the worker's reason."""
        with self._lock:
            return self._load_locked()

    def _load_locked(self) -> dict[str, Any]:
        self.kill()
        self._spawn()
        deadline = time.monotonic() + self.limits.load_timeout
        try:
            self._send(("load", {"path": self.path, "name": self.name, "tmpdir": self.tmpdir}), deadline)
            op, payload = self._recv(deadline)
        except _Deadline:
            self.kill()
            raise SandboxError(f"TimeoutError: loading {Path(self.path).name} (module body and initialize()) "
                               f"did not finish within {self.limits.load_timeout:g}s; worker killed",
                               status="timeout") from None
        except (EOFError, UnsafeFrame) as exc:
            code = self.kill()
            raise SandboxError(f"worker exited while loading {Path(self.path).name} ({exc or code})") from None
        if op == "memory":
            self.kill()
            raise SandboxError(_memory_reason("loading", payload), status="memory_exceeded")
        if op != "loaded":
            self.kill()
            raise SandboxError(payload.get("summary", str(payload)), payload.get("traceback", ""))
        self.functions = payload["functions"]
        self.confinement = payload.get("confinement", "")
        return payload["context"]

    def kill(self) -> int | None:
        """Kill the worker's process group and reap it; returns its exit code (None if none ran)."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        return code

    def stop(self) -> None:
        """Kill the worker from any thread. A call in flight sees its pipe close and its own thread reaps
        the process (closing the pipes under its feet could hand their fd numbers to another file)."""
        proc = self.proc
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._lock.acquire(blocking=False):
            try:
                self.kill()
            finally:
                self._lock.release()

    def close(self) -> None:
        """Stop for good (the policy was removed or replaced): later calls fail instead of restarting it."""
        self._closed = True
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def busy(self) -> bool:
        """A call (or a load) is in progress."""
        return self._lock.locked()

    # -- frames ------------------------------------------------------------------------------------------
    def _send(self, message: Any, deadline: float) -> None:
        self._send_frame(encode(message), deadline)

    def _send_frame(self, frame: bytes, deadline: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        data = memoryview(frame)
        fd = self.proc.stdin.fileno()
        while data:
            # a last look without waiting once the deadline passed: this thread may have woken late (a GC
            # pause of the agent) with the pipe ready all along
            _, writable, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
            if not writable and time.monotonic() >= deadline:
                raise _Deadline
            if writable:
                try:
                    n = os.write(fd, data)
                except BrokenPipeError:
                    raise EOFError("worker closed its input") from None
                data = data[n:]

    def _read(self, n: int, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable and time.monotonic() >= deadline:
                raise _Deadline
            if readable:
                chunk = os.read(fd, min(n - got, 1 << 20))
                if not chunk:
                    raise EOFError("")
                chunks.append(chunk)
                got += len(chunk)
        return b"".join(chunks)

    def _recv(self, deadline: float) -> tuple[str, Any]:
        (size,) = HEADER.unpack(self._read(HEADER.size, deadline))
        if size > MAX_FRAME:
            raise UnsafeFrame(f"the worker sent a {size}-byte frame; at most {MAX_FRAME} are accepted")
        message = safe_loads(self._read(size, deadline))
        if not (isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str)):
            raise UnsafeFrame("the worker sent a malformed frame")
        return message

    # -- calls -------------------------------------------------------------------------------------------
    async def call(self, fn: str, args: tuple[Any, ...], timeout: float) -> CallResult:
        """Call `fn` (analyze or plan) in the worker; never raises (except on cancellation, which kills a
        busy worker so a removed policy stops at once)."""
        loop = asyncio.get_running_loop()
        # the engine hands copies (its own deep copy per cycle), so pickling them off the loop is safe
        fut = loop.run_in_executor(_IO_POOL, self._call_sync, fn, args, timeout, loop)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():
                self.stop()
            raise

    def _call_frame(self, fn: str, args: tuple[Any, ...], handles: dict[int, Any]) -> bytes:
        sent, nested = self._export_args(args, self._export, handles)
        try:
            return encode(("call", {"fn": fn, "args": sent, "nested": nested}))
        except (TypeError, AttributeError, ValueError, pickle.PickleError):
            handles.clear()   # unpicklable parts stay in the agent as stand-ins
            sent, nested = self._export_args(args, self._export_deep, handles)
            return encode(("call", {"fn": fn, "args": sent, "nested": nested}))

    def _call_sync(self, fn: str, args: tuple[Any, ...], timeout: float,
                   loop: asyncio.AbstractEventLoop) -> CallResult:
        handles: dict[int, Any] = {}   # this call's objects that stay in the agent, by handle
        try:
            frame = self._call_frame(fn, args, handles)
        except (TypeError, AttributeError, ValueError, pickle.PickleError) as exc:
            return CallResult("error", reason=f"{fn}: an argument cannot be sent to the worker: "
                                              f"{type(exc).__name__}: {exc}")
        with self._lock:
            if self._closed:
                return CallResult("error", reason=f"policy {self.name} was unloaded")
            if self.proc is None or self.proc.poll() is not None:
                try:
                    self._load_locked()
                    self.restarts += 1
                except SandboxError as exc:
                    return CallResult("error", reason=f"worker restart failed: {exc.summary}",
                                      traceback=exc.traceback)
            self.calls += 1
            start = time.monotonic()
            try:
                return self._exchange(fn, frame, handles, timeout, loop, start)
            except Exception as exc:  # noqa: BLE001 - e.g. the worker was stopped mid-call: never raise
                self.kill()
                return CallResult("error", reason=f"{fn}: worker failed ({type(exc).__name__}: {exc})",
                                  duration=time.monotonic() - start)
            finally:
                if self._closed:
                    self.kill()

    def _exchange(self, fn: str, frame: bytes, handles: dict[int, Any], timeout: float,
                  loop: asyncio.AbstractEventLoop, start: float) -> CallResult:
        deadline = start + timeout
        try:
            self._send_frame(frame, deadline)
        except _Deadline:
            pass   # the worker does not read: recv below times out the same way
        # the time the agent spends answering the policy's callbacks (telemetry reads on the agent's loop) is
        # the agent's, not the policy's: it extends the deadline, by at most `timeout` more
        agent_time = 0.0
        try:
            while True:
                op, payload = self._recv(deadline)
                if op != "callback":
                    break
                served = time.monotonic()
                self._answer_callback(payload, handles, loop, start + 2 * timeout)
                spent = min(time.monotonic() - served, timeout - agent_time)
                agent_time += spent
                deadline += spent
        except _Deadline:
            pid = self.pid
            self.kill()
            extra = f" (+{agent_time:.2f}s the agent spent answering its callbacks)" if agent_time >= 0.01 else ""
            return CallResult("timeout", reason=f"{fn} did not return within {timeout:g}s{extra}; worker "
                                                f"(pid {pid}) killed, a fresh one serves the next call",
                              duration=time.monotonic() - start, limit=timeout,
                              measured=round(time.monotonic() - start, 3))
        except (EOFError, UnsafeFrame, OSError) as exc:
            code = self.kill()
            return CallResult("error", reason=f"{fn}: worker failed ({exc or f'exit code {code}'})",
                              duration=time.monotonic() - start)
        duration = time.monotonic() - start
        if op == "result":
            return CallResult("ok", value=payload, duration=duration)
        if op == "memory":
            self.kill()
            return CallResult("memory_exceeded", reason=_memory_reason(fn, payload) + "; worker replaced",
                              duration=duration, limit=payload.get("limit_mb"),
                              measured=payload.get("peak_vm_mb") or payload.get("peak_rss_mb"))
        if op == "error":
            return CallResult("error", reason=str(payload.get("summary")), traceback=str(payload.get("traceback")),
                              duration=duration)
        self.kill()
        return CallResult("error", reason=f"{fn}: unexpected reply {op!r} from the worker", duration=duration)

    # -- objects that stay in the agent ---------------------------------------------------------------------
    def _export(self, value: Any, handles: dict[int, Any]) -> Any:
        """By value when it is plain data, else a stand-in (ProxyRef) the worker calls back into. A mapping's
        callable values (the original contract's `telemetry["query"]`) are stand-ins too: they run here."""
        if isinstance(value, dict) and any(callable(v) for v in value.values()):
            return {k: self._export(v, handles) if callable(v) else v for k, v in value.items()}
        if isinstance(value, _PLAIN):
            return value
        handle = len(handles) + 1
        handles[handle] = value
        if callable(value) and not hasattr(value, "__getitem__"):
            return ProxyRef(handle, type(value).__name__, {}, is_async=_is_async(value))
        methods = {}
        for attr in dir(type(value)):
            if attr.startswith("_"):
                continue
            member = getattr(value, attr, None)
            if callable(member):
                methods[attr] = _is_async(member)
        attrs = {k: v for k, v in getattr(value, "__dict__", {}).items()
                 if not k.startswith("_") and k not in methods and isinstance(v, _PLAIN) and _picklable(v)}
        return ProxyRef(handle, type(value).__name__, methods, mapping=hasattr(value, "__getitem__"),
                        attrs=attrs)

    def _export_args(self, args: tuple[Any, ...], export: Callable[[Any, dict[int, Any]], Any],
                     handles: dict[int, Any]) -> tuple[tuple[Any, ...], list[int]]:
        """The exported arguments and the indices of those holding stand-ins inside (the worker rebuilds
        only those, so plain descriptions are not walked on every call)."""
        sent, nested = [], []
        for i, arg in enumerate(args):
            before = len(handles)
            out = export(arg, handles)
            if len(handles) > before and not isinstance(out, ProxyRef):
                nested.append(i)
            sent.append(out)
        return tuple(sent), nested

    def _export_deep(self, value: Any, handles: dict[int, Any], depth: int = 0) -> Any:
        if isinstance(value, dict) and depth < 8:
            return {k: self._export_deep(v, handles, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)) and depth < 8:
            return type(value)(self._export_deep(v, handles, depth + 1) for v in value)
        return value if _picklable(value) else self._export(value, handles)

    def _answer_callback(self, req: Any, handles: dict[int, Any], loop: asyncio.AbstractEventLoop,
                         deadline: float) -> None:
        try:
            obj = handles[req["handle"]]
            method = req["method"]
            if method == "__call__":
                target: Callable[..., Any] = obj
            elif method in _MAPPING_METHODS:
                target = {"__getitem__": obj.__getitem__, "__iter__": lambda: list(obj),
                          "__len__": lambda: len(obj), "__contains__": lambda k: k in obj}[method]
            elif method.startswith("_") or not callable(getattr(obj, method, None)):
                raise AttributeError(f"{type(obj).__name__} has no method {method!r} a policy may call")
            else:
                target = getattr(obj, method)
            left = max(0.001, deadline - time.monotonic())
            value = asyncio.run_coroutine_threadsafe(
                _on_loop(target, tuple(req.get("args") or ()), dict(req.get("kwargs") or {})), loop
            ).result(left)
        except concurrent.futures.TimeoutError:
            raise _Deadline from None
        except Exception as exc:  # noqa: BLE001 - the agent's object raised: the policy sees it
            self._send(("callback_error", f"{type(exc).__name__}: {exc}"), deadline)
            return
        try:
            frame = encode(("callback_result", value)) if not callable(value) else b""
        except Exception:  # noqa: BLE001 - not data: the worker gets a stand-in
            frame = b""
        self._send_frame(frame or encode(("callback_result", self._export(value, handles))), deadline)

    def describe(self) -> dict[str, Any]:
        return {"kind": "process", "pid": self.pid, "memory_limit_mb": self.limits.memory_mb,
                "confinement": self.confinement, "restarts": self.restarts, "calls": self.calls}


async def _on_loop(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


_is_async = is_async_callable


def _picklable(value: Any) -> bool:
    if callable(value):
        return False
    try:
        encode(value)
    except Exception:  # noqa: BLE001
        return False
    return True


def _memory_reason(what: str, payload: dict[str, Any]) -> str:
    return (f"{what} exceeded the memory limit of {payload.get('limit_mb', 0):g} MiB (address space peak "
            f"{payload.get('peak_vm_mb')} MiB, resident peak {payload.get('peak_rss_mb')} MiB)")
