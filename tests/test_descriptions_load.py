"""Loading both forms, the reference files (with their warnings), the examples, and save/load round trips."""

from pathlib import Path

import pytest
import yaml

from mlsysops.agents.descriptions import (
    DescriptionError,
    MLSysOpsApp,
    MLSysOpsCluster,
    MLSysOpsNode,
    dump_yaml,
    load_file,
    load_obj,
    load_text,
    to_dict,
    to_k8s,
    to_wrapped,
)
from mlsysops.agents.descriptions.enums import RestartPolicy

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"   # copies of the originals
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
DESCRIPTION_EXAMPLES = [p for p in EXAMPLES if "slice:" not in p.read_text()]
REFERENCE_FILES = sorted(REFERENCE.glob("*.yaml"))

# (file, path, fragment of the message) of every warning the reference files must produce.
EXPECTED_WARNINGS = {
    "app.yaml": [
        ("components[0].node_placement.mobility", "read as 'mobile'"),
        ("components[1].node_placement.mobility", "read as 'mobile'"),
        ("components[0].restart_policy", "read as 'OnFailure'"),
        ("components[1].restart_policy", "read as 'OnFailure'"),
        ("components[0].containers[0].platform_requirements.os", "moved to components[0].os"),
        ("components[0].containers[0].platform_requirements.node_type", "moved to components[0].node_type"),
        ("components[0].containers[0].platform_requirements.container_runtime", "moved"),
        (
            "components[0].containers[0].platform_requirements.performance_indicator",
            "cpu.performance_indicator",
        ),
        ("components[1].containers[0].platform_requirements.os", "moved to components[1].os"),
        ("components[1].containers[0].platform_requirements.node_type", "moved"),
        ("components[1].containers[0].platform_requirements.container_runtime", "moved"),
        (
            "components[1].containers[0].platform_requirements.performance_indicator",
            "cpu.performance_indicator",
        ),
        ("components[0].containers[0].platform_requirements.cpu.frequency", "read as 1.4 GHz"),
        ("components[1].containers[0].platform_requirements.cpu.frequency", "read as 1.4 GHz"),
        ("components[1].containers[0].platform_requirements.gpu.memory", "expected an integer"),
    ],
    "node1.yaml": [
        ("mobility", "read as 'mobile'"),
        ("hardware.cpu.frequency[0]", "above 10 GHz"),
        ("hardware.cpu.frequency[1]", "above 10 GHz"),
        ("power.availability", "not in the original MLSysOpsNode CRD"),
    ],
    "node2.yaml": [
        ("mobility", "read as 'mobile'"),
        ("hardware.cpu.frequency[0]", "read as 1.4 GHz"),
        ("hardware.cpu.frequency[1]", "read as 1.7 GHz"),
        ("power.availability", "not in the original MLSysOpsNode CRD"),
    ],
    "cluster.yaml": [],
    "continuum.yaml": [],
}


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.name)
def test_reference_file_loads_with_expected_warnings(path):
    (doc,) = load_file(path)
    got = [(w.path, w.message) for w in doc.warnings]
    expected = EXPECTED_WARNINGS[path.name]
    assert len(got) == len(expected), got
    for want_path, fragment in expected:
        assert any(p == want_path and fragment in m for p, m in got), (want_path, fragment, got)
    for warning in doc.warnings:
        assert warning.severity == "warning" and warning.file == str(path) and warning.doc_index == 0


def test_reference_app_values_after_normalisation():
    (doc,) = load_file(REFERENCE / "app.yaml")
    app = doc.spec
    assert isinstance(app, MLSysOpsApp)
    server, client = app.components
    assert server.node_placement.mobile is True and client.node_placement.mobile is False
    assert server.restart_policy is RestartPolicy.OnFailure
    assert str(server.os) == "ubuntu" and str(client.container_runtime) == "docker"
    cpu = server.containers[0].platform_requirements.cpu
    assert cpu.performance_indicator == 30 and cpu.frequency.value == pytest.approx(1.4e9)
    assert client.containers[0].platform_requirements.gpu.memory == 2
    assert server.cpu_request_cores == pytest.approx(0.25)
    assert server.memory_limit_bytes == 128 * 2**20


