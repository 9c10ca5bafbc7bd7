"""`render(slice_spec)`: every Kubernetes object needed to run a slice in one cluster.

Emitted, in apply order: Namespaces (agents; app workloads), our CRDs, RBAC (agents/deploy/rbac.py),
ConfigMaps (slice config, descriptions, ejabberd config, the XMPP CA certificate), Secrets (one XMPP account
per agent, API token, XMPP TLS key), the infrastructure descriptions as custom resources, Services (ejabberd,
continuum API), NetworkPolicies (only the slice's agents reach the XMPP server; agents take no other
traffic but the API), and one Deployment per agent: the continuum, each cluster, each node (pinned to
it). Node agents are Deployments, not a DaemonSet, so each pod mounts only its own password. The output
is deterministic except for the generated secrets (passwords, API token, TLS key), which can be passed in.

Inside the cluster the slice config is rewritten: descriptions come from a mounted ConfigMap, XMPP points
at the ejabberd Service (`server: external`), the API binds all interfaces with a token file, state lives
under /var/lib/mlsysops. Host-local plugin directories cannot be shipped and are dropped (logged).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

import yaml

from mlsysops.agents.descriptions import KINDS, dump_yaml
from mlsysops.agents.descriptions.crd_gen import crd
from mlsysops.agents.slice_config import LAYERS, SliceSpec
from mlsysops.cli.deploy.naming import content_hash, dns_label, labels, meta, selector
from mlsysops.cli.deploy.network import network_policies
from mlsysops.cli.deploy.rbac import rbac_objects, service_account_name
from mlsysops.cli.deploy.xmpp import (
    CA_CONFIG_MAP,
    CA_DIR,
    XMPP_PORT,
    Account,
    ca_config_map,
    certificate_of,
    credential_secrets,
    ejabberd_objects,
    new_password,
    server_tls,
)
from mlsysops.substrates.kubernetes.crds import description_objects

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "mlsysops:0.1.0"
DEFAULT_XMPP_IMAGE = "ghcr.io/processone/ejabberd:24.12"
CONFIG_DIR = "/etc/mlsysops"
SLICE_PATH = f"{CONFIG_DIR}/slice.yaml"
API_TOKENS_DIR = "/etc/mlsysops-api"
STATE_DIR = "/var/lib/mlsysops"
PASSWORD_ENV = "MLSYSOPS_XMPP_PASSWORD"
API_PORT = 8080
AGENT_UID = 10001            # the Dockerfile's non-root user

KIND_ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
              "Role", "RoleBinding", "ConfigMap", "Secret", *sorted(KINDS), "Service", "NetworkPolicy",
              "Deployment"]


def _localpart(role: str, name: str) -> str:
    """The JID localpart `mlsysops agent` derives (mlsysops.cli.slice_assembly.agent_jid; a unit test
    keeps the two equal without importing SPADE here)."""
    return f"{role}-" + "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name.lower())


def accounts_for(spec: SliceSpec, passwords: Mapping[str, str] | None = None) -> list[Account]:
    """One XMPP account per agent (same localparts as `mlsysops agent` derives), passwords given or new."""
    given = dict(passwords or {})

    def acc(role: str, kind: str, name: str, secret: str) -> Account:
        lp = _localpart(kind, name)
        return Account(lp, role, given.get(lp) or new_password(), secret)

    out = [acc("continuum-agent", "continuum", spec.continuum.continuum_id, "mlsysops-xmpp-continuum")]
    out += [acc("cluster-agent", "cluster", c, f"mlsysops-xmpp-{dns_label(_localpart('cluster', c), 40)}")
            for c in sorted(spec.clusters)]
    out += [acc("node-agent", "node", n, f"mlsysops-xmpp-{dns_label(_localpart('node', n), 40)}")
            for n in sorted(spec.nodes)]
    return out


def in_cluster_slice(spec: SliceSpec, domain: str, substrate: dict[str, Any],
                     workload_namespace: str) -> dict[str, Any]:
    """The slice config as the agents see it inside the cluster."""
    cfg = spec.config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    # Where the cluster agents' Kubernetes mechanism puts app components.
    cluster_mechs = cfg.setdefault("mechanisms", {}).setdefault("cluster", {}).setdefault("settings", {})
    cluster_mechs.setdefault("component_placement", {})["namespace"] = workload_namespace
    for section in ("policies", "mechanisms"):
        for layer in LAYERS:
            dirs = cfg.get(section, {}).get(layer, {}).get("directories")
            if dirs:
                log.warning("%s.%s.directories %s are host paths: not shipped to the cluster (use entry "
                            "points in the image instead)", section, layer, dirs)
                cfg[section][layer]["directories"] = []
    cfg.update(
        xmpp={"server": "external", "host": domain, "domain": domain, "port": XMPP_PORT,
              "password_env": PASSWORD_ENV, "ca_file": f"{CA_DIR}/ca.crt"},
        substrate=substrate,
        continuum="descriptions/continuum.yaml",
        clusters=["descriptions/clusters.yaml"],
        nodes=["descriptions/nodes.yaml"],
        api={"host": "0.0.0.0", "port": API_PORT, "token_file": f"{API_TOKENS_DIR}/tokens"},
        state_dir=STATE_DIR,
    )
    return cfg


def description_files(spec: SliceSpec) -> dict[str, str]:
    # Datacenters may live in any referenced file: they travel with the clusters.
    infra = [spec.clusters[c] for c in sorted(spec.clusters)] + [spec.datacenters[d] for d in sorted(spec.datacenters)]
    return {"continuum.yaml": dump_yaml(spec.continuum), "clusters.yaml": dump_yaml(infra),
            "nodes.yaml": dump_yaml([spec.nodes[n] for n in sorted(spec.nodes)])}


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": AGENT_UID, "runAsGroup": AGENT_UID, "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


class _Renderer:
    def __init__(self, spec: SliceSpec, *, image: str, namespace: str, workload_namespace: str,
                 xmpp_image: str, passwords: Mapping[str, str] | None, api_token: str | None,
                 tls_pem: str | None, tls_ca: str | None, sim_url: str | None) -> None:
        self.spec = spec
        self.slice = spec.name
        self.image = image
        self.ns = namespace
        self.workload_ns = workload_namespace
        self.xmpp_image = xmpp_image
        self.domain = "mlsysops-xmpp"
        self.sim_url = sim_url
        self.accounts = accounts_for(spec, passwords)
        self.api_token = api_token or secrets.token_urlsafe(32)
        if tls_pem:   # kept from a previous apply; before the CA existed the server cert was self-signed
            self.tls_pem, self.tls_ca = tls_pem, tls_ca or certificate_of(tls_pem)
        else:
            self.tls_pem, self.tls_ca = server_tls(self.domain)
        substrate = ({"type": "sim", "seed": spec.config.substrate.seed} if sim_url
                     else {"type": "kubernetes"})   # no kubeconfig: in-cluster service account
        self.slice_cfg = in_cluster_slice(spec, self.domain, substrate, workload_namespace)
        self.slice_yaml = yaml.safe_dump(self.slice_cfg, sort_keys=False)
        self.descriptions = description_files(spec)
        self.config_hash = content_hash([self.slice_yaml, self.descriptions])

    # -- building blocks ----------------------------------------------------------------------------
    def meta(self, name: str, component: str, namespace: str | None = "") -> dict[str, Any]:
        return meta(name, self.ns if namespace == "" else namespace, self.slice, component)

    def config_volume(self) -> dict[str, Any]:
        items = [{"key": k, "path": f"descriptions/{k}"} for k in sorted(self.descriptions)]
        return {"name": "config", "projected": {"sources": [
            {"configMap": {"name": "mlsysops-slice", "items": [{"key": "slice.yaml", "path": "slice.yaml"}]}},
            {"configMap": {"name": "mlsysops-descriptions", "items": items}},
        ]}}

    def agent_container(self, component: str, command: list[str], env: list[dict[str, Any]],
                        mounts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        base_env = [{"name": "HOME", "value": STATE_DIR}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
        return {
            "name": component,
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": command,
            "env": base_env + env,
            "securityContext": _container_security(),
            "resources": {"requests": {"cpu": "50m", "memory": "160Mi"}, "limits": {"memory": "512Mi"}},
            "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                             {"name": "state", "mountPath": STATE_DIR},
                             {"name": "tmp", "mountPath": "/tmp"},
                             {"name": "xmpp-ca", "mountPath": CA_DIR, "readOnly": True}, *mounts],
            **extra,
        }

    def pod_template(self, component: str, sel: dict[str, str], container: dict[str, Any],
                     volumes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "metadata": {"labels": {**labels(self.slice, component), **sel},
                         "annotations": {"mlsysops.eu/config-hash": self.config_hash}},
            "spec": {
                "serviceAccountName": service_account_name(component),
                "securityContext": _pod_security(),
                "containers": [container],
                # The continuum's SQLite desired state sits here; use a PersistentVolume to keep it
                # across pod rescheduling (apps are otherwise re-submitted by their owners).
                "volumes": [self.config_volume(), {"name": "state", "emptyDir": {}},
                            {"name": "tmp", "emptyDir": {}},
                            {"name": "xmpp-ca", "configMap": {"name": CA_CONFIG_MAP}}, *volumes],
                **extra,
            },
        }

    def password_env(self, secret: str) -> dict[str, Any]:
        return {"name": PASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}

    def sim_args(self) -> list[str]:
        return ["--sim", self.sim_url] if self.sim_url else []

    def deployment(self, name: str, component: str, sel_extra: dict[str, str],
                   container: dict[str, Any], volumes: list[dict[str, Any]], **pod_extra: Any) -> dict[str, Any]:
        sel = selector(self.slice, component, **sel_extra)
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": meta(name, self.ns, self.slice, component, **sel_extra),
                # One process per agent identity: never two pods with the same JID, hence Recreate.
                "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": sel},
                         "template": self.pod_template(component, sel, container, volumes, **pod_extra)}}

    # -- objects ------------------------------------------------------------------------------------
    def namespaces(self) -> list[dict[str, Any]]:
        out = []
        for ns in sorted({self.ns, self.workload_ns}):
            m = self.meta(ns, "namespace", None)
            m["labels"]["pod-security.kubernetes.io/enforce"] = "restricted"
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": m})
        return out

    def config_maps(self) -> list[dict[str, Any]]:
        return [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta("mlsysops-slice", "config"),
             "data": {"slice.yaml": self.slice_yaml}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta("mlsysops-descriptions", "config"),
             "data": dict(sorted(self.descriptions.items()))},
        ]

    def api_token_secret(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": self.meta("mlsysops-api-tokens", "continuum-agent"),
                "stringData": {"tokens": f"{self.api_token} admin\n"}}

    def description_crs(self) -> list[dict[str, Any]]:
        models = ([self.spec.continuum] + [self.spec.clusters[c] for c in sorted(self.spec.clusters)]
                  + [self.spec.datacenters[d] for d in sorted(self.spec.datacenters)]
                  + [self.spec.nodes[n] for n in sorted(self.spec.nodes)])
        return description_objects(models, self.ns, labels(self.slice, "description"))

    def continuum(self) -> list[dict[str, Any]]:
        cid = self.spec.continuum.continuum_id
        acc = self.accounts[0]
        container = self.agent_container(
            "continuum-agent", ["mlsysops", "agent", "continuum", "-c", SLICE_PATH, "--id", cid],
            # its MLSysOpsApp custom resources live in its own namespace (where its Role allows them)
            [self.password_env(acc.secret),
             {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
            [{"name": "api-tokens", "mountPath": API_TOKENS_DIR, "readOnly": True}],
            ports=[{"name": "http", "containerPort": API_PORT, "protocol": "TCP"}],
            readinessProbe={"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
            livenessProbe={"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 20,
                           "failureThreshold": 6},
        )
        vols = [{"name": "api-tokens", "secret": {"secretName": "mlsysops-api-tokens", "defaultMode": 0o440}}]
        dep = self.deployment("mlsysops-continuum", "continuum-agent", {}, container, vols)
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": self.meta("mlsysops-api", "continuum-agent"),
               "spec": {"selector": selector(self.slice, "continuum-agent"),
                        "ports": [{"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"}]}}
        return [svc, dep]

    def clusters(self) -> list[dict[str, Any]]:
        out = []
        for acc, cid in zip(self.accounts[1:], sorted(self.spec.clusters)):
            container = self.agent_container(
                "cluster-agent",
                ["mlsysops", "agent", "cluster", "-c", SLICE_PATH, "--id", cid, *self.sim_args()],
                # its MLSysOpsCluster/MLSysOpsNode status goes to the description CRs in its own namespace
                [self.password_env(acc.secret),
                 {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}], [])
            out.append(self.deployment(f"mlsysops-cluster-{dns_label(cid, 46)}", "cluster-agent",
                                       {"mlsysops.eu/cluster": dns_label(cid)}, container, []))
        return out

    def node_agents(self) -> list[dict[str, Any]]:
        """One Deployment per node, pinned to it, with that node's password only (a DaemonSet's pods share
        one spec, so they could only share one Secret holding every node's password)."""
        host = self.sim_args() or ["--host"]   # no simulator: this machine
        tolerations = [{"key": f"node-role.kubernetes.io/{r}", "operator": "Exists", "effect": "NoSchedule"}
                       for r in ("control-plane", "master")]
        out = []
        for acc, name in zip(self.accounts[1 + len(self.spec.clusters):], sorted(self.spec.nodes)):
            container = self.agent_container(
                "node-agent", ["mlsysops", "agent", "node", "-c", SLICE_PATH, "--id", name, *host],
                [self.password_env(acc.secret)], [])
            container["resources"] = {"requests": {"cpu": "20m", "memory": "128Mi"},
                                      "limits": {"memory": "384Mi"}}
            out.append(self.deployment(f"mlsysops-node-{dns_label(name, 48)}", "node-agent",
                                       {"mlsysops.eu/node": dns_label(name)}, container, [],
                                       nodeSelector={"kubernetes.io/hostname": name}, tolerations=tolerations))
        return out

    def all(self) -> list[dict[str, Any]]:
        objs: list[dict[str, Any]] = [*self.namespaces(), *(crd(cls) for cls in KINDS.values())]
        objs += rbac_objects(self.slice, self.ns, self.workload_ns)
        objs += self.config_maps() + [ca_config_map(self.slice, self.ns, self.tls_ca)]
        objs += credential_secrets(self.slice, self.ns, self.accounts) + [self.api_token_secret()]
        objs += ejabberd_objects(self.slice, self.ns, self.domain, self.xmpp_image, self.accounts, self.tls_pem,
                                 self.tls_ca)
        objs += network_policies(self.slice, self.ns, API_PORT)
        objs += self.description_crs() + self.continuum() + self.clusters() + self.node_agents()
        rank = {k: i for i, k in enumerate(KIND_ORDER)}
        return sorted(objs, key=lambda o: rank.get(o["kind"], len(rank)))   # stable: keeps build order


