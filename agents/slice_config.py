"""Slice configuration: one YAML file describing one slice, and its resolved infrastructure.

A ten-line file is enough; everything else has defaults::

    slice: demo
    clusters: [demo/clusters.yaml]
    nodes: [demo/nodes/*.yaml]

``load_slice(path)`` validates the file, loads every description it references (paths and globs are
relative to the slice file; entries may also be inline descriptions in either form), cross-checks
membership and returns a ``SliceSpec``. Rules:
- any referenced file may hold any infrastructure kinds (continuum, clusters, nodes, datacenters);
  applications are not part of a slice config;
- a node belongs to the cluster named by its ``cluster_id``; a cluster's non-empty ``nodes`` list must
  agree with that (an empty list is filled in from the nodes); a node without ``cluster_id`` is assigned
  to the one cluster that lists it, with a warning;
- without a continuum description one is derived (``continuum_id`` = slice name, all clusters);
- durations (``1s``, ``500ms``) become float seconds; relative paths become absolute.
Errors use the descriptions' ``DescriptionError``/``ValidationIssue`` (file + field path + message).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mlsysops.agents.descriptions import (
    Description,
    DescriptionError,
    Document,
    Inventory,
    MLSysOpsApp,
    MLSysOpsCluster,
    MLSysOpsContinuum,
    MLSysOpsDatacenter,
    MLSysOpsNode,
    ValidationIssue,
    load_file,
    load_obj,
    parse_duration,
    validate_spec,
)
from mlsysops.agents.descriptions.errors import did_you_mean
from mlsysops.agents.descriptions.storage_intents import StorageSite
from mlsysops.agents.descriptions.yaml_reader import read_documents
from mlsysops.agents.trust import TrustWeights

LAYERS = ("continuum", "cluster", "node", "far_edge")

Seconds = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}]}),
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class XmppConfig(_Config):
    server: Literal["embedded", "external"] = Field(
        "embedded", description="Start an embedded server or use one."
    )
    host: str = Field("localhost", description="Server address (external) or bind host (embedded).")
    domain: str | None = Field(None, description="XMPP domain of the agents' JIDs; defaults to host.")
    port: int | None = Field(
        None, ge=0, le=65535, description="Client port; embedded default 0 = any free port."
    )
    password: str | None = Field(None, description="Agents' password (prefer password_env or password_file).")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_file: Path | None = Field(None, description="File holding the password (relative to the slice).")
    password_dir: Path | None = Field(
        None, description="Directory with one file per agent, named by its JID's local part (e.g. "
                          "`cluster-edge-1`), holding that agent's password (relative to the slice). Written by "
                          "`mlsysops xmpp accounts`; takes precedence over the shared password sources.")
    ca_file: Path | None = Field(
        None, description="PEM bundle the server's certificate must chain to (relative to the slice); the "
                          "certificate must name the XMPP domain.")
    insecure_skip_tls_verify: bool = Field(
        False, description="Do not verify an external server's certificate (the channel stays encrypted). "
                           "External servers are verified by default: against ca_file, else the system store.")

    @model_validator(mode="after")
    def _defaults(self) -> XmppConfig:
        if sum(x is not None for x in (self.password, self.password_env, self.password_file,
                                       self.password_dir)) > 1:
            raise ValueError("give at most one of password, password_env, password_file, password_dir")
        if self.domain is None:
            self.domain = self.host
        if self.port is None:
            self.port = 0 if self.server == "embedded" else 5222
        return self

    def resolve_password(self) -> str | None:
        """The password from whichever source is configured (None when none is)."""
        if self.password is not None:
            return self.password
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return None


class ClusterAPIServer(_Config):
    kubeconfig: Path = Field(description="Kubeconfig file of this member cluster's own API server, relative to "
                                         "the slice.")
    context: str | None = Field(None, description="Kubeconfig context (default: its current context).")


class SubstrateConfig(_Config):
    type: Literal["sim", "kubernetes", "karmada"] = Field("sim", description="What the mechanisms act on.")
    seed: int | None = Field(42, description="Random seed of the simulated continuum.")
    time_scale: float = Field(1.0, gt=0, le=1000, description=(
        "sim only: simulated seconds per real second. The simulator's clock and every agent duration "
        "(heartbeat, monitor, analyze and each policy's own analyze_interval, status report, digest, "
        "eviction, node grace) run this much faster, each down to a real-time floor, so a scenario plays "
        "out faster than real time with the same decisions (measured: up to 50x)."))
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file (kubernetes/karmada), relative to the slice. Required outside a "
                          "cluster; omitted, agents running in a pod use their service account. For karmada "
                          "it (with `context`) names the Karmada API server, not a member cluster.")
    context: str | None = Field(None, description="Kubeconfig context (default: its current context; for "
                                                  "karmada typically karmada-apiserver).")
    namespace: str = Field(
        "mlsysops-apps", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace the cluster agents run app components in (kubernetes), or of the resource "
                    "templates and policies in the Karmada API server (karmada); created if missing.")
    clusters: dict[str, ClusterAPIServer] = Field(default_factory=dict, description=(
        "kubernetes only: clusters with an API server of their own (cluster id -> kubeconfig/context); a "
        "cluster not listed uses `kubeconfig`. Calls between components in different API servers go "
        "through the traffic routes (export NodePort Services, EndpointSlices)."))
    simulate_nodes: bool = Field(
        False, description="kubernetes: keep the simulated continuum and run its nodes as simulated kubelets "
                           "against the API server (a KWOK-like mode: a real control plane, no real nodes).")

    @model_validator(mode="after")
    def _kube_only(self) -> SubstrateConfig:
        if self.type == "sim" and (self.kubeconfig or self.context or self.simulate_nodes):
            raise ValueError("kubeconfig, context and simulate_nodes need type kubernetes (or karmada)")
        if self.type == "karmada" and self.simulate_nodes:
            raise ValueError("simulate_nodes needs type kubernetes")
        if self.clusters and self.type != "kubernetes":
            raise ValueError("clusters (an API server per cluster) needs type kubernetes")
        return self

    def for_cluster(self, cluster: str) -> SubstrateConfig:
        """This substrate as seen by one cluster: its own API server when it has one."""
        own = self.clusters.get(cluster)
        if own is None:
            return self
        return self.model_copy(update={"kubeconfig": own.kubeconfig, "context": own.context, "clusters": {}})


class LayerPlugins(_Config):
    enabled: list[str] | None = Field(None, description="Plugin names; None = the layer's built-ins.")
    directories: list[Path] = Field(default_factory=list, description="Extra plugin directories.")
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per-plugin settings.")


class PerLayer(_Config):
    continuum: LayerPlugins = Field(default_factory=LayerPlugins)
    cluster: LayerPlugins = Field(default_factory=LayerPlugins)
    node: LayerPlugins = Field(default_factory=LayerPlugins)
    far_edge: LayerPlugins = Field(default_factory=LayerPlugins)

    def for_layer(self, layer: str) -> LayerPlugins:
        return getattr(self, layer)


class Intervals(_Config):
    heartbeat: Seconds = 1.0
    liveness_misses: int = Field(3, ge=1, description="Missed heartbeats before a child is declared dead.")
    monitor: Seconds = 1.0
    analyze: Seconds = 2.0
    execute_timeout: Seconds = 10.0
    status_report: Seconds = 1.0
    eviction_timeout: Seconds = Field(30.0, description="How long a lost cluster agent keeps its components.")
    node_grace: Seconds = Field(10.0, description="How long a lost node agent keeps the instances that still run "
                                                  "on its node (a restart evicts nothing).")
    disruption_fraction: float = Field(0.6, gt=0, le=1.0, description="Share of a parent's children lost at "
                                       "once that makes it suspect itself and relocate nothing (full disruption).")
    disruption_limit: Seconds | None = Field(None, description="How long a full disruption holds losses back "
                                             "(default: 10 liveness periods, at least 30 s).")
    max_heartbeat_rate: float = Field(200.0, gt=0, description="Heartbeats per second a parent asks of all its "
                                      "children together: past heartbeat x this many children the interval "
                                      "grows in whole multiples (crashes are still seen at once, by presence).")


class TelemetryConfig(_Config):
    prometheus_port: int | None = Field(
        None, ge=0, le=65535,
        description="Agents run one per process expose /metrics on this port (0 = any free port). The "
                    "continuum always serves /metrics on the API server.")
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP collector, e.g. http://collector:4318.")
    otlp_interval: Seconds = Field(10.0, description="OTLP push interval (the export timeout is at most this).")
    digest_interval: Seconds = Field(5.0, description="Cluster -> continuum telemetry digest interval.")
    history: Seconds = Field(900.0, description="Slice-wide telemetry history the continuum keeps.")
    metrics_auth: bool = Field(False, description="Require a read token on the continuum's /metrics.")


class ApiConfig(_Config):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    token_file: Path | None = Field(None, description="Bearer token file (relative to the slice).")
    original_cli: bool = Field(
        False, description="Admit the original MLSysOps `mls` CLI, which sends no token, on the original API "
                           "paths (/apps, /infra, /manage): only for requests from loopback, and only with a "
                           "loopback host (never an open listener without a token).")

    @model_validator(mode="after")
    def _tokenless_only_on_loopback(self) -> ApiConfig:
        import ipaddress

        if self.original_cli:
            try:
                loopback = ipaddress.ip_address(self.host).is_loopback
            except ValueError:
                loopback = self.host == "localhost"
            if not loopback:
                raise ValueError(f"original_cli admits requests without a token, so host must be a loopback "
                                 f"address (127.0.0.1, ::1), got {self.host!r}")
        return self


class StorageSiteConfig(_Config):
    region: str = Field("", description="Region of the site (matched by buckets' location_restrictions.regions).")
    gdpr: bool = Field(False, description="Whether the site is a GDPR-compliant storage location.")
    layer: Literal["cloud", "edge_infrastructure", "edge", "far_edge"] = Field(
        "cloud", description="Continuum layer of the site.")
    node: str | None = Field(None, description="Node hosting the store (access latency is measured to it).")
    endpoint: str | None = Field(None, description=(
        "An existing S3 endpoint (http://host:port); omitted: `mlsysops up` starts a SeaweedFS store."))
    access_key_env: str | None = Field(None, description="Environment variable with the endpoint's access key.")
    secret_key_env: str | None = Field(None, description="Environment variable with the endpoint's secret key.")


class StorageAccessConfig(_Config):
    """The simulated components' access pattern (`mlsysops up` on the simulated continuum)."""

    reads_per_s: float = Field(2.0, ge=0, description="Reads per second per component instance using a bucket.")
    writes_per_s: float = Field(0.5, ge=0, description="Writes per second per owner instance.")
    object_bytes: int = Field(4096, ge=1, le=64 * 2**20, description="Size of each object written.")
    keys: int = Field(50, ge=1, description="Distinct keys per bucket (writes overwrite them in turn).")


