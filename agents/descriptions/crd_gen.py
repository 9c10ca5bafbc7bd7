"""Generate CRDs (apiextensions.k8s.io/v1) and JSON Schemas from the description models.

The models are the single source of truth; the files under ``agents/generated/`` are derived and checked
in so that they can be applied or used by editors without running Python. Regenerate with::

    python -m mlsysops.agents.descriptions.crd_gen --write     # or --check (exit 1 when stale)

CRD schemas must be *structural*: every node has a ``type`` (or ``x-kubernetes-int-or-string`` /
``x-kubernetes-preserve-unknown-fields``), no ``$ref``, no typed ``anyOf``. Pydantic's JSON Schema is
converted accordingly: references are inlined, ``X | None`` becomes ``X``, and number-or-string values
(quantities, frequencies) become ``x-kubernetes-preserve-unknown-fields`` leaves that the loader checks.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mlsysops.agents.descriptions.base import API_GROUP, API_VERSION, GROUP_VERSION, Description
from mlsysops.agents.descriptions.loader import KINDS

GENERATED_DIR = Path(__file__).resolve().parent.parent / "generated"

_KEEP = (
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
)
_UNIT_NOTE = " Written as a number or a string with a unit."
_SCALARS = {"string", "number", "integer", "boolean"}

_PRINTER_COLUMNS: dict[str, list[dict[str, str]]] = {
    "MLSysOpsApp": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}],
    "MLSysOpsNode": [
        {"name": "Layer", "type": "string", "jsonPath": ".spec.continuum_layer"},
        {"name": "Cluster", "type": "string", "jsonPath": ".spec.cluster_id"},
        {"name": "Arch", "type": "string", "jsonPath": ".spec.hardware.cpu.architecture"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    ],
    "MLSysOpsCluster": [
        {"name": "Datacenter", "type": "string", "jsonPath": ".spec.datacenter_id"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    ],
    "MLSysOpsContinuum": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}],
    "MLSysOpsDatacenter": [
        {"name": "Cluster", "type": "string", "jsonPath": ".spec.cluster_id"},
        {"name": "Layer", "type": "string", "jsonPath": ".spec.continuum"},
    ],
}

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Observed state written by the agents (open object: further fields are kept).",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "phase": {"type": "string", "description": "Lifecycle phase, e.g. Pending, Deployed, Failed."},
        "observedGeneration": {"type": "integer", "description": "Generation the status refers to."},
        "conditions": {
            "type": "array",
            "description": "Latest observations of the object's state.",
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                },
            },
        },
        "components": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": "Observed state per component (apps).",
        },
        "placements": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": "Where each component runs (apps).",
        },
    },
}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON Schema node to a structural OpenAPI v3 node."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        out = _structural(target, defs)
        if "description" in node:
            out["description"] = node["description"]
        return out
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [b for b in node[key] if b.get("type") != "null"]
            if len(branches) == 1:
                out = _structural(branches[0], defs)
                inner = out.get("description", "")
                if inner.startswith(_UNIT_NOTE.strip()) and node.get("description"):
                    node = {**node, "description": node["description"].strip() + _UNIT_NOTE}
            else:
                kinds = {_structural(b, defs).get("type") for b in branches}
                if not kinds <= _SCALARS:
                    raise ValueError(f"cannot express a union of {kinds} in a structural schema")
                out = {"x-kubernetes-preserve-unknown-fields": True}
                node = {**node, "description": (node.get("description", "").strip() + _UNIT_NOTE).strip()}
            for keep in _KEEP:
                if keep in node:
                    out[keep] = node[keep].strip() if keep == "description" else node[keep]
            return out
    out: dict[str, Any] = {}
    kind = node.get("type")
    if kind is None:
        if "enum" in node:
            kind = "string"
        else:
            raise ValueError(f"schema node without type: {node}")
    out["type"] = kind
    for keep in _KEEP:
        if keep in node:
            out[keep] = node[keep]
    if kind == "object":
        props = node.get("properties", {})
        out["properties"] = {name: _structural(sub, defs) for name, sub in props.items()}
        if node.get("required"):
            out["required"] = list(node["required"])
    elif kind == "array":
        out["items"] = _structural(node.get("items", {"type": "string"}), defs)
    return out


def spec_schema(cls: type[Description]) -> dict[str, Any]:
    """Structural OpenAPI schema of the ``spec`` of one kind."""
    raw = cls.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))


_ROOT_RESERVED = ("apiVersion", "kind", "metadata", "spec", "status")


def root_fields(cls: type[Description], spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields again at the object's root, without `required` there: an object carries them in
    one place or the other, and a structural schema cannot say "one of the two" (the loader checks it)."""
    clash = sorted(set(spec.get("properties", {})) & set(_ROOT_RESERVED))
    if clash:
        raise ValueError(f"{cls.kind}: fields {clash} cannot also sit at the object's root")
    return copy.deepcopy(spec.get("properties", {}))   # a copy: shared objects would dump as YAML aliases


