"""Mirror of the apps an agent manages as MLSysOpsApp custom resources (`mlsysops.eu/v1`), with status.

The agent states what it wants (`set_app`, `set_component`, `remove_app`: plain in-memory updates that
never block or raise); `sync()` writes only what differs from what was last written:

* spec: server-side apply of the description in Kubernetes form (field manager `mlsysops`);
* status: merge patch on the status subresource: per component {status, cluster, nodes, reason, since},
  `phase` (Pending/Running/Degraded/Failed), `conditions` (Ready, Degraded) with lastTransitionTime,
  and `observedGeneration`;
* removal: delete the CR.

An unreachable or failing API server leaves the wanted state pending; the next `sync()` (the `run()`
loop retries every `retry_s`) writes it. Nothing here raises to the agent. The mirror does not read the
CRs back: edits made by others to our fields are overwritten at our next change only.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes.aio import client as k

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.agents.descriptions.loader import to_k8s
from mlsysops.substrates.kubernetes.client import (
    FIELD_MANAGER,
    MERGE,
    KubeError,
    RetryPolicy,
    apply,
    call,
    delete,
)
from mlsysops.substrates.kubernetes.crds import GROUP, VERSION, install_crds
from mlsysops.substrates.kubernetes.manifests import MANAGED_BY, MANAGER, dns_label
from mlsysops.substrates.kubernetes.status_patch import iso, merge_diff
from mlsysops.substrates.kubernetes.sync_loop import SyncLoop

log = logging.getLogger(__name__)

KIND = "MLSysOpsApp"
PLURAL = "mlsysopsapps"
CRD_NAME = f"{PLURAL}.{GROUP}"
RUNNING = {"running"}
FAILED = {"failed"}
TROUBLE = {"failed", "relocating", "unknown"}   # some component is not where it should be
GONE = {"removed"}                             # reported but no longer part of the app: not counted


def phase_of(statuses: Iterable[str]) -> str:
    """Pending (nothing yet, or still deploying), Running (all running), Failed (all failed),
    Degraded (some failed, relocating or unknown)."""
    counted = [s for s in statuses if s not in GONE]
    if not counted:
        return "Pending"
    if all(s in RUNNING for s in counted):
        return "Running"
    if all(s in FAILED for s in counted):
        return "Failed"
    if any(s in TROUBLE for s in counted):
        return "Degraded"
    return "Pending"


def _summary(components: Mapping[str, Mapping[str, Any]]) -> str:
    counted = {n: c for n, c in components.items() if c["status"] not in GONE}
    running = sum(1 for c in counted.values() if c["status"] in RUNNING)
    others = ", ".join(f"{n}: {c['status']}" for n, c in sorted(counted.items()) if c["status"] not in RUNNING)
    return f"{running}/{len(counted)} components running" + (f" ({others})" if others else "")


class AppStatusMirror(SyncLoop):
    """MLSysOpsApp CRs in one namespace, kept equal to what the agent wants, written on change only.

    Wiring (cluster or continuum agent): `mirror = AppStatusMirror(api, namespace)`, then
    `mirror.start()` once (spawns `run()`: installs our CRDs if missing, then syncs on every change and
    retries every `retry_s` while the server fails) and `await mirror.stop()` on shutdown (one last
    sync attempt). On app deploy: `mirror.set_app(app_model)`; on each component status report:
    `mirror.set_component(app, component, status, cluster=..., nodes=[...], reason=..., since=epoch_s)`
    (or `set_components(app, [ComponentReport, ...])`); on app removal: `mirror.remove_app(name)`.
    These calls are synchronous and cheap; call them every tick if convenient: unchanged state is not
    written. Without `start()`, call `await mirror.sync()` yourself (returns False on failure, never
    raises).
    """

    def __init__(self, api: k.ApiClient, namespace: str, *, retry_s: float = 2.0,
                 policy: RetryPolicy | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(retry_s=retry_s, name=f"app-status-mirror-{namespace}")
        self.api = api
        self.namespace = namespace
        # few, short attempts: a down server is retried by `run()`, not inside one call
        self.policy = policy or RetryPolicy(attempts=2, request_timeout_s=5.0)
        self.clock = clock
        self.objs = k.CustomObjectsApi(api)
        self.crds_ready = False
        self.writes = 0                   # API writes done (spec applies, status patches, deletes)
        self.last_error: str | None = None
        self._specs: dict[str, dict[str, Any]] = {}                  # app -> SSA body wanted
        self._components: dict[str, dict[str, dict[str, Any]]] = {}  # app -> component -> entry
        self._conditions: dict[str, dict[str, dict[str, Any]]] = {}  # app -> type -> condition
        self._generation: dict[str, int] = {}
        self._written_spec: dict[str, dict[str, Any]] = {}
        self._written_status: dict[str, dict[str, Any]] = {}
        self._removed: set[str] = set()
        self._lock = asyncio.Lock()

    # -- wanted state (sync, never raise) ----------------------------------------------------------
    @staticmethod
    def resource_name(app: str) -> str:
        return dns_label(app)

    def set_app(self, app: MLSysOpsApp, k8s: dict[str, Any] | None = None) -> None:
        """Want `app`'s CR. `k8s` is its Kubernetes form when the caller already has it (the continuum
        computed it at intake): it is not converted again, nor changed."""
        body = {**(k8s if k8s is not None else to_k8s(app)),
                "metadata": {"name": self.resource_name(app.name), "namespace": self.namespace,
                             "labels": {MANAGED_BY: MANAGER}}}
        self._specs[app.name] = body
        self._removed.discard(app.name)
        self._components.setdefault(app.name, {})
        self._refresh(app.name)

    def set_component(self, app: str, component: str, status: str, *, cluster: str | None = None,
                      nodes: Iterable[str] = (), reason: str | None = None, since: float | None = None) -> None:
        comps = self._components.setdefault(app, {})
        old = comps.get(component)
        if since is not None:
            when = iso(since)
        elif old is not None and old["status"] == status:
            when = old["since"]
        else:
            when = iso(self.clock())
        entry: dict[str, Any] = {"status": status, "cluster": cluster, "nodes": sorted(set(nodes)),
                                 "reason": reason, "since": when}
        comps[component] = {key: value for key, value in entry.items() if value is not None}
        self._refresh(app)

    def set_components(self, app: str, reports: Iterable[Any]) -> None:
        """`ComponentReport`s (agents/payloads.py) or dicts with the same fields."""
        for r in reports:
            get = r.get if isinstance(r, Mapping) else (lambda key, default=None, _r=r: getattr(_r, key, default))
            self.set_component(app, get("component"), get("status"), cluster=get("cluster"),
                               nodes=get("nodes") or (), reason=get("reason"), since=get("since"))

    def remove_component(self, app: str, component: str) -> None:
        if self._components.get(app, {}).pop(component, None) is not None:
            self._refresh(app)

    def remove_app(self, app: str) -> None:
        self._specs.pop(app, None)
        self._components.pop(app, None)
        self._conditions.pop(app, None)
        self._generation.pop(app, None)
        self._removed.add(app)
        self._wake.set()

    def status_of(self, app: str) -> dict[str, Any] | None:
        """The status as it will be (or was) written; None for an unknown app."""
        if app not in self._specs and app not in self._components:
            return None
        comps = self._components.get(app, {})
        status: dict[str, Any] = {"phase": phase_of(c["status"] for c in comps.values()),
                                  "components": copy.deepcopy(comps),
                                  "conditions": [dict(c) for _, c in sorted(self._conditions.get(app, {}).items())]}
        if app in self._generation:
            status["observedGeneration"] = self._generation[app]
        return status

    @property
    def pending(self) -> bool:
        """Something wanted is not written yet."""
        return bool(self._removed) or any(
            self._written_spec.get(a) != body or self._written_status.get(a) != self.status_of(a)
            for a, body in self._specs.items())

    def _refresh(self, app: str) -> None:
        """Recompute the conditions; a lastTransitionTime moves only when a condition's status flips."""
        comps = self._components.get(app, {})
        phase = phase_of(c["status"] for c in comps.values())
        wanted = {"Ready": phase == "Running", "Degraded": phase in ("Degraded", "Failed")}
        conds = self._conditions.setdefault(app, {})
        for ctype, value in wanted.items():
            status = "True" if value else "False"
            old = conds.get(ctype)
            since = old["lastTransitionTime"] if old and old["status"] == status else iso(self.clock())
            conds[ctype] = {"type": ctype, "status": status, "reason": phase, "message": _summary(comps),
                            "lastTransitionTime": since}
        self._wake.set()

    # -- writing -----------------------------------------------------------------------------------
    async def ensure_crds(self) -> None:
        """Install our CRDs when the app CRD is missing (reading it needs fewer rights than applying)."""
        ext = k.ApiextensionsV1Api(self.api)
        try:
            await call(ext.read_custom_resource_definition, CRD_NAME, policy=self.policy)
        except KubeError as exc:
            if not exc.not_found:
                raise
            log.info("CRD %s missing: installing ours", CRD_NAME)
            await install_crds(self.api, policy=self.policy)
        self.crds_ready = True

    async def sync(self) -> bool:
        """Write what differs; True when everything wanted is written. Never raises."""
        async with self._lock:
            try:
                if not self.crds_ready:
                    await self.ensure_crds()
                for app in sorted(self._removed):
                    await self._delete(app)
                for app in sorted(self._specs):
                    await self._sync_app(app)
            except KubeError as exc:
                self.last_error = str(exc)
                log.info("app status mirror: %s (kept, retried later)", exc)
                return False
            except Exception as exc:   # never the agent's problem; keep the state and retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("app status mirror: sync failed")
                return False
            self.last_error = None
            return True

    async def _delete(self, app: str) -> None:
        await delete(self.objs.delete_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                     self.resource_name(app), policy=self.policy)
        self.writes += 1
        self._removed.discard(app)
        self._written_spec.pop(app, None)
        self._written_status.pop(app, None)

    async def _sync_app(self, app: str) -> None:
        body = self._specs.get(app)
        if body is None:   # removed while this sync awaited
            return
        name = self.resource_name(app)
        if self._written_spec.get(app) != body:
            # with_http_info: an apply that creates answers 201, which the generated client maps to None
            resp = await apply(self.objs.patch_namespaced_custom_object_with_http_info, GROUP, VERSION,
                               self.namespace, PLURAL, name, body=body, policy=self.policy)
            obj = json.loads(resp.raw_data) if resp.raw_data else {}
            self.writes += 1
            self._written_spec[app] = copy.deepcopy(body)
            self._generation[app] = int((obj.get("metadata") or {}).get("generation") or 0)
            # what the server holds now (empty when created, a previous run's status otherwise)
            self._written_status[app] = obj.get("status") or {}
        status = self.status_of(app)
        if status is None or app not in self._specs:
            return
        patch = merge_diff(self._written_status.get(app) or {}, status)
        if not patch:
            self._written_status[app] = status
            return
        try:
            await call(self.objs.patch_namespaced_custom_object_status, GROUP, VERSION, self.namespace, PLURAL,
                       name, {"status": patch}, _content_type=MERGE, field_manager=FIELD_MANAGER,
                       policy=self.policy)
        except KubeError as exc:
            if exc.not_found:   # deleted behind our back: apply it again on the next sync
                self._written_spec.pop(app, None)
                self._written_status.pop(app, None)
                self._wake.set()
            raise
        self.writes += 1
        self._written_status[app] = status
