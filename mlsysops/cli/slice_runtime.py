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
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlsysops.agents.descriptions import Document, load_file
from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.agents.slice_config import SliceSpec, SubstrateConfig
from mlsysops.agents.xmpp_server import EmbeddedXMPPServer
from mlsysops.cluster.agent import ClusterAgent
from mlsysops.continuum.agent import ContinuumAgent
from mlsysops.mechanisms.sim_placement import SimPlacementMechanism, sim_node_spec
from mlsysops.node.agent import NodeAgent
from mlsysops.node.substrate import SimNodeSubstrate
from mlsysops.sim import EventKind, SimClock, SimContinuum, SimEvent

log = logging.getLogger(__name__)
DEV_PASSWORD = "mlsysops-dev"


def _jid_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text.lower())


def agent_jid(role: str, name: str, domain: str, suffix: str = "") -> str:
    """The slice's naming scheme: every process derives the same JIDs from the slice config."""
    return f"{role}-{_jid_part(name)}{suffix}@{domain}"


def layer_settings(spec: SliceSpec, layer: str, state_dir: Path | None = None) -> AgentSettings:
    """Agent settings for one layer from the slice config (intervals, policies, state directory)."""
    cfg = spec.config
    iv = cfg.intervals
    plugins = getattr(cfg.policies, layer)
    return AgentSettings(heartbeat=iv.heartbeat, liveness_misses=iv.liveness_misses, monitor=iv.monitor,
                         analyze=iv.analyze, execute_timeout=iv.execute_timeout, status_report=iv.status_report,
                         policies=[f"policies.{n}" if "." not in n else n for n in plugins.enabled or []],
                         policy_dirs=[Path(d) for d in plugins.directories],
                         policy_settings=dict(plugins.settings),
                         state_dir=(state_dir / layer) if state_dir else None,
                         slice_name=cfg.slice, digest_interval=cfg.telemetry.digest_interval,
                         telemetry_history=cfg.telemetry.history,
                         prometheus=layer == "continuum" or cfg.telemetry.prometheus_port is not None,
                         otlp_endpoint=cfg.telemetry.otlp_endpoint, otlp_interval=cfg.telemetry.otlp_interval)


