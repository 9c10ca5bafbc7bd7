"""Reading YAML text so that every failure names a line, a column and, where one exists, the field.

PyYAML's own failures are uneven: a reader error (a control character) gives only a character offset,
nesting deep enough to exhaust Python's stack gives a bare ``RecursionError``, a decimal integer of more
than 4300 digits a ``ValueError`` from ``int()``, and a self-referencing alias (``a: &a [*a]``) builds a
structure that loops forever in whatever walks it later. ``read_documents`` turns each into one
``ValidationIssue`` with ``line``/``column`` (1-based) and the path of the field being read; no
description nests anywhere near ``MAX_DEPTH`` levels or refers to itself.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mlsysops.agents.descriptions.errors import DescriptionError, PathPart, ValidationIssue, format_path

MAX_DEPTH = 100  # levels of nested mappings/sequences a document may have
_PATH_SHOWN = 8  # path parts shown in full in a message


class _ReadProblem(yaml.MarkedYAMLError):
    """A problem this reader detects itself; ``field`` is the path being read when it was found."""

    def __init__(self, problem: str, mark: yaml.Mark | None, field: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.field = field


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that bounds nesting, rejects self-referencing aliases and keeps the field path."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[PathPart] = []
        self._open_anchors: set[str] = set()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        part = _path_part(index)
        if part is not None:
            self._path.append(part)
        try:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                if event.anchor in self._open_anchors:
                    raise _ReadProblem(f"alias *{event.anchor} refers to the node that contains it "
                                       "(a self-referencing YAML alias)", event.start_mark, self.field())
            elif len(self._path) > MAX_DEPTH:
                raise _ReadProblem(f"YAML nests deeper than {MAX_DEPTH} levels", self.peek_event().start_mark,
                                   self.field())
            return super().compose_node(parent, index)
        except _ReadProblem:
            raise
        except yaml.MarkedYAMLError as exc:   # a parser/scanner error: remember the field it was in
            raise _ReadProblem(f"invalid YAML: {exc.problem or exc}", exc.problem_mark or exc.context_mark,
                               self.field()) from None
        finally:
            if part is not None:
                self._path.pop()

    def compose_sequence_node(self, anchor: str | None) -> SequenceNode:
        return self._composing(anchor, super().compose_sequence_node)

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        return self._composing(anchor, super().compose_mapping_node)

    def _composing(self, anchor: str | None, compose: Any) -> Any:
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return compose(anchor)
        finally:
            self._open_anchors.discard(anchor)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:   # more digits than int() converts (sys.get_int_max_str_digits)
            raise _ReadProblem(f"an integer of {len(str(node.value))} digits is too long to read",
                               node.start_mark, "") from None

    def field(self) -> str:
        """The path being read, its middle elided when it is long (deep nesting)."""
        if len(self._path) <= _PATH_SHOWN:
            return format_path(self._path)
        head = format_path(self._path[: _PATH_SHOWN - 1])
        return f"{head}...{format_path([self._path[-1]])} ({len(self._path)} levels)"


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _path_part(index: Any) -> PathPart | None:
    """The path part of the node composed at ``index`` (a sequence position or a mapping key node)."""
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    if isinstance(index, ScalarNode):
        return str(index.value)
    if isinstance(index, Node):
        return "<key>"
    return None


def _line_column(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _issue(message: str, source: str, line: int, column: int, field: str = "") -> ValidationIssue:
    where = f"line {line}, column {column}"
    return ValidationIssue(message, path=f"{field} ({where})" if field else where, file=source,
                           extra={"line": line, "column": column})


def read_documents(text: str, source: str) -> list[Any]:
    """Every document of ``text`` as plain data. Raises ``DescriptionError`` (one issue with line/column)."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)   # the reader checks every character here
        docs = []
        while loader.check_data():
            docs.append(loader.get_data())
        return docs
    except yaml.reader.ReaderError as exc:   # only a character offset: count lines ourselves
        line, column = _line_column(text, exc.position)
        raise DescriptionError([_issue(f"invalid YAML: {exc.reason} (character #x{exc.character:04x})"
                                       if isinstance(exc.character, int) else f"invalid YAML: {exc.reason}",
                                       source, line, column)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        field = exc.field if isinstance(exc, _ReadProblem) else ""
        problem = exc.problem or str(exc)
        message = problem if isinstance(exc, _ReadProblem) else f"invalid YAML: {problem}"
        if mark is None:
            raise DescriptionError([ValidationIssue(message, path=field, file=source)]) from None
        raise DescriptionError([_issue(message, source, mark.line + 1, mark.column + 1, field)]) from None
    except yaml.YAMLError as exc:
        raise DescriptionError([ValidationIssue(f"invalid YAML: {exc}", file=source)]) from None
    finally:
        if loader is not None:
            loader.dispose()
