"""Invalid inputs give the path, the bad value, what was expected and a did-you-mean; junk never crashes."""

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsysops.agents.descriptions import DescriptionError, Inventory, load_obj, load_text
from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.agents.descriptions.node import MLSysOpsNode

APP = {
    "name": "app",
    "components": [
        {
            "metadata": {"name": "a"},
            "containers": [
                {
                    "image": "img",
                    "platform_requirements": {
                        "cpu": {"requests": "250m", "limits": "500m"},
                        "memory": {"requests": "64Mi", "limits": "128Mi"},
                    },
                }
            ],
        },
        {
            "metadata": {"name": "b"},
            "containers": [
                {"image": "img", "platform_requirements": {"cpu": {"requests": "250m", "limits": "500m"}}}
            ],
        },
    ],
}
NODE = {
    "name": "n1",
    "continuum_layer": "edge",
    "environment": {"os": "ubuntu"},
    "hardware": {"cpu": {"cores": 4, "frequency": ["1.5GHz"]}, "memory": 4},
}
INVENTORY = Inventory(
    nodes=frozenset({"edge-rpi-1", "cloud-vm-1"}), clusters=frozenset({"cloud-1", "edge-1"})
)


def app(**changes):
    """A copy of APP with ``changes`` applied: keys are dotted paths with [i] indexes."""
    data = copy.deepcopy(APP)
    for dotted, value in changes.items():
        _set(data, dotted, value)
    return {"MLSysOpsApp": data}


def node(**changes):
    data = copy.deepcopy(NODE)
    for dotted, value in changes.items():
        _set(data, dotted, value)
    return {"MLSysOpsNode": data}


