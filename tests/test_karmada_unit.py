"""Pure checks of the Karmada builders and of reading a ResourceBinding back (substrates/kubernetes/karmada.py)."""

from __future__ import annotations

from pathlib import Path

from mlsysops.agents.descriptions import load_file
from mlsysops.substrates.kubernetes import karmada as kk

ROOT = Path(__file__).resolve().parents[1]
APP = load_file(ROOT / "examples" / "apps" / "env-monitor.yaml")[0].spec


def test_binding_names_follow_karmada():
    assert kk.binding_name("web", "Deployment") == "web-deployment"
    assert kk.deployment_binding("env-monitor", "aggregator") == "env-monitor-aggregator-deployment"


def test_image_registry():
    assert kk.image_registry("registry.example.org/env/a:1") == "registry.example.org"
    assert kk.image_registry("localhost:5000/a") == "localhost:5000"
    assert kk.image_registry("nginx:1.25") is None and kk.image_registry("library/nginx") is None


def test_propagation_policy_names_one_cluster_and_selects_the_templates():
    objs = kk.templates(APP, "aggregator", cluster="edge-1", namespace="ns")
    assert [o["kind"] for o in objs] == ["Deployment", "Service"]
    assert "affinity" not in objs[0]["spec"]["template"]["spec"]
    pp = kk.propagation_policy(APP.name, "aggregator", "edge-1", objs, "ns")
    assert pp["spec"]["placement"] == {"clusterAffinity": {"clusterNames": ["edge-1"]}}
    assert {(s["kind"], s["name"]) for s in pp["spec"]["resourceSelectors"]} == {
        ("Deployment", "env-monitor-aggregator"), ("Service", "aggregator")}
    assert pp["metadata"]["labels"][kk.LABEL_POLICY] == "placement"


def test_override_policy_only_when_it_changes_something():
    objs = kk.templates(APP, "aggregator", cluster="edge-1", namespace="ns")
    none = kk.override_policy(APP, "aggregator", "edge-1", objs, "ns", None)
    same = kk.override_policy(APP, "aggregator", "edge-1", objs, "ns",
                              kk.ClusterOverride(image_registry="registry.example.org", max_replicas=3))
    assert none is None and same is None                  # same registry, 1 replica <= cap 3
    op = kk.override_policy(APP, "aggregator", "edge-1", objs, "ns",
                            kk.ClusterOverride.from_settings({"image_registry": "mirror.edge", "max_replicas": 0}))
    (rule,) = op["spec"]["overrideRules"]
    assert rule["targetCluster"] == {"clusterNames": ["edge-1"]}
    assert rule["overriders"]["imageOverrider"] == [{"component": "Registry", "operator": "replace",
                                                     "value": "mirror.edge"}]
    assert rule["overriders"]["plaintext"] == [{"path": "/spec/replicas", "operator": "replace", "value": 0}]
    assert [s["kind"] for s in op["spec"]["resourceSelectors"]] == ["Deployment"]


def _rb(clusters, scheduled=None, applied=None, agg=None):
    conds = []
    if scheduled is not None:
        conds.append({"type": "Scheduled", "status": scheduled, "reason": "NoClusterFit" if scheduled == "False" else "Success"})
    if applied is not None:
        conds.append({"type": "FullyApplied", "status": applied})
    return {"spec": {"clusters": [{"name": c} for c in clusters]},
            "status": {"conditions": conds, "aggregatedStatus": agg or []}}


def test_binding_result_statuses():
    healthy = [{"clusterName": "edge-1", "applied": True, "health": "Healthy"}]
    assert kk.binding_result(None)["status"] == "pending"
    assert kk.binding_result(_rb([]))["status"] == "pending"
    assert kk.binding_result(_rb([], "False"))["status"] == "failed"
    assert kk.binding_result(_rb(["edge-1"], "True"))["status"] == "deploying"
    assert kk.binding_result(_rb(["edge-1"], "True", "True", healthy), "edge-1")["status"] == "running"
    assert kk.binding_result(_rb(["cloud-1"], "True", "True", healthy), "edge-1")["status"] == "misplaced"
    broken = [{"clusterName": "edge-1", "applied": False, "appliedMessage": "quota exceeded"}]
    res = kk.binding_result(_rb(["edge-1"], "True", "False", broken), "edge-1")
    assert res["status"] == "failed" and "quota exceeded" in res["reason"]
    unhealthy = [{"clusterName": "edge-1", "applied": True, "health": "Unhealthy"}]
    assert kk.binding_result(_rb(["edge-1"], "True", "True", unhealthy), "edge-1")["status"] == "deploying"


def test_multicluster_service_names_the_service_and_both_sides():
    obj = kk.multi_cluster_service("shop", "Web_API", provider="cloud-1", consumers=["edge-2", "edge-1"],
                                   namespace="apps")
    assert obj["apiVersion"] == "networking.karmada.io/v1alpha1" and obj["kind"] == "MultiClusterService"
    assert obj["metadata"]["name"] == kk.dns_label("Web_API")        # the Service's own name
    assert obj["spec"] == {"types": ["CrossCluster"], "providerClusters": [{"name": "cloud-1"}],
                           "consumerClusters": [{"name": "edge-1"}, {"name": "edge-2"}]}
    assert obj["metadata"]["labels"]["mlsysops.eu/app"] == "shop"
