"""A removed app's routes: the clearing plan is retried when it does not complete, stops when the app is
deployed on the cluster again meanwhile, and leaves an error event when it never completes. The scheduler is
replaced by a scripted `execute` (the ordering against routes plans is covered over prosody in
`tests/test_traffic_routes.py` and on real API servers in `tests/kube/test_traffic_kube.py`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mlsysops.cluster import agent as cluster_agent
from mlsysops.cluster.agent import ClusterAgent

pytestmark = pytest.mark.asyncio


def scripted(statuses: list[str], assigned: dict[str, Any]) -> tuple[ClusterAgent, list[dict], list[str]]:
    agent = ClusterAgent.__new__(ClusterAgent)
    calls: list[dict] = []
    events: list[str] = []
    agent.traffic, agent.engine, agent.assigned, agent.cluster_id = object(), object(), assigned, "edge-1"

    async def execute(mechanism: str, command: dict, **kw: Any) -> Any:
        calls.append({"mechanism": mechanism, "command": command, **kw})
        return SimpleNamespace(status=statuses[min(len(calls), len(statuses)) - 1], reason="api unreachable")

    agent.execute = execute
    agent.record_event = lambda reason, **kw: events.append(reason)
    return agent, calls, events


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(cluster_agent, "CLEAR_ROUTES_BACKOFF_S", 0.001)


async def test_retried_until_it_completes_at_the_agents_own_priority():
    agent, calls, events = scripted(["failed", "timeout", "completed"], {})
    await agent._clear_routes("farm")
    assert len(calls) == 3 and not events
    assert all(c["command"] == {"app": "farm", "expose": [], "routes": {}} for c in calls)
    assert all("priority" not in c for c in calls)      # the agent's default priority wins a same-cycle conflict


async def test_an_error_event_when_it_never_completes():
    agent, calls, events = scripted(["failed"], {})
    await agent._clear_routes("farm")
    assert len(calls) == cluster_agent.CLEAR_ROUTES_ATTEMPTS
    assert len(events) == 1 and "not cleared" in events[0] and "api unreachable" in events[0]


async def test_no_retry_once_the_app_is_back_on_the_cluster():
    assigned: dict[str, Any] = {}
    agent, calls, events = scripted(["failed"], assigned)
    original = agent.execute

    async def execute(*a: Any, **kw: Any) -> Any:
        assigned["farm"] = ["sampler"]                    # re-deployed while the first clearing ran
        return await original(*a, **kw)

    agent.execute = execute
    await agent._clear_routes("farm")
    assert len(calls) == 1 and not events