def _set(data, dotted, value):
    parts = []
    for part in dotted.replace("]", "").replace("[", ".").split("."):
        parts.append(int(part) if part.isdigit() else part)
    target = data
    for part in parts[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value


_DELETE = object()
CPU0 = "components[0].containers[0].platform_requirements"

# (id, document, inventory, expected path, message fragment, expected-fragment or None, suggestion or None)
CASES = [
    (
        "misspelt-field",
        app(**{"components[0].containres": []}),
        None,
        "components[0].containres",
        "unknown field",
        "containers",
        "containers",
    ),
    (
        "misspelt-enum",
        app(**{"components[0].restart_policy": "Alway"}),
        None,
        "components[0].restart_policy",
        "not an allowed value",
        "OnFailure",
        "Always",
    ),
    (
        "bad-cpu-quantity",
        app(**{"components[1].containers[0].platform_requirements.cpu.requests": "250x"}),
        None,
        "components[1].containers[0].platform_requirements.cpu.requests",
        "not a CPU quantity",
        None,
        None,
    ),
    (
        "bad-memory-quantity",
        app(**{f"{CPU0}.memory.limits": "128Mx"}),
        None,
        f"{CPU0}.memory.limits",
        "unknown suffix 'Mx'",
        None,
        None,
    ),
    (
        "missing-containers",
        app(**{"components[0].containers": _DELETE}),
        None,
        "components[0].containers",
        "required field is missing",
        "required",
        None,
    ),
    (
        "empty-containers",
        app(**{"components[0].containers": []}),
        None,
        "components[0].containers",
        "at least 1 item",
        None,
        None,
    ),
    ("missing-app-name", app(name=_DELETE), None, "name", "required field is missing", None, None),
    (
        "string-for-mapping",
        app(**{"components[0].node_placement": "edge"}),
        None,
        "components[0].node_placement",
        "valid dictionary",
        "mapping",
        None,
    ),
    (
        "duplicate-component",
        app(**{"components[1].metadata.name": "a"}),
        None,
        "components[1].metadata.name",
        "duplicate component name 'a'",
        None,
        None,
    ),
    (
        "unknown-dependency",
        app(**{"components[0].depends_on": ["bb"]}),
        None,
        "components[0].depends_on[0]",
        "component 'bb' does not exist",
        "a, b",
        "b",
    ),
    (
        "self-dependency",
        app(**{"components[0].depends_on": ["a"]}),
        None,
        "components[0].depends_on[0]",
        "cannot depend on itself",
        None,
        None,
    ),
    (
        "dependency-cycle",
        app(**{"components[0].depends_on": ["b"], "components[1].depends_on": ["a"]}),
        None,
        "components[0].depends_on",
        "dependency cycle: a -> b -> a",
        None,
        None,
    ),
    (
        "interaction-unknown",
        app(component_interactions=[{"component_name1": "a", "component_name2": "c"}]),
        None,
        "component_interactions[0].component_name2",
        "component 'c' does not exist",
        None,
        None,
    ),
    (
        "pinned-unknown-node",
        app(**{"components[0].node_placement": {"node": "edge-rpi-l"}}),
        INVENTORY,
        "components[0].node_placement.node",
        "node 'edge-rpi-l' does not exist",
        "cloud-vm-1",
        "edge-rpi-1",
    ),
    (
        "unknown-cluster",
        app(cluster_placement={"cluster_id": ["edge-2"]}),
        INVENTORY,
        "cluster_placement.cluster_id[0]",
        "cluster 'edge-2' does not exist",
        None,
        "edge-1",
    ),
    (
        "cpu-request-above-limit",
        app(**{f"{CPU0}.cpu.requests": "2"}),
        None,
        f"{CPU0}.cpu.requests",
        "cpu request is above its limit",
        "<= limits",
        None,
    ),
    (
        "memory-request-above-limit",
        app(**{f"{CPU0}.memory.requests": "1Gi"}),
        None,
        f"{CPU0}.memory.requests",
        "memory request is above its limit",
        None,
        None,
    ),
    (
        "port-out-of-range",
        app(**{"components[0].containers[0].ports": [{"container_port": 70000}]}),
        None,
        "components[0].containers[0].ports[0].container_port",
        "less than or equal to 65535",
        "<= 65535",
        None,
    ),
    (
        "misspelt-env-key",
        app(**{"components[0].containers[0].env": [{"name": "X", "value_form": {}}]}),
        None,
        "components[0].containers[0].env[0].value_form",
        "unknown field",
        None,
        "value_from",
    ),
    (
        "threshold-out-of-range",
        app(global_satisfaction={"threshold": 1.5}),
        None,
        "global_satisfaction.threshold",
        "threshold out of range",
        "(0, 1]",
        None,
    ),
    (
        "rename-conflict",
        app(**{"components[0].node_placement": {"mobility": True, "mobile": False}}),
        None,
        "components[0].node_placement.mobility",
        "both are given with different values",
        None,
        None,
    ),
    (
        "node-layer-typo",
        node(continuum_layer="edg"),
        None,
        "continuum_layer",
        "not an allowed value",
        None,
        "edge",
    ),
    (
        "node-missing-hardware",
        node(hardware=_DELETE),
        None,
        "hardware",
        "required field is missing",
        None,
        None,
    ),
    (
        "node-bad-frequency",
        node(**{"hardware.cpu.frequency": ["fast"]}),
        None,
        "hardware.cpu.frequency[0]",
        "not a frequency",
        None,
        None,
    ),
    (
        "node-bad-time-window",
        node(power={"availability": [{"time_windows": ["25:00-26:00"]}]}),
        None,
        "power.availability[0].time_windows[0]",
        "should match pattern",
        None,
        None,
    ),
    ("node-location", node(location=[1, 2, 3]), None, "location", "[longitude, latitude]", None, None),
    ("node-misspelt-top", node(hardwear={}), None, "hardwear", "unknown field", None, "hardware"),
    (
        "node-cores-text",
        node(**{"hardware.cpu.cores": "four"}),
        None,
        "hardware.cpu.cores",
        "valid integer",
        "an integer",
        None,
    ),
    (
        "wrong-api-version",
        {"apiVersion": "mlsysops.eu/v2", "kind": "MLSysOpsNode", "metadata": {"name": "n1"}, "spec": NODE},
        None,
        "apiVersion",
        "wrong or missing apiVersion",
        "mlsysops.eu/v1",
        None,
    ),
    ("unknown-kind", {"MLSysOpsNod": NODE}, None, "MLSysOpsNod", "unknown kind", None, "MLSysOpsNode"),
    (
        "envelope-typo",
        {
            "apiVersion": "mlsysops.eu/v1",
            "kind": "MLSysOpsNode",
            "metadata": {"name": "n1"},
            "spec": NODE,
            "stauts": {},
        },
        None,
        "stauts",
        "unknown top-level field",
        None,
        "status",
    ),
    ("not-a-mapping", ["MLSysOpsNode"], None, "", "must be a mapping", None, None),
]


@pytest.mark.parametrize(
    ("doc", "inventory", "path", "message", "expected", "suggestion"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_invalid_input(doc, inventory, path, message, expected, suggestion):
    with pytest.raises(DescriptionError) as err:
        load_obj(doc, source="bad.yaml", index=3, inventory=inventory)
    issues = [i for i in err.value.issues if i.path == path]
    assert issues, f"no issue at {path!r}: {err.value}"
    issue = issues[0]
    assert message in issue.message or message in str(issue), str(issue)
    assert issue.file == "bad.yaml" and issue.doc_index == 3 and issue.severity == "error"
    if expected is not None:
        assert expected in (issue.expected or ""), issue.expected
    if suggestion is not None:
        assert issue.suggestion == suggestion
        assert f"did you mean {suggestion!r}" in str(err.value)
    assert "bad.yaml (document 3)" in str(err.value)
    assert issue.to_dict()["path"] == path


def test_baseline_documents_are_valid():
    assert load_obj({"MLSysOpsApp": APP}, inventory=INVENTORY).name == "app"
    assert load_obj({"MLSysOpsNode": NODE}).name == "n1"


def test_issue_has_value_and_readable_string():
    with pytest.raises(DescriptionError) as err:
        load_obj(app(**{"components[0].restart_policy": "Alway"}), source="f.yaml")
    (issue,) = err.value.issues
    assert issue.value == "Alway"
    text = str(issue)
    assert text.startswith("error: f.yaml (document 0): components[0].restart_policy: ")
    assert "got 'Alway'" in text and "expected Always | OnFailure | Never" in text


def test_yaml_syntax_error():
    with pytest.raises(DescriptionError) as err:
        load_text("MLSysOpsNode: {name: [", source="broken.yaml")
    assert "invalid YAML" in err.value.issues[0].message and "line 1" in err.value.issues[0].path


def test_empty_text():
    with pytest.raises(DescriptionError, match="no documents"):
        load_text("# nothing\n")


def test_recursive_yaml_alias_does_not_crash():
    with pytest.raises(DescriptionError):
        load_text("MLSysOpsNode: &a {name: n, hardware: *a, continuum_layer: edge, environment: {}}")


def test_scalar_for_list_is_wrapped_with_warning():
    doc = load_obj(node(labels="gpu"))
    assert doc.spec.labels == ["gpu"]
    assert any(w.path == "labels" and "single value" in w.message for w in doc.warnings)


# ------------------------------------------------------------------ junk never crashes the loader

FIELD_NAMES = sorted(
    {
        *MLSysOpsApp.model_fields,
        *MLSysOpsNode.model_fields,
        "metadata",
        "containers",
        "name",
        "platform_requirements",
        "cpu",
        "requests",
        "hardware",
        "memory",
        "frequency",
        "spec",
        "kind",
        "apiVersion",
        "MLSysOpsApp",
        "MLSysOpsNode",
        "MLSysOpsCluster",
        "mobility",
    }
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["250m", "64Mi", "1.4GHz", "edge", "*", "on_failure", "mlsysops.eu/v1"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6), st.integers(), st.booleans())
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(
        ["MLSysOpsApp", "MLSysOpsNode", "MLSysOpsCluster", "MLSysOpsContinuum", "MLSysOpsDatacenter"]
    ),
    body=junk,
    k8s=st.booleans(),
)
def test_arbitrary_mappings_only_raise_description_error(kind, body, k8s):
    doc = (
        {"apiVersion": "mlsysops.eu/v1", "kind": kind, "metadata": {"name": "x"}, "spec": body}
        if k8s
        else {kind: body}
    )
    try:
        load_obj(doc)
    except DescriptionError as exc:
        assert exc.issues and str(exc)
        for issue in exc.issues:
            issue.to_dict()


@settings(max_examples=200, deadline=None)
@given(obj=junk)
def test_arbitrary_documents_only_raise_description_error(obj):
    try:
        load_text(yaml.safe_dump(obj))
    except DescriptionError as exc:
        assert str(exc)