class StorageConfig(_Config):
    """The storage service: one S3-compatible store per site (sites are usually the clusters)."""

    sites: dict[str, StorageSiteConfig] = Field(default_factory=dict, description="Site name -> site.")
    volume_max: int = Field(16, ge=2, le=1000, description=(
        "Volumes per embedded SeaweedFS store (each bucket is a SeaweedFS collection with volumes of its own)."))
    volume_size_mb: int = Field(64, ge=1, le=30000, description="Volume size limit of embedded stores (MB).")
    timeout: float = Field(5.0, gt=0, description="Per-request timeout towards a store (s).")
    access: StorageAccessConfig = Field(default_factory=StorageAccessConfig)

    def site_models(self) -> tuple[StorageSite, ...]:
        return tuple(StorageSite(name=n, region=s.region, gdpr=s.gdpr, layer=s.layer, node=s.node)
                     for n, s in sorted(self.sites.items()))


DEVICE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"   # a node name: the device becomes a node of the cluster


class DeviceSensorConfig(_Config):
    type: Literal["camera", "temperature", "accelerometer", "humidity", "sound", "co2", "barometer",
                  "air_quality"] = Field(description="Sensor kind (as in the device protocol's announce).")
    model: str | None = Field(None, max_length=64, description="Sensor model, e.g. ds18b20.")


