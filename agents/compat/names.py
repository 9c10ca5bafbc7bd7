"""The original framework's mechanism names, resolved to ours where we have the capability.

| layer | original | ours | command |
|---|---|---|---|
| continuum | `clusterPlacement` | `cluster_dispatch` | `{"action": {"component": CLUSTER}, "app": [app]}` -> every component of the app to CLUSTER |
| cluster | `fluidity` | `fluidity` (the `component_placement` mechanism) | the Fluidity plan, unchanged |
| node | `fluidity_proxy` | `relocation_proposal` | a Fluidity `move` of a component on this node -> a proposal to the cluster, which decides |
| node | `CPUFrequencyConfigurator` | none built in | used only when a mechanism of that name is loaded (directories, entry points) |

A name that is registered as it is always wins: an original mechanism module loaded under its own name is
used, not the translation.
"""

from __future__ import annotations

from typing import Any

ORIGINAL_MECHANISMS: dict[str, dict[str, str]] = {
    "continuum": {"clusterPlacement": "cluster_dispatch"},
    "cluster": {"fluidity": "component_placement"},
    "node": {"fluidity_proxy": "relocation_proposal"},
}


class PlanTranslationError(ValueError):
    """An original command that cannot be expressed for our mechanism (the message says why)."""


def aliases_for(layer: str) -> dict[str, str]:
    return dict(ORIGINAL_MECHANISMS.get(layer, {}))


def _cluster_placement(command: Any, system: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(command, dict) or not isinstance(command.get("action"), dict):
        raise PlanTranslationError("clusterPlacement: expected {'action': {'component': CLUSTER}, 'app': [app]}")
    cluster = command["action"].get("component")
    apps = command.get("app")
    app = apps[0] if isinstance(apps, list) and apps else apps
    if not isinstance(cluster, str) or not isinstance(app, dict) or not isinstance(app.get("name"), str):
        raise PlanTranslationError("clusterPlacement: action.component must be a cluster id and app a list "
                                   "holding the app description")
    if cluster not in system.get("clusters", {}):
        raise PlanTranslationError(f"clusterPlacement: unknown cluster {cluster!r}; known: "
                                   f"{sorted(system.get('clusters', {}))}")
    comps = [c.get("metadata", {}).get("name") for c in app.get("components", []) if isinstance(c, dict)]
    return {"app": app["name"], "assign": {c: cluster for c in comps if c},
            "previous": dict((system.get("assignments") or {}).get(app["name"], {}))}


def _fluidity_proxy(command: Any, system: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(command, dict) or not isinstance(command.get("deployment_plan"), dict):
        raise PlanTranslationError("fluidity_proxy: expected a Fluidity plan {'name', 'deployment_plan'}")
    app = command.get("name")
    moves = [(comp, a) for comp, actions in command["deployment_plan"].items() if isinstance(actions, list)
             for a in actions if isinstance(a, dict) and a.get("action") == "move"]
    if len(moves) != 1:
        raise PlanTranslationError(f"fluidity_proxy: a node can ask for exactly one move per plan here (the "
                                   f"cluster decides where); got {len(moves)}")
    comp, move = moves[0]
    node = system.get("node")
    instance = next((i for i in system.get("instances", [])
                     if i.get("app") == app and i.get("component") == comp), None)
    if instance is None:
        raise PlanTranslationError(f"fluidity_proxy: no instance of {app}/{comp} runs on node {node}")
    target = move.get("target_host")
    return {"app": app, "component": comp, "instance_id": instance["instance_id"], "node": node,
            "reason": f"original plan: move to {target}" if target else "original plan: move"}


_TRANSLATE = {"clusterPlacement": _cluster_placement, "fluidity_proxy": _fluidity_proxy}


def translate_plan(layer: str, plan: dict[str, Any], registered: set[str],
                   system: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(plan with our mechanism names and commands, {original name: ours}) for the names we resolve."""
    out: dict[str, Any] = {}
    resolved: dict[str, str] = {}
    aliases = aliases_for(layer)
    for name, command in plan.items():
        if name in registered or name not in aliases:
            out[name] = command   # ours, or unknown: the engine refuses unknown names with its own reason
            continue
        ours = aliases[name]
        translate = _TRANSLATE.get(name)
        out[ours] = translate(command, system) if translate else command
        resolved[name] = ours
    return out, resolved
