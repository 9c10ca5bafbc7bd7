"""The one error type of descriptions and slice configs, and the issue records it carries.

Every problem is a ``ValidationIssue`` that says where (file, document index, field path), what was
found (value), what was expected and, when a close match exists, what the user probably meant. Warnings
use the same record with ``severity="warning"`` and travel on the loaded ``Document``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Severity = Literal["error", "warning"]
PathPart = str | int

_MISSING: Any = object()
_INT_BITS_SHOWN = 200  # about 60 digits: larger integers are described, not printed


def format_path(parts: Sequence[PathPart]) -> str:
    """``("components", 1, "containers")`` -> ``components[1].containers``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def did_you_mean(word: Any, choices: Iterable[Any]) -> str | None:
    """The closest choice to ``word`` (case-insensitive), or None."""
    if not isinstance(word, str):
        return None
    options = {str(c).lower(): str(c) for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(options), n=1, cutoff=0.6)
    return options[hit[0]] if hit else None


def _short(value: Any, limit: int = 80) -> Any:
    """``value`` cut to ``limit`` characters for a message. Containers become their (cut) repr, which
    is finite even for self-referencing YAML aliases; an integer too long to print (or to put in JSON)
    becomes a description of its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _INT_BITS_SHOWN:
        return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    if isinstance(value, (dict, list)):
        try:
            text = repr(value)
        except (RecursionError, ValueError):  # nested deeper than repr goes, or holds an unprintable int
            text = f"<a {type(value).__name__} too deep to show>"
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


@dataclass
class ValidationIssue:
    """One problem (or warning) found in an input document."""

    message: str
    path: str = ""
    file: str | None = None
    doc_index: int | None = None
    value: Any = _MISSING
    expected: str | None = None
    suggestion: str | None = None
    severity: Severity = "error"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_value(self) -> bool:
        return self.value is not _MISSING

    def to_dict(self) -> dict[str, Any]:
        """Plain fields only; ``value`` is shortened, never deep-copied (it may be the bad input itself,
        self-referencing through a YAML alias)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["value"] = _short(self.value) if self.has_value else None
        data.update(self.extra)
        return data

    def location(self) -> str:
        where = self.file or "<input>"
        if self.doc_index is not None:
            where += f" (document {self.doc_index})"
        if self.path:
            where += f": {self.path}"
        return where

    def __str__(self) -> str:
        text = f"{self.severity}: {self.location()}: {self.message}"
        if self.has_value:
            text += f"; got {_short(self.value)!r}"
        if self.expected:
            text += f"; expected {self.expected}"
        if self.suggestion:
            text += f"; did you mean {self.suggestion!r}?"
        return text


class DescriptionError(Exception):
    """Raised when a description or slice config is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ValidationIssue]) -> None:
        self.issues = [i for i in issues if i.severity == "error"] or list(issues)
        self.warnings = [i for i in issues if i.severity == "warning"]
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        return "\n".join([head, *(f"  {i}" for i in self.issues)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "errors": [i.to_dict() for i in self.issues],
            "warnings": [w.to_dict() for w in self.warnings],
        }


def located(
    issues: Iterable[ValidationIssue], file: str | None, doc_index: int | None
) -> list[ValidationIssue]:
    """Fill in file/doc_index where an issue does not have them yet."""
    out = []
    for issue in issues:
        if issue.file is None:
            issue.file = file
        if issue.doc_index is None:
            issue.doc_index = doc_index
        out.append(issue)
    return out
