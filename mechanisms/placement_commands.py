"""Component placement commands: our format and the original framework's (Fluidity) format.

Ours (what built-in policies emit)::

    {"app": "shop", "actions": [
        {"action": "deploy", "component": "web", "node": "n1", "instance_id": "shop.web.1a2b"},
        {"action": "move", "component": "web", "instance_id": "shop.web.1a2b", "from": "n1", "to": "n2"},
        {"action": "remove", "component": "web", "instance_id": "shop.web.1a2b"},
        {"action": "change_spec", "component": "web", "node": "n1", "spec": {...component...}}]}

The original framework's Fluidity plans are accepted as they are::

    {"name": "shop", "deployment_plan": {"web": [{"action": "deploy", "host": "n1"}],
                                         "initial_plan": True}}

with actions deploy {host}, move {src_host, target_host}, remove {host}, change_spec {new_spec, host}.
Both normalise to a list of `PlacementAction`; anything else is a `CommandError` naming the bad field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("deploy", "move", "remove", "change_spec")


class CommandError(ValueError):
    """A placement command that cannot be understood; the message names the field."""


@dataclass(slots=True)
class PlacementAction:
    action: str
    app: str
    component: str
    node: str | None = None          # deploy/change_spec target, remove host
    source: str | None = None        # move: from
    target: str | None = None        # move: to
    instance_id: str | None = None
    spec: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"action": self.action, "app": self.app, "component": self.component}
        for key in ("node", "source", "target", "instance_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def parse_command(command: Any) -> list[PlacementAction]:
    """Normalise either accepted format into actions (raises CommandError)."""
    if not isinstance(command, dict):
        raise CommandError(f"command must be a mapping, got {type(command).__name__}")
    if "deployment_plan" in command:
        return _parse_fluidity(command)
    if "actions" in command:
        return _parse_ours(command)
    raise CommandError("command has neither 'actions' (mlsysops format) nor 'deployment_plan' (Fluidity format)")


def _require_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise CommandError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _parse_ours(command: dict[str, Any]) -> list[PlacementAction]:
    app = _require_str(command, "app", "command")
    actions = command["actions"]
    if not isinstance(actions, list):
        raise CommandError("command.actions: expected a list")
    out = []
    for i, raw in enumerate(actions):
        where = f"command.actions[{i}]"
        if not isinstance(raw, dict):
            raise CommandError(f"{where}: expected a mapping")
        kind = raw.get("action")
        if kind not in ACTIONS:
            raise CommandError(f"{where}.action: expected one of {list(ACTIONS)}, got {kind!r}")
        act = PlacementAction(kind, app, _require_str(raw, "component", where),
                              instance_id=raw.get("instance_id"), spec=raw.get("spec"))
        if kind == "move":
            act.source = raw.get("from")
            act.target = _require_str(raw, "to", where)
            if raw.get("new_instance_id"):
                act.extra["new_instance_id"] = str(raw["new_instance_id"])
            if act.source is None and act.instance_id is None:
                raise CommandError(f"{where}: a move needs 'from' or 'instance_id'")
        elif kind == "remove":
            act.node = raw.get("node")
            if act.node is None and act.instance_id is None:
                raise CommandError(f"{where}: a remove needs 'node' or 'instance_id'")
        else:
            act.node = _require_str(raw, "node", where)
        if kind == "change_spec" and not isinstance(act.spec, dict):
            raise CommandError(f"{where}.spec: expected the new component description (a mapping)")
        out.append(act)
    return out


def _parse_fluidity(command: dict[str, Any]) -> list[PlacementAction]:
    app = _require_str(command, "name", "command")
    plan = command["deployment_plan"]
    if not isinstance(plan, dict):
        raise CommandError("command.deployment_plan: expected a mapping of component -> actions")
    out = []
    for component, actions in plan.items():
        if component in ("initial_plan", "curr_deployment"):
            continue
        where = f"command.deployment_plan.{component}"
        if not isinstance(actions, list):
            raise CommandError(f"{where}: expected a list of actions")
        for i, raw in enumerate(actions):
            w = f"{where}[{i}]"
            if not isinstance(raw, dict):
                raise CommandError(f"{w}: expected a mapping")
            kind = raw.get("action")
            if kind not in ACTIONS:
                raise CommandError(f"{w}.action: expected one of {list(ACTIONS)}, got {kind!r}")
            act = PlacementAction(kind, app, component)
            if kind == "move":
                act.source = _require_str(raw, "src_host", w)
                act.target = _require_str(raw, "target_host", w)
            else:
                act.node = _require_str(raw, "host", w)
            if kind == "change_spec":
                if not isinstance(raw.get("new_spec"), dict):
                    raise CommandError(f"{w}.new_spec: expected the new component description")
                act.spec = raw["new_spec"]
            out.append(act)
    return out