def crd(cls: type[Description]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    doc = (cls.__doc__ or cls.kind).strip().splitlines()[0].rstrip(".")
    spec = spec_schema(cls)
    root = {
        "type": "object",
        "description": f"{doc} ({GROUP_VERSION}). Written with the fields under `spec`, or at the object's "
                       "root as the original MLSysOps CRDs define them (objects created for those CRDs stay "
                       "valid); the agents read both.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            **root_fields(cls, spec),
            "spec": spec,
            "status": _STATUS_SCHEMA,
        },
    }
    columns = _PRINTER_COLUMNS.get(cls.kind, []) + [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{cls.plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": cls.plural,
                "singular": cls.plural[:-1],
                "kind": cls.kind,
                "shortNames": [cls.short_name],
                "categories": ["mlsysops"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def json_schema(cls: type[Description]) -> dict[str, Any]:
    """JSON Schema (2020-12) accepting one document of the kind in either form."""
    body = cls.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = body.pop("$defs", {})
    defs[cls.kind] = body
    ref = {"$ref": f"#/$defs/{cls.kind}"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://{API_GROUP}/schemas/{API_VERSION}/{cls.kind}.schema.json",
        "title": cls.kind,
        "description": f"{cls.kind} description: the Kubernetes form (spec), the original CRDs' form (fields at "
                       "the root) or the original wrapped form.",
        "oneOf": [
            {
                "title": "Kubernetes form",
                "type": "object",
                "required": ["apiVersion", "kind", "spec"],
                "properties": {
                    "apiVersion": {"const": GROUP_VERSION},
                    "kind": {"const": cls.kind},
                    "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                    "spec": ref,
                    "status": {"type": "object"},
                },
                "additionalProperties": False,
            },
            {
                "title": "Root-field form (the original CRDs)",
                "type": "object",
                # the name may come from metadata.name instead
                "required": ["apiVersion", "kind", *(f for f in body.get("required", []) if f != cls.id_field)],
                "properties": {
                    "apiVersion": {"const": GROUP_VERSION},
                    "kind": {"const": cls.kind},
                    "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                    "status": {"type": "object"},
                    **{f: {"$ref": f"#/$defs/{cls.kind}/properties/{f}"} for f in body.get("properties", {})},
                },
                "additionalProperties": False,
            },
            {
                "title": "Wrapped form",
                "type": "object",
                "required": [cls.kind],
                "properties": {cls.kind: ref},
                "additionalProperties": False,
            },
        ],
        "$defs": defs,
    }


def render_crd(cls: type[Description]) -> str:
    return "# Generated by `python -m mlsysops.agents.descriptions.crd_gen --write`; do not edit.\n" + yaml.safe_dump(
        crd(cls), sort_keys=False, width=110
    )


def render_json_schema(cls: type[Description]) -> str:
    return json.dumps(json_schema(cls), indent=2) + "\n"


def generated_files() -> dict[str, str]:
    """Relative path under ``agents/generated`` -> expected content."""
    files: dict[str, str] = {}
    for cls in KINDS.values():
        files[f"crds/{cls.plural}.{API_GROUP}.yaml"] = render_crd(cls)
        files[f"jsonschema/{cls.kind}.schema.json"] = render_json_schema(cls)
    return files


def stale_files(directory: Path = GENERATED_DIR) -> list[str]:
    """Generated files that are missing or differ from what the models produce."""
    out = []
    for rel, content in generated_files().items():
        path = directory / rel
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            out.append(rel)
    return out


def write(directory: Path = GENERATED_DIR) -> list[Path]:
    written = []
    for rel, content in generated_files().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the files into agents/generated/")
    parser.add_argument("--check", action="store_true", help="exit 1 when the checked-in files are stale")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            sys.stdout.write(f"wrote {path}\n")
        return 0
    stale = stale_files()
    for rel in stale:
        sys.stdout.write(f"stale: agents/generated/{rel}\n")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
