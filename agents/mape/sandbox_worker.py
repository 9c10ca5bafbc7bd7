"""The process a sandboxed policy runs in: `python -m mlsysops.agents.mape.sandbox_worker MEMORY_BYTES`.

Started by `mlsysops.agents.mape.sandbox.PolicyWorker`. Before any policy code runs it bounds its address
space (RLIMIT_AS, soft = hard, so the policy cannot raise it), disables core dumps and, where the kernel
has Landlock, confines the filesystem: read-only to the interpreter, the import path, the policy's folder
and what the standard library needs of /etc and /proc; read-write only to its private temporary folder.
(The kernel documents that Landlock also keeps a sandboxed process from ptrace-ing processes outside it.) It then serves one request at a time over the
frames of `sandbox_wire` on its stdin/stdout (the policy's own prints go to stderr), and exits on EOF or
when its parent goes away.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import inspect
import io
import os
import pickle
import resource
import sys
import threading
import time
import traceback
from typing import Any

from mlsysops.agents.compat.original_policy import OriginalPolicy, original_policy_name
from mlsysops.agents.mape.sandbox_wire import HEADER, ProxyRef, encode

_ALL_FS = (1 << 16) - 1            # Landlock filesystem rights known up to ABI 5
_FS_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_READ = (1 << 0) | (1 << 2) | (1 << 3)      # execute, read file, read dir


def _landlock(read_paths: list[str], write_paths: list[str]) -> str:
    """Confine this process's filesystem access; returns a one-line status for the agent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        abi = libc.syscall(444, None, 0, 1)          # landlock_create_ruleset(NULL, 0, VERSION)
        if abi < 1:
            return f"filesystem unrestricted (Landlock unavailable, errno {ctypes.get_errno()})"
        handled = _FS_ABI.get(abi, _ALL_FS)
        attr = ctypes.c_uint64(handled)
        ruleset = libc.syscall(444, ctypes.byref(attr), 8, 0)
        if ruleset < 0:
            return f"filesystem unrestricted (Landlock ruleset failed, errno {ctypes.get_errno()})"

        class PathBeneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

        def allow(path: str, rights: int) -> None:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return
            try:
                if not os.path.isdir(path):
                    rights &= (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14)   # rights that apply to a file
                rule = PathBeneath(rights & handled, fd)
                libc.syscall(445, ruleset, 1, ctypes.byref(rule), 0)
            finally:
                os.close(fd)

        for p in read_paths:
            allow(p, _READ)
        for p in write_paths:
            allow(p, handled)
        if libc.prctl(38, 1, 0, 0, 0) != 0:               # PR_SET_NO_NEW_PRIVS
            return "filesystem unrestricted (no_new_privs refused)"
        if libc.syscall(446, ruleset, 0) != 0:            # landlock_restrict_self
            return f"filesystem unrestricted (Landlock restrict failed, errno {ctypes.get_errno()})"
        os.close(ruleset)
        return f"filesystem confined by Landlock ABI {abi}"
    except Exception as exc:  # noqa: BLE001 - confinement is best effort; the status says what happened
        return f"filesystem unrestricted ({type(exc).__name__}: {exc})"


# /etc and /proc only in part: /etc holds mounted secrets in a deployment (/etc/mlsysops-api, -xmpp), and
# /proc/<agent pid>/environ the agent's environment
_ETC = ("localtime", "timezone", "zoneinfo", "ssl", "ca-certificates", "pki", "hosts", "resolv.conf",
        "nsswitch.conf", "host.conf", "gai.conf", "services", "protocols", "passwd", "group", "mime.types",
        "os-release", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "machine-id")
_PROC = ("self", "thread-self", "cpuinfo", "meminfo", "stat", "loadavg", "uptime", "sys/kernel", "sys/vm")


def _read_paths(policy_dir: str) -> list[str]:
    paths = {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sys", "/dev/urandom", "/dev/random", "/dev/null",
             sys.prefix, sys.base_prefix, sys.exec_prefix, policy_dir}
    paths.update(f"/etc/{name}" for name in _ETC)
    paths.update(f"/proc/{name}" for name in _PROC)
    paths.update(p for p in sys.path if p)
    return sorted(paths | {os.path.realpath(p) for p in paths})


class _Wire:
    def __init__(self) -> None:
        self.inp = os.fdopen(os.dup(0), "rb", buffering=0)
        self.out = os.fdopen(os.dup(1), "wb", buffering=0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)                 # the policy's print() goes to stderr, never into the frames
        sys.stdout = sys.stderr

    def send(self, op: str, payload: Any) -> None:
        try:
            frame = encode((op, payload))
        except Exception as exc:  # noqa: BLE001 - an unpicklable result is the policy's error
            frame = encode(("error", {"summary": f"the {op} value cannot leave the worker: "
                                                 f"{type(exc).__name__}: {exc}", "traceback": ""}))
        self.out.write(frame)

    def recv(self) -> Any:
        head = self._exact(HEADER.size)
        return pickle.loads(self._exact(HEADER.unpack(head)[0]))

    def _exact(self, n: int) -> bytes:
        buf = io.BytesIO()
        while buf.tell() < n:
            chunk = self.inp.read(n - buf.tell())
            if not chunk:
                os._exit(0)           # the agent closed the pipe: nothing more to do
            buf.write(chunk)
        return buf.getvalue()


