"""Rewrite a description written for the original framework into our canonical Kubernetes form (`spec`).

The rewrite is textual where it can be, so comments and layout survive: a wrapped document
(`MLSysOpsApp:` + indented body) gets the Kubernetes header in place of its kind line, and a root-field
object gets its fields indented under `spec:`. The result is then loaded again and compared with the
canonical form of the original; when the two differ (the loader renamed a field, fixed an enum value,
converted a number written as text, ...) the canonical YAML is emitted instead, headed by a comment that
lists each change by field path, since a textual rewrite would keep the old spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from mlsysops.agents.descriptions.base import GROUP_VERSION
from mlsysops.agents.descriptions.errors import DescriptionError, ValidationIssue
from mlsysops.agents.descriptions.loader import KINDS, Document, load_obj, to_k8s
from mlsysops.agents.descriptions.yaml_reader import read_documents

_DOC_SEPARATOR = re.compile(r"^---\s*(#.*)?$")
_ROOT_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:(.*)$")
_ENVELOPE = ("apiVersion", "kind", "metadata", "status")


@dataclass
class Converted:
    text: str
    kind: str
    name: str
    form: str                       # the input's form: wrapped | root | kubernetes
    comments_kept: bool
    changes: list[ValidationIssue] = field(default_factory=list)   # what the loader rewrote


def _split_documents(text: str) -> list[str]:
    docs, current = [], []
    for line in text.splitlines(keepends=True):
        if _DOC_SEPARATOR.match(line):
            docs.append("".join(current))
            current = []
        else:
            current.append(line)
    docs.append("".join(current))
    return [d for d in docs if d.strip() and any(not ln.lstrip().startswith("#") and ln.strip()
                                                   for ln in d.splitlines())]


def _header(doc: Document) -> list[str]:
    lines = [f"apiVersion: {GROUP_VERSION}\n", f"kind: {doc.kind}\n", "metadata:\n",
             f"  name: {yaml.safe_dump(doc.name, default_style=None).splitlines()[0]}\n"]
    for key, value in doc.metadata.items():
        dumped = yaml.safe_dump({key: value}, sort_keys=False).splitlines(keepends=True)
        lines += ["  " + ln for ln in dumped]
    return lines


def _rewrite_wrapped(text: str, doc: Document) -> str | None:
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = _ROOT_KEY.match(line)
        if m is None:
            continue
        rest = m.group(2).strip()
        if m.group(1) not in (doc.kind, "MLSysOpsApplication") or (rest and not rest.startswith("#")):
            return None    # a flow-style body on the kind's line: no textual rewrite
        return "".join(lines[:i] + _header(doc) + ["spec:" + (f"  {rest}" if rest else "") + "\n"] + lines[i + 1:])
    return None


def _rewrite_root(text: str, doc: Document) -> str | None:
    """Move every root line that is not part of apiVersion/kind/metadata/status under `spec:`."""
    keep: list[str] = []
    spec: list[str] = []
    pending: list[str] = []      # column-0 comments and blank lines: they go with the next key
    target = keep
    for line in text.splitlines(keepends=True):
        if not line.strip() or line.startswith("#"):
            pending.append(line)
            continue
        m = _ROOT_KEY.match(line)
        if m is not None:
            target = keep if m.group(1) in _ENVELOPE else spec
        elif not line[0].isspace() and not line.startswith("- "):
            return None          # something this rewrite does not understand
        target += pending
        pending = []
        target.append(line)
    cls = KINDS[doc.kind]
    id_line = []
    if not any(_ROOT_KEY.match(ln) and _ROOT_KEY.match(ln).group(1) == cls.id_field for ln in spec):
        id_line = [f"  {cls.id_field}: {yaml.safe_dump(doc.name).splitlines()[0]}\n"]
    indented = [("  " + ln if ln.strip() else ln) for ln in spec]
    if keep and not keep[-1].endswith("\n"):
        keep[-1] += "\n"
    return "".join(keep + ["spec:\n"] + id_line + indented + pending)


def _changes(doc: Document) -> list[ValidationIssue]:
    """The loader's rewrites (warnings that say what it read a value as), not semantic advice."""
    return [w for w in doc.warnings if w.severity == "warning"]


def convert_document(raw_text: str, source: str, index: int) -> Converted:
    (raw,) = read_documents(raw_text, source) or [None]
    doc = load_obj(raw, source, index)
    canonical = to_k8s(doc)
    candidate: str | None = None
    if doc.form == "kubernetes":
        candidate = raw_text
    elif doc.form == "wrapped":
        candidate = _rewrite_wrapped(raw_text, doc)
    else:
        candidate = _rewrite_root(raw_text, doc)
    if candidate is not None:
        try:
            if to_k8s(load_obj(yaml.safe_load(candidate), source, index)) == canonical and \
                    yaml.safe_load(candidate).get("spec") == canonical["spec"]:
                return Converted(candidate, doc.kind, doc.name, doc.form, True, _changes(doc))
        except (DescriptionError, yaml.YAMLError, AttributeError):
            pass
    changes = _changes(doc)
    note = ["# converted by `mlsysops convert`; the loader rewrote values, so comments could not be kept:\n"]
    note += [f"#   {c.path or '(document)'}: {c.message}\n" for c in changes] or ["#   (layout only)\n"]
    body = yaml.safe_dump(canonical, sort_keys=False, allow_unicode=True)
    return Converted("".join(note) + body, doc.kind, doc.name, doc.form, False, changes)


def convert_text(text: str, source: str = "<string>") -> list[Converted]:
    """Every document of a file, converted; raises DescriptionError (all documents' problems at once)."""
    out: list[Converted] = []
    issues: list[ValidationIssue] = []
    for index, part in enumerate(_split_documents(text)):
        try:
            out.append(convert_document(part, source, index))
        except DescriptionError as exc:
            issues += exc.issues
    if issues:
        raise DescriptionError(issues)
    if not out:
        raise DescriptionError([ValidationIssue("no documents found", file=source, expected="a description")])
    return out


def joined(converted: list[Converted]) -> str:
    parts = [c.text if c.text.endswith("\n") else c.text + "\n" for c in converted]
    return "---\n".join(parts)
