"""Manifest builders (substrates/kubernetes/manifests.py): pure, no server; typed-model validation of the output."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client import V1Deployment, V1Service

from mlsysops.agents.descriptions.loader import load_file
from mlsysops.substrates.kubernetes import manifests as m

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "apps"


@pytest.fixture(scope="module")
def env_monitor():
    return load_file(EXAMPLES / "env-monitor.yaml")[0].spec


@pytest.fixture(scope="module")
def video():
    return load_file(EXAMPLES / "video-analytics.yaml")[0].spec


def test_deployment_is_a_valid_v1_deployment_with_affinity_labels_and_resources(env_monitor) -> None:
    d = m.deployment(env_monitor, "aggregator", cluster="edge-1", nodes=["edge-srv-1"],
                     instance_id="env-monitor.aggregator.0@edge-srv-1", namespace="apps")
    V1Deployment.model_validate(d)   # types, required fields, no unknown fields
    meta, spec = d["metadata"], d["spec"]
    assert meta["labels"] == {m.MANAGED_BY: "mlsysops", m.LABEL_APP: "env-monitor",
                              m.LABEL_COMPONENT: "aggregator", m.LABEL_CLUSTER: "edge-1",
                              m.LABEL_INSTANCE: m.short_hash("env-monitor.aggregator.0@edge-srv-1", 12)}
    assert meta["annotations"][m.ANN_INSTANCE_ID] == "env-monitor.aggregator.0@edge-srv-1"
    assert spec["replicas"] == 1
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # the selector picks the template's pods, and only this instance's
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert "nodeName" not in pod
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["edge-srv-1"]}]
    c = pod["containers"][0]
    assert c["image"] == "registry.example.org/env/aggregator:0.3"
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": str(256 * 2**20)},
                              "limits": {"cpu": "1000m", "memory": str(512 * 2**20)}}
    assert c["ports"] == [{"containerPort": 1883, "protocol": "TCP"}]


def test_env_restart_policy_and_runtime_class(env_monitor) -> None:
    d = m.deployment(env_monitor, "sensor-reader", cluster="edge-1", nodes=["rpi-1"])
    V1Deployment.model_validate(d)
    pod = d["spec"]["template"]["spec"]
    assert pod["containers"][0]["env"] == [{"name": "AGGREGATOR", "value": "aggregator:1883"}]
    assert pod["restartPolicy"] == "Always"   # the only value a Deployment accepts
    assert d["metadata"]["annotations"][m.ANN_RESTART_POLICY] == "OnFailure"
    assert "OnFailure" in m.restart_policy_note(env_monitor.component("sensor-reader"))
    spec = env_monitor.component("sensor-reader").model_dump(mode="json", exclude_none=True)
    spec["runtime_class_name"] = "kata-fc"
    spec["containers"][0]["image"] = "registry.example.org/env/reader:0.4"
    spec["containers"][0]["env"].append({"name": "NODE_IP", "value_from": {"field_ref": {"field_path": "status.hostIP"}}})
    d2 = m.deployment(env_monitor, "sensor-reader", cluster="edge-1", nodes=["rpi-1"], spec=spec)
    V1Deployment.model_validate(d2)
    pod2 = d2["spec"]["template"]["spec"]
    assert pod2["runtimeClassName"] == "kata-fc"
    assert pod2["containers"][0]["image"].endswith(":0.4")
    assert pod2["containers"][0]["env"][1] == {"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}


def test_whole_component_deployment_takes_replicas_from_scaling(env_monitor) -> None:
    spec = env_monitor.component("aggregator").model_dump(mode="json", exclude_none=True)
    spec["node_placement"]["scaling"] = {"scaling_mode": "manual", "instances": 3}
    d = m.deployment(env_monitor, "aggregator", cluster="edge-1", spec=spec)
    V1Deployment.model_validate(d)
    assert d["spec"]["replicas"] == 3
    assert "affinity" not in d["spec"]["template"]["spec"]
    assert m.LABEL_INSTANCE not in d["spec"]["selector"]["matchLabels"]
    assert d["metadata"]["name"] == "env-monitor-aggregator"


def test_services_for_ports_interactions_and_external_access(env_monitor, video) -> None:
    [svc] = m.services(env_monitor, "aggregator", cluster="edge-1")
    V1Service.model_validate(svc)
    assert svc["metadata"]["name"] == "aggregator"   # peers address it as aggregator:1883
    assert svc["spec"]["ports"] == [{"name": "tcp-1883", "port": 1883, "targetPort": 1883, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {m.LABEL_APP: "env-monitor", m.LABEL_COMPONENT: "aggregator"}
    assert m.services(env_monitor, "sensor-reader", cluster="edge-1") == []   # sends only, no ports
    [dash] = m.services(video, "dashboard", cluster="cloud-1")
    assert dash["spec"]["type"] == "NodePort"
    # a receiver without declared ports gets a headless Service
    spec = env_monitor.component("aggregator").model_dump(mode="json", exclude_none=True)
    del spec["containers"][0]["ports"]
    [headless] = m.services(env_monitor, "aggregator", cluster="edge-1", spec=spec)
    V1Service.model_validate(headless)
    assert headless["spec"]["clusterIP"] == "None" and "ports" not in headless["spec"]


def test_gpu_limits_and_names_stay_valid(video) -> None:
    d = m.deployment(video, "detector", cluster="cloud-1", nodes=["cloud-vm-1"], instance_id="video-analytics.detector.0@cloud-vm-1")
    V1Deployment.model_validate(d)
    res = d["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"] == {"cpu": "2000m", "memory": str(2 * 2**30)}
    assert "nvidia.com/gpu" not in res["limits"]   # gpu model/memory only, no count
    long = m.dns_label("a" * 50, "Component_With_Caps", "x" * 30)
    assert len(long) <= 63 and long == long.lower() and m.dns_label("web") == "web"
    assert m.label_value("shop.web.0@n1") != "shop.web.0@n1" and len(m.label_value("x" * 80)) <= 63


def test_component_selector() -> None:
    assert m.component_selector("shop", "web", "c1") == (
        "app.kubernetes.io/managed-by=mlsysops,mlsysops.eu/app=shop,mlsysops.eu/component=web,mlsysops.eu/cluster=c1")