def render(slice_spec: SliceSpec, *, image: str = DEFAULT_IMAGE, namespace: str | None = None,
           workload_namespace: str | None = None, xmpp_image: str = DEFAULT_XMPP_IMAGE,
           passwords: Mapping[str, str] | None = None, api_token: str | None = None,
           tls_pem: str | None = None, tls_ca: str | None = None, sim_url: str | None = None) -> list[dict[str, Any]]:
    """Manifests (dicts, apply order) running `slice_spec` in namespace `mlsysops-<slice>` by default.

    App components run in `workload_namespace` (default `<namespace>-apps`, told to the cluster agents in
    `mechanisms.cluster.settings.component_placement.namespace`): kept apart from the agents so the
    cluster agents' rights over workload Secrets never reach the agents' own credentials.

    `passwords` maps XMPP localparts (`continuum-<id>`, `cluster-<id>`, `node-<name>`) to passwords; the
    missing ones are generated, as are the API admin token and the XMPP TLS key and CA unless given
    (`tls_pem`: server key + certificate; `tls_ca`: the certificate it chains to). With
    `sim_url` the agents keep the simulated substrate (`--sim URL`), otherwise they use Kubernetes
    in-cluster.
    """
    ns = namespace or dns_label(f"mlsysops-{slice_spec.name}")
    return _Renderer(slice_spec, image=image, namespace=ns, workload_namespace=workload_namespace or dns_label(f"{ns}-apps"),
                     xmpp_image=xmpp_image, passwords=passwords, api_token=api_token, tls_pem=tls_pem,
                     tls_ca=tls_ca, sim_url=sim_url).all()
