"""`mlsysops.cli.deploy.render`: pure checks of the manifests that run a slice on Kubernetes (no server)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from kubernetes import client as kc

from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.deploy import render
from mlsysops.cli.deploy.render import PASSWORD_ENV, SLICE_PATH, accounts_for

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
FIXED = {"api_token": "tok", "tls_pem": "pem", "tls_ca": "ca", "passwords": None}

MODELS = {
    "Namespace": kc.V1Namespace, "ServiceAccount": kc.V1ServiceAccount, "Role": kc.V1Role,
    "RoleBinding": kc.V1RoleBinding, "ClusterRole": kc.V1ClusterRole, "ClusterRoleBinding": kc.V1ClusterRoleBinding,
    "ConfigMap": kc.V1ConfigMap, "Secret": kc.V1Secret, "Service": kc.V1Service, "Deployment": kc.V1Deployment,
    "CustomResourceDefinition": kc.V1CustomResourceDefinition, "NetworkPolicy": kc.V1NetworkPolicy,
}


@pytest.fixture(scope="module")
def spec():
    return load_slice(DEMO)


@pytest.fixture(scope="module")
def objs(spec):
    return render(spec, api_token="tok", tls_pem="pem", tls_ca="ca")


def by(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found


def test_every_kind_is_present_in_apply_order(objs, spec):
    kinds = Counter(o["kind"] for o in objs)
    assert kinds["Namespace"] == 2 and kinds["CustomResourceDefinition"] == 5      # agents, apps
    # continuum, clusters, nodes, ejabberd: one per agent identity
    assert kinds["Deployment"] == 1 + len(spec.clusters) + len(spec.nodes) + 1
    assert kinds["DaemonSet"] == 0 and kinds["NetworkPolicy"] == 3
    assert kinds["MLSysOpsNode"] == len(spec.nodes) and kinds["MLSysOpsCluster"] == len(spec.clusters)
    assert {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
            "Secret", "Service", "MLSysOpsContinuum"} <= set(kinds)
    order = [o["kind"] for o in objs]
    assert order.index("CustomResourceDefinition") < order.index("MLSysOpsNode") < order.index("Deployment")
    assert order[0] == "Namespace"


def test_typed_objects_validate_against_the_client_models(objs):
    checked = 0
    for obj in objs:
        model = MODELS.get(obj["kind"])
        if model is not None:
            model.model_validate(obj)       # types, required fields, unknown fields
            checked += 1
    assert checked == sum(o["kind"] in MODELS for o in objs) > 30


def test_selectors_match_pod_labels_and_services_select_pods(objs):
    pods = {}
    for wl in by(objs, "Deployment"):
        sel = wl["spec"]["selector"]["matchLabels"]
        tmpl = wl["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= tmpl.items(), wl["metadata"]["name"]
        pods[wl["metadata"]["name"]] = tmpl
    for svc in by(objs, "Service"):
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in pods.values())


def test_each_node_agent_is_pinned_to_its_node_and_mounts_only_its_own_password(objs, spec):
    seen = set()
    for name in spec.nodes:
        dep = by(objs, "Deployment", f"mlsysops-node-{name}")[0]
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["command"][:7] == ["mlsysops", "agent", "node", "-c", SLICE_PATH, "--id", name]
        assert pod["nodeSelector"] == {"kubernetes.io/hostname": name}
        assert pod["serviceAccountName"] == "mlsysops-node-agent"
        ref = {e["name"]: e for e in c["env"]}[PASSWORD_ENV]["valueFrom"]["secretKeyRef"]
        secret = by(objs, "Secret", ref["name"])[0]["stringData"]
        assert secret["jid-localpart"] == f"node-{name}" and set(secret) == {"password", "jid-localpart"}
        assert not any("secret" in v for v in pod["volumes"])        # no other credentials mounted
        seen.add(ref["name"])
    assert len(seen) == len(spec.nodes)


def test_agents_verify_the_xmpp_server_against_the_slice_ca(spec, tmp_path):
    import ssl

    objs = render(spec)
    ca = by(objs, "ConfigMap", "mlsysops-xmpp-ca")[0]["data"]["ca.crt"]
    server_pem = by(objs, "Secret", "mlsysops-xmpp-tls")[0]["stringData"]["xmpp.pem"]
    (tmp_path / "ca.crt").write_text(ca)
    (tmp_path / "server.pem").write_text(server_pem)
    assert "PRIVATE KEY" not in ca                       # the CA key is never written anywhere
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(tmp_path / "server.pem"))
    # a real handshake in memory: the agent side checks the chain and the name `mlsysops-xmpp`
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(c_in, c_out, server_hostname="mlsysops-xmpp")
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, srv):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert client.version() is not None and client.getpeercert()["subjectAltName"] == (("DNS", "mlsysops-xmpp"),)
    for wl in by(objs, "Deployment"):
        if wl["metadata"]["name"] == "mlsysops-xmpp":
            continue
        pod = wl["spec"]["template"]["spec"]
        assert {"name": "xmpp-ca", "configMap": {"name": "mlsysops-xmpp-ca"}} in pod["volumes"]
    cfg = yaml.safe_load(by(objs, "ConfigMap", "mlsysops-slice")[0]["data"]["slice.yaml"])
    assert cfg["xmpp"]["ca_file"] == "/etc/mlsysops-xmpp-ca/ca.crt"
    assert "insecure_skip_tls_verify" not in cfg["xmpp"]


def test_network_policies_admit_only_the_slices_agents_to_xmpp(objs):
    pols = {p["metadata"]["name"]: p["spec"] for p in by(objs, "NetworkPolicy")}
    assert pols["mlsysops-default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    xmpp = pols["mlsysops-xmpp-from-agents"]
    assert xmpp["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5222}]
    peer = xmpp["ingress"][0]["from"][0]["podSelector"]
    assert peer["matchExpressions"][0]["values"] == ["continuum-agent", "cluster-agent", "node-agent"]
    api = pols["mlsysops-api"]
    assert api["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    assert api["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "continuum-agent"


def test_agent_commands_match_the_agent_cli(objs, spec):
    cont = by(objs, "Deployment", "mlsysops-continuum")[0]["spec"]["template"]["spec"]["containers"][0]
    assert cont["command"][:5] == ["mlsysops", "agent", "continuum", "-c", SLICE_PATH]
    for cid in spec.clusters:
        dep = by(objs, "Deployment", f"mlsysops-cluster-{cid}")[0]
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["command"] == ["mlsysops", "agent", "cluster", "-c", SLICE_PATH, "--id", cid]
        secret = {e["name"]: e for e in c["env"]}[PASSWORD_ENV]["valueFrom"]["secretKeyRef"]["name"]
        assert by(objs, "Secret", secret)


def test_pods_run_non_root_without_privileges(objs):
    for wl in by(objs, "Deployment"):
        pod = wl["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_rbac_has_no_wildcards_and_node_agents_cannot_write_workloads(objs):
    for role in by(objs, "Role") + by(objs, "ClusterRole"):
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
    node_rules = [r for role in by(objs, "Role", "mlsysops-node-agent") for r in role["rules"]]
    writes = {"create", "update", "patch", "delete"}
    for rule in node_rules:
        if set(rule["verbs"]) & writes:
            assert rule["resources"] in (["events"], ["mlsysopsnodes/status"]), rule
    for cr in by(objs, "ClusterRole"):
        assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in cr["rules"])


def test_one_xmpp_account_per_agent_and_ejabberd_registers_them_all(objs, spec):
    accounts = {a.localpart for a in accounts_for(spec)}
    assert len(accounts) == 1 + len(spec.clusters) + len(spec.nodes)
    xmpp = by(objs, "Deployment", "mlsysops-xmpp")[0]["spec"]["template"]["spec"]
    projected = next(v for v in xmpp["volumes"] if v["name"] == "accounts")["projected"]["sources"]
    paths = {item["path"] for src in projected for item in src["secret"]["items"]}
    assert paths == accounts
    for src in projected:                 # every referenced key exists in its Secret
        data = by(objs, "Secret", src["secret"]["name"])[0]["stringData"]
        assert all(item["key"] in data for item in src["secret"]["items"])
    config = yaml.safe_load(by(objs, "ConfigMap", "mlsysops-xmpp-config")[0]["data"]["ejabberd.yml"])
    assert "mod_register" not in config["modules"]           # registration closed
    assert config["disable_sasl_mechanisms"] and all(m.endswith("-PLUS") for m in config["disable_sasl_mechanisms"])
    assert config["hosts"] == ["mlsysops-xmpp"] and by(objs, "Service", "mlsysops-xmpp")
    assert "ejabberdctl register" in xmpp["containers"][0]["lifecycle"]["postStart"]["exec"]["command"][-1]


def test_localparts_are_the_ones_the_agents_derive(spec):
    from mlsysops.cli.slice_assembly import agent_jid

    got = {a.localpart for a in accounts_for(spec)}
    want = ({agent_jid("continuum", spec.continuum.continuum_id, "d").split("@")[0]}
            | {agent_jid("cluster", c, "d").split("@")[0] for c in spec.clusters}
            | {agent_jid("node", n, "d").split("@")[0] for n in spec.nodes})
    assert got == want


def test_in_cluster_slice_config_loads_and_points_at_ejabberd(objs, spec, tmp_path):
    slice_cm = by(objs, "ConfigMap", "mlsysops-slice")[0]["data"]
    (tmp_path / "descriptions").mkdir()
    (tmp_path / "slice.yaml").write_text(slice_cm["slice.yaml"])
    for name, text in by(objs, "ConfigMap", "mlsysops-descriptions")[0]["data"].items():
        (tmp_path / "descriptions" / name).write_text(text)
    loaded = load_slice(tmp_path / "slice.yaml")
    assert loaded.nodes == spec.nodes and loaded.clusters == spec.clusters and loaded.continuum == spec.continuum
    x = loaded.config.xmpp
    assert (x.server, x.host, x.domain, x.port, x.password_env) == (
        "external", "mlsysops-xmpp", "mlsysops-xmpp", 5222, PASSWORD_ENV)
    assert loaded.config.api.host == "0.0.0.0" and loaded.config.substrate.type == "kubernetes"


def test_deterministic_apart_from_secrets(spec):
    def public(objs):   # the CA certificate is public but comes with the generated TLS key
        return [o for o in objs if o["kind"] != "Secret" and o["metadata"]["name"] != "mlsysops-xmpp-ca"]

    a, b = render(spec, **FIXED), render(spec, **FIXED)
    assert [o for o in a if o["kind"] != "Secret"] == [o for o in b if o["kind"] != "Secret"]
    fresh1, fresh2 = render(spec), render(spec)
    s1 = {o["metadata"]["name"]: o["stringData"] for o in fresh1 if o["kind"] == "Secret"}
    s2 = {o["metadata"]["name"]: o["stringData"] for o in fresh2 if o["kind"] == "Secret"}
    assert s1.keys() == s2.keys() and s1["mlsysops-xmpp-node-edge-rpi-1"] != s2["mlsysops-xmpp-node-edge-rpi-1"]
    assert public(fresh1) == public(a)


def test_given_passwords_are_kept(spec):
    objs = render(spec, passwords={"cluster-edge-1": "pw-edge", "node-edge-rpi-1": "pw-rpi"}, **{
        k: v for k, v in FIXED.items() if k != "passwords"})
    assert by(objs, "Secret", "mlsysops-xmpp-cluster-edge-1")[0]["stringData"]["password"] == "pw-edge"
    assert by(objs, "Secret", "mlsysops-xmpp-node-edge-rpi-1")[0]["stringData"]["password"] == "pw-rpi"


def test_workloads_run_apart_from_the_agents_credentials(objs):
    assert [n["metadata"]["name"] for n in by(objs, "Namespace")] == ["mlsysops-demo", "mlsysops-demo-apps"]
    secret_rules = [(role["metadata"]["namespace"], rule) for role in by(objs, "Role", "mlsysops-cluster-agent")
                    for rule in role["rules"] if "secrets" in rule["resources"]]
    assert [ns for ns, _ in secret_rules] == ["mlsysops-demo-apps"]     # never where the XMPP passwords are
    assert {s["metadata"]["namespace"] for s in by(objs, "Secret")} == {"mlsysops-demo"}
    cfg = yaml.safe_load(by(objs, "ConfigMap", "mlsysops-slice")[0]["data"]["slice.yaml"])
    assert cfg["mechanisms"]["cluster"]["settings"]["component_placement"]["namespace"] == "mlsysops-demo-apps"


def test_namespace_and_image_options(spec):
    objs = render(spec, namespace="elsewhere", workload_namespace="elsewhere", image="reg.example/mlsysops:1",
                  sim_url="http://sim:7000", **{k: v for k, v in FIXED.items() if k != "passwords"})
    assert [n["metadata"]["name"] for n in by(objs, "Namespace")] == ["elsewhere"]
    assert all(o["metadata"].get("namespace") in (None, "elsewhere") for o in objs)
    cluster = by(objs, "Deployment", "mlsysops-cluster-edge-1")[0]["spec"]["template"]["spec"]["containers"][0]
    assert cluster["image"] == "reg.example/mlsysops:1" and cluster["command"][-2:] == ["--sim", "http://sim:7000"]


def test_cli_render_writes_one_file_per_kind(tmp_path):
    from typer.testing import CliRunner

    from mlsysops.cli.main import app

    res = CliRunner().invoke(app, ["deploy", "render", str(DEMO), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files[0] == "00-namespace.yaml" and "01-customresourcedefinition.yaml" in files
    docs = [d for f in files for d in yaml.safe_load_all((tmp_path / "out" / f).read_text())]
    assert Counter(d["kind"] for d in docs)["NetworkPolicy"] == 3


def test_apply_maps_api_versions_to_the_typed_client_apis():
    from kubernetes.aio import client as k

    from mlsysops.cli.deploy.apply import _snake, typed_api_class

    assert typed_api_class("v1") is k.CoreV1Api and typed_api_class("apps/v1") is k.AppsV1Api
    assert typed_api_class("rbac.authorization.k8s.io/v1") is k.RbacAuthorizationV1Api
    assert typed_api_class("apiextensions.k8s.io/v1") is k.ApiextensionsV1Api
    assert typed_api_class("mlsysops.eu/v1") is None and typed_api_class("policy.karmada.io/v1alpha1") is None
    assert _snake("ClusterRoleBinding") == "cluster_role_binding" and _snake("DaemonSet") == "daemon_set"
    for obj in render(load_slice(DEMO), **FIXED):     # every typed kind render emits has its patch method
        cls = typed_api_class(obj["apiVersion"])
        if cls is not None:
            scope = "" if obj["metadata"].get("namespace") is None else "namespaced_"
            assert hasattr(cls, f"patch_{scope}{_snake(obj['kind'])}"), obj["kind"]
