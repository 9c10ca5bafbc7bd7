"""Descriptions written for the original framework, in all three forms it produced (kind-keyed files,
objects with the fields at the root as its CRDs define them, and our Kubernetes `spec` form), and
`mlsysops convert`, which rewrites them into the canonical form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlsysops.agents.descriptions import DescriptionError, load_file, load_obj, load_text, to_dict
from mlsysops.agents.descriptions.convert import convert_text

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "reference"
SHARED = Path("/work/shared/reference/descriptions")
REFERENCE_FILES = sorted(FIXTURES.glob("*.yaml")) + (sorted(SHARED.glob("*.yaml")) if SHARED.is_dir() else [])


def _three_forms(path: Path) -> list[dict]:
    ((kind, body),) = yaml.safe_load(path.read_text()).items()
    name = load_file(path)[0].name
    return [
        {kind: body},
        {"apiVersion": "mlsysops.eu/v1", "kind": kind, "metadata": {"name": name, "namespace": "mlsysops"}, **body},
        {"apiVersion": "mlsysops.eu/v1", "kind": kind, "metadata": {"name": name}, "spec": body},
    ]


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_reference_file_loads_in_all_three_forms(path):
    docs = [load_obj(form, source=str(path)) for form in _three_forms(path)]
    assert [d.form for d in docs] == ["wrapped", "root", "kubernetes"]
    assert len({yaml.safe_dump(to_dict(d.spec)) for d in docs}) == 1     # the same description each time
    # what the loader changed is said, with the field path, in every form alike
    assert [w.path for w in docs[0].warnings] == [w.path for w in docs[1].warnings]


def test_cluster_and_continuum_take_a_name():
    (cluster,) = load_text("MLSysOpsCluster:\n  name: uth-prod-cluster\n  cluster_id: uth-prod-cluster\n"
                           "  nodes: [a, b]\n")
    assert cluster.name == "uth-prod-cluster" and cluster.spec.name == "uth-prod-cluster"
    (cont,) = load_text("MLSysOpsContinuum:\n  name: slice\n  continuum_id: slice-1\n  clusters: [c]\n")
    assert cont.name == "slice-1" and cont.spec.name == "slice"


def test_root_form_takes_the_name_from_metadata_and_reports_paths_at_the_root():
    text = ("apiVersion: mlsysops.eu/v1\nkind: MLSysOpsApp\nmetadata: {name: app-1}\n"
            "components:\n  - metadata: {name: web}\n    restart_policy: on_failure\n"
            "    containers: [{image: nginx, platform_requirements: {memory: {requests: '2'}}}]\n")
    (doc,) = load_text(text)
    assert doc.form == "root" and doc.name == "app-1"
    assert [w.path for w in doc.warnings] == ["components[0].restart_policy"]   # read as OnFailure, said so
    with pytest.raises(DescriptionError) as exc:   # the original CRD refuses this too: named by path
        load_text(text.replace("restart_policy: on_failure", "restart_policy: sometimes"))
    assert [i.path for i in exc.value.issues] == ["components[0].restart_policy"]
    with pytest.raises(DescriptionError) as exc:
        load_text("apiVersion: mlsysops.eu/v1\nkind: MLSysOpsCluster\nmetadata: {name: c}\nnodes: [a]\n"
                  "cluster_id: c\nnodez: [b]\n")
    assert [(i.path, i.suggestion) for i in exc.value.issues] == [("nodez", "nodes")]


def test_a_string_where_the_original_crd_wants_an_integer_is_a_named_warning():
    (doc,) = load_text("MLSysOpsNode:\n  name: n\n  continuum_layer: edge\n  environment: {node_type: native, "
                       "os: ubuntu, container_runtime: [containerd]}\n  hardware: {cpu: {cores: '4'}, memory: 4}\n")
    (warning,) = [w for w in doc.warnings if w.path == "hardware.cpu.cores"]
    assert "expected an integer" in warning.message and doc.spec.hardware.cpu.cores == 4


CLUSTER_ROOT = """\
# the edge cluster of the testbed
apiVersion: mlsysops.eu/v1
kind: MLSysOpsCluster
metadata:
  name: uth-prod-cluster
  namespace: mlsysops
cluster_id: uth-prod-cluster   # as registered
nodes:
# the workers
- node-1
- node-2
"""


def test_convert_keeps_comments_when_only_the_layout_changes():
    (c,) = convert_text(CLUSTER_ROOT)
    assert c.comments_kept and c.form == "root"
    assert "# the workers" in c.text and "cluster_id: uth-prod-cluster   # as registered" in c.text
    obj = yaml.safe_load(c.text)
    assert obj["spec"] == {"cluster_id": "uth-prod-cluster", "nodes": ["node-1", "node-2"]}
    assert obj["metadata"] == {"name": "uth-prod-cluster", "namespace": "mlsysops"}
    assert load_obj(obj).form == "kubernetes"


def test_convert_of_a_file_the_loader_rewrites_lists_every_change():
    (c,) = convert_text((FIXTURES / "app.yaml").read_text(), "app.yaml")
    assert not c.comments_kept
    obj = yaml.safe_load(c.text)
    assert obj["kind"] == "MLSysOpsApp" and "spec" in obj
    assert "#   components[0].restart_policy: 'on_failure' is not a value of the original CRD" in c.text
    # the canonical output needs none of those rewrites any more
    assert not [w for w in load_obj(obj).warnings if "restart_policy" in w.path or "mobility" in w.path]
    assert obj["spec"]["components"][0]["restart_policy"] == "OnFailure"


def test_mlsysops_convert_command(tmp_path):
    src = tmp_path / "cluster.yaml"
    src.write_text("MLSysOpsCluster:   # kind-keyed\n  cluster_id: c1\n  nodes: [a]\n---\n" + CLUSTER_ROOT)
    out = subprocess.run([sys.executable, "-m", "mlsysops.cli", "convert", str(src)], capture_output=True,
                         text=True, check=True)
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["metadata"]["name"] for d in docs] == ["c1", "uth-prod-cluster"]
    assert "spec:  # kind-keyed" in out.stdout
    assert "MLSysOpsCluster/c1: wrapped form -> kubernetes form, comments kept" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("MLSysOpsCluster:\n  nodes: [a]\n")
    res = subprocess.run([sys.executable, "-m", "mlsysops.cli", "convert", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1 and "cluster_id: required field is missing" in res.stderr
    res = subprocess.run([sys.executable, "-m", "mlsysops.cli", "convert", "-i", str(src)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and src.read_text() == out.stdout


def test_mlsysops_validate_reads_root_field_objects(tmp_path):
    src = tmp_path / "cluster.yaml"
    src.write_text(CLUSTER_ROOT)
    res = subprocess.run([sys.executable, "-m", "mlsysops.cli", "validate", str(src)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "MLSysOpsCluster/uth-prod-cluster, 2 nodes" in res.stdout
