"""`mlsysops deploy render|apply` against the real local kube-apiserver (tests/kube/harness.py).

The server dry-run checks what offline validation cannot: names, selectors vs. templates, quantities,
RBAC rules, CR bodies against our CRD schemas (the CRDs are created for real first; dry-run objects of
an unknown kind cannot be checked).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from kubernetes.aio import client as k

from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.deploy import render
from mlsysops.cli.deploy.apply import apply_manifests

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
ASYNC = pytest.mark.asyncio(loop_scope="session")


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlsysops.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


async def _not_found(fn, *args) -> bool:
    try:
        await fn(*args)
    except k.ApiException as exc:
        return exc.status == 404
    return False


@ASYNC
async def test_server_dry_run_accepts_everything_render_emits(kube_client, kube_ns):
    objs = render(load_slice(DEMO), namespace=kube_ns, workload_namespace=kube_ns)   # both exist already
    crds = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
    created = await apply_manifests(kube_client, crds)               # for real: CRs need their kinds served
    assert [r.outcome for r in created] == ["applied"] * len(crds), created
    results = await apply_manifests(kube_client, objs, dry_run=True)
    bad = [(r.ref, r.outcome, r.detail) for r in results if r.outcome != "valid"]
    assert not bad
    assert len(results) == len(objs)
    # Nothing was persisted by the dry run.
    apps, core = k.AppsV1Api(kube_client), k.CoreV1Api(kube_client)
    assert await _not_found(apps.read_namespaced_deployment, "mlsysops-continuum", kube_ns)
    assert await _not_found(apps.read_namespaced_deployment, "mlsysops-node-edge-rpi-1", kube_ns)
    assert await _not_found(core.read_namespaced_secret, "mlsysops-xmpp-node-edge-rpi-1", kube_ns)
    assert await _not_found(k.CustomObjectsApi(kube_client).get_namespaced_custom_object,
                            "mlsysops.eu", "v1", kube_ns, "mlsysopsnodes", "edge-rpi-1")


@ASYNC
async def test_dry_run_reports_an_invalid_object_per_object(kube_client, kube_ns):
    objs = render(load_slice(DEMO), namespace=kube_ns)
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlsysops-continuum")
    dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "other"   # selector mismatch
    svc = next(o for o in objs if o["kind"] == "Service")
    results = await apply_manifests(kube_client, [dep, svc], dry_run=True)
    assert [r.outcome for r in results] == ["failed", "valid"]
    assert "selector" in results[0].detail and results[0].ref.startswith("Deployment/mlsysops-continuum")


def test_cli_render_to_stdout_is_one_multi_document_yaml():
    res = _cli("deploy", "render", str(DEMO), "--namespace", "demo-ns", "--image", "reg.local/mlsysops:1")
    assert res.returncode == 0, res.stderr
    docs = list(yaml.safe_load_all(res.stdout))
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == 4 + 7 and kinds["CustomResourceDefinition"] == 5   # + one per node
    assert kinds["NetworkPolicy"] == 3 and "DaemonSet" not in kinds
    assert {d["metadata"].get("namespace") for d in docs} <= {None, "demo-ns", "demo-ns-apps"}


@ASYNC
async def test_cli_apply_creates_everything_and_reapply_keeps_the_secrets(kube_stack, kube_client):
    ns = f"t-deploy-{uuid.uuid4().hex[:6]}"
    core, apps, rbac = k.CoreV1Api(kube_client), k.AppsV1Api(kube_client), k.RbacAuthorizationV1Api(kube_client)
    try:
        dry = _cli("deploy", "apply", str(DEMO), "--kubeconfig", str(kube_stack.kubeconfig), "-n", ns, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "skipped: namespace" in dry.stdout              # its namespace does not exist yet
        assert await _not_found(core.read_namespace, ns)

        res = _cli("deploy", "apply", str(DEMO), "--kubeconfig", str(kube_stack.kubeconfig), "-n", ns)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "failed" not in res.stdout
        # no terminal here: progress is a plain line per object on stderr, ending at the total
        steps = re.findall(rf"applying (\d+) objects in {ns}: (\d+)/(\d+) \((\S+) ", res.stderr)
        assert steps and steps[-1][1] == steps[-1][2] == steps[-1][0], res.stderr
        assert [int(s[1]) for s in steps] == list(range(1, len(steps) + 1)) and "\x1b[" not in res.stderr
        await core.read_namespace(ns)
        await core.read_namespace(f"{ns}-apps")
        deps = {d.metadata.name for d in (await apps.list_namespaced_deployment(ns)).items}
        nodes_dep = {d for d in deps if d.startswith("mlsysops-node-")}
        assert deps - nodes_dep == {"mlsysops-continuum", "mlsysops-cluster-cloud-1", "mlsysops-cluster-edge-1",
                                    "mlsysops-xmpp"} and len(nodes_dep) == 7
        dep = await apps.read_namespaced_deployment("mlsysops-node-edge-rpi-1", ns)
        assert dep.spec.template.spec.node_selector == {"kubernetes.io/hostname": "edge-rpi-1"}
        managers = {m.manager for m in dep.metadata.managed_fields or []}
        assert "mlsysops" in managers                          # server-side apply, our field manager
        nodes = await k.CustomObjectsApi(kube_client).list_namespaced_custom_object(
            "mlsysops.eu", "v1", ns, "mlsysopsnodes")
        assert len(nodes["items"]) == 7
        secret = await core.read_namespaced_secret("mlsysops-xmpp-node-edge-rpi-1", ns)
        tls = await core.read_namespaced_secret("mlsysops-xmpp-tls", ns)
        ca = (await core.read_namespaced_config_map("mlsysops-xmpp-ca", ns)).data["ca.crt"]
        pols = {p.metadata.name for p in (await k.NetworkingV1Api(kube_client).list_namespaced_network_policy(ns)).items}
        assert pols == {"mlsysops-default-deny-ingress", "mlsysops-xmpp-from-agents", "mlsysops-api"}

        for role in (await rbac.list_namespaced_role(ns)).items + (await rbac.list_namespaced_role(f"{ns}-apps")).items + [
                cr for cr in (await rbac.list_cluster_role()).items if cr.metadata.name.endswith(ns)]:
            for rule in role.rules or []:
                assert "*" not in rule.verbs and "*" not in (rule.resources or []), role.metadata.name

        again = _cli("deploy", "apply", str(DEMO), "--kubeconfig", str(kube_stack.kubeconfig), "-n", ns)
        assert again.returncode == 0, again.stdout + again.stderr
        assert (await core.read_namespaced_secret("mlsysops-xmpp-node-edge-rpi-1", ns)).data == secret.data
        assert (await core.read_namespaced_secret("mlsysops-xmpp-tls", ns)).data == tls.data
        assert (await core.read_namespaced_config_map("mlsysops-xmpp-ca", ns)).data["ca.crt"] == ca
    finally:
        for name in (ns, f"{ns}-apps"):
            try:
                await core.delete_namespace(name)
            except k.ApiException:
                pass
        for cr in (await rbac.list_cluster_role()).items:
            if cr.metadata.name.endswith(f"-{ns}"):
                await rbac.delete_cluster_role(cr.metadata.name)
        for crb in (await rbac.list_cluster_role_binding()).items:
            if crb.metadata.name.endswith(f"-{ns}"):
                await rbac.delete_cluster_role_binding(crb.metadata.name)


def test_cli_apply_reports_an_unreachable_server(tmp_path):
    from tests.kube.harness import free_port, write_kubeconfig

    kc = write_kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{free_port()}", "x")
    res = _cli("deploy", "apply", str(DEMO), "--kubeconfig", str(kc), timeout=120)
    assert res.returncode == 1
    assert "cannot reach the API server" in res.stderr
