"""Continuum agent: accepts applications, chooses clusters, forwards work down, aggregates status.

- Children: cluster agents. A cluster whose agent is lost keeps its components for `eviction_timeout`
  seconds (like Kubernetes' pod eviction timeout): a restarting cluster agent must not cause a
  redeployment elsewhere. After that, the components are re-placed on other clusters.
- Apps: `submit_app()` validates (with the known inventory), stores, and triggers the MAPE engine; the
  `continuum_cluster_placement` policy plans, the `cluster_dispatch` mechanism sends `app.deploy`.
- Status: only what clusters report (`status.report`); a component is `pending` until its cluster says
  otherwise, and `unknown` while its cluster agent is lost.
- Karmada (`use_dispatch`): another dispatch mechanism replaces `cluster_dispatch`. When it declares
  `reports_status`, it is the only status source: each monitor tick maps its get_state() onto the
  table, and cluster agents' reports are ignored (they run nothing of ours in that mode). When it declares
  `adopt`, its placements are adopted from the server after a restart, before the engine starts.
- Removal (`remove_app`) and the resync of a rejoined cluster are the agent's own plans: they run through
  the plan scheduler (`execute`), serialised with the policies' placements and recorded like them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mlsysops.agents.agent_base import HandlerError
from mlsysops.agents.authorization import norm_jid
from mlsysops.agents.child_pages import fetch_all
from mlsysops.agents.descriptions import (
    DescriptionError,
    Document,
    Inventory,
    MLSysOpsApp,
    MLSysOpsContinuum,
    MLSysOpsNode,
    ValidationIssue,
    load_obj,
    to_dict,
)
from mlsysops.agents.managed_agent import AgentSettings, ManagedAgent
from mlsysops.agents.mape import Knowledge
from mlsysops.agents.membership import ChildRecord, ParentMembership
from mlsysops.agents.ml.service import MLConnectorService
from mlsysops.agents.payloads import StatusReport, TelemetryReport
from mlsysops.agents.protocol import Envelope, Kind, Performative
from mlsysops.agents.telemetry import digest as digests
from mlsysops.continuum.store import DesiredStateStore
from mlsysops.continuum.traffic_routes import TrafficRoutes
from mlsysops.mechanisms.cluster_dispatch import ClusterDispatchMechanism
from mlsysops.plugins import Capability

DEFAULT_POLICIES = ["mlsysops.policies.continuum_cluster_placement"]


class ContinuumAgent(ManagedAgent):
    role = "continuum"

    def __init__(self, jid: str, password: str, *, description: MLSysOpsContinuum,
                 cluster_jids: dict[str, str], inventory: Inventory | None = None,
                 settings: AgentSettings | None = None, **kwargs: Any) -> None:
        settings = settings or AgentSettings()
        if not settings.policies:
            settings.policies = list(DEFAULT_POLICIES)
        super().__init__(jid, password, settings=settings,
                         agent_id=kwargs.pop("agent_id", description.continuum_id), **kwargs)
        self.description = description
        self.cluster_jids = dict(cluster_jids)
        self.jid_clusters = {norm_jid(j): c for c, j in cluster_jids.items()}   # who a sender is: by its JID only
        self.inventory = inventory
        self.apps: dict[str, MLSysOpsApp] = {}
        self.app_docs: dict[str, dict[str, Any]] = {}
        self.submitted: dict[str, float] = {}
        self.assignments: dict[str, dict[str, str]] = {}
        self.status: dict[str, dict[str, dict[str, Any]]] = {}
        self.cluster_nodes: dict[str, dict[str, MLSysOpsNode]] = {}
        # per cluster: its nodes' liveness and CPU as last paged (`children.query`), and the version read
        self.node_states: dict[str, dict[str, Any]] = {}
        self._state_reads: dict[str, asyncio.Task[None]] = {}
        self.lost_since: dict[str, float] = {}
        self.cluster_dispatch: Any = ClusterDispatchMechanism(self)
        self.dispatch_mechanism = self.mechanisms.register("cluster_dispatch", self.cluster_dispatch)
        self.children = ParentMembership(self, heartbeat_interval=settings.heartbeat,
                                         liveness_misses=settings.liveness_misses, accept=self._accept_cluster,
                                         disruption_fraction=settings.disruption_fraction,
                                         max_heartbeat_rate=settings.max_heartbeat_rate,
                                         disruption_limit=settings.disruption_limit)
        self.children.on_joined(self._cluster_joined)
        self.children.on_recovered(self._cluster_joined)
        self.children.on_lost(self._cluster_lost)
        self.on(Kind.STATUS_REPORT, self._on_status_report, performatives=(Performative.INFORM,))
        self.on(Kind.TELEMETRY_REPORT, self._on_telemetry, performatives=(Performative.INFORM,))
        # Slice-wide telemetry history from the clusters' digests (bounded by age and per-series length).
        self.slice_telemetry = Knowledge(window_size=max(64, int(settings.telemetry_history /
                                                                  max(settings.digest_interval, 0.1)) + 8),
                                         max_age=settings.telemetry_history)
        self.digest_stats: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, float]] = {}
        self.digests_received: dict[str, dict[str, Any]] = {}
        self.traffic = TrafficRoutes(self)   # where callers' traffic goes when components run in other clusters
        self.app_mirror: Any = None    # mlsysops.continuum.kube_app_mirror.AppStatusMirror on Kubernetes
        self._dispatch_error: str | None = None   # the status-reporting dispatch is unreachable
        db = settings.state_dir / "desired-state.db" if settings.state_dir is not None else None
        self.store = DesiredStateStore(db)
        self.ml_service = MLConnectorService(self, settings.state_dir / "models" if settings.state_dir else None,
                                             telemetry=self.slice_telemetry)
        self.ml_connector.service = self.ml_service
        self._restore()

    def _restore(self) -> None:
        """Reload accepted apps and their assignments; statuses stay `unknown` until clusters report."""
        apps, assignments = self.store.load()
        for name, (description, submitted) in apps.items():
            try:
                doc = load_obj(description, source=f"desired state ({self.store.path})")
            except DescriptionError as exc:   # a schema change made a stored app invalid: say so, keep going
                self.record_event(f"stored app {name} no longer validates: {exc}", app=name, outcome="error")
                continue
            self._accept(doc.spec, doc.kubernetes_form, submitted, initial_status="unknown",
                         reason="continuum restarted: waiting for the cluster's report")
            self.assignments[name] = dict(assignments.get(name, {}))
        if apps:
            self.record_event(f"restored {len(apps)} app(s) from the desired state",
                              inputs={"apps": sorted(apps)})

    def use_dispatch(self, mechanism: Any) -> None:
        """Dispatch through `mechanism` (e.g. KarmadaPlacementMechanism, built on this agent's
        `assignments`/`save_assignments`) instead of the cluster agents: the policy's `cluster_dispatch`
        commands go to it. Call before start_agent()."""
        self.mechanisms.unregister("cluster_dispatch")
        self.dispatch_mechanism = self.mechanisms.register("cluster_dispatch", mechanism)
        self.cluster_dispatch = mechanism

    @property
    def dispatch_reports_status(self) -> bool:
        return self.dispatch_mechanism.supports(Capability.REPORTS_STATUS)

    async def setup(self) -> None:
        await self.children.start()
        await self._adopt_placements()
        self.load_policies()
        self.start_engine()
        self.ml_service.start()

    async def _adopt_placements(self) -> None:
        """The dispatch mechanism's server is the truth after a restart: take its placements as ours."""
        if not self.dispatch_mechanism.supports(Capability.ADOPT):
            return
        state = await self.cluster_dispatch.adopt()
        if state.get("stale"):
            self.record_event(f"placements not adopted, dispatch state unreachable: {state.get('error')}; "
                              "keeping the stored assignments", outcome="error")
            return
        orphans = sorted(set(self.assignments) - set(self.apps))
        for app in orphans:    # placed, but not in the desired state: not ours to re-place
            self.assignments.pop(app)
        for app in self.apps:
            self.save_assignments(app)
        self.record_event(f"adopted the placements of {len(self.assignments)} app(s) from "
                          f"{self.cluster_dispatch.name}" + (f"; not in the desired state: {orphans}" if orphans else ""),
                          inputs={"assignments": {a: dict(c) for a, c in self.assignments.items()}})

    # -- applications -------------------------------------------------------------------------------
    def submit_app(self, description: dict[str, Any] | Document, source: str = "<api>") -> Document:
        """Validate and accept an application (idempotent for an identical description). A `Document` is
        taken as parsed (the REST API parsed it); its Kubernetes form is the one stored and dispatched."""
        doc, submitted = self._to_submit(description, source)
        if submitted is None:
            return doc
        self.store.save_app(doc.spec.name, doc.kubernetes_form, submitted)   # durable before "accepted"
        self._accepted(doc, submitted)
        return doc

    async def submit_app_async(self, description: dict[str, Any] | Document, source: str = "<api>") -> Document:
        """`submit_app` with the SQLite write on the store's thread, not on the agent's loop (the API's way)."""
        doc, submitted = self._to_submit(description, source)
        if submitted is None:
            return doc
        await self.store.call(self.store.save_app, doc.spec.name, doc.kubernetes_form, submitted)
        if self.app_docs.get(doc.spec.name) != doc.kubernetes_form:   # not accepted by another meanwhile
            self._accepted(doc, submitted)
        return doc

    def _to_submit(self, description: dict[str, Any] | Document, source: str) -> tuple[Document, float | None]:
        """The validated document and its submission time; None: identical to the accepted one."""
        doc = description if isinstance(description, Document) else load_obj(
            description, source=source, inventory=self.inventory)
        if not isinstance(doc.spec, MLSysOpsApp):
            raise DescriptionError([ValidationIssue(f"expected an MLSysOpsApp, got {doc.kind}", path="kind",
                                                    file=source, expected="MLSysOpsApp")])
        if self.app_docs.get(doc.spec.name) == doc.kubernetes_form:
            return doc, None
        return doc, self.submitted.get(doc.spec.name, time.time())

    def _accepted(self, doc: Document, submitted: float) -> None:
        app = doc.spec
        self._accept(app, doc.kubernetes_form, submitted)
        self.record_event(f"app {app.name} accepted ({len(app.components)} components)", app=app.name)
        self.trigger(app.name, reason="app submitted")
        return doc

    def _accept(self, app: MLSysOpsApp, k8s: dict[str, Any], submitted: float, *,
                initial_status: str = "pending", reason: str = "waiting for a cluster") -> None:
        self.apps[app.name] = app
        self.app_docs[app.name] = k8s
        self.submitted[app.name] = submitted
        self.knowledge.apps[app.name] = self.app_asset(app.name, k8s["spec"], app.policies)
        comps = self.status.setdefault(app.name, {})
        for comp in app.components:
            if comps.get(comp.name, {}).get("status") == "removed":   # re-submitted after a delete
                comps.pop(comp.name)
            comps.setdefault(comp.name, {"status": initial_status, "cluster": None, "nodes": [],
                                         "since": time.time(), "reason": reason})
        for gone in set(comps) - {c.name for c in app.components}:
            comps.pop(gone)
            if self.app_mirror is not None:
                self.app_mirror.remove_component(app.name, gone)
        if self.app_mirror is not None:
            self.app_mirror.set_app(app, k8s)
            self._mirror_status(app.name)

    def attach_app_mirror(self, mirror: Any) -> None:
        """Kubernetes: keep an MLSysOpsApp custom resource per app, with per-component status
        (`mlsysops.continuum.kube_app_mirror.AppStatusMirror`, started by the caller). Writes happen off the agent's
        path: the mirror only writes what changed and retries an unreachable server on its own."""
        self.app_mirror = mirror
        for name, app in self.apps.items():
            mirror.set_app(app, self.app_docs[name])
            self._mirror_status(name)

    def _mirror_status(self, app: str) -> None:
        if self.app_mirror is None:
            return
        self.app_mirror.set_components(app, [{"component": c, **st} for c, st in self.status.get(app, {}).items()
                                             if st.get("status") != "removed"])

    def save_assignments(self, app: str) -> None:
        """Queued on the store's thread (in order): the agent's loop does not wait for SQLite. A failed
        write is recorded; the assignments in memory stay the truth until the next write."""
        pending = self.store.submit(self.store.save_assignments, app, dict(self.assignments.get(app, {})))
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        pending.add_done_callback(lambda f: f.exception() and self._persist_failed(loop, app, f.exception()))

    def _persist_failed(self, loop: asyncio.AbstractEventLoop | None, app: str, exc: BaseException | None) -> None:
        self.log.error("assignments of %s not persisted: %s", app, exc)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self.record_event(f"assignments of {app} not persisted: {exc}",
                                                                app=app, outcome="error"))

    async def remove_app(self, name: str) -> bool:
        if name not in self.apps:
            return False
        await self.store.call(self.store.delete_app, name)
        if self.dispatch_mechanism.supports(Capability.REMOVE_APP):
            res = await self.execute("cluster_dispatch", {"app": name, "assign": dict(self.assignments.get(name, {}))},
                                     reason=f"app {name} deleted", app=name, operation=Capability.REMOVE_APP)
            if res.status != "completed":
                self.record_event(f"removing app {name} from {self.cluster_dispatch.name} failed: {res.reason}",
                                  app=name, outcome="error")
        else:
            self.record_event(f"{self.cluster_dispatch.name} cannot remove apps (no remove_app capability): the "
                              f"components of {name} are left where they run", app=name, outcome="error")
        for table in (self.apps, self.app_docs, self.assignments, self.submitted, self.knowledge.apps):
            table.pop(name, None)
        self.traffic.forget(name)
        for comp in self.status.get(name, {}).values():
            comp.update(status="removed", since=time.time(), reason="deleted")
        if self.app_mirror is not None:
            self.app_mirror.remove_app(name)
        self.record_event(f"app {name} removed", app=name)
        return True

    def app_status(self, name: str) -> dict[str, dict[str, Any]]:
        return {c: dict(s) for c, s in self.status.get(name, {}).items()}

    # -- authorization ------------------------------------------------------------------------------
    def slice_children(self) -> frozenset[str]:
        return frozenset(self.jid_clusters)

    def identity_of(self, sender: str) -> str | None:
        return self.jid_clusters.get(norm_jid(sender))

    # -- membership ---------------------------------------------------------------------------------
    async def _accept_cluster(self, env: Envelope) -> dict[str, Any]:
        cid = self.identity_of(env.sender)
        if cid is None:
            raise HandlerError(f"{env.sender} is not a cluster agent of continuum {self.description.continuum_id}")
        return {"continuum": self.description.continuum_id}

    async def _cluster_joined(self, child: ChildRecord) -> None:
        cid = self.jid_clusters.get(child.jid)
        if cid is None:
            return
        raws = child.description.get("nodes")   # inline: a cluster agent of an older version
        if raws is None:
            try:
                raws, _ = await fetch_all(self, child.jid, "descriptions")
            except Exception as exc:   # noqa: BLE001 - the next states read notices the difference and reads again
                kept = self.cluster_nodes.get(cid)
                self.record_event(f"cluster {cid}: its node descriptions could not be read: {exc}"
                                  + (f"; keeping the {len(kept)} known" if kept else ""), outcome="error")
                raws = None
        if raws is None and cid in self.cluster_nodes:
            nodes = self.cluster_nodes[cid]   # a re-registration whose read failed does not forget the nodes
        else:
            nodes = self._parse_nodes(cid, raws or [], "registration")
        self.cluster_nodes[cid] = nodes
        self.node_states.pop(cid, None)
        self._read_states(cid, child)
        self.lost_since.pop(cid, None)
        self.record_event(f"cluster {cid} joined with {len(nodes)} nodes")
        if self.dispatch_mechanism.supports(Capability.RESYNC):   # a restarted cluster agent re-learns its apps
            await self.execute("cluster_dispatch", {"cluster": cid}, reason=f"cluster {cid} joined",
                               operation=Capability.RESYNC)
        self.trigger(reason=f"cluster {cid} joined")

    def _parse_nodes(self, cid: str, raws: list[Any], when: str) -> dict[str, MLSysOpsNode]:
        nodes = {}
        for raw in raws:
            try:
                doc = load_obj(raw, source=f"{when} of {cid}")
            except DescriptionError as exc:
                self.record_event(f"cluster {cid} sent an invalid node description: {exc}", outcome="error")
                continue
            if isinstance(doc.spec, MLSysOpsNode):
                nodes[doc.spec.name] = doc.spec
        return nodes

    async def _reread_nodes(self, cid: str, jid: str, names: set[str]) -> None:
        """The cluster's nodes changed since it registered (a device joined through its gateway, or left):
        read its node descriptions again, so the API and placement know the new ones."""
        try:
            raws, _ = await fetch_all(self, jid, "descriptions")
        except Exception as exc:   # noqa: BLE001 - the next states read notices the difference again
            self.log.debug("node descriptions of %s not read: %s", cid, exc)
            return
        before = set(self.cluster_nodes.get(cid, {}))
        nodes = self._parse_nodes(cid, raws, "node listing")
        self.cluster_nodes[cid] = nodes
        added, gone = sorted(set(nodes) - before), sorted(before - set(nodes))
        if added or gone:
            self.record_event(f"cluster {cid}: nodes joined {added or '-'}, left {gone or '-'}",
                              inputs={"cluster": cid, "joined": added, "left": gone, "listed": sorted(names)})

    async def _cluster_lost(self, child: ChildRecord, reason: str) -> None:
        cid = self.jid_clusters.get(child.jid)
        if cid is None:
            return
        self.lost_since[cid] = time.time()
        # With a status-reporting dispatch (Karmada) the member cluster's own state stays the truth.
        for app, assign in {} if self.dispatch_reports_status else self.assignments.items():
            for comp, c in assign.items():
                if c == cid:
                    self.status[app][comp].update(status="unknown", since=time.time(),
                                                  reason=f"cluster agent {cid} lost: {reason}")
        self.record_event(f"cluster {cid} lost ({reason}); its components are re-placed after "
                          f"{self.settings.eviction_timeout:g}s unless it returns")
        self.trigger(reason=f"cluster {cid} lost")

    # -- reports ------------------------------------------------------------------------------------
    async def _on_status_report(self, env: Envelope) -> None:
        rep = env.payload
        assert isinstance(rep, StatusReport)
        if self.dispatch_reports_status:
            return   # the dispatch mechanism (Karmada) owns every component's status
        cid = self.identity_of(env.sender)
        for comp in rep.components:
            if comp.app not in self.apps or self.assignments.get(comp.app, {}).get(comp.component) != cid:
                continue   # stale report from a cluster that no longer owns the component
            entry = self.status[comp.app][comp.component]
            new = {"status": comp.status, "cluster": cid, "nodes": comp.nodes, "reason": comp.reason,
                   "instances": comp.instances}
            if any(entry.get(k) != v for k, v in new.items()):
                if entry.get("status") != comp.status:
                    self.record_event(f"{comp.app}/{comp.component}: {entry.get('status')} -> {comp.status}"
                                      f" on {cid} {comp.nodes}" + (f" ({comp.reason})" if comp.reason else ""),
                                      app=comp.app)
                moved = (entry.get("status"), entry.get("cluster"), entry.get("nodes")) != (comp.status, cid, comp.nodes)
                entry.update(new, since=comp.since or time.time())
                self._mirror_status(comp.app)
                if moved:
                    self.traffic.mark(comp.app)

    async def _on_telemetry(self, env: Envelope) -> None:
        rep = env.payload
        assert isinstance(rep, TelemetryReport)
        cid = self.identity_of(env.sender)   # never a name from the body (authorization refused a forged one)
        if cid is None:
            return
        now = time.time()
        n = digests.apply(self.slice_telemetry, [list(r) for r in rep.series], now, extra={"cluster": cid},
                          stats=self.digest_stats)
        self.digests_received[cid] = {"cluster": cid, "bytes": len(rep.model_dump_json()), "series": n,
                                      "part": rep.part, "parts": rep.parts, "window": rep.window, "t": now}
        self._publish_slice_telemetry(now)

    def _publish_slice_telemetry(self, now: float) -> None:
        """The latest value of every live series, for the Prometheus/OTLP exports of the whole slice."""
        horizon = now - 3 * max(self.settings.digest_interval, 1.0)
        stale = [k for k, st in self.digest_stats.items() if st["ts"] < horizon]
        for key in stale:
            del self.digest_stats[key]
        samples = []
        for metric, key in self.digest_stats:
            last = self.slice_telemetry.last(metric, dict(key))
            if last is not None:
                samples.append((metric, dict(key), last[1]))
        self.telemetry.publish(samples)

    # -- MAPE hooks ---------------------------------------------------------------------------------
    def assets(self) -> dict[str, dict[str, Any]]:
        return dict(self.knowledge.apps)

    def system_description(self) -> dict[str, Any]:
        now = time.time()
        clusters = {}
        seen = set()
        for record in self.children.children():
            cid = self.jid_clusters.get(record.jid)
            if cid is None:
                continue
            seen.add(cid)
            evicted = not record.alive and now - self.lost_since.get(cid, now) >= self.settings.eviction_timeout
            alive_nodes, cpu = self.node_state(cid)
            clusters[cid] = {
                "alive": not evicted, "agent_alive": record.alive,
                "nodes": {n: {"model": m, "alive": bool(alive_nodes.get(n, record.alive)),
                              "cpu_utilization": cpu.get(n, 0.0),
                              "instances": self._instances_on(cid, n)}
                          for n, m in self.cluster_nodes.get(cid, {}).items()}}
        for cid in set(self.cluster_jids) - seen:
            # Not heard of since this agent started (e.g. after a continuum restart): its components keep
            # their assignment for the eviction timeout, counted from our start, like a lost cluster's.
            evicted = now - self.started_at >= self.settings.eviction_timeout
            clusters[cid] = {"alive": not evicted, "agent_alive": False, "nodes": {}}
        return {"now": now, "description": to_dict(self.description), "clusters": clusters,
                "app_models": dict(self.apps),
                "assignments": {a: dict(c) for a, c in self.assignments.items()}}

    def _instances_on(self, cid: str, node: str) -> list[dict[str, Any]]:
        out = []
        for app, comps in self.status.items():
            model = self.apps.get(app)
            for comp, st in comps.items():
                if st.get("cluster") == cid and node in st.get("nodes", []) and model is not None:
                    c = model.component(comp)
                    if c is not None:
                        out.append({"app": app, "component": comp, "cpu_request_cores": c.cpu_request_cores,
                                    "memory_request_bytes": c.memory_request_bytes})
        return out

    async def stop(self) -> None:
        await self.traffic.stop()
        await super().stop()
        await self.ml_service.stop()
        self.store.close()

    # -- node states, paged from the clusters ------------------------------------------------------
    def node_state(self, cid: str) -> tuple[dict[str, bool], dict[str, float]]:
        """(node -> alive, node -> CPU utilisation) of cluster `cid`, as last read (inline digests of
        older cluster agents included)."""
        rec = self.children.child(self.cluster_jids[cid]) if cid in self.cluster_jids else None
        digest = (rec.digest or {}) if rec is not None else {}
        if "nodes" in digest:
            return digest.get("nodes", {}), digest.get("cpu", {})
        st = self.node_states.get(cid) or {}
        return st.get("alive", {}), st.get("cpu", {})

    def node_extras(self, cid: str) -> tuple[dict[str, float | None], dict[str, list[Any]]]:
        """(node -> its own last heartbeat, node -> [trust score, main reason] for the nodes something is
        held against) of cluster `cid`, as last paged."""
        st = self.node_states.get(cid) or {}
        return dict(st.get("last_heartbeat", {})), dict(st.get("trust", {}))

    def loop_lags(self, cid: str) -> tuple[float | None, dict[str, float | None]]:
        """(the cluster agent's loop lag, its nodes' loop lags) in ms: the largest of their last 10 s."""
        rec = self.children.child(self.cluster_jids[cid]) if cid in self.cluster_jids else None
        own = (rec.digest or {}).get("lag_ms") if rec is not None else None
        return own, dict((self.node_states.get(cid) or {}).get("lag_ms", {}))

    def _read_states(self, cid: str, rec: ChildRecord) -> None:
        running = self._state_reads.get(cid)
        if running is None or running.done():
            self._state_reads[cid] = self.spawn(self._page_states(cid, rec.jid), name=f"node-states-{cid}")

    async def _page_states(self, cid: str, jid: str) -> None:
        try:
            items, version = await fetch_all(self, jid, "states")
        except Exception as exc:   # noqa: BLE001 - kept as it was; the next monitor tick reads again
            self.log.debug("node states of %s not read: %s", cid, exc)
            return
        self.node_states[cid] = {"version": version, "t": time.monotonic(),
                                 "alive": {i["name"]: bool(i.get("alive")) for i in items},
                                 "cpu": {i["name"]: float(i.get("cpu") or 0.0) for i in items},
                                 "lag_ms": {i["name"]: i.get("lag_ms") for i in items},
                                 "last_heartbeat": {i["name"]: i.get("last_heartbeat") for i in items},
                                 "trust": {i["name"]: i["trust"] for i in items if i.get("trust")}}
        names = {i["name"] for i in items}
        if cid in self.cluster_nodes and names != set(self.cluster_nodes[cid]):
            await self._reread_nodes(cid, jid, names)

    def _refresh_states(self) -> None:
        """Re-read a cluster's node states when its heartbeat says they moved, and its CPU figures every
        digest interval: one bounded listing per cluster, never one per heartbeat."""
        now = time.monotonic()
        for rec in self.children.children(alive_only=True):
            cid = self.jid_clusters.get(rec.jid)
            digest = rec.digest or {}
            if cid is None or "nodes_version" not in digest or cid not in self.cluster_nodes:
                continue
            st = self.node_states.get(cid)
            if (st is None or st["version"] != digest["nodes_version"]
                    or now - st["t"] >= self.settings.digest_interval):
                self._read_states(cid, rec)

    async def monitor(self) -> None:
        self._refresh_states()
        now = time.time()
        if any(now - t >= self.settings.eviction_timeout for t in self.lost_since.values()):
            self.trigger(reason="lost cluster past eviction timeout")
        if self.dispatch_reports_status:
            await self._status_from_dispatch()

    async def _status_from_dispatch(self) -> None:
        """Component status from the dispatch mechanism's read-back (Karmada: the ResourceBindings)."""
        try:
            state = await self.cluster_dispatch.get_state()
        except Exception as exc:   # noqa: BLE001 - a mechanism may raise anything; same as unreachable
            state = {"stale": True, "error": f"{type(exc).__name__}: {exc}"}
        if state.get("stale"):
            if self._dispatch_error is None:   # once per outage: the table is kept as it was
                self.record_event(f"{self.cluster_dispatch.name} unreachable, keeping the last status: "
                                  f"{state.get('error')}", outcome="error")
            self._dispatch_error = str(state.get("error"))
            return
        if self._dispatch_error is not None:
            self.record_event(f"{self.cluster_dispatch.name} reachable again")
            self._dispatch_error = None
        placed = state.get("apps") or {}
        for app in self.apps:
            for comp, entry in self.status.get(app, {}).items():
                new = dispatch_status(placed.get(app, {}).get(comp), self.assignments.get(app, {}).get(comp))
                if new is None or all(entry.get(k) == v for k, v in new.items()):
                    continue
                if entry.get("status") != new["status"]:
                    self.record_event(f"{app}/{comp}: {entry.get('status')} -> {new['status']} on {new['cluster']}"
                                      + (f" ({new['reason']})" if new["reason"] else ""), app=app)
                    entry["since"] = time.time()
                entry.update(new)
                self._mirror_status(app)


