"""Management modes on an agent: which policies run, per-app overrides, what the agent reports."""

from __future__ import annotations

import pytest

from mlsysops.agents.managed_agent import AgentSettings, ConfigUpdate, ManagedAgent
from tests.support import AGENT_PASSWORD

POLICIES = ["mlsysops.policies.ml_qos_placement", "mlsysops.policies.relocation",
            "mlsysops.policies.filter_score_placement"]


@pytest.fixture
def agent():
    a = ManagedAgent("modes-test@localhost", AGENT_PASSWORD, settings=AgentSettings(policies=POLICIES))
    a.load_policies()
    a.knowledge.apps["shop"] = a.app_asset("shop", {"components": []}, None)
    a.knowledge.apps["maps"] = a.app_asset("maps", {"components": []}, None)
    a.assets = lambda: dict(a.knowledge.apps)
    yield a
    a.decision_log.close()


def enabled(a: ManagedAgent) -> set[str]:
    return {p.name for p in a.policies.enabled()}


def test_heuristic_mode_pauses_the_ml_policy(agent):
    assert enabled(agent) == {"relocation", "filter_score_placement"}


@pytest.mark.parametrize("mode", ["ml", "auto", "shadow"])
def test_ml_modes_let_the_ml_policy_decide_alone(agent, mode):
    out = agent.set_mode(mode)
    assert out["mode"] == mode and set(out["paused"]) == {"relocation", "filter_score_placement"}
    assert enabled(agent) == {"ml_qos_placement"}
    assert {a["management_mode"] for a in agent._assets_with_mode().values()} == {mode}


def test_per_app_override(agent):
    agent.set_mode("shadow", app="shop")
    assert enabled(agent) == {"ml_qos_placement"}       # it manages shop in shadow, maps by the heuristics
    modes = {name: a["management_mode"] for name, a in agent._assets_with_mode().items()}
    assert modes == {"shop": "shadow", "maps": "heuristic"}
    agent.set_mode("heuristic", app="shop")
    assert enabled(agent) == {"relocation", "filter_score_placement"}
    events = [r.reason for r in agent.decision_log.query(stage="event")]
    assert any("management mode of app shop heuristic -> shadow" in e for e in events)


def test_bad_mode_is_refused_with_the_choices(agent):
    with pytest.raises(ValueError, match=r"mode: expected one of \['heuristic', 'ml', 'auto', 'shadow'\]"):
        agent.set_mode("learned")
    with pytest.raises(ValueError):
        ConfigUpdate(mode="learned")


def test_mode_status_reports_what_the_ml_policy_said(agent):
    agent.set_mode("auto")
    management = {"mode": "auto", "acting": "heuristic",
                  "auto": {"state": "fallback", "reason": "fell back to heuristics: page-hinkley drift on "
                           "response_time_ms: statistic 23 > 20"}}
    agent.decision_log.record("analyze", "no_plan", "ml_qos_placement analyze -> False", policy="ml_qos_placement",
                              app="shop", explanation={"management": management})
    status = agent.mode_status()
    assert status["mode"] == "auto" and status["app_modes"] == {}
    assert status["apps"]["shop"]["auto"]["state"] == "fallback"
    assert "page-hinkley" in status["apps"]["shop"]["auto"]["reason"]
