"""Policy: place and move the replicas of an application's buckets (continuum layer, `storage` mechanism).

Application scope. Reads the storage mechanism's state (`mechanisms["storage"]["state"]`: sites, the
replicas each store holds, the access summary per bucket and the RTT from each node to each site) and
the app's bucket intents; `storage_replica_choice.choose_replica_sites` decides per bucket. Analyze says
a plan is needed when some bucket is not where the choice puts it; plan sends one `place` command (one
bucket per cycle: each may copy a whole bucket). The explanation carries, per bucket, the inputs (users,
rates, current sites), the filtered sites with reasons, the scored alternatives and the reason.
A bucket that was just moved is left alone for `cooldown_s`, so noisy telemetry cannot make it flap.
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.descriptions.storage_intents import StorageSite, bucket_intents
from mlsysops.policies.storage_replica_choice import ReplicaChoice, choose_replica_sites, current_accessors

MECHANISM = "storage"


def initialize() -> dict[str, Any]:
    return {"name": "storage_placement", "scope": "application", "priority": 0,
            "configuration": {"analyze_interval": 2.0}, "mechanisms": [MECHANISM],
            "telemetry": {"metrics": []}, "hysteresis": 0.2, "cooldown_s": 30.0, "moved_at": {}}


def _owner_node(system: dict[str, Any], app: str, component: str) -> str | None:
    for info in system.get("clusters", {}).values():
        for node, n in info.get("nodes", {}).items():
            if any(i.get("app") == app and i.get("component") == component for i in n.get("instances", [])):
                return node
    return None


def choices(context: dict[str, Any], app: str, system: dict[str, Any],
            state: dict[str, Any]) -> list[ReplicaChoice]:
    model = system.get("app_models", {}).get(app)
    if model is None or not state.get("sites"):
        return []
    sites = [StorageSite(n, region=s.get("region", ""), gdpr=bool(s.get("gdpr")), layer=s.get("layer", "cloud"),
                         node=s.get("node")) for n, s in state["sites"].items()]
    unreachable = {n for n, s in state["sites"].items() if not s.get("reachable", True)}
    out = []
    for intent in bucket_intents(model):
        row = state.get("buckets", {}).get(intent.s3_name, {})
        current = [s for s, st in row.get("replicas", {}).items() if st == "complete"]
        if row.get("replicas") and not current:   # its data exists but no copy is usable: never start afresh
            held = f"{intent.key}: no complete replica reachable ({row['replicas']}); waiting for its store"
            out.append(ReplicaChoice(intent.key, [], [], held, held=held))
            continue
        accessors = current_accessors(state.get("access", {}).get(intent.key, []))
        out.append(choose_replica_sites(intent, sites, current, accessors, state.get("rtt_ms", {}),
                                        unreachable=unreachable, owner_node=_owner_node(system, app, intent.owner),
                                        hysteresis=float(context.get("hysteresis", 0.2))))
    return out


def _explain(choice: ReplicaChoice, state: dict[str, Any]) -> dict[str, Any]:
    return {"bucket": choice.bucket, "current": choice.current, "chosen": choice.sites, "reason": choice.reason,
            "filtered": choice.filtered, "alternatives": choice.alternatives,
            "users": state.get("access", {}).get(choice.bucket, [])}


def _due(context: dict[str, Any], system: dict[str, Any], choice: ReplicaChoice) -> bool:
    since = system.get("now", 0.0) - context.get("moved_at", {}).get(choice.bucket, float("-inf"))
    # a bucket with no complete replica anywhere (new, or its sites lost) is never held back
    return choice.changes and (not choice.current or since >= float(context.get("cooldown_s", 30.0)))


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    state = (mechanisms.get(MECHANISM) or {}).get("state") or {}
    made = choices(context, application_description["name"], system_description, state)
    held = [c.held for c in made if c.held]
    due = [c for c in made if _due(context, system_description, c)]
    context["explanation"] = {"summary": "; ".join(c.reason for c in due) or "every bucket is where it should be",
                              "buckets": [_explain(c, state) for c in made], **({"held": held} if held else {})}
    return bool(due), context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    state = (mechanisms.get(MECHANISM) or {}).get("state") or {}
    app = application_description["name"]
    made = [c for c in choices(context, app, system_description, state) if _due(context, system_description, c)]
    if not made:
        return {}, context
    choice = made[0]
    bucket_id = choice.bucket.split("/", 1)[1]
    if choice.current:   # a move (not a creation) starts the cooldown
        context.setdefault("moved_at", {})[choice.bucket] = system_description.get("now", 0.0)
    context["explanation"] = {"summary": f"{choice.bucket}: {choice.reason}", **_explain(choice, state),
                              "pending": [c.bucket for c in made[1:]]}
    return {MECHANISM: {"command": "place", "app": app, "bucket": bucket_id, "sites": choice.sites,
                        "reason": choice.reason}}, context
