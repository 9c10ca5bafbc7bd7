"""Compatibility pass run before pydantic validation.

It walks the raw YAML data alongside the model classes and
- reports unknown fields as errors with a did-you-mean (and drops them so pydantic does not repeat it),
- applies the known renames of the original framework's files (``mobility`` -> ``mobile``, ...),
- moves container-level keys the reference puts in ``platform_requirements`` to where the CRD has them,
- fixes enum values that differ only in case/separators or are known misspellings,
- converts numbers written as strings (``memory: "2"``) and single values where a list is expected,
- notes frequencies whose unit had to be guessed.
Every change is reported as a warning with its path, so nothing is altered silently. The input is not
modified; the pass returns a new structure.
"""

from __future__ import annotations

import re
import types
import typing
from enum import Enum
from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator

from mlsysops.agents.descriptions.enums import VALUE_ALIASES
from mlsysops.agents.descriptions.errors import PathPart, ValidationIssue, did_you_mean, format_path
from mlsysops.agents.descriptions.quantities import Frequency

Path = tuple[PathPart, ...]
_NUM_RE = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_HOISTED_TO_COMPONENT = ("node_type", "os", "container_runtime")


def _squash(text: str) -> str:
    return re.sub(r"[\s_\-]", "", text.lower())


class Normalizer:
    """Collects issues while producing a normalised copy of one document body."""

    def __init__(self) -> None:
        self.issues: list[ValidationIssue] = []

    def warn(self, path: Path, message: str, **kw: Any) -> None:
        self.issues.append(ValidationIssue(message, path=format_path(path), severity="warning", **kw))

    def error(self, path: Path, message: str, **kw: Any) -> None:
        self.issues.append(ValidationIssue(message, path=format_path(path), severity="error", **kw))

    # -------------------------------------------------------------- dispatch

    def walk(self, value: Any, tp: Any, path: Path) -> Any:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            base, *meta = typing.get_args(tp)
            if any(isinstance(m, BeforeValidator) for m in meta):
                return value  # the type parses its own text form (e.g. durations)
            return self.walk(value, base, path)
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if value is None:
                return None
            if len(args) == 1:
                return self.walk(value, args[0], path)
            return value
        if origin is list:
            (item_tp,) = typing.get_args(tp) or (Any,)
            scalar_items = not (isinstance(item_tp, type) and issubclass(item_tp, BaseModel))
            if scalar_items and isinstance(value, (str, int, float, bool)):
                self.warn(
                    path,
                    f"expected a list; read the single value {value!r} as [{value!r}]",
                    value=value,
                    expected="a list",
                )
                value = [value]
            if isinstance(value, list):
                return [self.walk(v, item_tp, (*path, i)) for i, v in enumerate(value)]
            return value
        if isinstance(tp, type):
            if issubclass(tp, BaseModel):
                return self.walk_model(value, tp, path)
            if issubclass(tp, Enum):
                return self.walk_enum(value, tp, path)
            if issubclass(tp, Frequency):
                note = Frequency.guess_note(value)
                if note:
                    self.warn(path, note, value=value)
                return value
            if tp is bool:
                return self.walk_bool(value, path)
            if tp in (int, float):
                return self.walk_number(value, tp, path)
            if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.warn(
                    path,
                    f"expected a string; converted the number {value!r} to {str(value)!r}",
                    value=value,
                    expected="a string",
                )
                return str(value)
        return value

    # -------------------------------------------------------------- scalars

    def walk_enum(self, value: Any, tp: type[Enum], path: Path) -> Any:
        values = [str(m.value) for m in tp]
        if isinstance(value, bool) and {"on", "off"} <= set(values):
            fixed = "on" if value else "off"
            self.warn(
                path, f"YAML read this value as {value}; used {fixed!r} (quote it: '{fixed}')", value=value
            )
            return fixed
        if not isinstance(value, str) or value in values:
            return value
        alias = VALUE_ALIASES.get(tp, {}).get(value)
        if alias is None:
            matches = [v for v in values if _squash(v) == _squash(value)]
            alias = matches[0] if len(matches) == 1 else None
        if alias is not None:
            self.warn(
                path,
                f"{value!r} is not a value of the original CRD; read as {alias!r}",
                value=value,
                expected=" | ".join(values),
            )
            return alias
        return value

    def walk_bool(self, value: Any, path: Path) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
            fixed = value.strip().lower() in ("true", "yes")
            self.warn(
                path,
                f"expected true/false; read the string {value!r} as {fixed}",
                value=value,
                expected="true or false",
            )
            return fixed
        return value

    def walk_number(self, value: Any, tp: type, path: Path) -> Any:
        if isinstance(value, str) and _NUM_RE.match(value):
            number = float(value)
            fixed: int | float = (
                int(number) if (tp is int or number.is_integer()) and number.is_integer() else number
            )
            kind = "an integer" if tp is int else "a number"
            self.warn(
                path,
                f"expected {kind}, got the string {value!r}; read as {fixed!r}",
                value=value,
                expected=kind,
            )
            return fixed
        return value

    # -------------------------------------------------------------- models

    def walk_model(self, value: Any, cls: type[BaseModel], path: Path) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        from mlsysops.agents.descriptions.app import Component  # local: app imports nothing from here

        if cls is Component:
            value = self.hoist_component_keys(value, path)
        fields = cls.model_fields
        renames: dict[str, str] = getattr(cls, "compat_renames", {})
        extensions: dict[str, str] = getattr(cls, "compat_extensions", {})
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.error((*path, str(key)), "field names must be text", value=key, expected="a field name")
                continue
            if key in fields:
                if key in out:  # already filled by a rename
                    self._merge_conflict(out, key, item, path, key)
                    continue
                out[key] = item
                if key in extensions:
                    self.warn((*path, key), extensions[key])
                continue
            target = renames.get(key)
            if target is not None:
                if target in value or target in out:
                    existing = value.get(target, out.get(target))
                    if existing == item:
                        self.warn((*path, key), f"{key!r} duplicates {target!r} (same value); ignored")
                    else:
                        self.error(
                            (*path, key),
                            f"{key!r} is an old name of {target!r} and both are given with different values",
                            value=item,
                            expected=f"only {target!r}",
                        )
                    continue
                self.warn(
                    (*path, key),
                    f"{key!r} is not a field of the original CRD; read as {target!r}",
                    value=item,
                    suggestion=target,
                )
                out[target] = item
                continue
            names = list(fields)
            self.error(
                (*path, key),
                f"unknown field {key!r}",
                value=item,
                expected="one of: " + ", ".join(names),
                suggestion=did_you_mean(key, names),
            )
        for key, item in out.items():
            out[key] = self.walk(item, fields[key].annotation, (*path, key))
        return out

    def _merge_conflict(self, out: dict, key: str, item: Any, path: Path, target: str) -> None:
        if out[key] != item:
            self.error(
                (*path, key),
                f"{key!r} is given twice (also under an old name) with different values",
                value=item,
            )

    def hoist_component_keys(self, comp: dict, path: Path) -> dict:
        """Move keys the reference writes under platform_requirements to where the CRD has them."""
        containers = comp.get("containers")
        if not isinstance(containers, list):
            return comp
        new_containers = []
        for ci, container in enumerate(containers):
            reqs = container.get("platform_requirements") if isinstance(container, dict) else None
            if not isinstance(reqs, dict):
                new_containers.append(container)
                continue
            reqs = dict(reqs)
            container = {**container, "platform_requirements": reqs}
            base: Path = (*path, "containers", ci, "platform_requirements")
            for key in _HOISTED_TO_COMPONENT:
                if key not in reqs:
                    continue
                moved = reqs.pop(key)
                if key in comp and comp[key] != moved:
                    self.error(
                        (*base, key),
                        f"{key!r} belongs to the component and the component already has {comp[key]!r}",
                        value=moved,
                        expected=repr(comp[key]),
                    )
                    continue
                comp[key] = moved
                self.warn(
                    (*base, key),
                    f"{key!r} is a component field in the original CRD; moved to {format_path((*path, key))}",
                    value=moved,
                )
            if "performance_indicator" in reqs:
                moved = reqs.pop("performance_indicator")
                cpu = reqs.get("cpu")
                if cpu is None:
                    cpu = {}
                if isinstance(cpu, dict):
                    cpu = dict(cpu)
                    if "performance_indicator" in cpu and cpu["performance_indicator"] != moved:
                        self.error(
                            (*base, "performance_indicator"),
                            "performance_indicator is given both here and under cpu with different values",
                            value=moved,
                        )
                    else:
                        cpu["performance_indicator"] = moved
                        self.warn(
                            (*base, "performance_indicator"),
                            "performance_indicator belongs under "
                            f"cpu in the original CRD; moved to {format_path((*base, 'cpu'))}"
                            ".performance_indicator",
                            value=moved,
                        )
                    reqs["cpu"] = cpu
            new_containers.append(container)
        return {**comp, "containers": new_containers}


def normalize(data: dict, cls: type[BaseModel]) -> tuple[Any, list[ValidationIssue]]:
    """A normalised copy of ``data`` for ``cls`` and the warnings/errors found on the way."""
    norm = Normalizer()
    return norm.walk_model(data, cls, ()), norm.issues