class SliceRuntime:
    def __init__(self, spec: SliceSpec, *, xmpp_port: int | None = None, xmpp_domain: str | None = None,
                 force_xmpp: bool = False, jid_suffix: str = "", state_dir: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> None:
        self.spec = spec
        cfg = spec.config
        self.force_xmpp = force_xmpp
        self.xmpp_port = xmpp_port
        self.domain = xmpp_domain or cfg.xmpp.domain or cfg.xmpp.host or "localhost"
        self.password = (cfg.xmpp.resolve_password() if hasattr(cfg.xmpp, "resolve_password") else None) \
            or DEV_PASSWORD
        self.suffix = jid_suffix
        self.state_dir = state_dir
        self.overrides = overrides or {}
        self.server: EmbeddedXMPPServer | None = None
        self.sim: SimContinuum | None = None
        self.continuum: ContinuumAgent | None = None
        self.clusters: dict[str, ClusterAgent] = {}
        self.nodes: dict[str, NodeAgent] = {}
        self.placements: dict[str, Any] = {}
        self.kube = cfg.substrate.type == "kubernetes"
        self.karmada = cfg.substrate.type == "karmada"
        self.karmada_api: Any = None              # kubernetes.aio ApiClient of the Karmada API server
        self.kube_clients: dict[str, Any] = {}    # cluster id -> kubernetes.aio ApiClient
        self.kube_api: Any = None                 # the runtime's own client (namespace, sim kubelets)
        self.kubelet: Any = None                  # SimKubelet (kubernetes + simulate_nodes)
        self.app_mirror: Any = None               # AppStatusMirror (kubernetes): MLSysOpsApp CRs
        self.inventories: dict[str, Any] = {}     # cluster id -> NodeInventory (kubernetes)
        self.status_writers: dict[str, Any] = {}  # cluster id -> StatusWriter (MLSysOpsCluster/Node status)
        self.namespace = workload_namespace(spec)
        self._sim_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- identities ---------------------------------------------------------------------------------
    def jid(self, role: str, name: str) -> str:
        return agent_jid(role, name, self.domain, self.suffix)

    def settings(self, layer: str) -> AgentSettings:
        base = layer_settings(self.spec, layer, self.state_dir)
        return replace(base, **self.overrides.get(layer, {}), **self.overrides.get("all", {}))

    def _agent_kwargs(self) -> dict[str, Any]:
        return {"port": self.xmpp_port, "force_xmpp": self.force_xmpp}

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start_server(self) -> None:
        if self.xmpp_port is not None:
            return
        workdir = Path(tempfile.mkdtemp(prefix="mlsysops-xmpp-"))
        self.server = EmbeddedXMPPServer(workdir=workdir, domain=self.domain)
        await self.server.start()
        self.xmpp_port = self.server.port

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
            self.sim = SimContinuum.from_specs([sim_node_spec(n) for n in self.spec.nodes.values()], seed=seed,
                                               clock=SimClock.realtime())
            self.sim.subscribe(self._on_sim_event)
            self._sim_task = asyncio.create_task(self.sim.run(interval=0.05), name="sim")
        if self.kube and self.simulated:
            from mlsysops.sim.kubelet import SimKubelet

            # Leases every 10 s: the node lifecycle controller's grace period is 40 s.
            self.kubelet = SimKubelet(self.sim, self.kube_api)
            await self.kubelet.start()
        await self.start_continuum()
        # Sequential starts: pyjabber mis-routes stanzas when many sessions open at once.
        for cid in self.spec.clusters:
            await self.start_cluster(cid)
        if self.simulated:
            for name in self.spec.nodes:
                await self.start_node(name)

    async def start_kube(self) -> None:
        """One ApiClient per cluster (all from the slice's kubeconfig), and the workload namespace."""
        sub = self.spec.config.substrate
        self.kube_api = await kube_connect(sub)
        await ensure_namespace(self.kube_api, self.namespace)
        await self._apply_descriptions()
        for cid in self.spec.clusters:
            self.kube_clients[cid] = await kube_connect(sub)

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
        cont = self.spec.continuum
        self.continuum = ContinuumAgent(
            self.jid("continuum", cont.continuum_id), self.password, description=cont,
            cluster_jids={cid: self.jid("cluster", cid) for cid in self.spec.clusters},
            inventory=self.spec.inventory, settings=self.settings("continuum"), **self._agent_kwargs())
        if self.kube or self.karmada:   # one MLSysOpsApp custom resource per app, with status
            if self.app_mirror is None:
                from mlsysops.continuum.kube_app_mirror import AppStatusMirror

                # on Karmada in its API server: the operator's view of the apps, next to their policies
                self.app_mirror = AppStatusMirror(self.kube_api or self.karmada_api, self.namespace)
                self.app_mirror.start()
            self.continuum.attach_app_mirror(self.app_mirror)
        if self.karmada:
            self.continuum.use_dispatch(self._karmada_dispatch(self.continuum))
        await self.continuum.start_agent()
        return self.continuum

    def _karmada_dispatch(self, cont: ContinuumAgent) -> Any:
        return karmada_dispatch(self.spec, self.karmada_api, self.namespace, cont)

    async def restart_continuum(self) -> ContinuumAgent:
        """Stop the continuum agent and start a fresh one: it reloads the desired state from SQLite."""
        await self.continuum.stop()
        return await self.start_continuum()

    async def start_cluster(self, cid: str) -> ClusterAgent:
        desc = self.spec.clusters[cid]
        nodes = {n.name: n for n in self.spec.cluster_nodes(cid)}
        mech = self.placements.get(cid) or self._placement(cid)
        self.placements[cid] = mech
        agent = ClusterAgent(self.jid("cluster", cid), self.password, description=desc, nodes=nodes,
                             node_jids={n: self.jid("node", n) for n in nodes}, placement=mech,
                             parent=str(self.continuum.jid.bare), settings=self.settings("cluster"),
                             **self._agent_kwargs())
        await agent.start_agent()
        if self.kube:   # Kubernetes Nodes merged with the descriptions, for policies and the decision log
            inv = self.inventories.get(cid)
            if inv is None:
                from mlsysops.cluster.kube_inventory import NodeInventory

                inv = self.inventories[cid] = NodeInventory(self.kube_clients[cid], cid, nodes)
                await inv.start()
            agent.attach_inventory(inv)
            writer = self.status_writers.get(cid)
            if writer is None:
                from mlsysops.cluster.kube_status_writer import StatusWriter

                writer = self.status_writers[cid] = StatusWriter(self.kube_clients[cid], self.namespace)
                writer.start()
            agent.attach_status_writer(writer)
        self.clusters[cid] = agent
        return agent

    def _placement(self, cid: str) -> Any:
        if self.kube:
            from mlsysops.mechanisms.kube_placement import KubePlacementMechanism

            return KubePlacementMechanism(self.kube_clients[cid], self.namespace, cid)
        return SimPlacementMechanism(self.sim, cid)   # bound to each cluster agent's apps when it registers it

    async def start_node(self, name: str) -> NodeAgent:
        desc = self.spec.nodes[name]
        cid = desc.cluster_id or next(c for c in self.spec.clusters if name in self.spec.clusters[c].nodes)
        agent = NodeAgent(self.jid("node", name), self.password, description=desc,
                          substrate=SimNodeSubstrate(self.sim, name), parent=self.jid("cluster", cid),
                          settings=self.settings("node"), report_instances=not self.kube,
                          **self._agent_kwargs())
        await agent.start_agent()
        self.nodes[name] = agent
        return agent

    async def stop(self) -> None:
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
        for closing in [*self.inventories.values(), *self.status_writers.values(),
                        *([self.app_mirror] if self.app_mirror else [])]:
            try:
                await asyncio.wait_for(closing.stop(), timeout=5)
            except Exception:   # noqa: BLE001 - shutting down: log and go on
                log.exception("stopping %s failed", type(closing).__name__)
        self.inventories.clear()
        self.status_writers.clear()
        self.app_mirror = None
        if self.kubelet is not None:
            try:
                await asyncio.wait_for(self.kubelet.stop(), timeout=5)
            except Exception:   # noqa: BLE001
                log.exception("stopping the sim kubelet failed")
            self.kubelet = None
        if self._sim_task is not None:
            self._sim_task.cancel()
        for api in [*self.kube_clients.values(), *(a for a in (self.kube_api, self.karmada_api) if a is not None)]:
            try:
                await api.close()
            except Exception:   # noqa: BLE001
                log.exception("closing a Kubernetes client failed")
        self.kube_clients.clear()
        self.kube_api = self.karmada_api = None
        if self.server is not None:
            await self.server.stop()

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
        if self.kubelet is not None:
            self.kubelet.nodes.append(desc.name)
            await self.kubelet.register_node(desc.name)
        self.clusters[desc.cluster_id].add_node(desc, self.jid("node", desc.name))
        self.continuum.cluster_nodes.setdefault(desc.cluster_id, {})[desc.name] = desc
        return await self.start_node(desc.name)

    async def remove_node(self, name: str, timeout: float = 30.0) -> int:
        """Drain a node (its components move away first), then power it off and forget it.
        Returns how many instances were relocated; raises TimeoutError if the drain does not finish."""
        desc = self.spec.nodes.get(name)
        if desc is None:
            raise KeyError(name)
        cluster = self.clusters[desc.cluster_id]
        moved = len(cluster.cordon(name))
        deadline = asyncio.get_running_loop().time() + timeout
        while not cluster.drained(name):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"node {name} still hosts components after {timeout:g}s")
            await asyncio.sleep(0.05)
        agent = self.nodes.pop(name, None)
        if agent is not None:
            await agent.stop()
        self.sim.crash_node(name)      # powered off; the simulator has no notion of a node leaving
        cluster.forget_node(name)
        self.continuum.cluster_nodes.get(desc.cluster_id, {}).pop(name, None)
        del self.spec.nodes[name]
        return moved

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
            members = {self._node_name(c.jid): c.alive for c in cl.children.children()}
            out[cid] = {"registered": cl.upstream is not None and cl.upstream.connected, "nodes": members}
        return out

    def _node_name(self, jid: str) -> str:
        for name in self.spec.nodes:
            if self.jid("node", name) == jid:
                return name
        return jid


