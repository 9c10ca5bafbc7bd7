"""Policy and mechanism discovery, loading and hot reload.

Sources, in the order `load_all()` reads them:
- directories: every `*.py` file not starting with `_`; the plugin name is the file stem;
- entry points: group `mlsysops.policies` / `mlsysops.mechanisms`; the name is the entry point name;
- importable module names (built-ins such as `mlsysops.policies.filter_score_placement`); the name is the last
  dotted component;
- Python objects registered directly (`register()`), e.g. a mechanism bound to the agent's simulator.

A plugin that fails to import or initialise is recorded as a `LoadError` (name, source, path, summary,
traceback) and does not stop the others. When a name is loaded twice the later source wins and a warning is
logged.

Hot reload (policies): `rescan()` compares the mtimes of the watched directories with what was loaded and
adds, reloads or removes policies; `watch(interval)` calls it periodically. A file that fails to reload keeps
the last good version running (its `last_error` is set). Every change is reported to the listeners as a
`PluginChange`; the engine turns them into `event` decisions. A reloaded policy starts from a fresh
`initialize()` context.

Mechanisms declare optional capabilities (`capabilities = {"watch", ...}`); registration verifies them once
and refuses a mechanism that declares one it does not implement (TypeError naming the missing method).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from mlsysops.agents.compat.original_mechanism import OriginalMechanism, is_original_mechanism
from mlsysops.agents.compat.original_policy import (
    ORIGINAL_POLICY_GROUP,
    OriginalPolicy,
    original_policy_name,
    wanted_packages,
)
from mlsysops.agents.contracts.capabilities import OPERATIONS, Capability, declared_capabilities
from mlsysops.agents.mape.isolation import CallResult, PolicyLoop, summarize_exception
from mlsysops.agents.mape.sandbox import PolicyWorker, SandboxError, SandboxLimits

log = logging.getLogger(__name__)

POLICY_GROUP = "mlsysops.policies"
MECHANISM_GROUP = "mlsysops.mechanisms"
SCOPES = ("application", "global")

_module_counter = itertools.count()
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_interval(value: Any) -> float | None:
    """Seconds from a number or a duration string like "5s", "500ms", "1m"; None when absent."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(
                f"invalid interval {value!r}; use a number of seconds or e.g. '5s', '500ms', '1m'"
            )
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"interval must be positive, got {value!r}")
    return seconds


@dataclass(slots=True)
class LoadError:
    name: str
    source: str
    path: str | None
    error: str
    traceback: str
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "error": self.error,
            "traceback": self.traceback,
            "ts": self.ts,
        }


@dataclass(slots=True)
class PluginChange:
    """A change seen by the registry: kind is added | modified | removed | failed."""

    kind: Literal["added", "modified", "removed", "failed"]
    name: str
    path: str | None
    detail: str = ""


def _load_file_module(path: Path, kind: str) -> ModuleType:
    """Execute a plugin file as a fresh module (unique module name, so reloads never share state)."""
    stem = re.sub(r"\W", "_", path.stem)
    mod_name = f"mlsysops_{kind}_{stem}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses/pickling in the plugin need it registered
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module


BUILTIN_ROOMS = ("policies.", "mechanisms.")


def import_plugin_module(module_name: str) -> ModuleType:
    """Import a plugin module by name. The built-ins' names from before they moved under `mlsysops`
    (`policies.relocation`) still work and mean the built-in (`mlsysops.policies.relocation`), never a
    second copy of it imported from a checkout's top-level folder; other names import as given."""
    if module_name.startswith(BUILTIN_ROOMS):
        try:
            if importlib.util.find_spec(f"mlsysops.{module_name}") is not None:
                return importlib.import_module(f"mlsysops.{module_name}")
        except ModuleNotFoundError:
            pass
    return importlib.import_module(module_name)


