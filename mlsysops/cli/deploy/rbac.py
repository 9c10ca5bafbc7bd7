"""Least-privilege RBAC per agent role: one ServiceAccount each, explicit verbs, no wildcards.

What each role needs and why:
- continuum agent: reads the infrastructure descriptions, owns MLSysOpsApp objects (desired state when
  Kubernetes is the substrate) and their status; records Events.
- cluster agent: runs app components as Deployments + Services in the workload namespace, watches their
  Pods, removes their leftover ConfigMaps/Secrets, reads Nodes (cluster-scoped, hence a ClusterRole),
  reads apps and writes node/cluster status.
- node agent: reads its Node and the Pods (local component watch) and writes its MLSysOpsNode status.
"""

from __future__ import annotations

from typing import Any

from mlsysops.cli.deploy.naming import meta

READ = ["get", "list", "watch"]
WRITE = [*READ, "create", "update", "patch", "delete"]
STATUS = ["get", "update", "patch"]
EVENTS = {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}
GROUP = "mlsysops.eu"
INFRA = ["mlsysopscontinuums", "mlsysopsclusters", "mlsysopsnodes", "mlsysopsdatacenters"]


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": list(verbs)}


# Per role: rules in the agents' namespace (our CRs), in the workload namespace (app components) and
# cluster-wide. The two namespaces differ by default, so an agent that must list Secrets left behind by
# app components never sees the agents' own credentials.
ROLES: dict[str, dict[str, list[dict[str, Any]]]] = {
    "continuum-agent": {
        "agents": [
            _rule(GROUP, INFRA, READ),
            _rule(GROUP, ["mlsysopsapps"], WRITE),
            _rule(GROUP, ["mlsysopsapps/status", "mlsysopscontinuums/status"], STATUS),
            EVENTS,
        ],
        "workloads": [],
        "cluster": [],
    },
    "cluster-agent": {
        "agents": [
            _rule(GROUP, ["mlsysopsapps", *INFRA], READ),
            _rule(GROUP, ["mlsysopsapps/status", "mlsysopsclusters/status", "mlsysopsnodes/status"], STATUS),
            EVENTS,
        ],
        "workloads": [
            _rule("apps", ["deployments"], WRITE),
            _rule("apps", ["replicasets"], READ),
            _rule("", ["services"], WRITE),
            _rule("", ["pods"], READ),
            # Removing a component also removes the ConfigMaps/Secrets labelled for it (no orphans).
            _rule("", ["configmaps", "secrets"], ["list", "delete"]),
            EVENTS,
        ],
        "cluster": [_rule("", ["nodes"], READ)],
    },
    "node-agent": {
        "agents": [
            _rule(GROUP, ["mlsysopsnodes"], READ),
            _rule(GROUP, ["mlsysopsnodes/status"], STATUS),
            EVENTS,
        ],
        "workloads": [_rule("", ["pods"], READ)],
        "cluster": [_rule("", ["nodes"], READ)],
    },
}


def service_account_name(role: str) -> str:
    return f"mlsysops-{role}"


def rbac_objects(slice_name: str, namespace: str, workload_namespace: str) -> list[dict[str, Any]]:
    """ServiceAccounts (agents' namespace), Roles + bindings per namespace, ClusterRoles + bindings."""
    out: list[dict[str, Any]] = []
    for role, rules in ROLES.items():
        sa = service_account_name(role)
        out.append({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": meta(sa, namespace, slice_name, role)})
        subject = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
        per_ns: dict[str, list[dict[str, Any]]] = {namespace: list(rules["agents"])}
        if rules["workloads"]:
            per_ns.setdefault(workload_namespace, [])
            per_ns[workload_namespace] += [r for r in rules["workloads"] if r not in per_ns[workload_namespace]]
        for ns, ns_rules in sorted(per_ns.items()):
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": meta(sa, ns, slice_name, role), "rules": ns_rules})
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": meta(sa, ns, slice_name, role),
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
                        "subjects": subject})
        if rules["cluster"]:
            # Cluster-scoped names are shared by every slice: include the namespace to keep them apart.
            cname = f"{sa}-{namespace}"
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": meta(cname, None, slice_name, role), "rules": rules["cluster"]})
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                        "metadata": meta(cname, None, slice_name, role),
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                    "name": cname},
                        "subjects": subject})
    return out