def karmada_dispatch(spec: SliceSpec, api: Any, namespace: str, cont: ContinuumAgent) -> Any:
    """The Karmada mechanism on the continuum's own tables; `overrides` from the continuum's
    mechanism settings (`karmada_placement: {overrides: {cluster: {image_registry, max_replicas}}}`)."""
    from mlsysops.mechanisms.karmada_placement import KarmadaPlacementMechanism
    from mlsysops.substrates.kubernetes.karmada import ClusterOverride

    settings = spec.config.mechanisms.continuum.settings.get("karmada_placement", {})
    overrides = {c: ClusterOverride.from_settings(v) for c, v in (settings.get("overrides") or {}).items()}
    return KarmadaPlacementMechanism(api, cont.apps.get, namespace=namespace, overrides=overrides,
                                     assignments=cont.assignments, save=cont.save_assignments)


def workload_namespace(spec: SliceSpec) -> str:
    """Where app components run: the cluster mechanism setting (deploy render) or substrate.namespace."""
    setting = spec.config.mechanisms.cluster.settings.get("component_placement", {}).get("namespace")
    return str(setting or spec.config.substrate.namespace)


class SubstrateError(RuntimeError):
    """The configured Kubernetes substrate cannot be reached or set up."""


async def kube_connect(sub: SubstrateConfig) -> Any:
    """An ApiClient for the slice's cluster: the kubeconfig (+ context), or the pod's service account."""
    from kubernetes.aio import client as k
    from kubernetes.aio import config as kcfg

    from mlsysops.substrates.kubernetes.client import connect

    if sub.kubeconfig is None:
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise SubstrateError("substrate.kubeconfig is required outside a Kubernetes pod")
        conf = k.Configuration()
        kcfg.load_incluster_config(client_configuration=conf)
        return k.ApiClient(configuration=conf)
    if not Path(sub.kubeconfig).is_file():
        raise SubstrateError(f"substrate.kubeconfig: {sub.kubeconfig} is not a file")
    try:
        return await connect(str(sub.kubeconfig), sub.context)
    except Exception as exc:   # the loader raises ConfigException, ValueError, ... on a bad file/context
        raise SubstrateError(f"substrate.kubeconfig {sub.kubeconfig}"
                             f"{f' (context {sub.context})' if sub.context else ''}: {exc}") from exc


async def ensure_namespace(api: Any, namespace: str) -> None:
    """Create the workload namespace if missing (an existing one, or a lost race, is fine)."""
    from kubernetes.aio import client as k

    from mlsysops.substrates.kubernetes.client import KubeError, call

    core = k.CoreV1Api(api)
    try:
        await call(core.read_namespace, namespace)
        return
    except KubeError as exc:
        if not exc.not_found:
            raise SubstrateError(f"cannot read namespace {namespace}: {exc}") from exc
    try:
        await call(core.create_namespace, {"metadata": {"name": namespace,
                                                        "labels": {"app.kubernetes.io/managed-by": "mlsysops"}}})
    except KubeError as exc:
        if not exc.conflict:
            raise SubstrateError(f"cannot create namespace {namespace}: {exc}") from exc


def default_state_dir(spec: SliceSpec) -> Path:
    state = getattr(spec, "state_dir", None)
    if state:
        return Path(state)
    return Path(os.path.expanduser("~/.mlsysops")) / spec.config.slice