def _resolve_awaitable(value: Any, timeout: float = 30.0) -> Any:
    """Run an awaitable returned by a plugin's initialize() to completion from sync code."""
    if not inspect.isawaitable(value):
        return value
    box: dict[str, Any] = {}

    async def _await() -> Any:
        return await value

    def runner() -> None:
        try:
            box["value"] = asyncio.run(_await())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    t = threading.Thread(target=runner, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"initialize() did not finish within {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _error_from(name: str, source: str, path: str | None, exc: BaseException) -> LoadError:
    if isinstance(exc, SandboxError):   # raised in the worker, summarised there
        return LoadError(name, source, path, exc.summary, exc.traceback)
    summary, _ = summarize_exception(exc)
    tb = "".join(traceback.format_exception(exc)[-4:])
    return LoadError(name, source, path, summary, tb)


# ---------------------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Policy:
    """A loaded policy: the module/object plus what its initialize() declared."""

    name: str
    source: str  # "file", "entry_point", "module" or "object"
    target: Any  # module or object with initialize/analyze/plan
    context: dict[str, Any]
    path: str | None = None
    mtime: float | None = None
    enabled: bool = True
    last_error: str | None = None
    version: int = 1
    loaded_at: float = field(default_factory=time.time)
    worker: PolicyWorker | None = None      # file policies: the worker process the code runs in
    loop: PolicyLoop | None = None          # built-ins: the thread + event loop the code runs on
    disabled_reason: str | None = None      # set when the engine disabled it for overrunning
    memory_budget_mb: float | None = None   # built-ins: the agent-RSS growth its calls may account for

    @property
    def isolation(self) -> str:
        return "process" if self.worker is not None else "thread"

    async def call(self, fn: str, args: tuple[Any, ...], timeout: float) -> CallResult:
        """Call analyze/plan where the policy runs (worker process or its own loop thread); never raises."""
        if self.worker is not None:
            return await self.worker.call(fn, args, timeout)
        if self.loop is None:
            self.loop = PolicyLoop(self.name, memory_mb=self.memory_budget_mb)
        return await self.loop.call(getattr(self.target, fn), args, timeout)

    def close(self) -> None:
        """Stop the worker process / loop thread (the policy was removed or replaced)."""
        if self.worker is not None:
            self.worker.close()
        if self.loop is not None:
            self.loop.close()

    @property
    def scope(self) -> str:
        return self.context.get("scope", "application")

    @property
    def interval(self) -> float | None:
        return parse_interval((self.context.get("configuration") or {}).get("analyze_interval"))

    @property
    def metrics(self) -> list[str]:
        return list((self.context.get("telemetry") or {}).get("metrics") or [])

    @property
    def scrape_interval(self) -> float | None:
        return parse_interval((self.context.get("telemetry") or {}).get("system_scrape_interval"))

    @property
    def mechanisms(self) -> list[str]:
        return list(self.context.get("mechanisms") or [])

    @property
    def priority(self) -> int:
        return int(self.context.get("priority", 0) or 0)

    @property
    def analyze(self) -> Callable[..., Any]:
        return self.target.analyze

    @property
    def plan(self) -> Callable[..., Any]:
        return self.target.plan

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "scope": self.scope,
            "interval": self.interval,
            "priority": self.priority,
            "metrics": self.metrics,
            "mechanisms": self.mechanisms,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "last_error": self.last_error,
            "version": self.version,
            "isolation": (self.worker.describe() if self.worker is not None
                          else self.loop.describe() if self.loop is not None
                          else {"kind": "thread", "memory_budget_mb": self.memory_budget_mb}),
        }


class SandboxedTarget:
    """What `Policy.target` is for a policy in a worker: names only, the code is in the other process."""

    def __init__(self, worker: PolicyWorker) -> None:
        self.worker = worker
        # which contract the worker serves it under: a `policy-NAME.py` file is the original framework's
        self.contract = "original" if original_policy_name(worker.path) else "mlsysops"

    def __repr__(self) -> str:
        return f"<policy {self.worker.name} in worker pid {self.worker.pid}>"


