"""Slice config: defaults, path resolution, infrastructure cross-checks."""

from pathlib import Path

import pytest

from mlsysops.agents.descriptions import DescriptionError
from mlsysops.agents.slice_config import SliceConfig, is_slice_config, load_slice

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples/slices/demo.yaml"

NODE = """MLSysOpsNode:
  name: {name}
  continuum_layer: edge
  {cluster}
  environment: {{os: ubuntu}}
  hardware: {{cpu: {{cores: 2}}, memory: 2}}
"""


def write(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "slice.yaml"


def test_demo_slice():
    spec = load_slice(DEMO)
    assert spec.name == "demo" and spec.warnings == []
    assert spec.continuum.continuum_id == "demo" and spec.continuum.clusters == ["cloud-1", "edge-1"]
    assert set(spec.clusters) == {"cloud-1", "edge-1"} and len(spec.nodes) == 7
    assert {n.continuum_layer.value for n in spec.nodes.values()} == {
        "cloud",
        "edge_infrastructure",
        "edge",
        "far_edge",
    }
    assert sum(n.gpu_present for n in spec.nodes.values()) == 1
    assert {n.architecture for n in spec.nodes.values()} == {"amd64", "arm64"}
    assert [n.name for n in spec.cluster_nodes("cloud-1")] == ["cloud-vm-1", "cloud-vm-2"]
    assert spec.inventory.clusters == {"cloud-1", "edge-1"} and "far-edge-1" in spec.inventory.nodes
    assert spec.config.intervals.heartbeat == 1.0 and spec.config.telemetry.digest_interval == 2.0
    assert spec.config.xmpp.port == 0 and spec.config.xmpp.domain == "localhost"
    assert spec.source_of(spec.nodes["far-edge-1"]).endswith("far-edge-1.yaml (document 0)")


def test_minimal_file_gets_defaults_and_derived_continuum(tmp_path):
    path = write(
        tmp_path,
        {
            "slice.yaml": "slice: tiny\nclusters:\n  - MLSysOpsCluster: {cluster_id: c1, nodes: []}\n"
            "nodes: [nodes/*.yaml]\nintervals: {heartbeat: 200ms, analyze: 1m}\n"
            "policies:\n  cluster:\n    directories: [./my-policies]\n",
            "nodes/a.yaml": NODE.format(name="a", cluster="cluster_id: c1"),
            "nodes/b.yaml": NODE.format(name="b", cluster="cluster_id: c1"),
        },
    )
    spec = load_slice(path)
    assert spec.continuum.continuum_id == "tiny" and spec.continuum.clusters == ["c1"]
    assert spec.clusters["c1"].nodes == ["a", "b"]  # empty list filled from the nodes
    cfg = spec.config
    assert (
        cfg.intervals.heartbeat == 0.2 and cfg.intervals.analyze == 60 and cfg.intervals.liveness_misses == 3
    )
    assert cfg.substrate.type == "sim" and cfg.substrate.seed == 42 and cfg.xmpp.server == "embedded"
    assert cfg.policies.cluster.directories == [tmp_path / "my-policies"]
    assert cfg.policies.node.enabled is None and cfg.api.port == 8080
    assert spec.state_dir == Path.home() / ".mlsysops" / "tiny"


def test_node_without_cluster_id_is_assigned_with_warning(tmp_path):
    path = write(
        tmp_path,
        {
            "slice.yaml": "slice: s\nclusters: [c.yaml]\nnodes: [a.yaml]\n",
            "c.yaml": "MLSysOpsCluster: {cluster_id: c1, nodes: [a]}\n",
            "a.yaml": NODE.format(name="a", cluster=""),
        },
    )
    spec = load_slice(path)
    assert spec.nodes["a"].cluster_id == "c1"
    assert any("assigned to cluster 'c1'" in w.message for w in spec.warnings)


def _errors(path):
    with pytest.raises(DescriptionError) as err:
        load_slice(path)
    return err.value.issues


def test_membership_disagreement_names_both_files(tmp_path):
    path = write(
        tmp_path,
        {
            "slice.yaml": "slice: s\nclusters: [c.yaml]\nnodes: [n/*.yaml]\n",
            "c.yaml": "MLSysOpsCluster: {cluster_id: c1, nodes: [a]}\n---\n"
            "MLSysOpsCluster: {cluster_id: c2, nodes: [b]}\n",
            "n/a.yaml": NODE.format(name="a", cluster="cluster_id: c2"),
            "n/b.yaml": NODE.format(name="b", cluster="cluster_id: c2"),
        },
    )
    issues = _errors(path)
    listed = [i for i in issues if i.file.endswith("c.yaml") and i.path == "nodes[0]"]
    assert listed and "cluster_id is 'c2'" in listed[0].message and "a.yaml" in listed[0].message
    missing = [i for i in issues if i.file.endswith("a.yaml") and i.path == "cluster_id"]
    assert missing and "c.yaml" in missing[0].message


def test_unknown_cluster_and_missing_files(tmp_path):
    path = write(
        tmp_path,
        {
            "slice.yaml": "slice: s\nclusters: [c.yaml, nope.yaml]\nnodes: [a.yaml, none/*.yaml]\n",
            "c.yaml": "MLSysOpsCluster: {cluster_id: edge-1, nodes: []}\n",
            "a.yaml": NODE.format(name="a", cluster="cluster_id: edge-l"),
        },
    )
    issues = _errors(path)
    by_path = {(Path(i.file).name, i.path): i for i in issues}
    assert by_path[("slice.yaml", "clusters[1]")].message == "file not found"
    assert by_path[("slice.yaml", "nodes[1]")].message == "pattern matches no files"
    assert by_path[("a.yaml", "cluster_id")].suggestion == "edge-1"


def test_config_errors_have_paths_and_suggestions(tmp_path):
    path = write(
        tmp_path,
        {
            "slice.yaml": "slice: s\nsubstrate: {type: kubernets}\nintervals: {heartbeat: 1 sec}\n"
            "telemtry: {}\n"
        },
    )
    issues = {i.path: i for i in _errors(path)}
    assert issues["substrate.type"].suggestion == "kubernetes"
    assert "duration" in issues["intervals.heartbeat"].message
    assert issues["telemtry"].suggestion == "telemetry"
    assert all(i.file == str(path) for i in issues.values())


def test_duplicates_and_apps_are_rejected(tmp_path):
    path = write(
        tmp_path,
        {
            "slice.yaml": "slice: s\nclusters: [c.yaml, c.yaml]\nnodes: [app.yaml]\n",
            "c.yaml": "MLSysOpsCluster: {cluster_id: c1, nodes: []}\n",
            "app.yaml": "MLSysOpsApp: {name: x, components: [{metadata: {name: a}, containers: [{}]}]}\n",
        },
    )
    messages = [i.message for i in _errors(path)]
    assert any("also defined in" in m for m in messages)
    assert any("applications do not belong" in m for m in messages)


def test_continuum_must_match_clusters(tmp_path):
    path = write(
        tmp_path,
        {
            "slice.yaml": "slice: s\ncontinuum: {MLSysOpsContinuum: {continuum_id: k, clusters: [c1, c9]}}\n"
            "clusters: [{MLSysOpsCluster: {cluster_id: c1, nodes: []}}]\n",
        },
    )
    issues = _errors(path)
    assert any(i.path == "clusters[1]" and "'c9'" in i.message for i in issues)


def test_xmpp_options():
    cfg = SliceConfig.model_validate(
        {"slice": "s", "xmpp": {"server": "external", "host": "xmpp.example.org", "password_env": "MY_PW"}}
    )
    assert cfg.xmpp.port == 5222 and cfg.xmpp.domain == "xmpp.example.org"
    with pytest.raises(ValueError):
        SliceConfig.model_validate({"slice": "s", "xmpp": {"password": "a", "password_env": "B"}})
    with pytest.raises(ValueError):
        SliceConfig.model_validate({"slice": "Bad Name"})


def test_password_sources(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("secret\n")
    path = write(tmp_path, {"slice.yaml": "slice: s\nxmpp: {password_file: pw}\n"})
    assert load_slice(path).config.xmpp.resolve_password() == "secret"
    monkeypatch.setenv("MY_PW", "fromenv")
    cfg = SliceConfig.model_validate({"slice": "s", "xmpp": {"password_env": "MY_PW"}})
    assert cfg.xmpp.resolve_password() == "fromenv"


def test_is_slice_config():
    assert (
        is_slice_config({"slice": "x"})
        and not is_slice_config({"MLSysOpsApp": {}})
        and not is_slice_config([])
    )
