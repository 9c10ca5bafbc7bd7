"""Traffic follows components across clusters: the continuum decides, for every app, which cluster must
expose which component and where each calling cluster's traffic to a component it does not run goes.

The continuum is the only layer that knows where every component runs, so it owns "who points where";
the clusters' `traffic_routes` mechanisms only write what they are told (`app.routes`, one full,
idempotent set per app and cluster). The rules:

* A caller component X (it `calls` C in `component_interactions`, or `depends_on` C) assigned to cluster
  K and a component C running in cluster S != K: S exposes C, K routes C to S's endpoints.
* Make-before-break: a route changes only when the new serving cluster reports C running *and* has
  answered with its endpoints. Until then the old route stays, so a caller never sees an empty
  endpoint set while a serving instance exists (the old one, when a move is under way).
* A cluster that no longer needs anything for an app gets an empty set (its routes and exposures go);
  a removed app's routes go with `app.remove` on each cluster.
* An unreachable cluster keeps what it had; the change is retried with backoff and recorded once per
  distinct error. A cluster that (re)joins gets its sets again.

Every change of where a caller's traffic goes is a decision-log event with the cause (the component's
new cluster, the endpoints) and the previous target.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

from mlsysops.agents.agent_base import RequestError
from mlsysops.agents.descriptions import MLSysOpsApp
from mlsysops.agents.payloads import AppRoutes
from mlsysops.agents.placement.adapters import callees
from mlsysops.agents.protocol import Kind

RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class _Continuum(Protocol):
    apps: dict[str, MLSysOpsApp]
    assignments: dict[str, dict[str, str]]
    status: dict[str, dict[str, dict[str, Any]]]
    cluster_jids: dict[str, str]

    async def request(self, to: str, kind: Any, body: Any, **kw: Any) -> Any: ...

    def record_event(self, reason: str, *, app: str | None = None, outcome: str = "info",
                     inputs: dict[str, Any] | None = None) -> None: ...


def _fingerprint(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


class TrafficRoutes:
    """The continuum's route table and the reconciler that pushes it to the clusters."""

    def __init__(self, agent: _Continuum, *, timeout: float = 5.0) -> None:
        self.agent = agent
        self.timeout = timeout
        self.exposed: dict[tuple[str, str], tuple[str, list[dict[str, Any]]]] = {}   # (app, comp) -> (cluster, eps)
        self.routes: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}   # app -> caller cluster -> comp -> route
        self.sent: dict[tuple[str, str], str] = {}        # (app, cluster) -> fingerprint of the accepted set
        self.errors: dict[tuple[str, str], str] = {}      # (app, cluster) -> last error, until it succeeds
        self._attempts: dict[tuple[str, str], int] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retries: dict[str, asyncio.TimerHandle] = {}

    # -- triggers -----------------------------------------------------------------------------------
    def mark(self, app: str) -> None:
        """Something about `app`'s placement changed: reconcile it soon (coalesced, one app at a time)."""
        self._dirty.add(app)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="traffic-routes")

    def forget(self, app: str) -> None:
        """The app is gone: each cluster drops its routes with the app (`app.remove`)."""
        self._dirty.discard(app)
        self.routes.pop(app, None)
        for table in (self.sent, self.errors, self._attempts):
            for key in [k for k in table if k[0] == app]:
                table.pop(key)
        for key in [k for k in self.exposed if k[0] == app]:
            self.exposed.pop(key)
        handle = self._retries.pop(app, None)
        if handle is not None:
            handle.cancel()

    def resync(self, cluster: str) -> None:
        """A (re)joined cluster agent may have lost what it was told: send its sets again."""
        for key in [k for k in self.sent if k[1] == cluster]:
            self.sent.pop(key)
        for app in list(self.agent.apps):
            self.mark(app)

    async def stop(self) -> None:
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while self._dirty:
            app = min(self._dirty)
            self._dirty.discard(app)
            try:
                await self.reconcile(app)
            except Exception as exc:   # noqa: BLE001 - a bug here must not stop routing for other apps
                self.agent.record_event(f"traffic routes of {app}: reconcile failed: {exc!r}", app=app,
                                        outcome="error")

    def _retry_later(self, app: str, key: tuple[str, str]) -> None:
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        if app in self._retries:
            return
        delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]

        def fire() -> None:
            self._retries.pop(app, None)
            if app in self.agent.apps:
                self.mark(app)

        self._retries[app] = asyncio.get_running_loop().call_later(delay, fire)

    # -- the decision -------------------------------------------------------------------------------
    def _serving(self, app: str) -> dict[str, str]:
        """component -> the cluster it runs in (assigned there and reported running there)."""
        assign = self.agent.assignments.get(app, {})
        status = self.agent.status.get(app, {})
        return {c: s for c, s in assign.items()
                if (status.get(c) or {}).get("status") == "running" and (status.get(c) or {}).get("cluster") == s}

    def wanted(self, app: str) -> tuple[dict[str, set[str]], dict[str, dict[str, str]]]:
        """(cluster -> components it must expose, caller cluster -> {component: serving cluster}), from
        where components are assigned and run now; a component between clusters keeps its old route."""
        model = self.agent.apps.get(app)
        if model is None:
            return {}, {}
        assign = self.agent.assignments.get(app, {})
        serving = self._serving(app)
        previous = self.routes.get(app, {})
        expose: dict[str, set[str]] = {}
        routes: dict[str, dict[str, str]] = {}
        for caller in model.components:
            here = assign.get(caller.name)
            if here is None:
                continue
            for callee in callees(model, caller.name):
                there = serving.get(callee)
                if there == here:
                    continue                  # served in the caller's own cluster: its Service selects the pods
                if there is None:             # not running anywhere yet, or moving: keep the old route
                    old = (previous.get(here) or {}).get(callee)
                    if old is not None and old["cluster"] != here:
                        routes.setdefault(here, {})[callee] = old["cluster"]
                    continue
                expose.setdefault(there, set()).add(callee)
                routes.setdefault(here, {})[callee] = there
        return expose, routes

    async def reconcile(self, app: str) -> None:
        expose, wanted = self.wanted(app)
        current = self.routes.setdefault(app, {})
        # 1. the serving clusters first: their endpoints are what the callers will point at
        for cluster in sorted(expose):
            body = self._body(app, cluster, expose, current.get(cluster, {}))
            reply = await self._send(app, cluster, body, force=True)   # its addresses may have changed
            if reply is not None:
                self._took_exposure(app, cluster, reply)
        # 2. every cluster's full set (callers with the endpoints now known; the rest emptied)
        involved = set(expose) | set(wanted) | {c for (a, c) in self.sent if a == app}
        for cluster in sorted(involved):
            routes = {}
            for comp, serving in sorted((wanted.get(cluster) or {}).items()):
                known = self.exposed.get((app, comp))
                if known is not None and known[0] == serving and known[1]:
                    routes[comp] = {"cluster": serving, "endpoints": known[1]}
                elif comp in current.get(cluster, {}):
                    routes[comp] = current[cluster][comp]    # the new side has no endpoints yet: keep the old
            body = self._body(app, cluster, expose, routes)
            reply = await self._send(app, cluster, body)
            if reply is None:
                continue
            self._took_routes(app, cluster, routes)
            if not body["expose"] and not body["routes"]:
                self.sent.pop((app, cluster), None)     # nothing there any more: no need to remember

    @staticmethod
    def _body(app: str, cluster: str, expose: dict[str, set[str]], routes: dict[str, Any]) -> dict[str, Any]:
        plain = {c: {"cluster": r["cluster"], "endpoints": r["endpoints"]} for c, r in routes.items()}
        return {"app": app, "expose": sorted(expose.get(cluster, ())), "routes": plain}

    async def _send(self, app: str, cluster: str, body: dict[str, Any], *, force: bool = False
                    ) -> dict[str, Any] | None:
        """The cluster's reply detail ({} when the set is unchanged since the last accepted one), or None
        when it could not be written."""
        key = (app, cluster)
        fp = _fingerprint(body)
        if self.sent.get(key) == fp and not force:
            return {}
        if not body["expose"] and not body["routes"] and key not in self.sent:
            return {}
        jid = self.agent.cluster_jids.get(cluster)
        if jid is None or app not in self.agent.apps:   # removed meanwhile: its clusters clear it themselves
            return None
        try:
            reply = await self.agent.request(jid, Kind.APP_ROUTES, AppRoutes.model_validate(body),
                                             timeout=self.timeout, retries=0)
        except RequestError as exc:
            error = str(exc) or type(exc).__name__
            if self.errors.get(key) != error:
                self.agent.record_event(f"traffic routes of {app} on {cluster} not written: {error}; "
                                        "the previous routes stay, retrying", app=app, outcome="error",
                                        inputs={"cluster": cluster, "set": body})
            self.errors[key] = error
            self._retry_later(app, key)
            return None
        self.sent[key] = fp
        self.errors.pop(key, None)
        self._attempts.pop(key, None)
        return (reply.body or {}).get("detail") or {}

    def _took_exposure(self, app: str, cluster: str, detail: dict[str, Any]) -> None:
        for comp, eps in (detail.get("exposed") or {}).items():
            self.exposed[(app, comp)] = (cluster, list(eps))
        for comp, why in (detail.get("not_exposed") or {}).items():
            self.agent.record_event(f"{app}/{comp} cannot be reached from other clusters: {why}", app=app,
                                    outcome="error", inputs={"cluster": cluster})

    def _took_routes(self, app: str, cluster: str, routes: dict[str, dict[str, Any]]) -> None:
        current = self.routes.setdefault(app, {})
        before = current.get(cluster, {})
        now = time.time()
        table: dict[str, dict[str, Any]] = {}
        for comp, route in routes.items():
            old = before.get(comp)
            same = old is not None and old["cluster"] == route["cluster"] and old["endpoints"] == route["endpoints"]
            table[comp] = old if same else {**route, "since": now}
            if not same:
                addrs = ", ".join(f"{e['address']}:{e['port']}" for e in route["endpoints"])
                was = f" (was {old['cluster']})" if old is not None and old["cluster"] != route["cluster"] else ""
                self.agent.record_event(
                    f"traffic from {cluster} to {app}/{comp} now goes to {route['cluster']} at {addrs}{was}",
                    app=app, inputs={"caller_cluster": cluster, "component": comp, "serving_cluster": route["cluster"],
                                     "endpoints": route["endpoints"],
                                     "previous": old and {"cluster": old["cluster"], "endpoints": old["endpoints"]}})
        for comp in sorted(set(before) - set(routes)):
            self.agent.record_event(f"traffic from {cluster} to {app}/{comp} no longer routed to "
                                    f"{before[comp]['cluster']} (served in {cluster} or no caller left)", app=app,
                                    inputs={"caller_cluster": cluster, "component": comp})
        if table:
            current[cluster] = table
        else:
            current.pop(cluster, None)

    # -- reads --------------------------------------------------------------------------------------
    def view(self, app: str) -> list[dict[str, Any]]:
        """For each component with callers: where each calling cluster's traffic goes."""
        model = self.agent.apps.get(app)
        if model is None:
            return []
        assign = self.agent.assignments.get(app, {})
        routes = self.routes.get(app, {})
        rows = []
        for comp in model.components:
            callers = sorted({assign[c.name] for c in model.components
                              if c.name in assign and comp.name in callees(model, c.name)})
            for cluster in callers:
                route = (routes.get(cluster) or {}).get(comp.name)
                serving = assign.get(comp.name)
                if route is not None:
                    row = {"component": comp.name, "from_cluster": cluster, "to_cluster": route["cluster"],
                           "via": "endpoints", "endpoints": route["endpoints"], "since": route.get("since")}
                elif serving == cluster:
                    row = {"component": comp.name, "from_cluster": cluster, "to_cluster": cluster,
                           "via": "local", "endpoints": [], "since": None}
                else:
                    row = {"component": comp.name, "from_cluster": cluster, "to_cluster": None, "via": "none",
                           "endpoints": [], "since": None}
                error = self.errors.get((app, cluster))
                if error:
                    row["error"] = error
                rows.append(row)
        return rows