def build_sandboxed_policy(name: str, path: str | Path, limits: SandboxLimits | None = None,
                           agent_id: str = "") -> Policy:
    """Start a worker for a policy file, load it there, validate what its initialize() returned; the
    module body never runs in this process. Raises SandboxError/TypeError/ValueError with the reason."""
    worker = PolicyWorker(name, path, limits, agent_id)
    try:
        context = worker.load()
        pol = _policy_from_context(name, "file", SandboxedTarget(worker), context, str(path))
    except BaseException:
        worker.close()
        raise
    pol.worker = worker
    return pol


def build_policy(name: str, source: str, target: Any, path: str | None = None) -> Policy:
    """Validate a policy module/object and run its initialize(); raises with a precise reason when invalid."""
    for attr in ("initialize", "analyze", "plan"):
        if not callable(getattr(target, attr, None)):
            raise TypeError(f"policy {name!r} has no callable {attr}()")
    return _policy_from_context(name, source, target, _resolve_awaitable(target.initialize()), path)


def _policy_from_context(name: str, source: str, target: Any, context: Any, path: str | None) -> Policy:
    if not isinstance(context, dict):
        raise TypeError(f"policy {name!r}: initialize() must return a dict, got {type(context).__name__}")
    context = dict(context)
    declared = context.get("name")
    if declared and declared != name:
        log.debug("policy %s declares name %r; the file/entry point name is used", name, declared)
    scope = context.setdefault("scope", "application")
    if scope not in SCOPES:
        raise ValueError(f"policy {name!r}: scope must be one of {SCOPES}, got {scope!r}")
    for key in ("configuration", "telemetry"):
        if key in context and not isinstance(context[key], dict):
            raise TypeError(f"policy {name!r}: {key} must be a mapping")
    if not isinstance(context.get("mechanisms", []) or [], list):
        raise TypeError(f"policy {name!r}: mechanisms must be a list of names")
    try:
        int(context.get("priority", 0) or 0)
    except (TypeError, ValueError):
        raise ValueError(f"policy {name!r}: priority must be an integer") from None
    pol = Policy(name=name, source=source, target=target, context=context, path=path)
    pol.interval  # noqa: B018 - validate the durations now, not in the loop
    pol.scrape_interval  # noqa: B018
    return pol


