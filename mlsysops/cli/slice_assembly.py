"""The composition root: how one slice's agents, mechanisms and substrate views are built and wired.

`mlsysops up` (`SliceRuntime`: every agent in one process) and `mlsysops agent` (one agent per process)
both build their agents here, so an agent is wired the same way whichever launcher runs it: the same
JIDs and settings, the placement mechanism of the slice's substrate, the same Kubernetes views (the
continuum's MLSysOpsApp mirror, a cluster's Node inventory and status writer). The launchers differ only in
where the simulated continuum runs (in this process, or behind `mlsysops sim serve`) and in who owns the
lifetimes: the runtime keeps mechanisms and clients across agent restarts, a process closes them on exit.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlsysops.agents.managed_agent import AgentSettings, scaled
from mlsysops.agents.slice_config import SliceSpec, SubstrateConfig
from mlsysops.agents.trust import NodeTrust, TrustWeights
from mlsysops.agents.xmpp_tls import TlsVerification
from mlsysops.cluster.agent import ClusterAgent
from mlsysops.continuum.agent import ContinuumAgent
from mlsysops.node.agent import NodeAgent

PASSWORD_ENV = "MLSYSOPS_XMPP_PASSWORD"


class PasswordError(ValueError):
    """An agent's XMPP password is configured but missing or empty."""


def configured_password(spec: SliceSpec) -> str | None:
    """The slice's `xmpp.password`/`password_env`/`password_file`, else `$MLSYSOPS_XMPP_PASSWORD`; None when
    no source is named. A named source that is unset or empty is an error: never a silent default."""
    xc = spec.config.xmpp
    if xc.password_env is not None:
        where = f"${xc.password_env} (xmpp.password_env)"
    elif xc.password_file is not None:
        where = f"{xc.password_file} (xmpp.password_file)"
    elif xc.password is not None:
        where = "xmpp.password"
    elif PASSWORD_ENV in os.environ:
        return _non_empty(os.environ[PASSWORD_ENV], f"${PASSWORD_ENV}")
    else:
        return None
    try:
        value = xc.resolve_password()
    except OSError as exc:
        raise PasswordError(f"XMPP password file {xc.password_file}: {exc.strerror}") from exc
    if value is None:
        raise PasswordError(f"XMPP password: {where} is not set")
    return _non_empty(value, where)


def account_password(password_dir: Path, jid: str) -> str:
    """The password `mlsysops xmpp accounts` wrote for `jid` (file named by its local part)."""
    path = password_dir / jid.split("@", 1)[0]
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PasswordError(f"XMPP password of {jid}: {path}: {exc.strerror} (xmpp.password_dir; "
                            f"`mlsysops xmpp accounts` writes one file per agent)") from exc
    return _non_empty(value, f"{path} (xmpp.password_dir)")


def _non_empty(value: str, where: str) -> str:
    if not value.strip():
        raise PasswordError(f"XMPP password: {where} is empty")
    return value


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
    mechanisms = getattr(cfg.mechanisms, layer)
    return AgentSettings(heartbeat=iv.heartbeat, liveness_misses=iv.liveness_misses, monitor=iv.monitor,
                         analyze=iv.analyze, execute_timeout=iv.execute_timeout, status_report=iv.status_report,
                         eviction_timeout=iv.eviction_timeout, node_grace=iv.node_grace,
                         disruption_fraction=iv.disruption_fraction, disruption_limit=iv.disruption_limit,
                         max_heartbeat_rate=iv.max_heartbeat_rate,
                         policies=[f"mlsysops.policies.{n}" if "." not in n else n for n in plugins.enabled or []],
                         policy_dirs=[Path(d) for d in plugins.directories],
                         policy_settings=dict(plugins.settings),
                         mechanism_dirs=[Path(d) for d in mechanisms.directories],
                         mechanism_names=list(mechanisms.enabled) if mechanisms.enabled is not None else None,
                         state_dir=(state_dir / layer) if state_dir else None,
                         slice_name=cfg.slice, digest_interval=cfg.telemetry.digest_interval,
                         telemetry_history=cfg.telemetry.history,
                         prometheus=layer == "continuum" or cfg.telemetry.prometheus_port is not None,
                         otlp_endpoint=cfg.telemetry.otlp_endpoint, otlp_interval=cfg.telemetry.otlp_interval)


def default_state_dir(spec: SliceSpec) -> Path:
    state = getattr(spec, "state_dir", None)
    if state:
        return Path(state)
    return Path(os.path.expanduser("~/.mlsysops")) / spec.config.slice


