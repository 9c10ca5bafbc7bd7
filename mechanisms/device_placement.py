"""Component placement that reaches devices behind gateways, around a cluster's own placement mechanism.

Actions on ordinary nodes go to the wrapped mechanism unchanged (a command that names no device is passed as
it is). Actions on a device become ``deploy``/``remove`` requests to its gateway (``devices.command``), which
answer once the device replied: deploy, remove, and move from or to a device (make-before-break: the new
instance first, then the old one, whose removal may fail when its device is gone). ``change_spec`` on a
device is refused (a device runs fixed services). `get_state` adds what the devices last reported running,
so reconciliation and adoption see them like any instance. Everything else is the wrapped mechanism's.
"""

from __future__ import annotations

import logging
from typing import Any

from mlsysops.mechanisms.placement_commands import CommandError, PlacementAction, parse_command
from mlsysops.mechanisms.sim_placement import new_instance_id

log = logging.getLogger(__name__)


class DevicePlacement:
    def __init__(self, inner: Any, devices: Any) -> None:
        self.inner = inner
        self.devices = devices    # is_device(node), instances(), async command(device, op, iid, app, component)

    def __getattr__(self, name: str) -> Any:   # initialize, capabilities, watch, sim, ...: the inner mechanism's
        return getattr(self.inner, name)

    async def get_state(self) -> dict[str, Any]:
        state = dict(await self.inner.get_state())
        extra = self.devices.instances()
        if extra:
            state["instances"] = [*state.get("instances", []), *extra]
        return state

    async def apply(self, command: Any) -> Any:
        try:
            actions = parse_command(command)
        except CommandError:
            return await self.inner.apply(command)   # the inner mechanism says what is wrong with it
        if not any(self._on_device(a) for a in actions):
            return await self.inner.apply(command)
        results, ok = [], True
        for act in actions:
            try:
                detail = await self._one(act)
                results.append({**act.to_dict(), "ok": True, **detail})
            except Exception as exc:   # noqa: BLE001 - one failed action is a failed result, not a crash
                ok = False
                results.append({**act.to_dict(), "ok": False, "error": str(exc)})
                log.warning("placement action %s failed: %s", act.to_dict(), exc)
        return {"ok": ok, "detail": results}

    def _device_of(self, iid: str | None) -> str | None:
        return next((i["node"] for i in self.devices.instances() if i["instance_id"] == iid), None)

    def _on_device(self, act: PlacementAction) -> bool:
        nodes = (act.node, act.source, act.target, self._device_of(act.instance_id))
        return any(self.devices.is_device(n) for n in nodes if n)

    async def _inner_one(self, app: str, raw: dict[str, Any]) -> dict[str, Any]:
        res = await self.inner.apply({"app": app, "actions": [raw]})
        detail = (res.get("detail") or [{}])[0] if isinstance(res, dict) else {}
        if not detail.get("ok"):
            raise RuntimeError(detail.get("error") or (res.get("detail") if isinstance(res, dict) else res))
        return detail

    async def _deploy(self, app: str, component: str, node: str, iid: str) -> dict[str, Any]:
        if self.devices.is_device(node):
            await self.devices.command(node, "deploy", iid, app, component)
            return {"instance_id": iid, "node": node}
        detail = await self._inner_one(app, {"action": "deploy", "component": component, "node": node,
                                             "instance_id": iid})
        return {"instance_id": detail.get("instance_id", iid), "node": node}

    async def _remove(self, app: str, component: str, node: str | None, iid: str | None) -> dict[str, Any]:
        device = self._device_of(iid) or (node if self.devices.is_device(node) else None)
        if device is not None and iid is not None:
            await self.devices.command(device, "remove", iid, app, component)
            return {"removed": iid, "node": device}
        raw = {"action": "remove", "component": component, "instance_id": iid, "node": node}
        return await self._inner_one(app, {k: v for k, v in raw.items() if v is not None})

    async def _one(self, act: PlacementAction) -> dict[str, Any]:
        if act.action == "deploy":
            assert act.node is not None
            return await self._deploy(act.app, act.component, act.node,
                                      act.instance_id or new_instance_id(act.app, act.component))
        if act.action == "remove":
            return await self._remove(act.app, act.component, act.node, act.instance_id)
        if act.action == "move":
            assert act.target is not None
            new_id = act.extra.get("new_instance_id") or (f"{act.instance_id}.m" if act.instance_id
                                                          else new_instance_id(act.app, act.component))
            placed = await self._deploy(act.app, act.component, act.target, new_id)
            try:
                await self._remove(act.app, act.component, act.source, act.instance_id)
            except Exception as exc:   # noqa: BLE001 - the old instance's device may be gone: that is the point
                log.info("move of %s: old instance not removed (%s)", act.instance_id, exc)
            return {**placed, "replaced": act.instance_id}
        raise CommandError(f"{act.action} is not supported on a device (it runs fixed services)")