class PolicyRegistry:
    """The policies of one agent, keyed by name (see module docstring)."""

    def __init__(
        self,
        directories: Iterable[str | Path] = (),
        *,
        modules: Iterable[str] = (),
        entry_point_group: str | None = POLICY_GROUP,
        agent_id: str = "",
        sandbox: SandboxLimits | None = None,
        sandbox_files: bool = True,
    ) -> None:
        self.directories = [Path(d) for d in directories]
        self.upload_directories: list[Path] = []   # loaded after every other source, so uploads win
        self.sandbox = sandbox or SandboxLimits()
        self.sandbox_files = sandbox_files   # False: files run in-process like built-ins (trusted dirs only)
        self.modules = list(modules)
        self.entry_point_group = entry_point_group
        self.agent_id = agent_id
        self._policies: dict[str, Policy] = {}
        self._disabled: set[str] = set()
        self._auto_disabled: set[str] = set()
        self._seen_mtimes: dict[str, float] = {}  # path -> mtime of the last load attempt
        self.errors: list[LoadError] = []
        self._listeners: list[Callable[[PluginChange], None]] = []
        self._rescan_lock = asyncio.Lock()

    # -- loading -------------------------------------------------------------------------------------------
    def load_all(self) -> list[PluginChange]:
        """Load every configured source once (sync; call at agent start)."""
        changes: list[PluginChange] = []
        for d in self.directories:
            for path in self._policy_files(d):
                changes.append(self._install_file(path, self._stat(path)))
        if self.entry_point_group:
            changes.extend(self.load_entry_points(self.entry_point_group))
            if self.entry_point_group == POLICY_GROUP:
                changes.extend(self.load_entry_points(ORIGINAL_POLICY_GROUP))
        for mod in self.modules:
            changes.append(self.load_module(mod))
        for d in self.upload_directories:
            for path in self._policy_files(d):
                changes.append(self._install_file(path, self._stat(path)))
        return changes

    def load_module(self, module_name: str, name: str | None = None) -> PluginChange:
        name = name or module_name.rsplit(".", 1)[-1]
        try:
            target = import_plugin_module(module_name)
            pol = build_policy(name, "module", target, getattr(target, "__file__", None))
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
            return self._failed(name, "module", module_name, exc)
        return self._install(pol)

    def load_entry_points(self, group: str = POLICY_GROUP) -> list[PluginChange]:
        changes = []
        original = group == ORIGINAL_POLICY_GROUP
        for ep in importlib.metadata.entry_points(group=group):
            try:
                target = ep.load()
                if original:   # an original-contract module: the adapter passes it the original shapes
                    target = OriginalPolicy(target, ep.name)
                pol = build_policy(ep.name, "entry_point", target, ep.value)
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
                changes.append(self._failed(ep.name, "entry_point", ep.value, exc))
                continue
            changes.append(self._install(pol))
        return changes

    def register(self, name: str, target: Any) -> PluginChange:
        """Register a policy object (anything with initialize/analyze/plan)."""
        try:
            pol = build_policy(name, "object", target)
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
            return self._failed(name, "object", None, exc)
        return self._install(pol)

    def load_file(self, path: str | Path) -> PluginChange:
        path = Path(path)
        return self._install_file(path, self._stat(path))

    @property
    def rescan_lock(self) -> asyncio.Lock:
        """Held by rescan(); hold it to change the watched folders' files atomically with respect to it."""
        return self._rescan_lock

    def install_loaded(self, pol: Policy) -> PluginChange:
        """Install a policy already built from its file (an upload checked in a worker, then moved)."""
        assert pol.path is not None
        return self._install_file(Path(pol.path), self._stat(Path(pol.path)), pol)

    @staticmethod
    def _policy_files(directory: Path) -> list[Path]:
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.glob("*.py") if not p.name.startswith("_"))

    @staticmethod
    def _stat(path: Path) -> float:
        try:
            return path.stat().st_mtime_ns / 1e9
        except OSError:
            return 0.0

    def _load_from_file(self, path: Path) -> Policy:
        if self.sandbox_files:   # the worker applies the original contract to `policy-NAME.py` itself
            return build_sandboxed_policy(self.name_of(path), path, self.sandbox, self.agent_id)
        original = original_policy_name(path)
        if original is not None:   # `policy-NAME.py`: the original framework's contract and naming
            target = OriginalPolicy(_load_file_module(path, "policy"), original, path=path)
            return build_policy(original, "file", target, str(path))
        return build_policy(path.stem, "file", _load_file_module(path, "policy"), str(path))

    @staticmethod
    def name_of(path: str | Path) -> str:
        """The policy name a file loads under (`policy-NAME.py` -> NAME, else the stem)."""
        return original_policy_name(path) or Path(path).stem

    def _install_file(
        self, path: Path, mtime: float, loaded: Policy | BaseException | None = None
    ) -> PluginChange:
        self._seen_mtimes[str(path)] = mtime
        if loaded is None:
            try:
                loaded = self._load_from_file(path)
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
                loaded = exc
        if isinstance(loaded, BaseException):
            return self._failed(self.name_of(path), "file", str(path), loaded)
        loaded.mtime = mtime
        return self._install(loaded)

    def _install(self, pol: Policy) -> PluginChange:
        old = self._policies.get(pol.name)
        if old is not None:
            if old.path != pol.path or old.source != pol.source:
                log.warning(
                    "[%s] policy %s from %s replaces the one from %s",
                    self.agent_id,
                    pol.name,
                    pol.path or pol.source,
                    old.path or old.source,
                )
            pol.version = old.version + 1
            if old is not pol:
                old.close()
        if old is not None and pol.name in self._auto_disabled:
            # the engine disabled the old version for overrunning; a new version gets a fresh start
            self._auto_disabled.discard(pol.name)
            self._disabled.discard(pol.name)
        if pol.worker is None:
            pol.memory_budget_mb = self.sandbox.builtin_memory_mb
        pol.enabled = pol.name not in self._disabled
        if not pol.enabled and old is not None:
            pol.disabled_reason = old.disabled_reason
        self._policies[pol.name] = pol
        detail = f"source={pol.source}"
        packages = getattr(pol.target, "packages", None)
        if packages is None and pol.path and original_policy_name(pol.path):   # in a worker: read the file
            packages = list(dict.fromkeys([*wanted_packages(pol.path), *(pol.context.get("packages") or [])]))
        if packages:   # the original pip-installed these at every load; we never install anything
            detail += (f"; wants packages {packages}, not installed: install them into the agent's "
                       "environment if the policy needs them")
        change = PluginChange("modified" if old else "added", pol.name, pol.path, detail)
        log.info("[%s] policy %s %s (%s)", self.agent_id, pol.name, change.kind, pol.path or pol.source)
        self._notify(change)
        return change

    def _failed(self, name: str, source: str, path: str | None, exc: BaseException) -> PluginChange:
        err = _error_from(name, source, path, exc)
        self.errors.append(err)
        del self.errors[:-100]  # keep the newest 100
        current = self._policies.get(name)
        if current is not None:
            current.last_error = err.error
        kept = " (previous version keeps running)" if current is not None else ""
        log.warning("[%s] policy %s failed to load: %s%s", self.agent_id, name, err.error, kept)
        change = PluginChange("failed", name, path, err.error + kept)
        self._notify(change)
        return change

    def _remove(self, name: str, path: str | None) -> PluginChange:
        pol = self._policies.pop(name, None)
        if pol is not None:
            pol.close()
        change = PluginChange("removed", name, path)
        log.info("[%s] policy %s removed", self.agent_id, name)
        self._notify(change)
        return change

    # -- hot reload ----------------------------------------------------------------------------------------
    async def rescan(self) -> list[PluginChange]:
        """Apply added/modified/removed policy files of the watched directories; return the changes.

        Module execution and initialize() run in a worker thread so a slow plugin file does not stall the
        event loop; installation happens back on the loop.
        """
        async with self._rescan_lock:
            changes: list[PluginChange] = []
            present: dict[str, float] = {}
            for d in self.directories + self.upload_directories:
                for path in self._policy_files(d):
                    present[str(path)] = self._stat(path)
            for spath, mtime in present.items():
                if self._seen_mtimes.get(spath) == mtime:
                    continue
                path = Path(spath)
                try:
                    loaded: Policy | BaseException = await asyncio.to_thread(self._load_from_file, path)
                except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
                    loaded = exc
                changes.append(self._install_file(path, mtime, loaded))
            for spath in [p for p in self._seen_mtimes if p not in present]:
                del self._seen_mtimes[spath]
                for pol in list(self._policies.values()):
                    if pol.source == "file" and pol.path == spath:
                        changes.append(self._remove(pol.name, spath))
            return changes

    async def watch(self, interval: float = 2.0) -> None:
        """Poll the directories forever (run as a task; cancel to stop)."""
        while True:
            try:
                await self.rescan()
            except Exception:
                log.exception("[%s] policy rescan failed", self.agent_id)
            await asyncio.sleep(interval)

    def add_listener(self, fn: Callable[[PluginChange], None]) -> None:
        self._listeners.append(fn)

    def _notify(self, change: PluginChange) -> None:
        for fn in list(self._listeners):
            try:
                fn(change)
            except Exception:
                log.exception("[%s] policy change listener failed", self.agent_id)

    # -- management ----------------------------------------------------------------------------------------
    def get(self, name: str) -> Policy | None:
        return self._policies.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._policies

    def names(self) -> list[str]:
        return sorted(self._policies)

    def enabled(self) -> list[Policy]:
        return [p for _, p in sorted(self._policies.items()) if p.enabled]

    def enable(self, name: str) -> None:
        self._set_enabled(name, True)

    def disable(self, name: str, reason: str | None = None, *, automatic: bool = False) -> None:
        """Disable a policy; `reason` is shown with it. `automatic` (the engine's doing, not an operator's):
        a new version of the file re-enables it."""
        self._set_enabled(name, False)
        if reason is not None:
            self._policies[name].disabled_reason = reason
        if automatic:
            self._auto_disabled.add(name)

    def _set_enabled(self, name: str, on: bool) -> None:
        if name not in self._policies:
            raise KeyError(f"unknown policy {name!r}; known: {self.names()}")
        (self._disabled.discard if on else self._disabled.add)(name)
        self._policies[name].enabled = on
        if on:
            self._policies[name].disabled_reason = None
            self._auto_disabled.discard(name)

    def close(self) -> None:
        """Stop every policy's worker process / loop thread (the engine stops). Restartable: a later call
        starts a fresh worker / thread."""
        for pol in self._policies.values():
            if pol.worker is not None:
                pol.worker.stop()
            if pol.loop is not None:
                pol.loop.close()

    def list(self) -> list[dict[str, Any]]:
        return [p.describe() for _, p in sorted(self._policies.items())]