class SimDeviceConfig(_Config):
    """A simulated microcontroller (`sim/mqtt_device.py`): a real MQTT client speaking device protocol v1."""

    name: str = Field(pattern=DEVICE_NAME, description="Device name; it becomes a far-edge node of the "
                                                       "gateway's cluster, so it must not be a node of the slice.")
    sensors: list[DeviceSensorConfig] = Field(
        default_factory=lambda: [DeviceSensorConfig(type="temperature")], max_length=16,
        description="Sensors it announces (default: one temperature sensor).")
    slots: int = Field(1, ge=0, le=64, description="Service slots: how many services it runs at most.")
    freq_hz: list[float] = Field(default_factory=lambda: [64e6], min_length=1, max_length=16,
                                 description="MCU frequencies it supports (Hz).")
    labels: list[str] = Field(default_factory=list, max_length=32, description="Labels of its node description.")
    heartbeat_s: Seconds = Field(1.0, gt=0, le=300, description="Heartbeat interval; 3 missed ones lose it.")
    firmware: str = Field("embserve-sim-1", min_length=1, max_length=64, description="Firmware it announces.")


class DevicesConfig(_Config):
    """Devices behind gateway nodes: an MQTT broker and, per gateway node, the simulated devices `mlsysops up`
    starts (the node's agent is their gateway)."""

    broker: Literal["embedded", "external"] = Field(
        "embedded", description="embedded: start a mosquitto process on loopback (needs `apt-get install "
                                "mosquitto`); external: use the broker at host/port.")
    host: str = Field("127.0.0.1", description="Broker address (external) or bind address (embedded).")
    port: int | None = Field(None, ge=0, le=65535, description="Broker port; embedded default 0 = any free "
                                                               "port, external default 1883.")
    gateways: dict[str, list[SimDeviceConfig]] = Field(
        default_factory=dict, description="Gateway node (one of the slice's nodes) -> its simulated devices.")
    auth: bool = Field(True, description="embedded: one broker account per gateway and per device, each limited "
                                         "to its own topics (false: anonymous, any client may speak for any "
                                         "device)")
    username: str | None = Field(None, min_length=1, max_length=128,
                                 description="external: the gateways' broker account (none: anonymous)")
    password_file: Path | None = Field(None, description="external: file holding that account's password "
                                                          "(relative to the slice)")

    def gateway_password(self) -> str | None:
        """external: the password in `password_file` (None without one); OSError when it cannot be read."""
        return None if self.password_file is None else self.password_file.read_text(encoding="utf-8").strip()

    @model_validator(mode="after")
    def _defaults(self) -> DevicesConfig:
        if self.port is None:
            self.port = 0 if self.broker == "embedded" else 1883
        return self


