"""The plugin contracts: declared capabilities are checked at registration, explanations have one form,
and the continuum's app removal runs through the plan scheduler like any execution."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlsysops.agents.descriptions import MLSysOpsContinuum, load_file
from mlsysops.agents.mape import DecisionLog, Plan, PlanScheduler
from mlsysops.continuum.agent import ContinuumAgent
from mlsysops.plugins import (
    OPERATIONS,
    Capability,
    MechanismRegistry,
    PluginContractError,
    normalize_explanation,
)

ROOT = Path(__file__).resolve().parents[1]


class Dispatch:
    """A continuum dispatch mechanism that can remove apps (and says so)."""

    name = "fake_dispatch"
    capabilities = frozenset({Capability.REMOVE_APP})

    def __init__(self) -> None:
        self.removed: list[tuple[str, dict[str, str]]] = []

    async def apply(self, command: Any) -> dict[str, Any]:
        return {"ok": True}

    async def get_state(self) -> dict[str, Any]:
        return {}

    async def get_options(self) -> dict[str, Any]:
        return {}

    async def remove_app(self, app: str, assign: dict[str, str]) -> dict[str, Any]:
        self.removed.append((app, assign))
        return {"ok": True, "detail": f"{app} removed"}


# -- capabilities ---------------------------------------------------------------------------------------


def test_a_declared_capability_without_its_method_is_rejected_at_registration() -> None:
    class Liar:
        capabilities = {"watch"}

        async def apply(self, command: Any) -> None: ...

    with pytest.raises(TypeError, match=r"declares capability 'watch' but has no callable watch\(\)"):
        MechanismRegistry().register("liar", Liar())


def test_an_unknown_capability_is_rejected_with_the_known_ones() -> None:
    class Unknown:
        capabilities = ["teleport"]

        async def apply(self, command: Any) -> None: ...

    with pytest.raises(TypeError, match=r"unknown capability 'teleport'; known: \['adopt', "):
        MechanismRegistry().register("odd", Unknown())
    Unknown.capabilities = "watch"   # a bare string is not a collection of names
    with pytest.raises(TypeError, match="must be a collection of names"):
        MechanismRegistry().register("odd", Unknown())


def test_capabilities_of_a_module_loaded_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("capabilities = ['adopt']\nasync def apply(c): pass\n"
                                      "async def adopt(): return {}\n")
    (tmp_path / "bad.py").write_text("capabilities = ['resync']\nasync def apply(c): pass\n")
    reg = MechanismRegistry()
    reg.load_directory(tmp_path)
    assert reg.get("good").supports(Capability.ADOPT) and not reg.get("good").supports("watch")
    assert "bad" not in reg and "no callable resync()" in reg.errors[0].error
    assert reg.get("good").describe()["capabilities"] == ["adopt"]


def test_plain_mechanisms_declare_nothing_and_only_operations_run_as_plans() -> None:
    mech = MechanismRegistry().register("plain", type("Plain", (), {"apply": lambda self, c: None})())
    assert mech.capabilities == frozenset()
    assert OPERATIONS == {Capability.RESYNC, Capability.REMOVE_APP}
    with pytest.raises(ValueError, match="does not declare capability 'remove_app'"):
        mech.operation("remove_app")
    with pytest.raises(ValueError, match="is not an operation"):
        mech.operation("adopt")


@pytest.mark.asyncio
async def test_an_undeclared_operation_fails_the_execution_not_the_scheduler() -> None:
    reg = MechanismRegistry()
    reg.register("plain", type("Plain", (), {"apply": lambda self, c: None, "remove_app": lambda self, **k: None})())
    log = DecisionLog("a")
    result = await PlanScheduler(reg, log).submit(Plan("agent", "shop", {"plain": {"app": "shop"}},
                                                       operation="remove_app"))
    assert result.status == "failed" and "does not declare capability 'remove_app'" in result.reason
    assert log.query(stage="execute")[0].outcome == "failed"


# -- explanation -------------------------------------------------------------------------------------------


def test_both_ways_of_explaining_normalise_to_one_dict() -> None:
    returned = {"summary": "n1 chosen", "alternatives": ["n2"]}
    assert normalize_explanation(returned, {}) == returned
    assert normalize_explanation(None, {"explanation": returned}) == returned
    assert normalize_explanation({"why": "returned"}, {"explanation": {"why": "context"}}) == {"why": "returned"}
    assert normalize_explanation(None, {}) is None
    assert normalize_explanation(None, {"explanation": "free text"}) is None   # the context is the policy's
    copy = normalize_explanation(None, {"explanation": returned})
    assert copy is not returned   # a policy mutating its context later does not rewrite a record
    for bad in ("text", ["a"], {1: "x"}):
        with pytest.raises(PluginContractError, match="3rd element"):
            normalize_explanation(bad, {})


# -- the continuum's app removal -----------------------------------------------------------------------------


def test_remove_app_runs_through_the_plan_scheduler_and_is_recorded() -> None:
    async def scenario() -> None:
        desc = MLSysOpsContinuum.model_validate({"continuum_id": "demo", "clusters": ["edge-1"]})
        agent = ContinuumAgent("continuum-demo@localhost", "pw", description=desc,
                               cluster_jids={"edge-1": "cluster-edge-1@localhost"})
        dispatch = Dispatch()
        agent.use_dispatch(dispatch)
        doc = load_file(ROOT / "examples" / "apps" / "env-monitor.yaml")[0]
        agent.submit_app(doc)
        agent.assignments["env-monitor"] = {"aggregator": "edge-1"}
        try:
            assert await agent.remove_app("env-monitor")
        finally:
            await agent.scheduler.stop()
            agent.decision_log.close()
        assert dispatch.removed == [("env-monitor", {"aggregator": "edge-1"})]
        records = {r.stage: r for r in agent.decision_log.query(app="env-monitor", limit=50)}
        assert records["plan"].policy == "agent" and records["plan"].chosen == {
            "cluster_dispatch": {"app": "env-monitor", "assign": {"aggregator": "edge-1"}}}
        assert records["schedule"].outcome == "accepted"
        execute = records["execute"]
        assert (execute.outcome, execute.mechanism, execute.plan_id) == ("completed", "cluster_dispatch",
                                                                           records["plan"].plan_id)
        assert execute.reason.startswith("cluster_dispatch.remove_app completed")
        assert agent.app_status("env-monitor")["aggregator"]["status"] == "removed"

    asyncio.run(scenario())