class _Remote:
    """Stand-in for an object that stays in the agent; attribute calls and mapping reads go back over
    the wire and return what the agent's object returned."""

    def __init__(self, worker: _Worker, ref: ProxyRef) -> None:
        object.__setattr__(self, "_w", worker)
        object.__setattr__(self, "_ref", ref)

    def __getattr__(self, name: str) -> Any:
        ref: ProxyRef = object.__getattribute__(self, "_ref")
        if name in ref.attrs:
            return ref.attrs[name]
        if name not in ref.methods:
            raise AttributeError(f"{ref.type_name} (in the agent) has no method {name!r} a policy may call")
        worker = object.__getattribute__(self, "_w")
        if ref.methods[name]:
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                return worker.callback(ref.handle, name, args, kwargs)
            return call_async
        return lambda *args, **kwargs: worker.callback(ref.handle, name, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ref: ProxyRef = object.__getattribute__(self, "_ref")
        worker = object.__getattribute__(self, "_w")
        if ref.is_async:
            async def call_async() -> Any:
                return worker.callback(ref.handle, "__call__", args, kwargs)
            return call_async()
        return worker.callback(ref.handle, "__call__", args, kwargs)

    def _mapping(self, method: str, *args: Any) -> Any:
        ref: ProxyRef = object.__getattribute__(self, "_ref")
        if not ref.mapping:
            raise TypeError(f"{ref.type_name} (in the agent) is not a mapping")
        return object.__getattribute__(self, "_w").callback(ref.handle, method, args, {})

    def __getitem__(self, key: Any) -> Any:
        return self._mapping("__getitem__", key)

    def __iter__(self) -> Any:
        return iter(self._mapping("__iter__"))

    def __len__(self) -> int:
        return self._mapping("__len__")

    def __contains__(self, key: Any) -> bool:
        return self._mapping("__contains__", key)

    def __reduce__(self) -> Any:
        # a policy that keeps the stand-in in its context returns a note, not a live object
        return (str, (f"<{object.__getattribute__(self, '_ref').type_name} of the agent>",))


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self.wire = _Wire()
        self.module: Any = None
        self.loop = asyncio.new_event_loop()
        self.confinement = "filesystem unrestricted"

    def callback(self, handle: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.wire.send("callback", {"handle": handle, "method": method, "args": args, "kwargs": kwargs})
        op, payload = self.wire.recv()
        if op == "callback_error":
            raise RuntimeError(payload)
        return self._rebuild(payload)

    def _rebuild(self, value: Any, deep: bool = False) -> Any:
        if isinstance(value, ProxyRef):
            return _Remote(self, value)
        if deep and isinstance(value, dict):
            return {k: self._rebuild(v, True) for k, v in value.items()}
        if deep and isinstance(value, (list, tuple)):
            return type(value)(self._rebuild(v, True) for v in value)
        return value

    def _settle(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            return self.loop.run_until_complete(_await(value))
        return value

    def load(self, payload: dict[str, Any]) -> None:
        path, name = payload["path"], payload["name"]
        self.confinement = _landlock(_read_paths(os.path.dirname(os.path.abspath(path))),
                                     [payload["tmpdir"], "/dev/null"])
        spec = importlib.util.spec_from_file_location(f"mlsysops_policy_{name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        original = original_policy_name(path)
        if original is not None:   # `policy-NAME.py`: the original framework's argument shapes, here in the worker
            module = OriginalPolicy(module, original, path=path)
        missing = [f for f in ("initialize", "analyze", "plan") if not callable(getattr(module, f, None))]
        if missing:
            raise TypeError(f"policy {name!r} has no callable {', '.join(m + '()' for m in missing)}")
        context = self._settle(module.initialize())
        self.module = module
        functions = {f: inspect.iscoroutinefunction(getattr(module, f)) for f in ("analyze", "plan")}
        self.wire.send("loaded", {"context": context, "functions": functions, "confinement": self.confinement,
                                  "pid": os.getpid()})

    def call(self, payload: dict[str, Any]) -> None:
        fn = getattr(self.module, payload["fn"])
        nested = set(payload.get("nested") or ())
        args = [self._rebuild(a, i in nested) for i, a in enumerate(payload["args"])]
        value = self._settle(fn(*args))
        self.wire.send("result", value)

    def serve(self) -> None:
        while True:
            op, payload = self.wire.recv()
            try:
                if op == "load":
                    self.load(payload)
                elif op == "call":
                    self.call(payload)
                elif op == "ping":
                    self.wire.send("pong", {"rss_mb": _rss_mb()})
                else:
                    self.wire.send("error", {"summary": f"unknown request {op!r}", "traceback": ""})
            except MemoryError:
                self.wire.send("memory", {"limit_mb": self.memory_bytes / 2**20, "peak_rss_mb": _peak_rss_mb(),
                                          "peak_vm_mb": _status_mb("VmPeak")})
            except BaseException as exc:  # noqa: BLE001 - everything the policy raises goes to the agent
                tb = traceback.extract_tb(exc.__traceback__)
                where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno} in {tb[-1].name}" if tb else ""
                msg = str(exc)[:300]
                self.wire.send("error", {"summary": f"{type(exc).__name__}: {msg}{where}",
                                         "traceback": "".join(traceback.format_exception(exc)[-4:])})


async def _await(value: Any) -> Any:
    return await value


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _orphan_watch(parent: int) -> None:
    """Exit when the agent is gone, even while the policy is stuck (stdin EOF is not read then)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def main() -> None:
    memory_bytes = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    _Worker(memory_bytes).serve()


if __name__ == "__main__":
    main()