@pytest.mark.parametrize("path", DESCRIPTION_EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_validate_without_warnings(path):
    docs = load_file(path)
    assert docs
    assert [str(w) for d in docs for w in d.warnings] == []


ROUND_TRIP_FILES = DESCRIPTION_EXAMPLES + REFERENCE_FILES


@pytest.mark.parametrize("path", ROUND_TRIP_FILES, ids=lambda p: p.name)
def test_round_trip_is_identity(path):
    docs = load_file(path)
    text = dump_yaml(docs)
    again = load_text(text, source="saved")
    assert [d.spec for d in again] == [d.spec for d in docs]
    assert [d.kind for d in again] == [d.kind for d in docs]
    assert dump_yaml(again) == text  # saving is stable
    for saved in yaml.safe_load_all(text):
        assert saved["apiVersion"] == "mlsysops.eu/v1" and set(saved) >= {"kind", "metadata", "spec"}
    # the wrapped form round-trips too
    wrapped = [load_obj(to_wrapped(d.spec)).spec for d in docs]
    assert wrapped == [d.spec for d in docs]


def test_round_trip_keeps_written_quantities():
    text = """
MLSysOpsNode:
  name: n1
  continuum_layer: edge
  environment: {os: ubuntu}
  hardware: {memory: 4, disk: "120", cpu: {cores: 2, frequency: [1.5GHz, 1800MHz]}}
"""
    (doc,) = load_text(text)
    spec = to_k8s(doc)["spec"]
    assert spec["hardware"]["memory"] == 4 and spec["hardware"]["disk"] == "120"
    assert spec["hardware"]["cpu"]["frequency"] == ["1.5GHz", "1800MHz"]
    assert "labels" not in spec  # unset fields are not written


def test_kubernetes_form_metadata_name_fills_id_and_metadata_kept():
    obj = {
        "apiVersion": "mlsysops.eu/v1",
        "kind": "MLSysOpsCluster",
        "metadata": {"name": "c1", "namespace": "ops", "labels": {"a": "b"}},
        "spec": {"nodes": ["n1"]},
        "status": {"phase": "Ready"},
    }
    doc = load_obj(obj)
    assert isinstance(doc.spec, MLSysOpsCluster) and doc.spec.id == "c1" and doc.form == "kubernetes"
    out = to_k8s(doc)
    assert out["metadata"] == {"name": "c1", "namespace": "ops", "labels": {"a": "b"}}
    assert out["status"] == {"phase": "Ready"} and out["spec"] == {"cluster_id": "c1", "nodes": ["n1"]}


def test_metadata_name_must_agree():
    obj = {
        "apiVersion": "mlsysops.eu/v1",
        "kind": "MLSysOpsCluster",
        "metadata": {"name": "c1"},
        "spec": {"cluster_id": "c2", "nodes": []},
    }
    with pytest.raises(DescriptionError) as err:
        load_obj(obj)
    assert err.value.issues[0].path == "metadata.name" and "differs" in err.value.issues[0].message


def test_multi_document_and_ids():
    text = """
MLSysOpsContinuum: {continuum_id: c, clusters: [a]}
---
---
apiVersion: mlsysops.eu/v1
kind: MLSysOpsCluster
metadata: {name: a}
spec: {nodes: [n]}
---
MLSysOpsDatacenter: {datacenter_id: dc1, cluster_id: a, continuum: cloud, nodes: [n]}
"""
    docs = load_text(text, source="multi.yaml")
    assert [(d.kind, d.name, d.index) for d in docs] == [
        ("MLSysOpsContinuum", "c", 0),
        ("MLSysOpsCluster", "a", 2),
        ("MLSysOpsDatacenter", "dc1", 3),
    ]
    assert [d.spec.id for d in docs] == ["c", "a", "dc1"]


def test_errors_of_all_documents_are_reported_together():
    text = "MLSysOpsCluster: {cluster_id: a}\n---\nMLSysOpsContinuum: {clusters: [a]}\n"
    with pytest.raises(DescriptionError) as err:
        load_text(text, source="two.yaml")
    assert sorted((i.doc_index, i.path) for i in err.value.issues) == [(0, "nodes"), (1, "continuum_id")]
    assert all(i.file == "two.yaml" for i in err.value.issues)


def test_to_dict_is_plain_data():
    (doc,) = load_file(ROOT / "examples/apps/video-analytics.yaml")
    data = to_dict(doc.spec)
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert data["components"][0]["containers"][0]["platform_requirements"]["memory"]["requests"] == "2Gi"


def test_kind_alias_and_node_model():
    doc = load_obj(
        {
            "MLSysOpsApplication": {
                "name": "a",
                "components": [{"metadata": {"name": "x"}, "containers": [{"image": "i"}]}],
            }
        }
    )
    assert doc.kind == "MLSysOpsApp" and "read as 'MLSysOpsApp'" in doc.warnings[0].message
    node = load_obj(
        {"MLSysOpsNode": {"name": "n", "continuum_layer": "edge", "environment": {}, "hardware": {}}}
    ).spec
    assert isinstance(node, MLSysOpsNode) and node.cpu_cores == 0 and node.memory_bytes == 0