def dispatch_status(placed: dict[str, Any] | None, assigned: str | None) -> dict[str, Any] | None:
    """A component's status row from the Karmada mechanism's view of it (None: leave the row alone).

    healthy on its cluster -> running; scheduled/applied but not healthy (or still on the previous
    cluster after a move) -> deploying; not scheduled (no binding yet, or no cluster fits) -> pending with
    the reason; errors applying our objects or on the member cluster -> failed with the error.
    """
    if placed is None:
        if assigned is None:
            return None     # not placed yet: the row stays "pending, waiting for a cluster"
        return {"status": "pending", "cluster": assigned, "nodes": [],
                "reason": "no placement found in the dispatch mechanism"}
    cluster = placed.get("cluster") or assigned
    status, reason = placed.get("status", "pending"), placed.get("reason")
    if placed.get("last_error"):
        status, reason = "failed", placed["last_error"]
    elif status == "running":
        reason = None
    elif status == "misplaced":
        status = "deploying"
    elif status == "failed" and placed.get("scheduled") is False:
        status = "pending"   # Karmada keeps trying to schedule, like an Unschedulable pod stays Pending
    elif status not in ("pending", "deploying", "failed"):
        status, reason = "unknown", f"{status}: {reason}"
    return {"status": status, "cluster": cluster, "nodes": [], "reason": reason}