def api_tokens(spec: SliceSpec, state_dir: Path) -> tuple[dict[str, Any], Path | None]:
    """The REST API's bearer tokens: configured ones, else a generated dev admin token (and its file).
    Raises `TokenError` (a bad token file) for the launcher to report."""
    from mlsysops.continuum.api_auth import Role, configured_tokens, dev_token

    tokens = configured_tokens(spec.config.api.token_file)
    if tokens:
        return tokens, None
    token, token_file = dev_token(state_dir)
    return {token: Role.admin}, token_file


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


@dataclass
class ClusterViews:
    """A cluster agent's Kubernetes views: the Node inventory and the MLSysOpsCluster/Node status writer."""

    inventory: Any
    writer: Any
    listed: bool = True   # the inventory's first list succeeded (else it keeps retrying in the background)

    async def stop(self) -> None:
        await self.inventory.stop()
        await self.writer.stop()


@dataclass
class SliceAssembly:
    """Builds the agents of one slice. `xmpp_port` may be set after construction (an embedded server picks
    its port when it starts); `overrides` replace AgentSettings fields per layer (`"all"` for every layer).

    Passwords: `password` (one process, one agent: `mlsysops agent`) is used for every agent built here;
    without it each JID gets a generated password, kept in memory (`passwords`) for the lifetime of the
    assembly so a restarted agent logs in again; the launcher gives them to its XMPP server."""

    spec: SliceSpec
    domain: str = ""
    password: str = ""
    suffix: str = ""
    state_dir: Path | None = None
    xmpp_port: int | None = None
    force_xmpp: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        xc = self.spec.config.xmpp
        self.domain = self.domain or xc.domain or xc.host or "localhost"

    def password_for(self, jid: str) -> str:
        """This agent's password: the given one, else its file in the slice's `xmpp.password_dir`, else one
        generated for the JID (stable across restarts)."""
        if self.password:
            return self.password
        if jid not in self.passwords and self.spec.config.xmpp.password_dir is not None:
            self.passwords[jid] = account_password(self.spec.config.xmpp.password_dir, jid)
        return self.passwords.setdefault(jid, secrets.token_urlsafe(24))

    def all_jids(self) -> list[str]:
        """Every agent JID of the slice as configured now (continuum, clusters, nodes)."""
        return [self.jid("continuum", self.spec.continuum.continuum_id),
                *(self.jid("cluster", cid) for cid in self.spec.clusters),
                *(self.jid("node", name) for name in self.spec.nodes)]

    @property
    def substrate(self) -> str:
        return self.spec.config.substrate.type

    @property
    def namespace(self) -> str:
        return workload_namespace(self.spec)

    def jid(self, role: str, name: str) -> str:
        return agent_jid(role, name, self.domain, self.suffix)

    def settings(self, layer: str) -> AgentSettings:
        base = layer_settings(self.spec, layer, self.state_dir)
        # overrides are real seconds (what a test or benchmark asks for); the slice's own, simulated ones
        base = scaled(base, self.time_scale)
        return replace(base, **self.overrides.get(layer, {}), **self.overrides.get("all", {}))

    @property
    def time_scale(self) -> float:
        sub = self.spec.config.substrate
        return sub.time_scale if sub.type == "sim" else 1.0

    def _connection(self) -> dict[str, Any]:
        return {"port": self.xmpp_port, "force_xmpp": self.force_xmpp,
                "tls": TlsVerification.for_slice(self.spec.config.xmpp)}

    # -- agents -------------------------------------------------------------------------------------
    def continuum_agent(self) -> ContinuumAgent:
        cont = self.spec.continuum
        jid = self.jid("continuum", cont.continuum_id)
        return ContinuumAgent(jid, self.password_for(jid), description=cont,
                              cluster_jids={cid: self.jid("cluster", cid) for cid in self.spec.clusters},
                              inventory=self.spec.inventory, settings=self.settings("continuum"),
                              **self._connection())

    def cluster_agent(self, cid: str, placement: Any, traffic: Any = None) -> ClusterAgent:
        """The cluster agent over `placement` (a mechanism from `placement_for`, possibly reused across
        restarts of the agent: each agent binds it to its own app models when it registers it) and
        `traffic` (from `traffic_for`; None: this cluster cannot route calls to other clusters)."""
        nodes = {n.name: n for n in self.spec.cluster_nodes(cid)}
        jid = self.jid("cluster", cid)
        agent = ClusterAgent(jid, self.password_for(jid), description=self.spec.clusters[cid],
                             nodes=nodes, node_jids={n: self.jid("node", n) for n in nodes}, placement=placement,
                             parent=self.jid("continuum", self.spec.continuum.continuum_id),
                             settings=self.settings("cluster"),
                             trust=NodeTrust(TrustWeights.from_mapping(self.spec.config.trust, "trust")),
                             traffic=traffic, **self._connection())
        return agent

    def node_agent(self, name: str, substrate: Any, device_gateway: Any = None) -> NodeAgent:
        """A node agent observing `substrate` (the simulator, in process or remote, or the host). On
        Kubernetes the cluster reads instance status from the API server, so nodes report metrics only."""
        desc = self.spec.nodes[name]
        cid = desc.cluster_id or next(c for c in self.spec.clusters if name in self.spec.clusters[c].nodes)
        jid = self.jid("node", name)
        return NodeAgent(jid, self.password_for(jid), description=desc, substrate=substrate,
                         parent=self.jid("cluster", cid), settings=self.settings("node"),
                         report_instances=self.substrate != "kubernetes", device_gateway=device_gateway,
                         **self._connection())

    # -- mechanisms ---------------------------------------------------------------------------------
    def placement_for(self, cid: str, *, sim: Any = None, sim_url: str | None = None, kube_api: Any = None) -> Any:
        """A cluster's placement mechanism: Kubernetes (`kube_api`), the simulator in this process (`sim`)
        or behind `mlsysops sim serve` (`sim_url`)."""
        if self.substrate == "kubernetes":
            from mlsysops.mechanisms.kube_placement import KubePlacementMechanism

            return KubePlacementMechanism(kube_api, self.namespace, cid)
        if sim is not None:
            from mlsysops.mechanisms.sim_placement import SimPlacementMechanism

            return SimPlacementMechanism(sim, cid)
        if sim_url is None:
            raise ValueError(f"cluster {cid}: a simulator (in process or its URL) is needed on substrate sim")
        from mlsysops.mechanisms.remote_sim_placement import RemoteSimPlacementMechanism

        return RemoteSimPlacementMechanism(sim_url, cid)

    def traffic_for(self, cid: str, *, sim: Any = None, kube_api: Any = None) -> Any:
        """A cluster's `traffic_routes` mechanism: Services + EndpointSlices on Kubernetes, routes in the
        simulator in this process; None behind `mlsysops sim serve` (its HTTP API has no routes yet)."""
        if self.substrate == "kubernetes":
            from mlsysops.mechanisms.kube_traffic import KubeTrafficMechanism

            return KubeTrafficMechanism(kube_api, self.namespace, cid)
        if sim is not None:
            from mlsysops.mechanisms.sim_traffic import SimTrafficMechanism

            return SimTrafficMechanism(sim, cid)
        return None

    def karmada_dispatch(self, api: Any, cont: ContinuumAgent) -> Any:
        """The Karmada mechanism on the continuum's own tables; `overrides` from the continuum's
        mechanism settings (`karmada_placement: {overrides: {cluster: {image_registry, max_replicas}}}`)."""
        from mlsysops.mechanisms.karmada_placement import KarmadaPlacementMechanism
        from mlsysops.substrates.kubernetes.karmada import ClusterOverride

        settings = self.spec.config.mechanisms.continuum.settings.get("karmada_placement", {})
        overrides = {c: ClusterOverride.from_settings(v) for c, v in (settings.get("overrides") or {}).items()}
        return KarmadaPlacementMechanism(api, cont.apps.get, namespace=self.namespace, overrides=overrides,
                                         assignments=cont.assignments, save=cont.save_assignments)

    # -- Kubernetes views ---------------------------------------------------------------------------
    def app_mirror(self, api: Any, namespace: str | None = None) -> Any:
        """The continuum's MLSysOpsApp custom resources (started): in `namespace`, else the workload's."""
        from mlsysops.continuum.kube_app_mirror import AppStatusMirror

        mirror = AppStatusMirror(api, namespace or self.namespace)
        mirror.start()
        return mirror

    async def cluster_views(self, cid: str, api: Any, namespace: str | None = None) -> ClusterViews:
        """Kubernetes Nodes merged with the descriptions (for policies and the decision log) and the writer
        of the MLSysOpsCluster/MLSysOpsNode `.status` on the description CRs (both started)."""
        from mlsysops.cluster.kube_inventory import NodeInventory
        from mlsysops.cluster.kube_status_writer import StatusWriter

        inventory = NodeInventory(api, cid, {n.name: n for n in self.spec.cluster_nodes(cid)})
        listed = await inventory.start()
        writer = StatusWriter(api, namespace or self.namespace)
        writer.start()
        return ClusterViews(inventory, writer, bool(listed))

    @staticmethod
    def attach_cluster_views(agent: ClusterAgent, views: ClusterViews) -> None:
        agent.attach_inventory(views.inventory)
        agent.attach_status_writer(views.writer)
