"""`mlsysops validate` and `mlsysops schema`.

``validate FILE...`` checks slice configs (files with a top-level ``slice`` key) and descriptions
(everything else). Slice files are checked first; the nodes and clusters they define become the
inventory against which the applications in the same invocation are checked (pinned nodes, cluster ids),
as does a slice given with ``--slice``. Exit status 0 when every file is valid, 1 otherwise.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class SchemaKind(StrEnum):
    crds = "crds"
    jsonschema = "jsonschema"


def _summary(doc: Any) -> str:
    spec = doc.spec
    head = f"{doc.kind}/{doc.name}"
    if doc.kind == "MLSysOpsApp":
        n = len(spec.components)
        return f"{head}, {n} component{'s' if n != 1 else ''}"
    if doc.kind == "MLSysOpsNode":
        return f"{head}, {spec.continuum_layer}, cluster {spec.cluster_id or '-'}"
    if doc.kind in ("MLSysOpsCluster", "MLSysOpsDatacenter"):
        return f"{head}, {len(spec.nodes)} nodes"
    return f"{head}, {len(spec.clusters)} clusters"


def _devices(spec: Any) -> str:
    """", 2 devices behind edge-rpi-1" for a slice whose config starts simulated devices (`devices:`)."""
    gateways = spec.config.devices.gateways if spec.config.devices is not None else {}
    count = sum(len(d) for d in gateways.values())
    return f", {count} devices behind {', '.join(gateways)}" if count else ""


def _is_slice_file(path: Path) -> bool:
    """Whether the first document has a top-level ``slice`` key (unreadable files are checked, and
    reported, as descriptions)."""
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.descriptions.yaml_reader import read_documents
    from mlsysops.agents.slice_config import is_slice_config

    try:
        docs = read_documents(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, DescriptionError):
        return False
    return is_slice_config(docs[0] if docs else None)


def _check_slice(path: Path) -> tuple[dict[str, Any], Any]:
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.slice_config import load_slice

    result: dict[str, Any] = {
        "file": str(path),
        "type": "slice",
        "ok": True,
        "documents": [],
        "warnings": [],
        "errors": [],
    }
    try:
        spec = load_slice(path)
    except DescriptionError as exc:
        result.update(
            ok=False, errors=[i.to_dict() for i in exc.issues], warnings=[w.to_dict() for w in exc.warnings]
        )
        return result, None
    result["documents"].append(
        {
            "kind": "Slice",
            "name": spec.name,
            "summary": f"slice {spec.name}: 1 continuum, {len(spec.clusters)} clusters, "
            f"{len(spec.nodes)} nodes{_devices(spec)}",
        }
    )
    result["warnings"] = [w.to_dict() for w in spec.warnings]
    return result, spec.inventory


def _check_descriptions(path: Path, inventory: Any) -> dict[str, Any]:
    from mlsysops.agents.descriptions import DescriptionError, load_file

    result: dict[str, Any] = {
        "file": str(path),
        "type": "descriptions",
        "ok": True,
        "documents": [],
        "warnings": [],
        "errors": [],
    }
    try:
        docs = load_file(path, inventory=inventory)
    except DescriptionError as exc:
        result.update(
            ok=False, errors=[i.to_dict() for i in exc.issues], warnings=[w.to_dict() for w in exc.warnings]
        )
        return result
    for doc in docs:
        result["documents"].append(
            {"index": doc.index, "kind": doc.kind, "name": doc.name, "summary": _summary(doc)}
        )
        result["warnings"] += [w.to_dict() for w in doc.warnings]
    return result


def _issue_line(issue: dict[str, Any]) -> str:
    parts = []
    if issue.get("file") and issue["file"] != issue.get("_owner"):
        parts.append(str(issue["file"]))
    if issue.get("doc_index") is not None:
        parts.append(f"doc {issue['doc_index']}")
    if issue.get("path"):
        parts.append(str(issue["path"]))
    text = ("  ".join(parts) + ": " if parts else "") + issue["message"]
    if issue.get("value") is not None:
        text += f"; got {issue['value']!r}"
    if issue.get("expected"):
        text += f"; expected {issue['expected']}"
    if issue.get("suggestion"):
        text += f"; did you mean {issue['suggestion']!r}?"
    return text


def validate(
    files: Annotated[list[Path], typer.Argument(help="Slice configs and/or description files (YAML).")],
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="Output format.")
    ] = OutputFormat.text,
    slice_file: Annotated[
        Path | None, typer.Option("--slice", help="Slice whose nodes/clusters the apps must refer to.")
    ] = None,
) -> None:
    """Validate slice configs and MLSysOps descriptions; exit 1 when any file is invalid."""
    from mlsysops.agents.descriptions import Inventory

    results: list[dict[str, Any]] = []
    nodes: set[str] = set()
    clusters: set[str] = set()
    have_inventory = False
    slice_paths = [slice_file] if slice_file is not None else []
    slice_paths += [f for f in files if f not in slice_paths and _is_slice_file(f)]
    for path in slice_paths:
        result, inventory = _check_slice(path)
        if path in files:
            results.append(result)
        elif not result["ok"]:
            results.append(result)
        if inventory is not None:
            have_inventory = True
            nodes |= inventory.nodes
            clusters |= inventory.clusters
    inv = Inventory(frozenset(nodes), frozenset(clusters)) if have_inventory else None
    for path in files:
        if path not in slice_paths:
            results.append(_check_descriptions(path, inv))
    ok = all(r["ok"] for r in results)
    if output is OutputFormat.json:
        typer.echo(json.dumps({"ok": ok, "results": results}, indent=2, default=str))
    else:
        for result in results:
            for issue in result["warnings"] + result["errors"]:
                issue["_owner"] = result["file"]
            if result["ok"]:
                for doc in result["documents"]:
                    typer.echo(f"OK    {result['file']}  ({doc['summary']})")
            else:
                typer.echo(f"FAIL  {result['file']}")
                for issue in result["errors"]:
                    typer.echo(f"  error: {_issue_line(issue)}")
            for issue in result["warnings"]:
                typer.echo(f"  warning: {_issue_line(issue)}")
    raise typer.Exit(0 if ok else 1)


def schema(
    what: Annotated[SchemaKind, typer.Argument(help="crds (Kubernetes YAML) or jsonschema (JSON).")],
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help="One kind, e.g. MLSysOpsApp or mlsapp.")
    ] = None,
) -> None:
    """Print the CRDs or JSON Schemas generated from the description models."""
    from mlsysops.agents.descriptions import KINDS
    from mlsysops.agents.descriptions.crd_gen import json_schema, render_crd
    from mlsysops.agents.descriptions.errors import did_you_mean

    classes = list(KINDS.values())
    if kind is not None:
        lookup = {name: cls for cls in classes for name in (cls.kind.lower(), cls.plural, cls.short_name)}
        cls = lookup.get(kind.lower())
        if cls is None:
            hint = did_you_mean(kind, [c.kind for c in classes])
            typer.echo(
                f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
                + (f"; did you mean {hint!r}?" if hint else ""),
                err=True,
            )
            raise typer.Exit(2)
        classes = [cls]
    if what is SchemaKind.crds:
        typer.echo("---\n".join(render_crd(c) for c in classes), nl=False)
    elif len(classes) == 1:
        typer.echo(json.dumps(json_schema(classes[0]), indent=2))
    else:
        typer.echo(json.dumps({c.kind: json_schema(c) for c in classes}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("schema")(schema)
