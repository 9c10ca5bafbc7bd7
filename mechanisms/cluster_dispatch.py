"""Continuum mechanism: hand components to cluster agents (`app.deploy` / `app.remove` over XMPP).

Command (from `continuum_cluster_placement`)::

    {"app": "shop", "assign": {"web": "edge-1"}, "previous": {"web": "cloud-1"}}

Each affected cluster receives the *full* list of the app's components it must run, so requests are
idempotent and a restarted cluster agent can be re-synchronised with the same message. A component that
moved away is removed from its previous cluster when that cluster's agent is reachable.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from mlsysops.agents.agent_base import RequestError
from mlsysops.agents.payloads import AppDeploy, AppRemove
from mlsysops.agents.protocol import Kind
from mlsysops.plugins import Capability


class _Continuum(Protocol):
    cluster_jids: dict[str, str]
    assignments: dict[str, dict[str, str]]
    app_docs: dict[str, dict[str, Any]]

    async def request(self, to: str, kind: Any, body: Any, **kw: Any) -> Any: ...


class ClusterDispatchMechanism:
    name = "cluster_dispatch"
    capabilities = frozenset({Capability.RESYNC, Capability.REMOVE_APP})

    def __init__(self, agent: _Continuum) -> None:
        self.agent = agent

    async def get_state(self) -> dict[str, Any]:
        return {"assignments": {a: dict(c) for a, c in self.agent.assignments.items()}}

    async def get_options(self) -> dict[str, Any]:
        return {"clusters": sorted(self.agent.cluster_jids)}

    def _components_on(self, app: str, cluster: str, assign: dict[str, str]) -> list[str]:
        return sorted(c for c, cid in assign.items() if cid == cluster)

    async def _deploy(self, app: str, cluster: str, assign: dict[str, str]) -> dict[str, Any]:
        body = AppDeploy(app=app, description=self.agent.app_docs[app],
                         components=self._components_on(app, cluster, assign))
        try:
            reply = await self.agent.request(self.agent.cluster_jids[cluster], Kind.APP_DEPLOY, body)
        except RequestError as exc:
            return {"cluster": cluster, "ok": False, "error": str(exc) or type(exc).__name__}
        return {"cluster": cluster, "ok": True, "components": body.components, "reply": reply.body}

    async def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        app = command.get("app")
        assign = command.get("assign")
        if app not in self.agent.app_docs or not isinstance(assign, dict):
            return {"ok": False, "detail": f"unknown app {app!r} or missing 'assign'"}
        unknown = sorted({c for c in assign.values() if c not in self.agent.cluster_jids})
        if unknown:
            return {"ok": False, "detail": f"unknown cluster(s) {unknown}"}
        target = {**self.agent.assignments.get(app, {}), **assign}
        clusters = sorted(set(assign.values()))
        results = await asyncio.gather(*(self._deploy(app, c, target) for c in clusters))
        current = self.agent.assignments.setdefault(app, {})
        for res in results:
            if res["ok"]:
                for comp in res["components"]:
                    current[comp] = res["cluster"]
        save = getattr(self.agent, "save_assignments", None)
        if save is not None:
            save(app)   # durable: a restarted continuum knows where every component went
        for comp, old in (command.get("previous") or {}).items():
            if current.get(comp) != old:
                results.append(await self._remove(app, old, [comp]))
        return {"ok": all(r["ok"] for r in results), "detail": results}

    async def _remove(self, app: str, cluster: str, components: list[str] | None) -> dict[str, Any]:
        try:
            await self.agent.request(self.agent.cluster_jids[cluster], Kind.APP_REMOVE,
                                     AppRemove(app=app, components=components), retries=0, timeout=2.0)
        except RequestError as exc:
            return {"cluster": cluster, "ok": True, "removed": components,
                    "note": f"previous cluster unreachable ({exc}); it drops the components when it resyncs"}
        return {"cluster": cluster, "ok": True, "removed": components}

    async def remove_app(self, app: str, assign: dict[str, str]) -> None:
        await asyncio.gather(*(self._remove(app, c, None) for c in sorted(set(assign.values()))))

    async def resync(self, cluster: str) -> None:
        """Re-send every app assigned to `cluster` (after it (re)joined)."""
        for app, assign in list(self.agent.assignments.items()):
            if cluster in assign.values() and app in self.agent.app_docs:
                res = await self._deploy(app, cluster, assign)
                if not res["ok"]:
                    self.agent.record_event(f"resync of {app} to {cluster} failed: {res['error']}",  # type: ignore[attr-defined]
                                            app=app, outcome="error")