# ---------------------------------------------------------------------------------------------------------
# Mechanisms
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Mechanism:
    """A loaded mechanism: module or object with apply(), get_state(), get_options(), and the optional
    capabilities it declared (verified at registration; see `mlsysops.agents.contracts.capabilities`)."""

    name: str
    source: str
    target: Any
    path: str | None = None
    last_error: str | None = None
    capabilities: frozenset[Capability] = frozenset()

    @property
    def apply(self) -> Callable[..., Any]:
        return self.target.apply

    def supports(self, capability: Capability | str) -> bool:
        return capability in self.capabilities

    def operation(self, name: str) -> Callable[..., Any]:
        """The callable the plan scheduler executes: `apply`, or a declared operation capability."""
        if name == "apply":
            return self.target.apply
        if name not in OPERATIONS:
            raise ValueError(f"{name!r} is not an operation; expected apply or one of {sorted(OPERATIONS)}")
        if name not in self.capabilities:
            raise ValueError(f"mechanism {self.name!r} does not declare capability {name!r}")
        return getattr(self.target, name)

    def get_state(self) -> Callable[[], Any] | None:
        fn = getattr(self.target, "get_state", None)
        return fn if callable(fn) else None

    def get_options(self) -> Callable[[], Any] | None:
        fn = getattr(self.target, "get_options", None)
        return fn if callable(fn) else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "path": self.path, "last_error": self.last_error,
                "capabilities": sorted(c.value for c in self.capabilities)}


