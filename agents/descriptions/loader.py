"""Reading and writing descriptions in both forms, with errors a person can act on.

Accepted input forms (one or many YAML documents per file):
- wrapped, as written for the original framework: ``MLSysOpsApp: {name: ..., components: [...]}``
- Kubernetes: ``apiVersion: mlsysops.eu/v1``, ``kind``, ``metadata.name``, ``spec`` (``status`` kept).
- root fields, as the original framework's CRDs define their objects: ``apiVersion``, ``kind``,
  ``metadata`` and the description's fields beside them (no ``spec``).
Output is always the Kubernetes form (``spec``). Only ``DescriptionError`` escapes from the load functions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.agents.descriptions.base import GROUP_VERSION, Description, Spec
from mlsysops.agents.descriptions.errors import (
    DescriptionError,
    ValidationIssue,
    did_you_mean,
    format_path,
    located,
)
from mlsysops.agents.descriptions.infra import MLSysOpsCluster, MLSysOpsContinuum, MLSysOpsDatacenter
from mlsysops.agents.descriptions.node import MLSysOpsNode
from mlsysops.agents.descriptions.normalize import normalize
from mlsysops.agents.descriptions.semantic import Inventory, check
from mlsysops.agents.descriptions.yaml_reader import read_documents

KINDS: dict[str, type[Description]] = {
    cls.kind: cls
    for cls in (MLSysOpsApp, MLSysOpsNode, MLSysOpsCluster, MLSysOpsContinuum, MLSysOpsDatacenter)
}
KIND_ALIASES = {"MLSysOpsApplication": "MLSysOpsApp"}
_ENVELOPE_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")

_EXPECTED_BY_TYPE = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "dict_type": "a mapping (key: value)",
    "missing": "a value (required field)",
    "string_too_short": "a non-empty string",
    "too_short": "at least one item",
}


@dataclass
class Document:
    """One loaded description: its model plus where it came from and what was normalised."""

    kind: str
    spec: Description
    source: str = "<string>"
    index: int = 0
    warnings: list[ValidationIssue] = field(default_factory=list)
    form: Literal["wrapped", "kubernetes", "root"] = "wrapped"
    metadata: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.id

    @functools.cached_property
    def kubernetes_form(self) -> dict[str, Any]:
        """``to_k8s(self.spec)``, computed once per loaded document: each layer converts what it parsed once
        and shares the result (callers must not mutate it; copy before changing metadata)."""
        return to_k8s(self.spec)


# ------------------------------------------------------------------ errors


def _pydantic_issues(exc: ValidationError) -> list[ValidationIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if isinstance(p, (str, int))]
        kind = err["type"]
        ctx = err.get("ctx") or {}
        message = str(err["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        expected = _EXPECTED_BY_TYPE.get(kind)
        suggestion = None
        value = err.get("input")
        if kind in ("enum", "literal_error"):
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            expected = " | ".join(choices)
            suggestion = did_you_mean(value, choices)
            message = "not an allowed value"
        elif kind in ("greater_than_equal", "less_than_equal"):
            expected = f">= {ctx.get('ge')}" if "ge" in ctx else f"<= {ctx.get('le')}"
        elif kind == "string_pattern_mismatch":
            expected = f"text matching {ctx.get('pattern')}"
        if kind == "missing":
            message = "required field is missing"
            issues.append(ValidationIssue(message, path=format_path(loc), expected=expected))
        else:
            issues.append(
                ValidationIssue(
                    message, path=format_path(loc), value=value, expected=expected, suggestion=suggestion
                )
            )
    return issues


def validate_spec(cls: type[Spec], body: Any) -> tuple[Spec | None, list[ValidationIssue]]:
    """Normalise and validate one body; returns the model (None on error) and all issues."""
    if not isinstance(body, dict):
        return None, [
            ValidationIssue(
                f"the {getattr(cls, 'kind', cls.__name__)} body must be a mapping",
                value=body,
                expected="a mapping (key: value)",
            )
        ]
    data, issues = normalize(body, cls)
    try:
        model = cls.model_validate(data)
    except ValidationError as exc:
        return None, issues + _pydantic_issues(exc)
    if any(i.severity == "error" for i in issues):
        return None, issues
    return model, issues


# ------------------------------------------------------------------ envelope


def _kind_of(name: Any, path: str) -> tuple[str | None, list[ValidationIssue]]:
    if isinstance(name, str) and name in KINDS:
        return name, []
    if isinstance(name, str) and name in KIND_ALIASES:
        target = KIND_ALIASES[name]
        return target, [
            ValidationIssue(
                f"kind {name!r} is read as {target!r}",
                path=path,
                value=name,
                severity="warning",
                suggestion=target,
            )
        ]
    return None, [
        ValidationIssue(
            "unknown kind",
            path=path,
            value=name,
            expected=" | ".join(KINDS),
            suggestion=did_you_mean(name, [*KINDS, *KIND_ALIASES]),
        )
    ]


def _envelope_issues(obj: dict) -> tuple[str | None, dict, list[ValidationIssue]]:
    """(kind, metadata, issues) of the apiVersion/kind/metadata part of an object."""
    issues: list[ValidationIssue] = []
    if obj.get("apiVersion") != GROUP_VERSION:
        issues.append(ValidationIssue("wrong or missing apiVersion", path="apiVersion",
                                      value=obj.get("apiVersion"), expected=GROUP_VERSION))
    kind, kind_issues = _kind_of(obj.get("kind"), "kind")
    issues += kind_issues
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        issues.append(ValidationIssue("metadata must be a mapping", path="metadata", value=metadata,
                                      expected="a mapping with 'name'"))
        metadata = {}
    elif "name" in metadata and not isinstance(metadata["name"], str):
        issues.append(ValidationIssue("metadata.name must be a string", path="metadata.name",
                                      value=metadata["name"], expected="a string"))
        metadata = {k: v for k, v in metadata.items() if k != "name"}
    return kind, dict(metadata), issues


def _split_root_form(obj: dict) -> tuple[str | None, Any, dict, Any, str, list[ValidationIssue]]:
    """An object as the original CRDs define it: the description's fields beside apiVersion/kind/metadata.

    Field paths of issues in the body are the body's own (``components[0].name``), which are also the
    paths in the user's file, since the fields sit at the object's root."""
    kind, metadata, issues = _envelope_issues(obj)
    body = {k: v for k, v in obj.items() if k not in _ENVELOPE_KEYS}
    status = obj.get("status")
    if status is not None and not isinstance(status, dict):
        issues.append(ValidationIssue("status must be a mapping", path="status", value=status, expected="a mapping"))
        status = None
    return kind, body, metadata, status, "root", issues


def _split_envelope(obj: Any) -> tuple[str | None, Any, dict, Any, str, list[ValidationIssue]]:
    """(kind, body, metadata, status, form, issues) of one raw YAML document."""
    if not isinstance(obj, dict):
        return (
            None,
            None,
            {},
            None,
            "wrapped",
            [
                ValidationIssue(
                    "a description must be a mapping",
                    value=obj,
                    expected="'apiVersion/kind/metadata/spec' or one top-level key naming the kind",
                )
            ],
        )
    if ("apiVersion" in obj or "kind" in obj) and "spec" not in obj and set(obj) - set(_ENVELOPE_KEYS):
        return _split_root_form(obj)
    if "apiVersion" in obj or "kind" in obj or "spec" in obj:
        issues: list[ValidationIssue] = []
        for key in obj:
            if key not in _ENVELOPE_KEYS:
                issues.append(
                    ValidationIssue(
                        f"unknown top-level field {key!r}",
                        path=str(key),
                        value=obj[key],
                        expected=", ".join(_ENVELOPE_KEYS),
                        suggestion=did_you_mean(key, _ENVELOPE_KEYS),
                    )
                )
        if obj.get("apiVersion") != GROUP_VERSION:
            issues.append(
                ValidationIssue(
                    "wrong or missing apiVersion",
                    path="apiVersion",
                    value=obj.get("apiVersion"),
                    expected=GROUP_VERSION,
                )
            )
        kind, kind_issues = _kind_of(obj.get("kind"), "kind")
        issues += kind_issues
        metadata = obj.get("metadata", {})
        if not isinstance(metadata, dict):
            issues.append(
                ValidationIssue(
                    "metadata must be a mapping",
                    path="metadata",
                    value=metadata,
                    expected="a mapping with 'name'",
                )
            )
            metadata = {}
        elif "name" in metadata and not isinstance(metadata["name"], str):
            issues.append(
                ValidationIssue(
                    "metadata.name must be a string",
                    path="metadata.name",
                    value=metadata["name"],
                    expected="a string",
                )
            )
            metadata = {k: v for k, v in metadata.items() if k != "name"}
        if "spec" not in obj:
            issues.append(ValidationIssue("spec is missing", path="spec", expected="a mapping"))
        status = obj.get("status")
        if status is not None and not isinstance(status, dict):
            issues.append(
                ValidationIssue("status must be a mapping", path="status", value=status, expected="a mapping")
            )
            status = None
        return kind, obj.get("spec"), dict(metadata), status, "kubernetes", issues
    if len(obj) == 1:
        ((key, body),) = obj.items()
        kind, issues = _kind_of(key, str(key))
        return kind, body, {}, None, "wrapped", issues
    keys = [str(k) for k in obj][:6]
    return (
        None,
        None,
        {},
        None,
        "wrapped",
        [
            ValidationIssue(
                "not a description",
                value=keys,
                expected=f"'apiVersion: {GROUP_VERSION}' with kind/metadata/spec, or a single top-level key "
                f"({', '.join(KINDS)})",
            )
        ],
    )


def load_obj(
    obj: Any, source: str = "<object>", index: int = 0, inventory: Inventory | None = None
) -> Document:
    """Validate one parsed YAML/JSON document (either form). Raises DescriptionError."""
    try:
        return _load_obj(obj, source, index, inventory)
    except DescriptionError:
        raise
    except RecursionError:
        raise DescriptionError(
            [
                ValidationIssue(
                    "document nests too deeply (recursive YAML aliases?)", file=source, doc_index=index
                )
            ]
        ) from None


def _load_obj(obj: Any, source: str, index: int, inventory: Inventory | None) -> Document:
    kind, body, metadata, status, form, issues = _split_envelope(obj)
    if kind is None or any(i.severity == "error" for i in issues) and not isinstance(body, dict):
        raise DescriptionError(located(issues, source, index))
    cls = KINDS[kind]
    meta_name = metadata.get("name")
    if isinstance(body, dict) and meta_name is not None:
        own = body.get(cls.id_field)
        if own is None:
            body = {cls.id_field: meta_name, **body}
        elif own != meta_name:
            issues.append(
                ValidationIssue(
                    f"metadata.name differs from spec.{cls.id_field}",
                    path="metadata.name",
                    value=meta_name,
                    expected=repr(own),
                )
            )
    model, body_issues = validate_spec(cls, body)
    issues += body_issues
    if model is not None:
        issues += check(model, inventory)  # type: ignore[arg-type]
    issues = located(issues, source, index)
    if model is None or any(i.severity == "error" for i in issues):
        raise DescriptionError(issues)
    metadata.pop("name", None)
    return Document(
        kind=kind,
        spec=model,
        source=source,
        index=index,  # type: ignore[arg-type]
        warnings=issues,
        form=form,
        metadata=metadata,
        status=status,
    )  # type: ignore[arg-type]


def load_text(text: str, source: str = "<string>", inventory: Inventory | None = None) -> list[Document]:
    """All documents of a (multi-document) YAML text; errors of every document are raised together."""
    try:
        raw_docs = read_documents(text, source)
    except RecursionError:
        raise DescriptionError([ValidationIssue("YAML nests too deeply", file=source)]) from None
    docs: list[Document] = []
    issues: list[ValidationIssue] = []
    for index, raw in enumerate(raw_docs):
        if raw is None:
            continue
        try:
            docs.append(load_obj(raw, source, index, inventory))
        except DescriptionError as exc:
            issues += exc.issues + exc.warnings
    if not docs and not issues:
        issues.append(ValidationIssue("no documents found", file=source, expected="a description"))
    if issues:
        raise DescriptionError(issues + [w for d in docs for w in d.warnings])
    return docs


def load_file(path: str | Path, inventory: Inventory | None = None) -> list[Document]:
    """All documents of one YAML file. Raises DescriptionError (also for unreadable files)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DescriptionError([ValidationIssue(f"cannot read file: {exc}", file=str(path))]) from None
    return load_text(text, source=str(path), inventory=inventory)


# ------------------------------------------------------------------ saving


def to_dict(model: Spec) -> dict[str, Any]:
    """The description body as plain data (None fields left out, quantities as written)."""
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def to_k8s(item: Description | Document) -> dict[str, Any]:
    """The Kubernetes form of a description (or a loaded document, keeping its metadata/status)."""
    doc = item if isinstance(item, Document) else None
    model = item.spec if isinstance(item, Document) else item
    metadata = {"name": model.id, **(doc.metadata if doc else {})}
    out: dict[str, Any] = {
        "apiVersion": GROUP_VERSION,
        "kind": model.kind,
        "metadata": metadata,
        "spec": to_dict(model),
    }
    if doc is not None and doc.status is not None:
        out["status"] = doc.status
    return out


def to_wrapped(model: Description) -> dict[str, Any]:
    """The original framework's form: ``{kind: body}``."""
    return {model.kind: to_dict(model)}


def dump_yaml(items: Iterable[Description | Document] | Description | Document) -> str:
    """Multi-document YAML in the Kubernetes form."""
    if isinstance(items, (Description, Document)):
        items = [items]
    return yaml.safe_dump_all([to_k8s(i) for i in items], sort_keys=False, allow_unicode=True)
