"""An original MLSysOps policy module as a policy of our engine (see the package docstring).

The engine keeps our context per (policy, asset) pair; for an original policy that context is
`{"scope", "configuration", "telemetry", "original": <the policy's own context>}`: the engine reads the
first three (as the original framework read them from the policy's context, refreshed after every call,
so a policy may still change its `analyze_interval` at runtime) and the policy only ever sees its own.
Keys the original framework ignored (`mechanisms`, `core`, ...) are ignored here too: in particular
`mechanisms` does not restrict what the policy may plan for, as it does for our own policies.

`packages` (in the returned context, or in an `initialContext = {...}` assignment the original read
statically) are never installed: the registry reports them in the policy's load event instead.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from mlsysops.agents.compat import shapes
from mlsysops.agents.compat.names import translate_plan

ORIGINAL_POLICY_GROUP = "mlsysops.original_policies"   # entry points of original-contract policies
_FILE = re.compile(r"^policy-(.+)\.py$")
_DAYS = re.compile(r"^\s*(\d+)\s*d\s*$")


def original_policy_name(path: str | Path) -> str | None:
    """`policy-relocateComponents.py` -> `relocateComponents` (the text after the first dash, as the
    original named it); None for any other file name (our own contract)."""
    m = _FILE.match(Path(path).name)
    return m.group(1) if m else None


def wanted_packages(path: str | Path | None) -> list[str]:
    """The `packages` of an `initialContext = {...}` dict literal anywhere in the file (the original read
    them with `ast` before importing the module, and pip-installed them)."""
    if path is None:
        return []
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Dict):
            continue
        if not any(isinstance(t, ast.Name) and t.id == "initialContext" for t in node.targets):
            continue
        for key, value in zip(node.value.keys, node.value.values):
            if isinstance(key, ast.Constant) and key.value == "packages" and isinstance(value, (ast.List, ast.Tuple)):
                found += [e.value for e in value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return list(dict.fromkeys(found))


def _interval(value: Any) -> Any:
    """The original's `"<int>[smhd]"`; ours knows ms/s/m/h, so days become seconds."""
    m = _DAYS.match(value) if isinstance(value, str) else None
    return int(m.group(1)) * 86400 if m else value


def engine_context(original: dict[str, Any], packages: list[str] | None = None) -> dict[str, Any]:
    tel = original.get("telemetry") if isinstance(original.get("telemetry"), dict) else {}
    conf = original.get("configuration") if isinstance(original.get("configuration"), dict) else {}
    ctx: dict[str, Any] = {"scope": original.get("scope"), "original": original, "contract": "original",
                           "telemetry": {"metrics": list(tel.get("metrics") or [])}}
    scrape = tel.get("system_scrape_interval", tel.get("system_scrape_internval"))  # the docs' spelling too
    if scrape is not None:
        ctx["telemetry"]["system_scrape_interval"] = _interval(scrape)
    if conf.get("analyze_interval") is not None:
        ctx["configuration"] = {"analyze_interval": _interval(conf["analyze_interval"])}
    if packages:
        ctx["packages_wanted"] = list(packages)
    return ctx


async def _call(fn: Any, *args: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    value = await asyncio.to_thread(fn, *args)
    return await value if inspect.isawaitable(value) else value


def _ml_connector(value: Any) -> str | None:
    """The original passed the ML connector's endpoint as a string (or None)."""
    if value is None or isinstance(value, str):
        return value or os.environ.get("MLS_MLCONNECTOR_ENDPOINT")
    return getattr(value, "endpoint", None) or getattr(value, "url", None) or os.environ.get(
        "MLS_MLCONNECTOR_ENDPOINT")


class OriginalPolicy:
    """Our policy contract over an original policy module (module-level initialize/analyze/plan)."""

    contract = "original"

    def __init__(self, module: ModuleType | Any, name: str, *, path: str | Path | None = None) -> None:
        missing = [f for f in ("initialize", "analyze", "plan") if not callable(getattr(module, f, None))]
        if missing:
            # the original logged this and loaded a policy that could never run; refusing says so
            raise TypeError(f"original policy {name!r} has no callable {', '.join(m + '()' for m in missing)}")
        self.module = module
        self.name = name
        self.path = str(path) if path is not None else getattr(module, "__file__", None)
        self.packages = wanted_packages(self.path)

    def initialize(self) -> dict[str, Any]:
        ctx = self.module.initialize()
        if not isinstance(ctx, dict):
            raise TypeError(f"original policy {self.name!r}: initialize() must return a dict, "
                            f"got {type(ctx).__name__}")
        if ctx.get("scope") not in ("application", "global"):
            raise ValueError(f"original policy {self.name!r}: initialize() context needs scope 'application' "
                             f"or 'global', got {ctx.get('scope')!r} (the original framework silently never "
                             "ran such a policy)")
        packages = list(dict.fromkeys([*self.packages, *(ctx.get("packages") or [])]))
        self.packages = packages
        return engine_context(ctx, packages)

    def _arguments(self, context: dict[str, Any], app_desc: Any, system: dict[str, Any],
                   mechanisms: dict[str, Any], telemetry: Any, ml_connector: Any) -> tuple[str, tuple[Any, ...]]:
        layer = shapes.layer_of(system)
        apps = shapes.application_description(layer, app_desc, context.get("scope", "application"))
        return layer, (apps, shapes.system_description(layer, system),
                       shapes.mechanisms_view(layer, mechanisms, system, apps),
                       shapes.telemetry_dict(telemetry), _ml_connector(ml_connector))

    def _returned(self, value: Any, stage: str, first: str) -> tuple[Any, dict[str, Any]]:
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict)):
            raise TypeError(f"original policy {self.name!r}: {stage}() must return ({first}, context), got "
                            f"{type(value).__name__}")
        return value

    async def analyze(self, context: dict[str, Any], app_desc: Any, system: dict[str, Any],
                      mechanisms: dict[str, Any], telemetry: Any, ml_connector: Any) -> tuple[bool, dict[str, Any]]:
        _, args = self._arguments(context, app_desc, system, mechanisms, telemetry, ml_connector)
        needed, ctx = self._returned(await _call(self.module.analyze, context["original"], *args),
                                     "analyze", "needed")
        return bool(needed), engine_context(ctx, context.get("packages_wanted"))

    async def plan(self, context: dict[str, Any], app_desc: Any, system: dict[str, Any],
                   mechanisms: dict[str, Any], telemetry: Any, ml_connector: Any) -> tuple[Any, ...]:
        layer, args = self._arguments(context, app_desc, system, mechanisms, telemetry, ml_connector)
        plan, ctx = self._returned(await _call(self.module.plan, context["original"], *args), "plan", "plan")
        if not isinstance(plan, dict):
            raise TypeError(f"original policy {self.name!r}: plan() must return a dict of mechanism -> command")
        ours, resolved = translate_plan(layer, plan, set(mechanisms), system)
        explanation = {"summary": f"original policy {self.name} planned for {sorted(plan)}",
                       "contract": "original", "layer": layer}
        if resolved:
            explanation["resolved_mechanisms"] = resolved
        return ours, engine_context(ctx, context.get("packages_wanted")), explanation