SourceEntry = str | dict[str, Any]


class SliceConfig(_Config):
    """The slice file as written (paths already made absolute by ``load_slice``)."""

    slice: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$", description="Slice name.")
    xmpp: XmppConfig = Field(default_factory=XmppConfig)
    substrate: SubstrateConfig = Field(default_factory=SubstrateConfig)
    continuum: SourceEntry | None = Field(
        None, description="Path or inline MLSysOpsContinuum; derived if omitted."
    )
    clusters: list[SourceEntry] = Field(default_factory=list, description="Paths, globs or inline clusters.")
    nodes: list[SourceEntry] = Field(default_factory=list, description="Paths, globs or inline nodes.")
    policies: PerLayer = Field(default_factory=PerLayer)
    mechanisms: PerLayer = Field(default_factory=PerLayer)
    intervals: Intervals = Field(default_factory=Intervals)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    storage: StorageConfig | None = Field(None, description="The storage service (buckets of apps); off if omitted.")
    devices: DevicesConfig | None = Field(None, description="Simulated devices behind gateway nodes, and their "
                                                            "MQTT broker; off if omitted.")
    trust: dict[str, float] = Field(
        default_factory=dict,
        description="Node trust: weights of the evidence against a node (flapping, failed_deployments, "
                    "heartbeat_jitter, contradictions, impersonation, anomalies) and half_life_s, "
                    "jitter_tolerance, anomaly_tolerance, anomaly_threshold (mlsysops.agents.trust).")
    state_dir: Path | None = Field(None, description="Default ~/.mlsysops/<slice>.")

    @field_validator("trust", mode="after")
    @classmethod
    def _trust_weights(cls, value: dict[str, float]) -> dict[str, float]:
        TrustWeights.from_mapping(value, "")   # raises ValueError naming the field (pydantic adds `trust`)
        return value


