"""Cluster agent: places components on its nodes, heals them, reports honest status up.

- Children: node agents (membership with presence + heartbeat liveness). A lost node agent's instances
  that still run on the substrate are kept for `node_grace` seconds (a restarted node agent evicts nothing,
  as a kubelet restart evicts no pod); after that they become `lost` and the engine is triggered at once.
  Instances the substrate no longer runs on a lost node are `lost` at once. Losing most nodes at once is a
  full disruption (see `mlsysops.agents.membership`): nothing is relocated then.
- Drain (`cordon`, used before a node is removed): no new work there, its instances relocated
  make-before-break; a drain that cannot complete is reported (`drain_status`) and undone by `uncordon`.
- Parent: the continuum agent sends `app.deploy` (the components this cluster must run) and `app.remove`.
- Instance table (`InstanceTable`, its only writer): written by execution outcomes (`deploying`), corrected by node reports (`running`,
  `failed`, ...), seeded from the substrate at start-up (adoption: a restarted cluster agent never
  redeploys what runs) and reconciled with it every monitor tick.
- Authoritative substrate (placement mechanism declaring `reports_status`, i.e. Kubernetes): the monitor
  tick takes instance status from `get_state()` instead of node reports, and a node the substrate reports
  not ready (`nodes_up`) is not alive, like a lost node agent. A `stale` state (API server unreachable)
  leaves the table untouched; when the server answers again the engine is triggered to reconcile.
- Status up: component status (pending/deploying/running/relocating/failed) is derived from the table;
  changes go to the continuum at once, and a full report every `status_report` interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from mlsysops.agents.agent_base import HandlerError
from mlsysops.agents.authorization import NOT_AUTHORIZED, norm_jid
from mlsysops.agents.child_pages import CHILDREN_QUERY, ChildrenQuery, page
from mlsysops.agents.descriptions import (
    DescriptionError,
    MLSysOpsApp,
    MLSysOpsCluster,
    MLSysOpsNode,
    load_obj,
    to_dict,
    to_k8s,
)
from mlsysops.agents.managed_agent import AgentSettings, ManagedAgent
from mlsysops.agents.membership import ChildMembership, ChildRecord, ParentMembership
from mlsysops.agents.payloads import (
    Accepted,
    AppDeploy,
    AppRemove,
    AppRoutes,
    ComponentReport,
    PlanProposal,
    StatusReport,
    TelemetryReport,
)
from mlsysops.agents.placement.adapters import QOS_METRIC, instances_wanted
from mlsysops.agents.placement.cluster_view import ACTIVE
from mlsysops.agents.protocol import Envelope, Kind, Performative, Role
from mlsysops.agents.telemetry import digest as digests
from mlsysops.agents.time_scale import scaled_seconds
from mlsysops.agents.trust import NodeTrust
from mlsysops.cluster import cr_status
from mlsysops.cluster.devices import ClusterDevices
from mlsysops.cluster.instance_table import InstanceTable
from mlsysops.mechanisms.device_placement import DevicePlacement
from mlsysops.mechanisms.placement_commands import PlacementAction
from mlsysops.plugins import Capability

DEFAULT_POLICIES = ["mlsysops.policies.filter_score_placement", "mlsysops.policies.relocation", "mlsysops.policies.static_placement",
                    "mlsysops.policies.ml_qos_placement"]   # paused unless a mode other than heuristic asks
CLEAR_ROUTES_ATTEMPTS = 4   # a removed app's routes: retried (1, 2, 4 s apart) before an error event
CLEAR_ROUTES_BACKOFF_S = 1.0
DISABLED_BY_DEFAULT = ["static_placement"]   # opt-in per app with `policies: [static_placement]`
QOS_WINDOW = 10
VANISH_GRACE_S = 5.0   # an active row absent from the substrate this long (on a live node) has failed
VANISH_GRACE_FLOOR_S = 0.5   # in a faster-than-real-time slice: a substrate listing still takes real time
SUBSTRATE_STATUS = {"running": "running", "starting": "deploying", "failed": "failed"}


class ClusterAgent(ManagedAgent):
    role = "cluster"

    def __init__(self, jid: str, password: str, *, description: MLSysOpsCluster,
                 nodes: dict[str, MLSysOpsNode], node_jids: dict[str, str], placement: Any,
                 parent: str | None, settings: AgentSettings | None = None, trust: NodeTrust | None = None,
                 traffic: Any = None, **kwargs: Any) -> None:
        settings = settings or AgentSettings()
        if not settings.policies:
            settings.policies = list(DEFAULT_POLICIES)
            settings.disabled_policies = [*settings.disabled_policies, *DISABLED_BY_DEFAULT]
        super().__init__(jid, password, parent=parent, settings=settings,
                         agent_id=kwargs.pop("agent_id", description.cluster_id), **kwargs)
        self.description = description
        self.cluster_id = description.cluster_id
        self.nodes = dict(nodes)                       # described nodes of this cluster
        self.node_jids = dict(node_jids)               # node name -> bare jid
        self.jid_nodes = {norm_jid(j): n for n, j in node_jids.items()}   # who a sender is: by its JID only
        self._slice_children = frozenset(self.jid_nodes)   # checked on every message: built on change only
        self._k8s_forms: dict[str, tuple[MLSysOpsNode, dict[str, Any]]] = {}
        self.nodes_version = 0   # moves when a node joins, is lost or changes readiness: the parent re-reads states
        self.devices = ClusterDevices(self)       # devices behind gateway nodes (cluster/devices.py)
        placement = DevicePlacement(placement, self.devices)   # their deploys go through the gateway
        self.placement = placement
        self.apps: dict[str, MLSysOpsApp] = {}
        self.app_docs: dict[str, dict[str, Any]] = {}
        self.assigned: dict[str, list[str]] = {}
        self.instances = InstanceTable()
        self.proposals: list[dict[str, Any]] = []
        self.cordoned: set[str] = set()          # nodes being drained: no new work, instances moved away
        self.drain_problems: dict[str, str] = {}   # node -> why its drain could not complete (until uncordoned)
        self._evictions: dict[str, asyncio.Task[None]] = {}   # node -> pending end of its grace
        self.not_ready: set[str] = set()         # nodes the (authoritative) substrate reports not ready
        self.substrate_error: str | None = None  # set while get_state() is stale
        self._reported: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._last_full = 0.0
        self._last_digest = 0.0
        self.inventory: Any = None        # mlsysops.cluster.kube_inventory.NodeInventory on Kubernetes (attach_inventory)
        self._inventory_warned: dict[str, list[str]] = {}
        self.status_writer: Any = None    # mlsysops.cluster.kube_status_writer.StatusWriter on Kubernetes
        # the mechanism resolves the components it deploys from this agent's app models (a live table)
        self.placement_mechanism = self.mechanisms.register("component_placement", placement, initialize=True,
                                                            app_models=self.apps)
        self.mechanisms.register("fluidity", placement)   # the original framework's plans, as they are
        # where callers' traffic goes for components served by other clusters (`app.routes` from the continuum)
        self.traffic = traffic
        if traffic is not None:
            self.mechanisms.register("traffic_routes", traffic, initialize=True, app_models=self.apps)
        self.children = ParentMembership(self, heartbeat_interval=settings.heartbeat,
                                         liveness_misses=settings.liveness_misses, accept=self._accept_node,
                                         disruption_fraction=settings.disruption_fraction,
                                         max_heartbeat_rate=settings.max_heartbeat_rate,
                                         disruption_limit=settings.disruption_limit)
        self.children.on_joined(self._node_joined)
        self.children.on_recovered(self._node_joined)
        self.children.on_lost(self._node_lost)
        self.trust = trust or NodeTrust()   # how far each node's word is taken (placement filter/scorer)
        self.children.on_heartbeat(self._node_heartbeat)
        self.upstream = (ChildMembership(self, parent, role=Role.CLUSTER, description=self._self_description,
                                         digest=self._digest) if parent else None)
        self.on(Kind.APP_DEPLOY, self._on_app_deploy)
        self.on(Kind.APP_REMOVE, self._on_app_remove)
        self.on(Kind.APP_ROUTES, self._on_app_routes)
        self.on(Kind.STATUS_REPORT, self._on_status_report, performatives=(Performative.INFORM,))
        self.on(Kind.TELEMETRY_REPORT, self._on_telemetry, performatives=(Performative.INFORM,))
        self.on(Kind.PLAN_PROPOSE, self._on_proposal)
        self.on(CHILDREN_QUERY, self._on_children_query)

    async def setup(self) -> None:
        await self.adopt()
        await self.children.start()
        if self.upstream is not None:
            await self.upstream.start()
        self.load_policies()
        self.start_engine()
        if self.substrate_reports_status and self.placement_mechanism.supports(Capability.WATCH):
            # Kubernetes: Deployment/Pod watch events report status changes at once; the monitor tick
            # stays as the level-triggered safety net.
            self.spawn(self._watch_substrate(), name="substrate-watch")

    async def _watch_substrate(self) -> None:
        async def on_state(state: dict[str, Any]) -> None:
            if not state.get("stale"):
                await self._apply_substrate_state(state)

        while True:
            try:
                await self.placement.watch(on_state)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # noqa: BLE001 - a broken watch must not stop the agent
                self.log.warning("substrate watch failed (%s); restarting it", exc)
                await asyncio.sleep(1.0)

    # -- adoption and reconciliation with the substrate ---------------------------------------------
    async def adopt(self) -> None:
        """Level-triggered: what the substrate runs is ours; record it, never redeploy it."""
        state = await self.placement.get_state()
        if self.substrate_reports_status and not state.get("stale"):
            self.not_ready = self._not_ready(state)
        adopted = 0
        for inst in state.get("instances", []):
            if self.instances.adopt(inst, self._substrate_status(inst), inst.get("reason")):
                adopted += 1
        if adopted:
            self.record_event(f"adopted {adopted} running instance(s) from the substrate",
                              inputs={"instances": sorted(self.instances)[:20]})

    @property
    def substrate_reports_status(self) -> bool:
        """The placement mechanism, not the node agents, is the source of instance status (Kubernetes)."""
        return self.placement_mechanism.supports(Capability.REPORTS_STATUS)

    def _substrate_status(self, inst: dict[str, Any]) -> str:
        if self.substrate_reports_status:
            return SUBSTRATE_STATUS.get(inst.get("state", ""), "deploying")
        return "running" if inst.get("state") == "running" else "deploying"

    def _not_ready(self, state: dict[str, Any]) -> set[str]:
        """Described nodes the substrate does not report Ready (absent ones included: nothing runs there)."""
        up = state.get("nodes_up") or {}
        return {n for n in self.nodes if not up.get(n, False)} if up else set()

    def _keep_if_back(self, iid: str, row: Mapping[str, Any], status: str) -> None:
        """A `lost` instance whose node is back and still runs it, before any replacement took its place (no
        other node could host it, or all nodes were lost at once): it is kept, instead of staying
        `relocating` for ever while it runs. A replacement already under way wins: its move removes this one."""
        if row["status"] != "lost":
            return
        model = self.apps.get(row["app"])
        wanted = instances_wanted(model, row["component"]) if model is not None else 1
        active = [r for r in self.instances.values() if r["app"] == row["app"] and r["component"] == row["component"]
                  and r["status"] in ACTIVE]
        if len(active) >= wanted:
            return
        self.instances.set_status(iid, status)
        self.record_event(f"{row['app']}/{row['component']}: instance {iid} kept, node {row['node']} is back and "
                          f"still runs it", app=row["app"], inputs={"instance": iid, "node": row["node"]})
        self.trigger(reason=f"node {row['node']} back with its instances")

    # -- authorization ------------------------------------------------------------------------------
    def slice_children(self) -> frozenset[str]:
        return self._slice_children

    def identity_of(self, sender: str) -> str | None:
        return self.jid_nodes.get(norm_jid(sender))

    # -- membership ---------------------------------------------------------------------------------
    async def _accept_node(self, env: Envelope) -> dict[str, Any]:
        name = self.identity_of(env.sender)
        if name is None:
            raise HandlerError(f"{env.sender} is not a node of cluster {self.cluster_id}")
        return {"cluster": self.cluster_id, "status_report": self.settings.status_report}

    def _node_of(self, child: ChildRecord) -> str | None:
        return self.jid_nodes.get(child.jid)

    async def _node_joined(self, child: ChildRecord) -> None:
        node = self._node_of(child)
        if node is None:
            return   # removed from the inventory meanwhile
        pending = self._evictions.pop(node, None)
        if pending is not None:
            pending.cancel()
            self.record_event(f"node {node} back within its {self.settings.node_grace:g}s grace: its instances "
                              "are kept", inputs={"jid": child.jid})
        self.nodes_version += 1
        self.record_event(f"node {node} joined", inputs={"jid": child.jid})
        self._write_cr_status()
        self.trigger(reason=f"node {node} joined")

    def _node_heartbeat(self, child: ChildRecord, mono: float, stalled: float) -> None:
        node = self._node_of(child)
        if node is not None:
            self.trust.heartbeat(node, mono, receiver_stalled=stalled)
            if child.digest.get("devices"):
                self.devices.gateway_heartbeat(child.jid, child.digest)

    def on_refused(self, sender: str, kind: str, reason: str) -> None:
        super().on_refused(sender, kind, reason)
        node = self.identity_of(sender)
        if node is not None and " as " in reason:   # a node of ours spoke under another name
            self.trust.impersonation(node, f"{kind} {reason.rsplit(' as ', 1)[1]}")

    async def _node_lost(self, child: ChildRecord, reason: str) -> None:
        node = self._node_of(child)
        if node is None:
            return   # removed from the inventory meanwhile: nothing of ours runs there
        self.trust.node_lost(node, reason)
        self.devices.gateway_lost(child.jid, node)
        self.nodes_version += 1
        grace = self.settings.node_grace
        if grace > 0 and self.instances.on_node(node) and not self.substrate_reports_status:
            # Like a kubelet restart: the node agent is gone, not (necessarily) the node. What the substrate
            # still runs there stays ours for the grace; what it stopped running is lost now (_reconcile).
            kept = self.instances.on_node(node)
            self.record_event(f"node {node} lost ({reason}); its {len(kept)} instance(s) are kept for "
                              f"{grace:g}s unless it is back", outcome="info",
                              inputs={"instances": kept, "grace_s": grace})
            if node not in self._evictions:
                self._evictions[node] = self.spawn(self._evict_after(node, reason, grace), name=f"evict-{node}")
            self._write_cr_status()
            self.trigger(reason=f"node {node} lost")   # reconcile: instances the substrate no longer runs
            return
        await self._evict(node, reason)

    async def _evict_after(self, node: str, reason: str, grace: float) -> None:
        await asyncio.sleep(grace)
        self._evictions.pop(node, None)
        if node in self._alive_nodes() or node not in self.nodes:
            return
        await self._evict(node, f"{reason}; not back within {grace:g}s")

    async def _evict(self, node: str, reason: str) -> None:
        lost = self.instances.mark_lost(node, f"node {node} lost: {reason}")
        self.record_event(f"node {node} lost ({reason}); {len(lost)} instance(s) to relocate", outcome="info",
                          inputs={"instances": lost})
        await self._report_status()
        self._write_cr_status()
        self.trigger(reason=f"node {node} lost")

    def attach_inventory(self, inventory: Any) -> None:
        """Use a started `NodeInventory`: its views go into the policies' system description and its
        mismatches with the descriptions into the decision log."""
        self.inventory = inventory
        inventory.on_change = self._inventory_changed
        for name in inventory.merged():
            self.spawn(self._inventory_changed(name, None), name="inventory")

    def attach_status_writer(self, writer: Any) -> None:
        """Keep our MLSysOpsCluster's and MLSysOpsNodes' `.status` up to date (written on change only)."""
        self.status_writer = writer
        self._write_cr_status()

    def _write_cr_status(self) -> None:
        if self.status_writer is None:
            return
        nodes = {name: cr_status.node_status(self, name) for name in sorted(self.nodes)}
        self.status_writer.set(cr_status.CLUSTER_KIND, self.cluster_id, cr_status.cluster_status(self, nodes))
        for name, status in nodes.items():
            self.status_writer.set(cr_status.NODE_KIND, name, status)

    async def _inventory_changed(self, name: str, _view: Any) -> None:
        """Kubernetes Node changes: record new mismatches with the descriptions once, and replan."""
        warnings = self.inventory.warnings().get(name, []) if self.inventory is not None else []
        if warnings and warnings != self._inventory_warned.get(name):
            self.record_event(f"node {name}: Kubernetes and its description disagree: {'; '.join(warnings)}",
                              inputs={"node": name, "warnings": warnings})
        self._inventory_warned[name] = warnings
        self.trigger(reason=f"Kubernetes node {name} changed")

    def _alive_nodes(self) -> set[str]:
        """Nodes that may host work: their agent is alive and they are not being drained."""
        return {self.jid_nodes[c.jid] for c in self.children.children(alive_only=True)
                if c.jid in self.jid_nodes} - self.cordoned - self.not_ready

    def _node_alive(self, node: str | None) -> bool:
        """`node in _alive_nodes()` in O(1): asked for every report a node sends."""
        if node is None or node in self.cordoned or node in self.not_ready:
            return False
        jid = self.node_jids.get(node)
        rec = self.children.child(jid) if jid is not None else None
        return rec is not None and rec.alive

    # -- inventory changes --------------------------------------------------------------------------
    def add_node(self, desc: MLSysOpsNode, jid: str) -> None:
        """A node joins this cluster's inventory; its agent may register from now on."""
        self.nodes[desc.name] = desc
        self.node_jids[desc.name] = jid
        self.jid_nodes[norm_jid(jid)] = desc.name
        self._slice_children = frozenset(self.jid_nodes)
        self.nodes_version += 1
        self.record_event(f"node {desc.name} added to the inventory", inputs={"jid": jid})

    def cordon(self, node: str) -> list[str]:
        """Drain a node before it leaves: place nothing new there, relocate what runs (make-before-break,
        since the node itself is still up). Returns the instances to move."""
        self.cordoned.add(node)
        self.drain_problems.pop(node, None)
        self.nodes_version += 1
        moving = self.instances.mark_lost(node, f"node {node} is being removed (drain)")
        self.record_event(f"node {node} cordoned for removal; {len(moving)} instance(s) to relocate",
                          inputs={"instances": moving})
        self.trigger(reason=f"node {node} drained")
        return moving

    def drained(self, node: str) -> bool:
        return not any(row["node"] == node and row["status"] in (*ACTIVE, "lost")
                       for row in self.instances.values())

    def drain_blockers(self, node: str) -> dict[str, str]:
        """`app/component` -> why it is still on `node` (its status reason, or what placement said)."""
        out = {}
        for row in self.instances.values():
            if row["node"] == node and row["status"] in (*ACTIVE, "lost"):
                key = f"{row['app']}/{row['component']}"
                why = self._pending_reason(row["app"], row["component"])
                out[key] = why or "no other node could take it yet"
        return out

    def drain_stuck(self, node: str, waited: float) -> str:
        """The drain of `node` did not complete in `waited` s: say why, keep it cordoned (undo: uncordon)."""
        blockers = self.drain_blockers(node)
        reason = (f"drain of node {node} did not complete within {waited:g}s: "
                  + "; ".join(f"{k}: {v}" for k, v in sorted(blockers.items()))
                  + f". The node stays cordoned; `mlsysops uncordon {node}` undoes the drain")
        self.drain_problems[node] = reason
        self.record_event(reason, outcome="error", inputs={"node": node, "blockers": blockers})
        return reason

    def drain_status(self, node: str) -> dict[str, Any]:
        """What the node's drain is doing: none / draining / stuck (with the reason)."""
        if node not in self.cordoned:
            return {"state": "none", "reason": None}
        if node in self.drain_problems:
            return {"state": "stuck", "reason": self.drain_problems[node]}
        return {"state": "draining", "reason": None}

    def uncordon(self, node: str) -> list[str]:
        """Undo a drain: the node takes work again and keeps what still runs there (the drain was
        make-before-break: instances not yet replaced never stopped). Returns the instances kept."""
        if node not in self.cordoned:
            return []
        self.cordoned.discard(node)
        self.drain_problems.pop(node, None)
        drain_reason = f"node {node} is being removed (drain)"
        kept = [iid for iid, row in self.instances.items()
                if row["node"] == node and row["status"] == "lost" and row["reason"] == drain_reason]
        for iid in kept:
            self.instances.set_status(iid, "running")
        self.record_event(f"node {node} uncordoned; {len(kept)} instance(s) stay there", inputs={"instances": kept})
        self.trigger(reason=f"node {node} uncordoned")
        return kept

    def forget_node(self, node: str) -> None:
        jid = self.node_jids.pop(node, None)
        if jid is not None:
            self.jid_nodes.pop(norm_jid(jid), None)
            self.children.forget(jid)   # a removed node is not a lost one: no "node None lost" later
            self._slice_children = frozenset(self.jid_nodes)
        pending = self._evictions.pop(node, None)
        if pending is not None:
            pending.cancel()
        self.nodes.pop(node, None)
        self.cordoned.discard(node)
        self.trust.forget(node)
        self.drain_problems.pop(node, None)
        self.nodes_version += 1
        self.record_event(f"node {node} removed from the inventory")

    # -- parent requests ----------------------------------------------------------------------------
    async def _on_app_deploy(self, env: Envelope) -> dict[str, Any]:
        req = env.payload
        assert isinstance(req, AppDeploy)
        try:
            doc = load_obj(req.description, source=f"app.deploy from {env.sender}")
        except DescriptionError as exc:
            raise HandlerError(f"invalid application description: {exc}") from None
        if not isinstance(doc.spec, MLSysOpsApp):
            raise HandlerError(f"expected an MLSysOpsApp, got {doc.kind}")
        unknown = [c for c in req.components if doc.spec.component(c) is None]
        if unknown:
            raise HandlerError(f"unknown component(s) {unknown} in app {req.app}")
        self.apps[req.app] = doc.spec
        self.app_docs[req.app] = doc.kubernetes_form
        self.knowledge.apps[req.app] = self.app_asset(req.app, doc.kubernetes_form["spec"], doc.spec.policies)
        before = set(self.assigned.get(req.app, []))
        self.assigned[req.app] = list(req.components)
        removed = before - set(req.components)
        if removed:
            await self._remove_components(req.app, sorted(removed), "no longer assigned to this cluster")
        self.record_event(f"app {req.app}: assigned components {req.components}", app=req.app)
        self.trigger(req.app, reason="app.deploy")
        return Accepted(detail={"cluster": self.cluster_id}).model_dump()

    async def _on_app_remove(self, env: Envelope) -> dict[str, Any]:
        req = env.payload
        assert isinstance(req, AppRemove)
        comps = req.components if req.components is not None else self.assigned.get(req.app, [])
        await self._remove_components(req.app, comps, "removed by the continuum")
        remaining = [c for c in self.assigned.get(req.app, []) if c not in comps]
        if remaining:
            self.assigned[req.app] = remaining
        else:
            # forget the app first: an `app.routes` arriving while the routes are cleared must be refused,
            # or it would re-create what the clearing just removed
            self.assigned.pop(req.app, None)
            self.apps.pop(req.app, None)
            self.knowledge.apps.pop(req.app, None)
            await self._clear_routes(req.app)
        return Accepted(detail={"removed": comps}).model_dump()

    async def _on_app_routes(self, env: Envelope) -> dict[str, Any]:
        """Write this app's full traffic set (exposures and routes) through the `traffic_routes` mechanism,
        as a plan of the continuum's, recorded like any other."""
        req = env.payload
        assert isinstance(req, AppRoutes)
        if self.traffic is None:
            raise HandlerError(f"cluster {self.cluster_id} has no traffic_routes mechanism on this substrate")
        if (req.expose or req.routes) and req.app not in self.assigned:
            # e.g. a reconcile already in flight when the app was removed: nothing may be (re)created for it
            raise HandlerError(f"app {req.app} has no components on {self.cluster_id}: no routes for it")
        targets = {c: r.cluster for c, r in req.routes.items()}
        reason = (f"continuum: expose {req.expose or 'nothing'}; route {targets or 'nothing'}")
        command = {**req.model_dump(), "assigned": list(self.assigned.get(req.app, []))}
        res = await self.execute("traffic_routes", command, reason=reason, app=req.app,
                                 policy="continuum-request", priority=100)
        result = res.commands.get("traffic_routes")
        if res.status != "completed" or result is None:
            raise HandlerError(f"traffic routes of {req.app} on {self.cluster_id}: {res.status}: "
                               f"{(result.detail if result else None) or res.reason}")
        return Accepted(detail=result.detail or {}).model_dump()

    async def _clear_routes(self, app: str) -> None:
        if self.traffic is None or self.engine is None:
            return
        # the agent's own priority: a routes plan of the same cycle (priority 100, first in) must not win
        # over the clearing and leave its Service/EndpointSlice behind the removed app
        for attempt in range(1, CLEAR_ROUTES_ATTEMPTS + 1):
            res = await self.execute("traffic_routes", {"app": app, "expose": [], "routes": {}},
                                     reason=f"app {app} removed from {self.cluster_id}", app=app,
                                     policy="continuum-request")
            if res.status == "completed":
                return
            if attempt < CLEAR_ROUTES_ATTEMPTS:
                await asyncio.sleep(min(CLEAR_ROUTES_BACKOFF_S * 2.0 ** (attempt - 1), 10.0))
            if app in self.assigned:
                return   # deployed here again meanwhile: its new routes are the continuum's to write
        self.record_event(f"traffic routes of removed app {app} not cleared after {CLEAR_ROUTES_ATTEMPTS} "
                          f"attempts ({res.status}: {res.reason}); its Services/EndpointSlices may be left behind",
                          app=app, outcome="error")

    async def _remove_components(self, app: str, components: list[str], reason: str) -> None:
        """Operator/continuum removals go through the plan scheduler like any plan (serialised per mechanism)."""
        actions = [{"action": "remove", "component": row["component"], "instance_id": iid}
                   for iid, row in self.instances.items()
                   if row["app"] == app and row["component"] in components and row["status"] in (*ACTIVE, "lost")]
        if not actions or self.engine is None:
            return
        await self.execute("component_placement", {"app": app, "actions": actions}, reason=reason, app=app,
                           policy="continuum-request", priority=100)

    # -- child reports ------------------------------------------------------------------------------
    async def _on_status_report(self, env: Envelope) -> None:
        rep = env.payload
        assert isinstance(rep, StatusReport)
        await self.apply_status(self.identity_of(env.sender), rep)

    async def apply_status(self, node: str | None, rep: StatusReport) -> None:
        """What a node (or a gateway for its device) says runs on it."""
        if not self._node_alive(node):
            # A report that was in flight when its node was declared lost must not resurrect the
            # node's instances: they stay `lost` until relocation replaces them.
            return
        seen = set()
        for inst in rep.instances:
            seen.add(inst.instance_id)
            row = self.instances.get(inst.instance_id)
            if row is None:
                if inst.status in ("starting", "running"):   # runs but we never heard of it: adopt
                    self.instances.adopt(inst.model_dump(), inst.status)
                continue
            if rep.full and row["node"] == inst.node and inst.status in ("starting", "running"):
                self._keep_if_back(inst.instance_id, row, "deploying" if inst.status == "starting" else "running")
            if row["node"] != node and inst.status in ("starting", "running") and row["status"] != "removed":
                # we placed it elsewhere, yet this node says it runs it here
                self.trust.contradiction(node, f"claims {inst.instance_id}, placed on {row['node']}")
            if row["status"] in ("removed", "lost") or row["node"] != inst.node:
                continue
            status = "deploying" if inst.status == "starting" else inst.status
            if status == "failed" and row["status"] != "failed":
                self.trust.deployment_failed(node, f"{inst.instance_id}: {inst.reason or 'failed'}")
            self.instances.set_status(inst.instance_id, status, inst.reason)
        if rep.full:   # the node says these are all it runs: anything else we placed there is gone
            for iid in self.instances.on_node(node, ("running",)):
                if iid not in seen:
                    self.instances.set_status(iid, "failed", f"no longer reported by node {node}")
        if any(i.status == "failed" for i in rep.instances):
            self.trigger(reason=f"instance failed on {node}")
        await self._report_status()

    async def _on_telemetry(self, env: Envelope) -> None:
        rep = env.payload
        assert isinstance(rep, TelemetryReport)
        node = self.identity_of(env.sender)   # never a name from the body (authorization refused a forged one)
        if not self._node_alive(node):
            return   # a late digest from a node already declared lost must not look like a live one
        foreign = sorted({str(r[1].get("node")) for r in rep.series
                          if isinstance(r[1], dict) and r[1].get("node") not in (None, node)})
        if foreign:   # the labels are overwritten below; the claim still says something about the sender
            self.trust.contradiction(node, f"telemetry labelled node={foreign[0]}")
        digests.apply(self.knowledge, [list(r) for r in rep.series], time.time(), extra={"node": node})
        sample = {"cpu": self.knowledge.latest("system.cpu.utilization", node=node),
                  "memory": self.knowledge.latest("system.memory.utilization", node=node)}
        self.trust.metrics(node, {k: v for k, v in sample.items() if v is not None})

    async def _on_proposal(self, env: Envelope) -> dict[str, Any]:
        prop = env.payload
        assert isinstance(prop, PlanProposal)
        row = self.instances.get(prop.instance_id)
        if row is not None and row["node"] != self.identity_of(env.sender):
            raise HandlerError(f"{NOT_AUTHORIZED}: {norm_jid(env.sender)} may not propose moving instance "
                               f"{prop.instance_id}, which runs on {row['node']}")
        self.proposals.append({**prop.model_dump(), "ts": time.time()})
        self.proposals = self.proposals[-50:]
        self.record_event(f"node {prop.node} proposes relocating {prop.app}/{prop.component}: {prop.reason}",
                          app=prop.app)
        self.trigger(prop.app, reason="relocation proposal")
        return Accepted().model_dump()

    # -- MAPE hooks ---------------------------------------------------------------------------------
    def assets(self) -> dict[str, dict[str, Any]]:
        return dict(self.knowledge.apps)

    def _kept_nodes(self) -> dict[str, str]:
        """Nodes whose agent is lost but whose instances stay where they are, with why: within the node grace,
        or unreachable during a full disruption. Policies see them alive (nothing to relocate) but
        unschedulable (no new work)."""
        grace = self.settings.node_grace
        kept = {n: f"node agent lost, its instances kept for the {grace:g}s grace" for n in self._evictions}
        known = set()
        for rec in self.children.children():
            node = self.jid_nodes.get(rec.jid)
            known.add(node)
            if rec.held and node is not None:
                kept[node] = "unreachable during a full disruption of this cluster"
        if time.time() - self.started_at < grace:
            # Restarted: node agents re-register over the next heartbeats; until then what they run is kept,
            # like the continuum keeps a cluster it has not heard of since its own start.
            for node in set(self.nodes) - known:
                kept[node] = f"not heard of since this agent started (grace {grace:g}s)"
        return kept

    def system_description(self) -> dict[str, Any]:
        alive = self._alive_nodes()
        kept = self._kept_nodes()
        nodes = {}
        for name, model in self.nodes.items():
            cpu = self.knowledge.latest("system.cpu.utilization", node=name)
            nodes[name] = {"model": model, "alive": name in alive or name in kept, "cpu_utilization": cpu or 0.0,
                           "trust": self.trust.report(name).to_dict()}
            if name in kept:
                nodes[name]["unschedulable"] = kept[name]
        if self.inventory is not None:   # Kubernetes: what the cluster itself says about each node
            for name, view in self.inventory.merged().items():
                if name in nodes:
                    nodes[name]["kubernetes"] = view.as_dict()
                    nodes[name]["unschedulable"] = view.why_unplaceable()
        mech = self.knowledge.mechanisms.get("component_placement", {}).get("state") or {}
        instances = [dict(r) for r in self.instances.values() if r["status"] != "removed"]
        now = time.time()
        self.proposals = [p for p in self.proposals if now - p["ts"] < 60]
        return {"cluster_id": self.cluster_id, "now": now, "description": to_dict(self.description),
                "nodes": nodes, "instances": instances,
                "latency_ms": mech.get("latency_ms", {}), "app_models": dict(self.apps),
                "assigned": {a: list(c) for a, c in self.assigned.items()}, "qos": self._qos_windows(),
                "proposals": list(self.proposals)}

    def _qos_windows(self) -> dict[str, list[float]]:
        """Per component, the recent QoS samples of its worst active instance (oldest first)."""
        out: dict[str, list[float]] = {}
        for row in self.instances.values():
            if row["status"] != "running":
                continue
            where = {"node": row["node"], "app": row["app"], "component": row["component"]}
            window = self.knowledge.window(QOS_METRIC, {**where, "instance": row["instance_id"]})
            if not window and self.substrate_reports_status:
                # Kubernetes: nodes label samples with the pod, not our instance id; one instance of a
                # component per node, so the component's series on that node is this instance's.
                want = set(where.items())
                window = max((s for key, s in self.knowledge.series(QOS_METRIC).items() if want <= set(key)),
                             key=lambda s: s[-1][0], default=[])
            values = [v for ts, v in window if ts >= row["since"]][-QOS_WINDOW:]
            key = f"{row['app']}/{row['component']}"
            if values and (key not in out or values[-1] > out[key][-1]):
                out[key] = values
        return out

    async def monitor(self) -> None:
        """Reconcile the table with the substrate (level-triggered, both directions)."""
        state = await self.placement.get_state()
        if state.get("stale"):
            self._substrate_unreachable(str(state.get("error") or "unknown error"))
        else:
            await self._apply_substrate_state(state)
        now = time.time()
        if now - self._last_full >= self.settings.status_report:
            self._last_full = now
            await self._report_status(full=True)
        self._write_cr_status()
        if now - self._last_digest >= self.settings.digest_interval:
            self._last_digest = now
            await self._send_digest(now)

    async def _apply_substrate_state(self, state: dict[str, Any]) -> None:
        """A fresh state from the substrate (monitor tick or watch event): reconcile and report."""
        if self.substrate_error is not None:
            self.record_event("substrate reachable again; reconciling", inputs={"was": self.substrate_error})
            self.substrate_error = None
            self.trigger(reason="substrate reachable again")   # plans that failed meanwhile are redone
        if await self._reconcile(state):
            await self._report_status()

    def _substrate_unreachable(self, error: str) -> None:
        """Keep the table as it is: an unreachable API server says nothing about the instances."""
        if self.substrate_error is None:
            self.record_event(f"substrate unreachable, instance table kept as it is: {error}", outcome="error")
        self.substrate_error = error

    def _update_readiness(self, state: dict[str, Any]) -> bool:
        """Nodes going NotReady are lost like a node agent; returns True if anything changed."""
        not_ready = self._not_ready(state)
        went, back = not_ready - self.not_ready, self.not_ready - not_ready
        self.not_ready = not_ready
        for node in sorted(went):
            lost = self.instances.mark_lost(node, f"node {node} is not ready")
            self.record_event(f"node {node} is not ready; {len(lost)} instance(s) to relocate",
                              inputs={"instances": lost})
        for node in sorted(back):
            self.record_event(f"node {node} is ready again")
        if went or back:
            self.nodes_version += 1
            self.trigger(reason="node readiness changed")
        return bool(went or back)

    async def _reconcile(self, state: dict[str, Any]) -> bool:
        """One pass over the substrate's state; returns True if any row changed."""
        authoritative = self.substrate_reports_status
        changed = self._update_readiness(state) if authoritative else False
        present = {i["instance_id"]: i for i in state.get("instances", [])}
        alive = self._alive_nodes()
        before = {iid: (row["status"], row["reason"]) for iid, row in self.instances.items()}
        for iid, inst in present.items():
            row = self.instances.get(iid)
            if row is None:
                status = self._substrate_status(inst) if authoritative else "deploying"
                self.instances.adopt(inst, status, inst.get("reason"), retrying=authoritative and status == "failed")
                continue
            if authoritative and row["node"] in alive and row["node"] not in self.not_ready:
                status = self._substrate_status(inst)
                if status in ("deploying", "running"):
                    self._keep_if_back(iid, row, status)
            if not authoritative or row["status"] in ("removed", "lost"):
                continue
            if row["node"] in self.not_ready:   # relocation's business, as for a lost node agent
                self.instances.set_status(iid, "lost", f"node {row['node']} is not ready")
                continue
            status = self._substrate_status(inst)
            # failed: why; deploying: what holds it up (e.g. "Unschedulable: 0/7 nodes are available: ...");
            # failed with its Deployment still on a ready node: Kubernetes retries it there (see occupying())
            self.instances.set_status(iid, status, inst.get("reason") if status != "running" else None,
                                      retrying=status == "failed")
        now = time.time()
        vanish = scaled_seconds(VANISH_GRACE_S, self.settings.time_scale, VANISH_GRACE_FLOOR_S)
        for iid, row in self.instances.items():
            if (row["status"] == "lost" and iid not in present and row["node"] in alive
                    and now - row["since"] > vanish):
                # The node is back but no longer runs it (it crashed meanwhile) and nothing replaced it yet:
                # failed, so placement redeploys it, instead of `relocating` for ever.
                self.instances.set_status(iid, "failed", f"node {row['node']} is back without this instance")
                continue
            if iid in present or row["status"] not in ACTIVE:
                continue
            if row["node"] not in alive:
                self.instances.set_status(iid, "lost", f"node {row['node']} is not alive")
            elif now - row["since"] > vanish:
                self.instances.set_status(iid, "failed", "no longer present on the substrate")
        after = {iid: (row["status"], row["reason"]) for iid, row in self.instances.items()}
        moved = [iid for iid, st in after.items() if before.get(iid) != st]
        if any(after[i][0] in ("failed", "lost") for i in moved):
            self.trigger(reason="instance failed or lost on the substrate")
        return changed or bool(moved)

    async def _send_digest(self, now: float) -> None:
        """Summaries of this cluster's windows (its nodes' series and its own) to the continuum."""
        window = 1.5 * self.settings.digest_interval   # overlapping: no sample falls between digests
        rows = digests.summarise(self.knowledge, window, now=now)
        self.telemetry.publish((r[0], r[1], r[2]) for r in rows)
        if self.upstream is None or not self.upstream.connected:
            return
        await self.send_digest(rows, window, now, cluster=self.cluster_id)

    async def on_executed(self, plan: Any, mechanism: str, outcome: str, detail: Any) -> None:
        if mechanism not in ("component_placement", "fluidity") or not isinstance(detail, list):
            return
        for res in detail:
            if not res.get("ok"):
                continue
            act = PlacementAction(res["action"], res["app"], res["component"])
            if act.action in ("deploy", "move", "change_spec") and res.get("instance_id"):
                base = {"instance_id": res["instance_id"], "app": act.app, "component": act.component,
                        "node": res.get("node") or res.get("target")}
                model = self.apps.get(act.app)
                comp = model.component(act.component) if model else None
                if comp is not None:
                    base["cpu_request_cores"] = comp.cpu_request_cores
                    base["memory_request_bytes"] = comp.memory_request_bytes
                self.instances.placed(base)
                replaced = res.get("replaced")
                if replaced and replaced in self.instances and replaced != res["instance_id"]:
                    self.instances.remove(replaced, f"replaced by {res['instance_id']}")
                for iid, row in self.instances.items():   # a move without an instance id: by source node
                    if (not replaced and act.action == "move" and row["status"] == "lost" and row["app"] == act.app
                            and row["component"] == act.component and row["node"] == res.get("source")):
                        self.instances.remove(iid, f"relocated to {base['node']}")
            elif act.action == "remove" and res.get("removed"):
                self.instances.remove(res["removed"], "removed")
        await self._report_status()

    # -- status up ----------------------------------------------------------------------------------
    def component_status(self, app: str, component: str) -> ComponentReport:
        rows = [r for r in self.instances.values() if r["app"] == app and r["component"] == component]
        active = [r for r in rows if r["status"] in ACTIVE]
        running = [r for r in active if r["status"] == "running"]
        lost = [r for r in rows if r["status"] == "lost"]
        failed = [r for r in rows if r["status"] == "failed"]
        model = self.apps.get(app)
        wanted = 1
        if model is not None:
            wanted = instances_wanted(model, component)
        if lost:
            status, reason = "relocating", lost[0]["reason"]
        elif len(running) >= wanted:
            status, reason = "running", None
        elif active:
            status, reason = "deploying", next((r["reason"] for r in active if r.get("reason")), None)
        elif failed:
            status, reason = "failed", failed[-1]["reason"]
        else:
            status, reason = "pending", self._pending_reason(app, component)
        since = max((r["since"] for r in (running or active or rows)), default=None)
        return ComponentReport(app=app, component=component, status=status, cluster=self.cluster_id,
                               nodes=sorted({r["node"] for r in active}), instances=len(running),
                               since=since, reason=reason)

    def _pending_reason(self, app: str, component: str) -> str | None:
        recs = self.decision_log.query(app=app, policy="filter_score_placement", stage="plan", limit=1)
        if recs and recs[-1].explanation:
            expl = recs[-1].explanation
            why = (expl.get("unplaceable") or {}).get(component) or (expl.get("waiting") or {}).get(component)
            if why:
                return why if isinstance(why, str) else "; ".join(map(str, why))
        return None

    async def _report_status(self, full: bool = False) -> None:
        reports = [self.component_status(app, c) for app, comps in self.assigned.items() for c in comps]
        changed = [r for r in reports
                   if self._reported.get((r.app, r.component)) != (r.status, ",".join(r.nodes))]
        for r in reports:
            self._reported[(r.app, r.component)] = (r.status, ",".join(r.nodes))
        send = reports if full else changed
        if self.parent and self.upstream is not None and self.upstream.connected and (send or full):
            await self.inform(self.parent, Kind.STATUS_REPORT,
                              StatusReport(source=self.agent_id, full=full, components=send))

    # -- membership payloads ------------------------------------------------------------------------
    # Constant size whatever the number of nodes: the node descriptions and states are paged on demand
    # (`children.query`), the heartbeat says only how many are alive and whether their states moved.
    def _self_description(self) -> dict[str, Any]:
        cluster = to_k8s(self.description)
        cluster["spec"].pop("nodes", None)   # the names come with the paged descriptions
        return {"cluster": cluster, "nodes_total": len(self.nodes)}

    def _digest(self) -> dict[str, Any]:
        return {"nodes_total": len(self.nodes), "nodes_alive": len(self._alive_nodes()),
                "nodes_version": self.nodes_version, "lag_ms": round(self.loop_lag.recent_max_s * 1000, 1)}

    def _node_k8s(self, name: str) -> dict[str, Any]:
        model = self.nodes[name]
        cached = self._k8s_forms.get(name)
        if cached is None or cached[0] is not model:   # a replaced description is rendered again
            cached = self._k8s_forms[name] = (model, to_k8s(model))
        return cached[1]

    def node_states(self) -> list[tuple[str, dict[str, Any]]]:
        alive = self._alive_nodes()
        out = []
        for n in sorted(self.nodes):
            rec = self.children.child(self.node_jids[n]) if n in self.node_jids else None
            trust = self.trust.report(n)
            out.append((n, {"name": n, "alive": n in alive,
                            "cpu": round(self.knowledge.latest("system.cpu.utilization", node=n) or 0.0, 3),
                            "lag_ms": (rec.digest or {}).get("lag_ms") if rec is not None else None,
                            # the node agent's own last heartbeat: a dead node's age keeps growing
                            "last_heartbeat": round(rec.last_heartbeat, 1) if rec is not None and rec.last_heartbeat
                            else None,
                            # [score, main reason] only for nodes something is held against
                            "trust": [round(trust.score, 3), trust.reasons[0]] if trust.score < 0.995 else None}))
        return out

    async def _on_children_query(self, env: Envelope) -> dict[str, Any]:
        q = env.payload
        assert isinstance(q, ChildrenQuery)
        if q.what == "descriptions":
            items = [(n, self._node_k8s(n)) for n in sorted(self.nodes)]
        else:
            items = self.node_states()
        return page(items, q.after, version=self.nodes_version, total=len(self.nodes)).model_dump()