def _adapt_mechanism(name: str, target: Any, settings: dict[str, Any]) -> Any:
    """An original-contract module (`initialize(inbound_queue, outbound_queue, agent_state)`) behind the
    adapter that gives it queues, an agent state and the original return semantics; others as they are."""
    if not is_original_mechanism(target):
        return target
    return OriginalMechanism(target, name, agent_state=settings.get("agent_state"),
                             on_message=settings.get("on_message"))


def _call_initialize(target: Any, kwargs: dict[str, Any]) -> None:
    """Call target.initialize with the settings/dependencies its signature accepts (all if it takes **kw)."""
    init = getattr(target, "initialize", None)
    if not callable(init):
        return
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):
        params = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = kwargs
    else:
        accepted = {k: v for k, v in kwargs.items() if k in params}
    _resolve_awaitable(init(**accepted))


class MechanismRegistry:
    """The mechanisms of one agent, keyed by name.

    `settings` are passed to each mechanism's initialize() as keyword arguments (only those it accepts):
    shared ones for all, plus `per_mechanism[name]`. Mechanisms are not hot-reloaded: they hold substrate
    connections and reloading them mid-plan is unsafe.
    """

    def __init__(self, *, agent_id: str = "") -> None:
        self.agent_id = agent_id
        self._mechanisms: dict[str, Mechanism] = {}
        self.errors: list[LoadError] = []

    def register(self, name: str, target: Any, *, initialize: bool = False, **settings: Any) -> Mechanism:
        """Register an object or module; call its initialize(**settings) only if asked (objects usually
        arrive configured). Raises TypeError when it has no apply() or declares a capability it lacks."""
        target = _adapt_mechanism(name, target, settings)
        if not callable(getattr(target, "apply", None)):
            raise TypeError(f"mechanism {name!r} has no callable apply()")
        capabilities = declared_capabilities(name, target)
        if initialize:
            _call_initialize(target, settings)
        mech = Mechanism(
            name,
            "object" if not isinstance(target, ModuleType) else "module",
            target,
            getattr(target, "__file__", None),
            capabilities=capabilities,
        )
        self._install(mech)
        return mech

    def load_module(self, module_name: str, name: str | None = None, **settings: Any) -> Mechanism | None:
        name = name or module_name.rsplit(".", 1)[-1]
        try:
            target = import_plugin_module(module_name)
            return self._build(name, "module", target, getattr(target, "__file__", None), settings)
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
            self._failed(name, "module", module_name, exc)
            return None

    def load_directory(self, directory: str | Path, *, only: Iterable[str] | None = None,
                       **settings: Any) -> list[Mechanism]:
        """Every `NAME.py` of the directory (not starting with `_`); with `only`, just those NAMEs (the
        original framework loaded a mechanism file only when its name was configured)."""
        loaded = []
        d = Path(directory)
        if not d.is_dir():
            return loaded
        wanted = None if only is None else set(only)
        for path in sorted(p for p in d.glob("*.py") if not p.name.startswith("_")):
            if wanted is not None and path.stem not in wanted:
                continue
            try:
                module = _load_file_module(path, "mechanism")
                loaded.append(self._build(path.stem, "file", module, str(path), settings))
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
                self._failed(path.stem, "file", str(path), exc)
        return loaded

    def load_entry_points(self, group: str = MECHANISM_GROUP, *, only: Iterable[str] | None = None,
                          **settings: Any) -> list[Mechanism]:
        loaded = []
        wanted = None if only is None else set(only)
        for ep in importlib.metadata.entry_points(group=group):
            if wanted is not None and ep.name not in wanted:
                continue
            try:
                loaded.append(self._build(ep.name, "entry_point", ep.load(), ep.value, settings))
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
                self._failed(ep.name, "entry_point", ep.value, exc)
        return loaded

    def _build(
        self, name: str, source: str, target: Any, path: str | None, settings: dict[str, Any]
    ) -> Mechanism:
        target = _adapt_mechanism(name, target, settings)
        if not callable(getattr(target, "apply", None)):
            raise TypeError(f"mechanism {name!r} has no callable apply()")
        capabilities = declared_capabilities(name, target)
        _call_initialize(target, settings)
        mech = Mechanism(name, source, target, path, capabilities=capabilities)
        self._install(mech)
        return mech

    def _install(self, mech: Mechanism) -> None:
        if mech.name in self._mechanisms:
            log.warning("[%s] mechanism %s re-registered (%s)", self.agent_id, mech.name, mech.source)
        self._mechanisms[mech.name] = mech

    def _failed(self, name: str, source: str, path: str | None, exc: BaseException) -> None:
        err = _error_from(name, source, path, exc)
        self.errors.append(err)
        log.warning("[%s] mechanism %s failed to load: %s", self.agent_id, name, err.error)

    def unregister(self, name: str) -> None:
        self._mechanisms.pop(name, None)

    def get(self, name: str) -> Mechanism | None:
        return self._mechanisms.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._mechanisms

    def names(self) -> frozenset[str]:
        return frozenset(self._mechanisms)

    def list(self) -> list[dict[str, Any]]:
        return [m.describe() for _, m in sorted(self._mechanisms.items())]