@dataclass
class SliceSpec:
    """A validated slice: its config and its cross-checked infrastructure."""

    config: SliceConfig
    path: Path
    continuum: MLSysOpsContinuum
    clusters: dict[str, MLSysOpsCluster]
    nodes: dict[str, MLSysOpsNode]
    datacenters: dict[str, MLSysOpsDatacenter] = field(default_factory=dict)
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    warnings: list[ValidationIssue] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.slice

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def inventory(self) -> Inventory:
        sites = self.config.storage.site_models() if self.config.storage else ()
        return Inventory(nodes=frozenset(self.nodes), clusters=frozenset(self.clusters), storage_sites=sites)

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir or Path.home() / ".mlsysops" / self.name

    def cluster_nodes(self, cluster_id: str) -> list[MLSysOpsNode]:
        return [n for n in self.nodes.values() if n.cluster_id == cluster_id]

    def source_of(self, desc: Description) -> str | None:
        return self.sources.get((desc.kind, desc.id))


def is_slice_config(obj: Any) -> bool:
    """Whether a parsed YAML document looks like a slice config (has a top-level ``slice`` key)."""
    return isinstance(obj, dict) and "slice" in obj


def _resolve(base: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = value.expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def _absolute_paths(cfg: SliceConfig, base: Path) -> SliceConfig:
    def plugins(per: PerLayer) -> PerLayer:
        return PerLayer(
            **{
                layer: per.for_layer(layer).model_copy(
                    update={"directories": [_resolve(base, d) for d in per.for_layer(layer).directories]}
                )
                for layer in LAYERS
            }
        )

    return cfg.model_copy(
        update={
            "xmpp": cfg.xmpp.model_copy(update={"password_file": _resolve(base, cfg.xmpp.password_file),
                                                "password_dir": _resolve(base, cfg.xmpp.password_dir),
                                                "ca_file": _resolve(base, cfg.xmpp.ca_file)}),
            "substrate": cfg.substrate.model_copy(
                update={"kubeconfig": _resolve(base, cfg.substrate.kubeconfig),
                        "clusters": {c: a.model_copy(update={"kubeconfig": _resolve(base, a.kubeconfig)})
                                     for c, a in cfg.substrate.clusters.items()}}
            ),
            "api": cfg.api.model_copy(update={"token_file": _resolve(base, cfg.api.token_file)}),
            "devices": cfg.devices and cfg.devices.model_copy(
                update={"password_file": _resolve(base, cfg.devices.password_file)}),
            "policies": plugins(cfg.policies),
            "mechanisms": plugins(cfg.mechanisms),
            "state_dir": _resolve(base, cfg.state_dir),
        }
    )


class _Collector:
    """Loads the referenced descriptions, remembering where each one came from."""

    def __init__(self, slice_path: Path) -> None:
        self.slice_path = slice_path
        self.base = slice_path.parent
        self.issues: list[ValidationIssue] = []
        self.docs: list[Document] = []
        self.seen: dict[tuple[str, str], str] = {}

    def error(self, path: str, message: str, **kw: Any) -> None:
        self.issues.append(ValidationIssue(message, file=str(self.slice_path), path=path, **kw))

    def add(self, entry: SourceEntry, path: str) -> None:
        if isinstance(entry, dict):
            self._take(lambda: [load_obj(entry, source=f"{self.slice_path}: {path}")])
            return
        pattern = os.path.expanduser(entry)
        pattern = pattern if os.path.isabs(pattern) else str(self.base / pattern)
        if glob.has_magic(pattern):
            files = sorted(glob.glob(pattern, recursive=True))
            if not files:
                self.error(
                    path, "pattern matches no files", value=entry, expected="a path or glob of YAML files"
                )
            for file in files:
                self._take(lambda f=file: load_file(f))
        elif not Path(pattern).is_file():
            self.error(path, "file not found", value=entry, expected=f"a file relative to {self.base}")
        else:
            self._take(lambda: load_file(pattern))

    def _take(self, load: Any) -> None:
        try:
            docs = load()
        except DescriptionError as exc:
            self.issues += exc.issues + exc.warnings
            return
        for doc in docs:
            key = (doc.kind, doc.name)
            where = f"{doc.source} (document {doc.index})"
            if isinstance(doc.spec, MLSysOpsApp):
                self.issues.append(
                    ValidationIssue(
                        "applications do not belong in a slice config",
                        file=doc.source,
                        doc_index=doc.index,
                        value=doc.name,
                        expected="MLSysOpsContinuum, MLSysOpsCluster, MLSysOpsNode or MLSysOpsDatacenter",
                    )
                )
                continue
            if key in self.seen:
                self.issues.append(
                    ValidationIssue(
                        f"{doc.kind} {doc.name!r} is also defined in {self.seen[key]}",
                        file=doc.source,
                        doc_index=doc.index,
                        value=doc.name,
                        expected="unique names",
                    )
                )
                continue
            self.seen[key] = where
            self.docs.append(doc)


def load_slice(path: str | Path) -> SliceSpec:
    """Load, validate and cross-check a slice file. Raises DescriptionError listing every problem."""
    slice_path = Path(path).resolve()
    source = str(path)
    try:
        text = slice_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DescriptionError([ValidationIssue(f"cannot read file: {exc}", file=source)]) from None
    docs = read_documents(text, source)   # raises DescriptionError with line/column
    if len(docs) > 1:
        raise DescriptionError([ValidationIssue(f"a slice config is one YAML document, found {len(docs)}",
                                                file=source, expected="one document")])
    raw = docs[0] if docs else None
    if not isinstance(raw, dict):
        raise DescriptionError(
            [
                ValidationIssue(
                    "a slice config must be a mapping",
                    file=source,
                    value=raw,
                    expected="a mapping with at least 'slice: <name>'",
                )
            ]
        )
    cfg, issues = validate_spec(SliceConfig, raw)  # type: ignore[arg-type]
    for issue in issues:
        issue.file = source
    if cfg is None:
        raise DescriptionError(issues)
    assert isinstance(cfg, SliceConfig)
    cfg = _absolute_paths(cfg, slice_path.parent)
    collector = _Collector(slice_path)
    collector.issues += issues
    if cfg.continuum is not None:
        collector.add(cfg.continuum, "continuum")
    for i, entry in enumerate(cfg.clusters):
        collector.add(entry, f"clusters[{i}]")
    for i, entry in enumerate(cfg.nodes):
        collector.add(entry, f"nodes[{i}]")
    spec = _assemble(cfg, slice_path, collector)
    errors = [i for i in collector.issues if i.severity == "error"]
    if errors:
        raise DescriptionError(collector.issues)
    return spec


def _assemble(cfg: SliceConfig, slice_path: Path, col: _Collector) -> SliceSpec:
    by_kind: dict[str, dict[str, Document]] = {}
    for doc in col.docs:
        by_kind.setdefault(doc.kind, {})[doc.name] = doc
    col.issues += [w for doc in col.docs for w in doc.warnings]
    clusters = {name: doc.spec for name, doc in by_kind.get("MLSysOpsCluster", {}).items()}
    nodes = {name: doc.spec for name, doc in by_kind.get("MLSysOpsNode", {}).items()}
    sources = {key: where for key, where in col.seen.items()}
    cluster_docs = by_kind.get("MLSysOpsCluster", {})
    node_docs = by_kind.get("MLSysOpsNode", {})

    def issue(doc: Document, path: str, message: str, **kw: Any) -> ValidationIssue:
        return ValidationIssue(message, file=doc.source, doc_index=doc.index, path=path, **kw)

    # Nodes without cluster_id: take the single cluster listing them.
    for name, node in list(nodes.items()):
        assert isinstance(node, MLSysOpsNode)
        if node.cluster_id is None:
            owners = [cid for cid, c in clusters.items() if name in c.nodes]  # type: ignore[attr-defined]
            if len(owners) == 1:
                nodes[name] = node.model_copy(update={"cluster_id": owners[0]})
                col.issues.append(
                    issue(
                        node_docs[name],
                        "cluster_id",
                        f"no cluster_id; assigned to cluster {owners[0]!r} which lists the node",
                        severity="warning",
                    )
                )
            else:
                col.issues.append(
                    issue(
                        node_docs[name],
                        "cluster_id",
                        "node has no cluster_id and "
                        f"{'several clusters list it' if owners else 'no cluster lists it'}",
                        expected="cluster_id: one of " + ", ".join(sorted(clusters)),
                    )
                )
    for name, node in nodes.items():
        cid = node.cluster_id  # type: ignore[attr-defined]
        if cid is not None and cid not in clusters:
            col.issues.append(
                issue(
                    node_docs[name],
                    "cluster_id",
                    f"cluster {cid!r} is not part of the slice",
                    value=cid,
                    expected="one of: " + ", ".join(sorted(clusters)),
                    suggestion=did_you_mean(cid, clusters),
                )
            )
    for cid, cluster in list(clusters.items()):
        assert isinstance(cluster, MLSysOpsCluster)
        members = sorted(n for n, node in nodes.items() if node.cluster_id == cid)  # type: ignore[attr-defined]
        if not cluster.nodes:
            clusters[cid] = cluster.model_copy(update={"nodes": members})
            continue
        cdoc = cluster_docs[cid]
        for i, listed in enumerate(cluster.nodes):
            if listed not in nodes:
                col.issues.append(
                    issue(
                        cdoc,
                        f"nodes[{i}]",
                        f"node {listed!r} has no description in the slice",
                        value=listed,
                        suggestion=did_you_mean(listed, nodes),
                    )
                )
            elif nodes[listed].cluster_id != cid:  # type: ignore[attr-defined]
                col.issues.append(
                    issue(
                        cdoc,
                        f"nodes[{i}]",
                        f"node {listed!r} is listed here but its "
                        f"cluster_id is {nodes[listed].cluster_id!r} "  # type: ignore[attr-defined]
                        f"(in {node_docs[listed].source})",
                        value=listed,
                    )
                )
        for member in members:
            if member not in cluster.nodes:
                col.issues.append(
                    issue(
                        node_docs[member],
                        "cluster_id",
                        f"node {member!r} says cluster {cid!r} "
                        f"but that cluster's nodes list (in {cdoc.source}) does not include it",
                        value=cid,
                        expected=f"{member!r} in {cid}.nodes",
                    )
                )
    for site, s in sorted((cfg.storage.sites if cfg.storage else {}).items()):
        if s.node is not None and s.node not in nodes:   # access latency is modelled to this node
            col.issues.append(ValidationIssue(
                f"storage site {site!r}: node {s.node!r} has no description in the slice", file=str(slice_path),
                path=f"storage.sites.{site}.node", value=s.node, expected="one of the slice's nodes",
                suggestion=did_you_mean(s.node, nodes)))
    _check_devices(cfg, slice_path, nodes, col)
    continuum = _continuum(cfg, by_kind, clusters, col)
    datacenters = {n: d.spec for n, d in by_kind.get("MLSysOpsDatacenter", {}).items()}
    return SliceSpec(
        config=cfg,
        path=slice_path,
        continuum=continuum,
        clusters=clusters,  # type: ignore[arg-type]
        nodes=nodes,
        datacenters=datacenters,
        sources=sources,  # type: ignore[arg-type]
        warnings=[i for i in col.issues if i.severity == "warning"],
    )


def _check_devices(cfg: SliceConfig, slice_path: Path, nodes: dict[str, Any], col: _Collector) -> None:
    """Gateways are nodes of the slice (their agents run by `mlsysops up`, or `mlsysops agent node` with an
    external broker); device names are new node names."""
    if cfg.devices is None:
        return
    sub = cfg.substrate
    simulated = cfg.devices.broker == "embedded" or any(cfg.devices.gateways.values())
    if sub.type == "kubernetes" and not sub.simulate_nodes and simulated:
        # real gateways (node agents in their pods, `mlsysops agent node`) need only an external broker
        col.issues.append(ValidationIssue(
            "simulated devices and an embedded broker need node agents run by `mlsysops up` as their gateways, "
            "and substrate kubernetes without simulate_nodes runs none", file=str(slice_path), path="devices",
            value=sub.type, expected="substrate type sim or karmada, kubernetes with simulate_nodes: true, or "
                                     "broker: external with no simulated devices (real gateways)"))
    seen: dict[str, str] = {}
    for gw, devices in cfg.devices.gateways.items():
        if gw not in nodes:
            col.issues.append(ValidationIssue(
                f"gateway {gw!r} is not a node of the slice", file=str(slice_path), path=f"devices.gateways.{gw}",
                value=gw, expected="one of the slice's nodes: " + ", ".join(sorted(nodes)),
                suggestion=did_you_mean(gw, nodes)))
        for i, dev in enumerate(devices):
            where = f"devices.gateways.{gw}[{i}].name"
            if dev.name in nodes:
                col.issues.append(ValidationIssue(
                    f"device {dev.name!r} has the name of a node of the slice (it joins as a node)",
                    file=str(slice_path), path=where, value=dev.name, expected="a name no node has"))
            elif dev.name in seen:
                col.issues.append(ValidationIssue(
                    f"device {dev.name!r} is also defined at {seen[dev.name]}", file=str(slice_path), path=where,
                    value=dev.name, expected="unique device names"))
            seen.setdefault(dev.name, where)


def _continuum(
    cfg: SliceConfig, by_kind: dict[str, dict[str, Document]], clusters: dict[str, Any], col: _Collector
) -> MLSysOpsContinuum:
    docs = list(by_kind.get("MLSysOpsContinuum", {}).values())
    derived = MLSysOpsContinuum(continuum_id=cfg.slice, clusters=sorted(clusters))
    if not docs:
        return derived
    if len(docs) > 1:
        col.error("continuum", "a slice has one continuum", value=[d.name for d in docs], expected="one")
    doc = docs[0]
    cont = doc.spec
    assert isinstance(cont, MLSysOpsContinuum)
    if not cont.clusters:
        return cont.model_copy(update={"clusters": sorted(clusters)})
    for i, cid in enumerate(cont.clusters):
        if cid not in clusters:
            col.issues.append(
                ValidationIssue(
                    f"cluster {cid!r} has no description in the slice",
                    file=doc.source,
                    doc_index=doc.index,
                    path=f"clusters[{i}]",
                    value=cid,
                    suggestion=did_you_mean(cid, clusters),
                )
            )
    for cid in clusters:
        if cid not in cont.clusters:
            col.issues.append(
                ValidationIssue(
                    f"cluster {cid!r} is in the slice but not in the continuum's clusters list",
                    file=doc.source,
                    doc_index=doc.index,
                    path="clusters",
                    value=cid,
                )
            )
    return cont
