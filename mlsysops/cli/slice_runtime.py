"""Run a whole slice in one process: embedded XMPP server, simulated continuum, every agent.

Used by `mlsysops up`, the integration tests and the benchmarks. A simulated node crash also stops that
node's agent (the host is gone); recovering the node starts a fresh agent, which registers again.

Substrate `kubernetes`: every cluster agent places components through `KubePlacementMechanism` on the
slice's kubeconfig (one ApiClient per cluster, the workload namespace created if missing). With
`simulate_nodes` the simulated continuum stays and its nodes run as `SimKubelet`s against that API server
(KWOK-like); node agents keep observing their sim node but report no instance status (the cluster agent
reads it from Kubernetes). Without it, no node agent runs here: real nodes run `mlsysops agent node --host`.

Substrate `karmada`: the simulated continuum, cluster and node agents run as with `sim` (they give the
continuum's placement policy cluster liveness and digests), and the continuum dispatches through
`KarmadaPlacementMechanism` on the slice's kubeconfig/context, which names the Karmada API server: one
PropagationPolicy per component, on the cluster the policy chose; status read back from the bindings.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from mlsysops.agents.descriptions import Document, load_file
from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.agents.slice_config import SliceSpec
from mlsysops.agents.xmpp_server import EmbeddedXMPPServer
from mlsysops.cli.slice_assembly import (
    ClusterViews,
    SliceAssembly,
    SubstrateError,
    ensure_namespace,
    kube_connect,
)
from mlsysops.cluster.agent import ClusterAgent
from mlsysops.continuum.agent import ContinuumAgent
from mlsysops.mechanisms.sim_placement import sim_node_spec
from mlsysops.node.agent import NodeAgent
from mlsysops.node.substrate import SimNodeSubstrate
from mlsysops.sim import EventKind, SimClock, SimContinuum, SimEvent

log = logging.getLogger(__name__)


class SliceRuntime:
    """Every agent of a slice in this process, built by the slice's `SliceAssembly` (the composition root
    `mlsysops agent` uses too); the runtime owns the simulator, the XMPP server and the clients, which
    outlive agent restarts."""

    def __init__(self, spec: SliceSpec, *, xmpp_port: int | None = None, xmpp_domain: str | None = None,
                 force_xmpp: bool = False, jid_suffix: str = "", state_dir: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.assembly = SliceAssembly(spec, domain=xmpp_domain or "", suffix=jid_suffix, state_dir=state_dir,
                                      xmpp_port=xmpp_port, force_xmpp=force_xmpp, overrides=overrides or {})
        self.server: EmbeddedXMPPServer | None = None
        self.sim: SimContinuum | None = None
        self.continuum: ContinuumAgent | None = None
        self.clusters: dict[str, ClusterAgent] = {}
        self.nodes: dict[str, NodeAgent] = {}
        self.placements: dict[str, Any] = {}      # cluster id -> placement mechanism (kept across restarts)
        self.traffic: dict[str, Any] = {}         # cluster id -> traffic_routes mechanism (kept across restarts)
        self.kube = spec.config.substrate.type == "kubernetes"
        self.karmada = spec.config.substrate.type == "karmada"
        self.karmada_api: Any = None              # kubernetes.aio ApiClient of the Karmada API server
        self.kube_clients: dict[str, Any] = {}    # cluster id -> kubernetes.aio ApiClient
        self.kube_api: Any = None                 # the runtime's own client (namespace, sim kubelets)
        self.kubelet: Any = None                  # SimKubelet (kubernetes + simulate_nodes)
        self.member_kubelets: dict[str, Any] = {}  # cluster id -> SimKubelet on that cluster's own API server
        self.app_mirror: Any = None               # AppStatusMirror (kubernetes): MLSysOpsApp CRs
        self.cluster_views: dict[str, ClusterViews] = {}   # cluster id -> Node inventory + status writer
        self.namespace = self.assembly.namespace
        self._sim_task: asyncio.Task[None] | None = None
        self.storage: Any = None                  # StorageRuntime (slice config `storage`): stores + mechanism
        self.devices: Any = None                  # DeviceRuntime (slice config `devices`): broker + sim devices
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def xmpp_port(self) -> int | None:
        return self.assembly.xmpp_port

    @property
    def domain(self) -> str:
        return self.assembly.domain

    # -- identities ---------------------------------------------------------------------------------
    def jid(self, role: str, name: str) -> str:
        return self.assembly.jid(role, name)

    def settings(self, layer: str) -> AgentSettings:
        return self.assembly.settings(layer)

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start_server(self) -> None:
        """The embedded server (unless a port was given): a temp workdir of its own (deleted at stop),
        exactly the slice's accounts with generated passwords, no in-band registration."""
        if self.xmpp_port is not None:
            return
        accounts = {jid.split("@", 1)[0]: self.assembly.password_for(jid) for jid in self.assembly.all_jids()}
        self.server = EmbeddedXMPPServer(domain=self.domain, accounts=accounts)
        await self.server.start()
        self.assembly.xmpp_port = self.server.port

    async def _provision(self, jid: str) -> None:
        """An account for an agent that joins later (a node added through the API)."""
        if self.server is not None:
            await self.server.add_account_async(jid.split("@", 1)[0], self.assembly.password_for(jid))

    @property
    def simulated(self) -> bool:
        """A simulated continuum runs here (sim substrate, or kubernetes with simulate_nodes)."""
        return not self.kube or self.spec.config.substrate.simulate_nodes

    async def start(self) -> None:
        await self.start_server()
        if self.kube:
            await self.start_kube()
        if self.karmada:
            self.karmada_api = await kube_connect(self.spec.config.substrate)
            await ensure_namespace(self.karmada_api, self.namespace)   # Karmada propagates namespaces
        if self.simulated:
            seed = self.spec.config.substrate.seed or 0
            # one clock: the simulator's time runs `time_scale` times faster, and so do the agents' intervals
            # (SliceAssembly.settings); the tick keeps ~20 sim steps per simulated second up to 5x
            scale = self.assembly.time_scale
            self.sim = SimContinuum.from_specs([sim_node_spec(n) for n in self.spec.nodes.values()], seed=seed,
                                               clock=SimClock.realtime(scale))
            self.sim.subscribe(self._on_sim_event)
            self._sim_task = asyncio.create_task(self.sim.run(interval=max(0.01, 0.05 / scale)), name="sim")
        if self.kube and self.simulated:
            from mlsysops.sim.kubelet import SimKubelet

            # Leases every 10 s: the node lifecycle controller's grace period is 40 s. Nodes of a cluster
            # with its own API server register there (one kubelet per API server).
            own = self.spec.config.substrate.clusters
            shared = [n for n in self.spec.nodes if self._cluster_of(n) not in own]
            self.kubelet = SimKubelet(self.sim, self.kube_api, nodes=shared)
            await self.kubelet.start()
            for cid in own:
                kubelet = SimKubelet(self.sim, self.kube_clients[cid],
                                     nodes=[n for n in self.spec.nodes if self._cluster_of(n) == cid])
                self.member_kubelets[cid] = kubelet
                await kubelet.start()
        if self.spec.config.storage is not None:
            try:
                from mlsysops.cli.storage_runtime import StorageRuntime
            except ImportError as exc:   # the `storage` extra is not installed
                raise SubstrateError(f"storage: {exc}") from exc
            self.storage = StorageRuntime(self.spec.config.storage, sim=self.sim,
                                          seed=self.spec.config.substrate.seed or 0)
            await self.storage.start()
        if self.spec.config.devices is not None and self.simulated:
            from mlsysops.cli.device_runtime import DeviceRuntime

            self.devices = DeviceRuntime(self.spec.config.devices)
            await self.devices.start_broker()
        await self.start_continuum()
        # Sequential starts: pyjabber mis-routes stanzas when many sessions open at once.
        for cid in self.spec.clusters:
            await self.start_cluster(cid)
        if self.simulated:
            for name in self.spec.nodes:
                await self.start_node(name)
        if self.devices is not None:   # after their gateways' agents: a device announces once, on connect
            await self.devices.start_devices()

    async def start_kube(self) -> None:
        """One ApiClient per cluster (all from the slice's kubeconfig), and the workload namespace."""
        sub = self.spec.config.substrate
        self.kube_api = await kube_connect(sub)
        await ensure_namespace(self.kube_api, self.namespace)
        await self._apply_descriptions()
        for cid in self.spec.clusters:
            self.kube_clients[cid] = await kube_connect(sub.for_cluster(cid))
            if cid in sub.clusters:
                await ensure_namespace(self.kube_clients[cid], self.namespace)

    def _cluster_of(self, node: str) -> str | None:
        desc = self.spec.nodes[node]
        return desc.cluster_id or next((c for c in self.spec.clusters if node in self.spec.clusters[c].nodes), None)

    async def _apply_descriptions(self) -> None:
        """Our CRDs and the slice's infrastructure descriptions as CRs (their agents write `.status`)."""
        from mlsysops.substrates.kubernetes.client import KubeError
        from mlsysops.substrates.kubernetes.crds import apply_descriptions, install_crds

        s = self.spec
        models = [s.continuum, *s.clusters.values(), *s.datacenters.values(), *s.nodes.values()]
        try:
            await install_crds(self.kube_api)
            await apply_descriptions(self.kube_api, self.namespace, models)
        except KubeError as exc:
            raise SubstrateError(f"applying the slice's descriptions in namespace {self.namespace}: {exc}") from exc

    async def start_continuum(self) -> ContinuumAgent:
        self.continuum = self.assembly.continuum_agent()
        if self.kube or self.karmada:   # one MLSysOpsApp custom resource per app, with status
            if self.app_mirror is None:
                # on Karmada in its API server: the operator's view of the apps, next to their policies
                self.app_mirror = self.assembly.app_mirror(self.kube_api or self.karmada_api)
            self.continuum.attach_app_mirror(self.app_mirror)
        if self.karmada:
            self.continuum.use_dispatch(self.assembly.karmada_dispatch(self.karmada_api, self.continuum))
        if self.storage is not None:
            self.storage.attach(self.continuum)
        await self.continuum.start_agent()
        return self.continuum

    async def restart_continuum(self) -> ContinuumAgent:
        """Stop the continuum agent and start a fresh one: it reloads the desired state from SQLite."""
        await self.continuum.stop()
        return await self.start_continuum()

    async def start_cluster(self, cid: str) -> ClusterAgent:
        mech = self.placements.get(cid)
        if mech is None:
            mech = self.placements[cid] = self.assembly.placement_for(cid, sim=self.sim,
                                                                      kube_api=self.kube_clients.get(cid))
        traffic = self.traffic.get(cid)
        if traffic is None:
            traffic = self.traffic[cid] = self.assembly.traffic_for(cid, sim=self.sim,
                                                                    kube_api=self.kube_clients.get(cid))
        agent = self.assembly.cluster_agent(cid, mech, traffic)
        await agent.start_agent()
        if self.kube:
            views = self.cluster_views.get(cid)
            if views is None:
                views = self.cluster_views[cid] = await self.assembly.cluster_views(cid, self.kube_clients[cid])
            self.assembly.attach_cluster_views(agent, views)
        self.clusters[cid] = agent
        return agent

    async def start_node(self, name: str) -> NodeAgent:
        gateway = self.devices.gateway_for(name) if self.devices is not None else None
        agent = self.assembly.node_agent(name, SimNodeSubstrate(self.sim, name), device_gateway=gateway)
        await agent.start_agent()
        self.nodes[name] = agent
        return agent

    async def stop(self) -> None:
        """Agents, views, clients, then the devices and their broker, the stores and the server: those go
        even when something before them fails or the stop is cancelled, so no XMPP, mosquitto or SeaweedFS
        process or workdir outlives the runtime."""
        try:
            await self._stop_agents_and_clients()
        finally:
            if self.devices is not None:
                devices, self.devices = self.devices, None
                try:
                    await asyncio.shield(devices.stop())
                except Exception:   # noqa: BLE001 - the stores and the server must still stop
                    log.exception("stopping the devices failed")
            if self.storage is not None:
                storage, self.storage = self.storage, None
                await asyncio.shield(storage.stop())
            if self.server is not None:
                server, self.server = self.server, None
                await asyncio.shield(server.aclose())

    async def _stop_agents_and_clients(self) -> None:
        agents = [*self.nodes.values(), *self.clusters.values(), *([self.continuum] if self.continuum else [])]
        for agent in agents:
            try:
                await asyncio.wait_for(agent.stop(), timeout=5)
            except Exception:   # noqa: BLE001 - shutting down: log and go on with the others
                log.exception("stopping %s failed", agent.jid)
        self.nodes.clear()
        self.clusters.clear()
        for task in list(self._tasks):
            task.cancel()
        for closing in [*self.cluster_views.values(), *([self.app_mirror] if self.app_mirror else [])]:
            try:
                await asyncio.wait_for(closing.stop(), timeout=5)
            except Exception:   # noqa: BLE001 - shutting down: log and go on
                log.exception("stopping %s failed", type(closing).__name__)
        self.cluster_views.clear()
        self.app_mirror = None
        for kubelet in [k for k in (self.kubelet, *self.member_kubelets.values()) if k is not None]:
            try:
                await asyncio.wait_for(kubelet.stop(), timeout=5)
            except Exception:   # noqa: BLE001
                log.exception("stopping the sim kubelet failed")
        self.kubelet = None
        self.member_kubelets.clear()
        if self._sim_task is not None:
            self._sim_task.cancel()
        for api in [*self.kube_clients.values(), *(a for a in (self.kube_api, self.karmada_api) if a is not None)]:
            try:
                await api.close()
            except Exception:   # noqa: BLE001
                log.exception("closing a Kubernetes client failed")
        self.kube_clients.clear()
        self.kube_api = self.karmada_api = None

    # -- operations ---------------------------------------------------------------------------------
    def apply_file(self, path: str | Path) -> list[Document]:
        docs = load_file(path, inventory=self.spec.inventory)
        return [self.continuum.submit_app(doc) for doc in docs]

    def fail_node(self, name: str) -> None:
        self.sim.crash_node(name)

    def recover_node(self, name: str) -> None:
        self.sim.recover_node(name)

    async def add_node(self, desc: Any) -> NodeAgent:
        """A new machine joins the simulated continuum: inventory, simulator, and its node agent."""
        if desc.name in self.spec.nodes:
            raise ValueError(f"name: node {desc.name!r} already exists")
        if desc.cluster_id not in self.clusters:
            raise ValueError(f"cluster_id: unknown cluster {desc.cluster_id!r}; known: {sorted(self.clusters)}")
        self.spec.nodes[desc.name] = desc
        self.sim.add_node(sim_node_spec(desc))
        kubelet = self.member_kubelets.get(desc.cluster_id) or self.kubelet
        if kubelet is not None:
            kubelet.nodes.append(desc.name)
            await kubelet.register_node(desc.name)
        await self._provision(self.jid("node", desc.name))
        self.clusters[desc.cluster_id].add_node(desc, self.jid("node", desc.name))
        self.continuum.cluster_nodes.setdefault(desc.cluster_id, {})[desc.name] = desc
        return await self.start_node(desc.name)

    drain_timeout = 30.0   # how long remove_node waits for a drain by default (the API's DELETE /nodes)

    async def remove_node(self, name: str, timeout: float | None = None) -> int:
        """Drain a node (its components move away first), then power it off and forget it.
        Returns how many instances were relocated; raises TimeoutError (why, per component) if the drain
        does not finish: the node stays cordoned, its instances keep running, `uncordon_node` undoes it."""
        desc = self.spec.nodes.get(name)
        if desc is None:
            raise KeyError(name)
        cluster = self.clusters[desc.cluster_id]
        moved = len(cluster.cordon(name))
        timeout = self.drain_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + timeout
        while not cluster.drained(name):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(cluster.drain_stuck(name, timeout))
            await asyncio.sleep(0.05)
        agent = self.nodes.pop(name, None)
        if agent is not None:
            await agent.stop()
        self.sim.crash_node(name)      # powered off; the simulator has no notion of a node leaving
        cluster.forget_node(name)
        self.continuum.cluster_nodes.get(desc.cluster_id, {}).pop(name, None)
        del self.spec.nodes[name]
        return moved

    def uncordon_node(self, name: str) -> dict[str, Any]:
        """Undo a drain (e.g. one that could not complete): the node takes work again and keeps what runs."""
        desc = self.spec.nodes.get(name)
        if desc is None:
            raise KeyError(name)
        cluster = self.clusters[desc.cluster_id]
        was = cluster.drain_status(name)
        kept = cluster.uncordon(name)
        return {"name": name, "was": was["state"], "kept": len(kept)}

    def drain_status(self, name: str) -> dict[str, Any] | None:
        desc = self.spec.nodes.get(name)
        cluster = self.clusters.get(desc.cluster_id) if desc is not None else None
        return cluster.drain_status(name) if cluster is not None else None

    def hang_node_agent(self, name: str, hung: bool = True) -> None:
        """A hung (or partitioned) node agent: connected, but silent. Only missed heartbeats reveal it."""
        agent = self.nodes[name]
        agent.membership.pause() if hung else agent.membership.resume()

    async def restart_cluster(self, cid: str) -> ClusterAgent:
        """Stop a cluster agent and start a fresh one with the same identity (state is re-learnt)."""
        old = self.clusters.pop(cid)
        await old.stop()
        return await self.start_cluster(cid)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_sim_event(self, event: SimEvent) -> None:
        if event.kind == EventKind.NODE_DOWN and event.node in self.nodes:
            self._spawn(self._node_agent_dies(event.node))
        elif event.kind == EventKind.NODE_UP and event.node not in self.nodes:
            self._spawn(self.start_node(event.node))

    async def _node_agent_dies(self, name: str) -> None:
        agent = self.nodes.pop(name, None)
        if agent is not None:
            await agent.stop()

    # -- views --------------------------------------------------------------------------------------
    def hierarchy(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cid, cl in self.clusters.items():
            members = {self._node_name(c.jid, c.agent_id): c.alive for c in cl.children.children()}
            out[cid] = {"registered": cl.upstream is not None and cl.upstream.connected, "nodes": members}
        return out

    def _node_name(self, jid: str, agent_id: str = "") -> str:
        for name in self.spec.nodes:
            if self.jid("node", name) == jid:
                return name
        # a device behind a gateway: its membership key is no node's JID, its agent id is its name
        return agent_id if self.devices is not None and agent_id in self.devices.devices else jid
