"""MAPE-K engine, plugin system, plan scheduler and decision log; independent of SPADE and of any layer.

Typical use by an agent::

    knowledge = Knowledge()
    policies = PolicyRegistry(["./policies.d"], modules=["mlsysops.policies.filter_score_placement"], agent_id=jid)
    policies.load_all()
    mechanisms = MechanismRegistry(agent_id=jid)
    mechanisms.register("placement", SimPlacement(sim))
    log = DecisionLog(jid, sqlite_path="state/decisions.db")
    engine = MAPEEngine(jid, knowledge, policies, mechanisms, log,
                        assets=lambda: knowledge.apps, system_description=lambda: knowledge.system)
    engine.start(); ...; engine.trigger(reason="node lost"); ...; await engine.stop(); log.close()
"""

from mlsysops.agents.mape.decision_log import (
    OUTCOMES,
    STAGES,
    DecisionLog,
    DecisionRecord,
    digest,
    fingerprint,
)
from mlsysops.agents.mape.engine import MAPEEngine
from mlsysops.agents.mape.isolation import CallResult, FailureBackoff, PluginContractError, call_plugin
from mlsysops.agents.mape.knowledge import Knowledge, Telemetry, WindowStats
from mlsysops.agents.mape.plugins import (
    LoadError,
    Mechanism,
    MechanismRegistry,
    PluginChange,
    Policy,
    PolicyRegistry,
    parse_interval,
)
from mlsysops.agents.mape.scheduler import CommandResult, Plan, PlanResult, PlanScheduler, resolve_conflicts

__all__ = [
    "OUTCOMES",
    "STAGES",
    "CallResult",
    "CommandResult",
    "DecisionLog",
    "DecisionRecord",
    "FailureBackoff",
    "Knowledge",
    "LoadError",
    "MAPEEngine",
    "Mechanism",
    "MechanismRegistry",
    "Plan",
    "PlanResult",
    "PlanScheduler",
    "PluginChange",
    "PluginContractError",
    "Policy",
    "PolicyRegistry",
    "Telemetry",
    "WindowStats",
    "call_plugin",
    "digest",
    "fingerprint",
    "parse_interval",
    "resolve_conflicts",
]
