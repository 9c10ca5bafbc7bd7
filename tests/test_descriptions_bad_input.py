"""Inputs found by fuzzing: each is a DescriptionError that says where (field path and/or line/column),
never an OverflowError, RecursionError or ValueError escaping from the loader or the error report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlsysops.agents.descriptions import DescriptionError, load_text
from mlsysops.agents.descriptions.yaml_reader import read_documents
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
VIDEO = (ROOT / "examples/apps/video-analytics.yaml").read_text()
BIG = "1" + "0" * 400
CPU_PATH = "components[0].containers[0].platform_requirements.cpu.requests"
MEMORY_PATH = "components[0].containers[0].platform_requirements.memory.requests"


def rejected(text: str) -> DescriptionError:
    with pytest.raises(DescriptionError) as err:
        load_text(text, source="app.yaml")
    json.dumps(err.value.to_dict())   # the report itself is plain JSON
    return err.value


def test_example_is_valid():
    assert load_text(VIDEO)[0].name == "video-analytics"


@pytest.mark.parametrize(("old", "new", "path"), [
    ('requests: "2"', f"requests: {BIG}", CPU_PATH),
    ("requests: 2Gi", f"requests: {BIG}", MEMORY_PATH),
    ("requests: 2Gi", "requests: 0x" + "f" * 5000, MEMORY_PATH),
])
def test_integer_larger_than_a_float_is_a_field_error(old, new, path):
    err = rejected(VIDEO.replace(old, new, 1))
    (issue,) = err.issues
    assert issue.path == path and "too large" in issue.message
    assert "digits" in issue.to_dict()["value"]     # described, not printed in full


def test_integer_too_long_to_read_names_its_line():
    err = rejected(VIDEO.replace("target: 200", "target: " + "7" * 5000, 1))
    (issue,) = err.issues
    assert issue.extra["line"] == 18 and "5000 digits" in issue.message


@pytest.mark.parametrize(("text", "field"), [
    ("a: &a [*a]\n", "a[0]"),
    ("MLSysOpsApp: &a {name: x, components: [*a]}\n", "MLSysOpsApp.components[0]"),
    ("MLSysOpsNode: &a {name: n, hardware: *a, continuum_layer: edge, environment: {}}", "MLSysOpsNode.hardware"),
])
def test_self_referencing_alias_is_rejected_where_it_is(text, field):
    (issue,) = rejected(text).issues
    assert "self-referencing" in issue.message
    assert issue.file == "app.yaml" and issue.path.startswith(field) and issue.extra["line"] == 1
    assert str(issue)


def test_an_alias_to_a_finished_node_still_works():
    assert read_documents("a: &x {b: [1]}\nc: [*x, *x]\n", "s.yaml") == [{"a": {"b": [1]}, "c": [{"b": [1]}] * 2}]


@pytest.mark.parametrize("text", [
    "MLSysOpsApp: " + "[" * 3000 + "]" * 3000,
    VIDEO.replace("restart_policy: Always",
                  "restart_policy:" + "".join("\n" + " " * (8 + 2 * i) + "k:" for i in range(150))),
])
def test_deep_nesting_names_line_column_and_field(text):
    (issue,) = rejected(text).issues
    assert "nests deeper" in issue.message
    assert issue.extra["line"] >= 1 and issue.extra["column"] >= 1
    assert issue.path.split(".")[0].split("[")[0] in ("MLSysOpsApp", "spec") and "levels" in issue.path


@pytest.mark.parametrize(("old", "new", "line", "field"), [
    ("restart_policy: Always", "restart_policy: Al\x00ways", 21, ""),          # reader: a character offset
    ("restart_policy: Always", "restart_policy: [Always", 22, "spec.components[0].restart_policy"),
    ("restart_policy: Always", "restart_policy: *nowhere", 21, "spec.components[0].restart_policy"),
])
def test_yaml_errors_have_line_column_and_field(old, new, line, field):
    (issue,) = rejected(VIDEO.replace(old, new, 1)).issues
    assert issue.message.startswith("invalid YAML")
    assert issue.extra["line"] == line and issue.extra["column"] >= 1
    assert issue.path.startswith(field) and f"line {line}" in issue.path


def test_slice_config_yaml_errors_have_a_line(tmp_path):
    bad = tmp_path / "slice.yaml"
    bad.write_text("slice: s\nnodes: &n [*n]\n")
    with pytest.raises(DescriptionError) as err:
        load_slice(bad)
    (issue,) = err.value.issues
    assert issue.extra["line"] == 2 and issue.path.startswith("nodes[0]")


@pytest.mark.parametrize("text", [
    VIDEO.replace('requests: "2"', f"requests: {BIG}", 1),
    "a: &a [*a]\n",
    "slice: &a [*a]\n",
    "MLSysOpsApp: " + "[" * 3000 + "]" * 3000,
    VIDEO.replace("target: 200", "target: " + "7" * 5000, 1),
])
def test_validate_reports_instead_of_crashing(tmp_path, text):
    path = tmp_path / "app.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "FAIL" in result.output and "Traceback" not in result.output
    as_json = CliRunner().invoke(app, ["validate", "-o", "json", str(path)])
    assert as_json.exit_code == 1 and json.loads(as_json.output)["ok"] is False
