"""Plugin loading (directories, modules, entry points, objects), errors, hot reload, isolation primitives."""

import asyncio
import os
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlsysops.agents.mape import plugins as plugins_mod
from mlsysops.agents.mape.isolation import (
    FailureBackoff,
    PluginContractError,
    call_plugin,
    validate_analyze_result,
    validate_plan_result,
)
from mlsysops.agents.mape.plugins import MechanismRegistry, PolicyRegistry, parse_interval

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"

POLICY_SRC = """
def initialize():
    return {{"scope": "application", "configuration": {{"analyze_interval": "{interval}"}}, "mechanisms": []}}

async def analyze(context, app, system, mechanisms, telemetry, ml):
    return {needed}, context

async def plan(context, app, system, mechanisms, telemetry, ml):
    return {{}}, context
"""


def write_policy(directory: Path, name: str, *, interval: str = "1s", needed: bool = False) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(POLICY_SRC.format(interval=interval, needed=needed)))
    return path


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_parse_interval() -> None:
    assert parse_interval("5s") == 5.0
    assert parse_interval("500ms") == 0.5
    assert parse_interval("2m") == 120.0
    assert parse_interval(3) == 3.0
    assert parse_interval(None) is None
    for bad in ("soon", "-1s", 0, True):
        with pytest.raises(ValueError):
            parse_interval(bad)


def test_load_directory_records_errors_and_keeps_going() -> None:
    reg = PolicyRegistry([FIXTURES / "policies"], entry_point_group=None)
    changes = reg.load_all()
    assert reg.names() == ["always_place", "global_sync"]
    assert {c.name: c.kind for c in changes} == {
        "always_place": "added",
        "global_sync": "added",
        "bad_scope": "failed",
        "broken_import": "failed",
    }
    errors = {e.name: e for e in reg.errors}
    assert "ModuleNotFoundError" in errors["broken_import"].error
    assert errors["broken_import"].path.endswith("broken_import.py")
    assert "module_that_does_not_exist_anywhere" in errors["broken_import"].traceback
    assert "scope" in errors["bad_scope"].error and "galaxy" in errors["bad_scope"].error
    ap = reg.get("always_place")
    assert ap is not None
    assert (ap.scope, ap.interval, ap.priority, ap.metrics, ap.mechanisms) == (
        "application",
        5.0,
        2,
        ["cpu_load"],
        ["placement"],
    )
    gs = reg.get("global_sync")
    assert gs is not None and (gs.scope, gs.interval, gs.scrape_interval) == ("global", 3.0, None)


def test_enable_disable_and_list() -> None:
    reg = PolicyRegistry([FIXTURES / "policies"], entry_point_group=None)
    reg.load_all()
    reg.disable("global_sync")
    assert [p.name for p in reg.enabled()] == ["always_place"]
    listed = {d["name"]: d for d in reg.list()}
    assert listed["global_sync"]["enabled"] is False and listed["always_place"]["scope"] == "application"
    reg.enable("global_sync")
    assert len(reg.enabled()) == 2
    with pytest.raises(KeyError):
        reg.disable("nope")


def test_load_module_and_object_and_entry_points(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "mypolicies_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write_policy(pkg, "builtin_one")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = PolicyRegistry(
        modules=["mypolicies_pkg.builtin_one", "mypolicies_pkg.absent"], entry_point_group=None
    )
    reg.load_all()
    assert reg.names() == ["builtin_one"] and reg.get("builtin_one").source == "module"
    assert reg.errors[0].name == "absent"

    obj = SimpleNamespace(
        initialize=lambda: {"scope": "global"}, analyze=lambda *a: (False, a[0]), plan=lambda *a: ({}, a[0])
    )
    assert reg.register("as_object", obj).kind == "added"
    assert reg.register("not_a_policy", object()).kind == "failed"

    ep_ok = SimpleNamespace(name="from_ep", value="pkg:mod", load=lambda: obj)
    ep_bad = SimpleNamespace(
        name="bad_ep", value="pkg:bad", load=lambda: (_ for _ in ()).throw(ImportError("x"))
    )
    monkeypatch.setattr(
        plugins_mod.importlib.metadata,
        "entry_points",
        lambda group: [ep_ok, ep_bad] if group == "mlsysops.policies" else [],
    )
    changes = reg.load_entry_points()
    assert [(c.name, c.kind) for c in changes] == [("from_ep", "added"), ("bad_ep", "failed")]
    assert reg.get("from_ep").source == "entry_point"


def test_async_initialize_is_supported(tmp_path) -> None:
    (tmp_path / "async_init.py").write_text(
        textwrap.dedent("""
        async def initialize():
            return {"scope": "global"}
        async def analyze(*a): return False, a[0]
        async def plan(*a): return {}, a[0]
    """)
    )
    reg = PolicyRegistry([tmp_path], entry_point_group=None)
    reg.load_all()
    assert reg.get("async_init").scope == "global"


