"""The rendered RBAC enforced by a real apiserver (authorization-mode RBAC): each agent's ServiceAccount
may do what that agent does and nothing beyond it (asked with SubjectAccessReviews)."""

from __future__ import annotations

import uuid

import pytest
from kubernetes.aio import client as k

from mlsysops.cli.deploy.apply import apply_manifests
from mlsysops.cli.deploy.rbac import rbac_objects, service_account_name

aio = pytest.mark.asyncio(loop_scope="session")
G = "mlsysops.eu"
# (role, namespace: "agents"|"workloads"|None, verb, group, resource, subresource, allowed)
CASES = [
    ("cluster-agent", "agents", "patch", G, "mlsysopsnodes", "status", True),       # node status
    ("cluster-agent", "agents", "patch", G, "mlsysopsclusters", "status", True),    # cluster status
    ("cluster-agent", "agents", "get", G, "mlsysopsnodes", "", True),
    ("cluster-agent", "agents", "create", G, "mlsysopsnodes", "", False),           # descriptions: operator's
    ("cluster-agent", "agents", "patch", G, "mlsysopsnodes", "", False),
    ("cluster-agent", "agents", "get", "", "secrets", "", False),                  # agents' credentials
    ("cluster-agent", "workloads", "create", "apps", "deployments", "", True),
    ("cluster-agent", "workloads", "watch", "", "pods", "", True),
    ("cluster-agent", "workloads", "create", "", "pods", "", False),               # Deployments, never bare pods
    ("cluster-agent", None, "list", "", "nodes", "", True),
    ("cluster-agent", None, "delete", "", "nodes", "", False),
    ("continuum-agent", "agents", "create", G, "mlsysopsapps", "", True),
    ("continuum-agent", "agents", "patch", G, "mlsysopsapps", "status", True),
    ("continuum-agent", "agents", "patch", G, "mlsysopscontinuums", "status", True),
    ("continuum-agent", "workloads", "create", "apps", "deployments", "", False),
    ("continuum-agent", None, "list", "", "nodes", "", False),
    ("node-agent", "agents", "patch", G, "mlsysopsnodes", "status", True),
    ("node-agent", "agents", "patch", G, "mlsysopsclusters", "status", False),
    ("node-agent", "workloads", "list", "", "pods", "", True),
    ("node-agent", "workloads", "delete", "", "pods", "", False),
]


async def allowed(api: k.ApiClient, ns: str, role: str, namespace: str | None, verb: str, group: str,
                  resource: str, subresource: str) -> bool:
    attrs = {"verb": verb, "group": group, "resource": resource, "subresource": subresource}
    if namespace is not None:
        attrs["namespace"] = namespace
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"system:serviceaccount:{ns}:{service_account_name(role)}",
                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
                       "resourceAttributes": attrs}}
    res = await k.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(res.status.allowed)


@aio
async def test_each_agent_may_do_its_job_and_nothing_more(kube_client) -> None:
    agents_ns, work_ns = f"rbac-{uuid.uuid4().hex[:6]}", f"rbac-w-{uuid.uuid4().hex[:6]}"
    core = k.CoreV1Api(kube_client)
    for ns in (agents_ns, work_ns):
        await core.create_namespace({"metadata": {"name": ns}})
    try:
        results = await apply_manifests(kube_client, rbac_objects("demo", agents_ns, work_ns))
        assert all(r.outcome == "applied" for r in results), [(r.ref, r.detail) for r in results if r.outcome != "applied"]
        wrong = []
        for role, where, verb, group, resource, sub, expected in CASES:
            namespace = {"agents": agents_ns, "workloads": work_ns, None: None}[where]
            got = await allowed(kube_client, agents_ns, role, namespace, verb, group, resource, sub)
            if got != expected:
                wrong.append(f"{role} {verb} {resource}{'/' + sub if sub else ''} in {where}: {got}")
        assert not wrong, wrong
    finally:
        for ns in (agents_ns, work_ns):
            await core.delete_namespace(ns)
        for obj in rbac_objects("demo", agents_ns, work_ns):
            if obj["kind"].startswith("Cluster"):
                rbac = k.RbacAuthorizationV1Api(kube_client)
                delete = rbac.delete_cluster_role if obj["kind"] == "ClusterRole" else rbac.delete_cluster_role_binding
                await delete(obj["metadata"]["name"])
