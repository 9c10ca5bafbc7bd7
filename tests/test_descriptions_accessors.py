"""Accessors placement relies on, and the semantic checks that only warn."""

from pathlib import Path

import pytest

from mlsysops.agents.descriptions import Inventory, SensorRef, check, load_file, load_obj

ROOT = Path(__file__).resolve().parent.parent
NODES = ROOT / "examples/slices/demo/nodes"


def _node(name):
    (doc,) = load_file(NODES / f"{name}.yaml")
    return doc.spec


def _app(name):
    (doc,) = load_file(ROOT / f"examples/apps/{name}.yaml")
    return doc.spec


def test_node_accessors():
    gpu = _node("cloud-vm-1")
    assert gpu.id == "cloud-vm-1" and gpu.cpu_cores == 32 and gpu.memory_bytes == 64 * 2**30
    assert gpu.gpu_present and gpu.architecture == "amd64"
    assert gpu.cpu_frequencies_hz == pytest.approx([2.0e9, 2.8e9, 3.7e9])
    board = _node("far-edge-1")
    assert board.memory_bytes == 512 * 2**20 and board.cpu_cores == 1 and not board.gpu_present
    assert board.sensor_refs == [SensorRef("temperature", "ds18b20")] and board.sensor_names == [
        "temperature"
    ]
    assert board.has_sensor("temperature") and board.has_sensor("temperature", "ds18b20")
    assert not board.has_sensor("temperature", "sdc30") and not board.has_sensor("camera")
    assert _node("cloud-vm-2").memory_bytes == 32 * 2**30  # plain number = GB (GiB)


def test_node_labels():
    rpi = _node("edge-rpi-1")
    assert rpi.labels == ["node-type:rpi", "tier:edge"]
    assert rpi.has_labels(["node-type:rpi"]) and rpi.has_labels(["node-type"]) and rpi.has_labels([])
    assert not rpi.has_labels(["node-type:jetson"]) and not rpi.has_labels(["gpu"])


def test_component_accessors():
    app = _app("video-analytics")
    detector, capture, dashboard = app.components
    assert detector.name == "detector" and app.component("dashboard") is dashboard
    assert detector.cpu_request_cores == 2 and detector.cpu_limit_cores == 4
    assert detector.memory_request_bytes == 2 * 2**30 and detector.memory_limit_bytes == 4 * 2**30
    assert detector.gpu_required and not capture.gpu_required
    assert detector.architectures == ["amd64"] and dashboard.architectures is None
    assert capture.required_sensors == [SensorRef("camera", "d455")]
    assert dashboard.node_placement.node == "cloud-vm-2"
    assert app.policies == ["filter_score_placement"]


def test_totals_over_containers_and_unlimited():
    doc = load_obj(
        {
            "MLSysOpsApp": {
                "name": "a",
                "components": [
                    {
                        "metadata": {"name": "c"},
                        "containers": [
                            {
                                "platform_requirements": {
                                    "cpu": {
                                        "requests": "250m",
                                        "limits": 1,
                                        "architecture": ["arm64", "amd64"],
                                    },
                                    "memory": {"requests": "64Mi"},
                                }
                            },
                            {
                                "platform_requirements": {
                                    "cpu": {"requests": "500m", "architecture": ["arm64"]}
                                }
                            },
                        ],
                    }
                ],
            }
        }
    )
    comp = doc.spec.components[0]
    assert comp.cpu_request_cores == pytest.approx(0.75)
    assert comp.cpu_limit_cores is None and comp.memory_limit_bytes is None
    assert comp.memory_request_bytes == 64 * 2**20
    assert comp.architectures == ["arm64"]


def test_warnings_from_semantic_checks():
    doc = load_obj(
        {
            "MLSysOpsApp": {
                "name": "Bad_Name",
                "components": [
                    {
                        "metadata": {"name": "c"},
                        "containers": [{}],
                        "qos_metrics": [{"application_metric_id": "rt"}],
                    }
                ],
                "global_satisfaction": {
                    "threshold": 0.5,
                    "achievement_weights": [{"metric_id": "rtt", "weight": 1}],
                },
            }
        }
    )
    paths = {w.path: w for w in doc.warnings}
    assert "Kubernetes object name" in paths["name"].message
    assert paths["global_satisfaction.achievement_weights[0].metric_id"].suggestion == "rt"


def test_inventory_from_descriptions_and_check():
    docs = load_file(ROOT / "examples/slices/demo/clusters.yaml")
    inv = Inventory.from_descriptions(d.spec for d in docs)
    assert inv.clusters == {"cloud-1", "edge-1"} and "far-edge-1" in inv.nodes
    assert check(_app("video-analytics"), inv) == []
    issues = check(_app("video-analytics"), Inventory(nodes=frozenset(), clusters=frozenset({"cloud-1"})))
    assert {i.path for i in issues} == {
        "cluster_placement.cluster_id[1]",
        "components[2].node_placement.node",
    }