@pytest.mark.asyncio
async def test_hot_add_modify_remove(tmp_path) -> None:
    reg = PolicyRegistry([tmp_path], entry_point_group=None)
    seen = []
    reg.add_listener(seen.append)
    assert reg.load_all() == []

    write_policy(tmp_path, "p1", interval="1s")
    changes = await reg.rescan()
    assert [(c.kind, c.name) for c in changes] == [("added", "p1")]
    assert reg.get("p1").interval == 1.0
    assert await reg.rescan() == []  # unchanged files are not reloaded

    path = write_policy(tmp_path, "p1", interval="7s")
    bump_mtime(path)
    changes = await reg.rescan()
    assert [(c.kind, c.name) for c in changes] == [("modified", "p1")]
    assert reg.get("p1").interval == 7.0 and reg.get("p1").version == 2

    # a broken edit keeps the last good version running
    path.write_text("def initialize(:\n")
    bump_mtime(path)
    changes = await reg.rescan()
    assert changes[0].kind == "failed" and "SyntaxError" in changes[0].detail
    assert reg.get("p1").interval == 7.0 and "SyntaxError" in reg.get("p1").last_error

    reg.disable("p1")
    path.unlink()
    changes = await reg.rescan()
    assert [(c.kind, c.name) for c in changes] == [("removed", "p1")]
    assert "p1" not in reg
    assert [c.kind for c in seen] == ["added", "modified", "failed", "removed"]

    # re-adding under the same name stays disabled (the operator's choice is kept)
    write_policy(tmp_path, "p1")
    await reg.rescan()
    assert reg.get("p1").enabled is False


def test_mechanism_registry_sources_and_initialize_kwargs() -> None:
    reg = MechanismRegistry()
    loaded = reg.load_directory(FIXTURES / "mechanisms", node_name="n7", unrelated="ignored")
    assert [m.name for m in loaded] == ["recorder"]
    assert reg.errors[0].name == "no_apply" and "apply" in reg.errors[0].error
    recorder = reg.get("recorder").target
    assert recorder.settings == {"node_name": "n7", "dry_run": False}

    class Obj:
        def __init__(self) -> None:
            self.kw = None

        def initialize(self, **kw):
            self.kw = kw

        async def apply(self, command):
            return True

    obj = Obj()
    reg.register("obj", obj, initialize=True, a=1)
    assert obj.kw == {"a": 1} and reg.names() == frozenset({"recorder", "obj"})
    with pytest.raises(TypeError):
        reg.register("bad", object())
    assert reg.load_module("json") is None and reg.errors[-1].name == "json"


# -- isolation ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_call_plugin_outcomes() -> None:
    async def ok_async(x):
        return x + 1

    def ok_sync(x):
        return x * 2

    def raises():
        raise ValueError("boom")

    async def hangs():
        await asyncio.sleep(60)

    release = threading.Event()

    def hangs_sync():
        release.wait(30)

    def returns_coroutine():
        return ok_async(1)

    assert (await call_plugin(ok_async, 1, timeout=1)).value == 2
    assert (await call_plugin(ok_sync, 4, timeout=1)).value == 8
    assert (await call_plugin(returns_coroutine, timeout=1)).value == 2
    res = await call_plugin(raises, timeout=1)
    assert res.status == "error" and "ValueError: boom" in res.reason and "in raises" in res.reason
    assert (await call_plugin(hangs, timeout=0.05)).status == "timeout"

    t0 = time.monotonic()
    ticker = asyncio.create_task(asyncio.sleep(0.01))  # the loop stays responsive during a hung sync call
    res = await call_plugin(hangs_sync, timeout=0.1)
    assert res.status == "timeout" and ticker.done() and time.monotonic() - t0 < 1
    release.set()


def test_validate_analyze_result() -> None:
    assert validate_analyze_result((True, {"a": 1})) == (True, {"a": 1}, None)
    assert validate_analyze_result((False, {"explanation": {"x": 1}}))[2] == {"x": 1}
    assert validate_analyze_result([True, {}, {"why": "y"}])[2] == {"why": "y"}
    for bad in (None, True, (1, {}), ("yes", {}), (True, None), (True, {}, "text"), (True, {}, {}, {})):
        with pytest.raises(PluginContractError):
            validate_analyze_result(bad)


def test_validate_plan_result() -> None:
    known = frozenset({"placement", "cpufreq"})
    assert validate_plan_result(({"placement": 1}, {}), known) == ({"placement": 1}, {}, None)
    assert validate_plan_result((None, {}), known)[0] == {}
    with pytest.raises(PluginContractError, match="unknown mechanism 'nope'"):
        validate_plan_result(({"nope": 1}, {}), known)
    with pytest.raises(PluginContractError, match="did not declare"):
        validate_plan_result(({"cpufreq": 1}, {}), known, ["placement"])
    for bad in ("plan", ([1], {}), ({"placement": 1}, "ctx"), ({1: 2}, {})):
        with pytest.raises(PluginContractError):
            validate_plan_result(bad, known)


def test_failure_backoff() -> None:
    b = FailureBackoff(threshold=3, base=1.0, cap=4.0)
    assert b.failure("k", now=0) == 0 and b.failure("k", now=0) == 0
    assert b.failure("k", now=0) == 1.0 and b.remaining("k", now=0.5) == 0.5
    assert b.failure("k", now=10) == 2.0
    assert b.failure("k", now=10) == 4.0 and b.failure("k", now=10) == 4.0  # capped
    assert b.failures("k") == 6
    b.success("k")
    assert b.failures("k") == 0 and b.remaining("k") == 0


def test_private_files_are_skipped() -> None:
    assert "_private_helper" not in PolicyRegistry._policy_files(FIXTURES / "policies").__repr__()
    assert not any(m.startswith("mlsysops_policy__private") for m in sys.modules)
