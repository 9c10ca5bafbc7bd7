"""`mlsysops validate` and `mlsysops schema` through Typer's CliRunner and one real subprocess."""

import glob
import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mlsysops.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

BROKEN_APP = """MLSysOpsApp:
  name: broken
  components:
    - metadata: {name: a}
      containers: [{image: x}]
    - metadata: {name: b}
      restart_policy: Alway
      containers:
        - image: x
          platform_requirements:
            cpu: {requests: 250x}
"""


def test_validate_examples_ok():
    files = [str(ROOT / "examples/slices/demo.yaml"), *sorted(glob.glob(str(ROOT / "examples/apps/*.yaml")))]
    result = runner.invoke(app, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert "(slice demo: 1 continuum, 2 clusters, 7 nodes)" in result.output
    assert "(MLSysOpsApp/video-analytics, 3 components)" in result.output
    assert "(MLSysOpsApp/env-monitor, 2 components)" in result.output
    assert all(line.startswith("OK") for line in result.output.splitlines())


def test_validate_one_line_per_document():
    result = runner.invoke(app, ["validate", str(ROOT / "examples/slices/demo/clusters.yaml")])
    assert result.exit_code == 0
    assert result.output.count("OK") == 2 and "MLSysOpsCluster/edge-1, 5 nodes" in result.output


def test_validate_broken_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_APP)
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    out = result.output
    assert f"FAIL  {bad}" in out
    assert "doc 0  components[1].restart_policy: not an allowed value; got 'Alway'" in out
    assert "did you mean 'Always'?" in out
    assert "components[1].containers[0].platform_requirements.cpu.requests" in out and "'250x'" in out


def test_validate_json_output(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_APP)
    good = ROOT / "examples/apps/env-monitor.yaml"
    result = runner.invoke(app, ["validate", "-o", "json", str(good), str(bad)])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False
    first, second = data["results"]
    assert first["ok"] and first["documents"][0]["name"] == "env-monitor"
    assert not second["ok"]
    paths = {e["path"]: e for e in second["errors"]}
    assert paths["components[1].restart_policy"]["suggestion"] == "Always"
    assert paths["components[1].restart_policy"]["value"] == "Alway"
    assert paths["components[1].restart_policy"]["doc_index"] == 0


def test_validate_uses_slice_inventory(tmp_path):
    app_file = tmp_path / "pinned.yaml"
    app_file.write_text(
        "MLSysOpsApp:\n  name: p\n  components:\n    - metadata: {name: a}\n"
        "      node_placement: {node: cloud-vm-3}\n      containers: [{image: x}]\n"
    )
    alone = runner.invoke(app, ["validate", str(app_file)])
    assert alone.exit_code == 0
    with_slice = runner.invoke(
        app, ["validate", "--slice", str(ROOT / "examples/slices/demo.yaml"), str(app_file)]
    )
    assert with_slice.exit_code == 1
    assert "node 'cloud-vm-3' does not exist" in with_slice.output and "did you mean" in with_slice.output


def test_validate_reference_shows_warnings():
    ref = ROOT / "tests" / "fixtures" / "reference" / "node1.yaml"
    result = runner.invoke(app, ["validate", str(ref)])
    assert result.exit_code == 0
    assert (
        "warning: doc 0  mobility: 'mobility' is not a field of the original CRD; read as 'mobile'"
        in result.output
    )


def test_validate_missing_file(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "cannot read file" in result.output


def test_schema_crds_and_jsonschema():
    result = runner.invoke(app, ["schema", "crds"])
    assert result.exit_code == 0
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    assert sorted(d["spec"]["names"]["kind"] for d in docs) == sorted(
        ["MLSysOpsApp", "MLSysOpsNode", "MLSysOpsCluster", "MLSysOpsContinuum", "MLSysOpsDatacenter"]
    )
    one = runner.invoke(app, ["schema", "jsonschema", "--kind", "mlsnode"])
    assert one.exit_code == 0 and json.loads(one.output)["title"] == "MLSysOpsNode"
    bad = runner.invoke(app, ["schema", "crds", "--kind", "MLSysOpsNod"])
    assert bad.exit_code == 2 and "did you mean 'MLSysOpsNode'" in bad.output


def test_subprocess_validate_example_apps():
    exe = Path(sys.executable).parent / "mlsysops"
    apps = sorted(glob.glob(str(ROOT / "examples/apps/*.yaml")))
    proc = subprocess.run([str(exe), "validate", *apps], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("OK") == len(apps) >= 2
