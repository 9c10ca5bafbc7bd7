"""A policy plugin: a module (or object) with `initialize`, `analyze` and `plan`.

The engine keeps one context per (policy, asset) pair: it starts as what `initialize()` returned and is
replaced by the context each `analyze`/`plan` returns. Sync functions are accepted too (they run in a
worker thread); either may return a third element, the explanation (see `explanation.py`).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypedDict

from mlsysops.agents.contracts.explanation import Explanation
from mlsysops.agents.contracts.mechanism import MechanismView


class PolicyConfiguration(TypedDict, total=False):
    analyze_interval: str | float    # "5s", "500ms", "1m" or seconds; re-read every cycle


class PolicyTelemetry(TypedDict, total=False):
    metrics: list[str]                   # series Monitor must collect for this policy
    system_scrape_interval: str | float  # the smallest one across policies is applied


class PolicyContext(TypedDict, total=False):
    """The keys the framework reads; any other key is the policy's own state and is kept as it is."""

    scope: Literal["application", "global"]   # one pair per app, or one pair for the whole agent
    configuration: PolicyConfiguration
    telemetry: PolicyTelemetry
    mechanisms: list[str]     # when given, the policy may only plan for these mechanisms
    priority: int             # conflict rule in the plan scheduler: higher wins, then FIFO
    mode: Literal["heuristic", "ml"]   # family for the management mode (heuristic when absent)
    explanation: Explanation  # the second way to explain a decision (see explanation.py)


AnalyzeResult = tuple[bool, dict[str, Any]] | tuple[bool, dict[str, Any], Explanation | str | None]
PlanResultTuple = (tuple[dict[str, Any], dict[str, Any]]
                   | tuple[dict[str, Any], dict[str, Any], Explanation | str | None])


class PolicyModule(Protocol):
    """What `PolicyRegistry` loads: analyze says whether a plan is needed, plan says `{mechanism: command}`.

    `application_description` is one app (scope `application`) or `{app: description}` (scope `global`);
    `system_description` is the layer's view (see `system_description.py`); `mechanisms` is
    `{name: {"state": get_state(), "options": get_options()}}`; `telemetry` the agent's `Telemetry` view;
    `ml_connector` whatever the agent was given (None by default). All arguments are copies.
    """

    def initialize(self) -> PolicyContext | dict[str, Any]: ...

    async def analyze(self, context: dict[str, Any], application_description: Any,
                      system_description: dict[str, Any], mechanisms: dict[str, MechanismView],
                      telemetry: Any, ml_connector: Any) -> AnalyzeResult: ...

    async def plan(self, context: dict[str, Any], application_description: Any,
                   system_description: dict[str, Any], mechanisms: dict[str, MechanismView],
                   telemetry: Any, ml_connector: Any) -> PlanResultTuple: ...
