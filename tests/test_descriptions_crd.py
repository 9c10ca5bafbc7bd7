"""Generated CRDs are structural apiextensions.k8s.io/v1 objects and the checked-in files are up to date."""

import json

import pytest
import yaml

from mlsysops.agents.descriptions import KINDS
from mlsysops.agents.descriptions.crd_gen import (
    GENERATED_DIR,
    crd,
    generated_files,
    json_schema,
    main,
    stale_files,
)

ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "anyOf",
    "allOf",
    "oneOf",
}


def structural_problems(node, path="root"):
    """Violations of the Kubernetes structural-schema rules (and of the JSONSchemaProps field set)."""
    problems = []
    if not isinstance(node, dict):
        return [f"{path}: not a mapping"]
    for key in node:
        if key not in ALLOWED_KEYS:
            problems.append(f"{path}: key {key!r} not allowed in a CRD schema")
    if "$ref" in node or "definitions" in node or "$defs" in node:
        problems.append(f"{path}: $ref/definitions")
    special = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    if "type" not in node and not special:
        problems.append(f"{path}: no type")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, branch in enumerate(node.get(key, [])):
            if "type" in branch or "properties" in branch:
                problems.append(f"{path}.{key}[{i}]: typed branch")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties with additionalProperties")
    if node.get("type") == "object":
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                problems.append(f"{path}: required {name!r} not in properties")
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{path}: array without one items schema")
    for name, sub in node.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


def test_checker_catches_violations():
    assert structural_problems({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}})
    assert structural_problems({"type": "object", "properties": {"a": {"$ref": "#/x"}}})
    assert structural_problems({"type": "array"})


@pytest.mark.parametrize("cls", list(KINDS.values()), ids=list(KINDS))
def test_crd_is_structural_v1(cls):
    obj = crd(cls)
    assert obj["apiVersion"] == "apiextensions.k8s.io/v1" and obj["kind"] == "CustomResourceDefinition"
    spec = obj["spec"]
    assert obj["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    assert spec["group"] == "mlsysops.eu" and spec["names"]["kind"] == cls.kind
    assert spec["names"]["shortNames"] == [cls.short_name]
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert version["additionalPrinterColumns"][-1]["jsonPath"] == ".metadata.creationTimestamp"
    schema = version["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []
    # the fields at the root too: objects written for the original CRDs (no spec) stay valid
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status",
                                         *schema["properties"]["spec"]["properties"]}
    assert "required" not in schema
    assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "$ref" not in json.dumps(obj)


def test_short_names():
    assert sorted(c.short_name for c in KINDS.values()) == [
        "mlsapp",
        "mlscluster",
        "mlscontinuum",
        "mlsdatacenter",
        "mlsnode",
    ]


def test_crd_keeps_crd_field_names_and_enums():
    spec = crd(KINDS["MLSysOpsApp"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    comp = spec["properties"]["components"]["items"]
    assert comp["required"] == ["metadata", "containers"]
    assert comp["properties"]["restart_policy"]["enum"] == ["Always", "OnFailure", "Never"]
    cpu = comp["properties"]["containers"]["items"]["properties"]["platform_requirements"]["properties"][
        "cpu"
    ]
    assert cpu["properties"]["requests"]["x-kubernetes-preserve-unknown-fields"] is True
    node = crd(KINDS["MLSysOpsNode"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    assert set(node["required"]) == {"name", "continuum_layer", "environment", "hardware"}
    assert "suported_frameworks" in json.dumps(node)


def test_generated_files_are_up_to_date():
    stale = stale_files()
    assert stale == [], f"run `python -m mlsysops.agents.descriptions.crd_gen --write`; stale: {stale}"
    assert len(generated_files()) == 2 * len(KINDS)


def test_stale_detection(tmp_path):
    assert len(stale_files(tmp_path)) == 2 * len(KINDS)
    assert main(["--check"]) == 0


def test_checked_in_crds_parse():
    for path in (GENERATED_DIR / "crds").glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["kind"] == "CustomResourceDefinition"


def test_json_schema_accepts_the_three_forms_structurally():
    schema = json_schema(KINDS["MLSysOpsApp"])
    titles = [branch["title"] for branch in schema["oneOf"]]
    assert titles == ["Kubernetes form", "Root-field form (the original CRDs)", "Wrapped form"]
    assert "MLSysOpsApp" in schema["$defs"] and "Component" in schema["$defs"]
    json.dumps(schema)
