"""Typed scalar values with units: resource quantities, frequencies and durations.

Each value keeps the text (or number) the user wrote in ``raw`` so that saving a description writes
back exactly what was read, and exposes ``value`` as a float in base units (cores, bytes, Hz, seconds)
for the code that compares or sums them. Equality and ordering use ``value`` only.

Decisions (documented here because the original CRDs are silent or inconsistent):
- CPU: ``250m`` = 0.25 cores; plain numbers are cores.
- Bytes (container memory): Kubernetes suffixes (``Ki Mi Gi Ti Pi Ei`` binary, ``k K M G T P E``
  decimal, also ``KB MB GB TB``); plain numbers are bytes.
- Gigabytes (node memory, disk, GPU memory): same suffixes, but a plain number means GiB (2**30 bytes),
  because the reference writes ``memory: 4  # GB`` for devices that have 4 GiB.
- Frequency: ``Hz kHz MHz GHz`` (case-insensitive). A plain number below 1000 is GHz, below 1e6 MHz,
  otherwise Hz; the loader warns whenever it had to guess (see ``Frequency.guess_note``).
- Duration: ``500ms``, ``5s``, ``2m``, ``1h``, ``1d`` and compounds like ``1m30s``; plain numbers are
  seconds.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

Raw = str | int | float

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_SUFFIX_RE = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z]*)\s*$")

_BYTE_SUFFIXES: dict[str, float] = {
    "": 1.0,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "KB": 1e3,
    "kB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "PB": 1e15,
    "B": 1.0,
}
_CPU_SUFFIXES: dict[str, float] = {"": 1.0, "m": 1e-3}
_FREQ_SUFFIXES: dict[str, float] = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}
_DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_RE = re.compile(rf"({_NUMBER})\s*(ns|us|µs|ms|s|m|h|d)")


class _UnitValue:
    """Base for a number with a unit; subclasses define how ``raw`` becomes ``value``."""

    unit: ClassVar[str] = ""
    expected: ClassVar[str] = ""
    __slots__ = ("raw", "value")

    def __init__(self, raw: Raw) -> None:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ValueError(f"expected {self.expected}, got {type(raw).__name__}")
        try:
            value = self._parse(raw)
        except OverflowError:  # an integer with more digits than a float holds (400-digit cpu: ...)
            raise ValueError(f"expected {self.expected}; the number is too large") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite {self.expected}, got {raw!r}")
        self.raw: Raw = raw
        self.value: float = value

    @classmethod
    def _parse(cls, raw: Raw) -> float:
        raise NotImplementedError

    @classmethod
    def parse(cls, raw: Any) -> _UnitValue:
        """Parse ``raw`` (or pass an instance through); raises ValueError with what was expected."""
        if isinstance(raw, cls):
            return raw
        return cls(raw)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _UnitValue):
            return type(self) is type(other) and self.value == other.value
        return NotImplemented

    def __lt__(self, other: _UnitValue) -> bool:
        return self.value < other.value

    def __le__(self, other: _UnitValue) -> bool:
        return self.value <= other.value

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r} = {self.value:g}{self.unit})"

    def __str__(self) -> str:
        return str(self.raw)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v.raw),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict:
        return {"anyOf": [{"type": "string"}, {"type": "number"}], "x-mlsysops-unit": cls.unit or "1"}


def _split(raw: Raw, expected: str) -> tuple[float, str]:
    if isinstance(raw, (int, float)):
        return float(raw), ""
    match = _NUMBER_SUFFIX_RE.match(raw)
    if not match:
        raise ValueError(f"{raw!r} is not {expected}")
    return float(match.group(1)), match.group(2)


class CpuQuantity(_UnitValue):
    """CPU amount in cores (``250m``, ``0.5``, ``2``)."""

    unit = " cores"
    expected = "a CPU quantity like '250m', '0.5' or 2"

    @classmethod
    def _parse(cls, raw: Raw) -> float:
        number, suffix = _split(raw, cls.expected)
        if suffix not in _CPU_SUFFIXES:
            raise ValueError(f"{raw!r} is not {cls.expected} (unknown suffix {suffix!r})")
        if number < 0:
            raise ValueError(f"{raw!r}: a CPU quantity cannot be negative")
        return number * _CPU_SUFFIXES[suffix]


class ByteQuantity(_UnitValue):
    """Size in bytes; plain numbers are bytes (Kubernetes memory convention)."""

    unit = " B"
    expected = "a size like '64Mi', '2Gi', '500M' or a number of bytes"
    plain_multiplier: ClassVar[float] = 1.0

    @classmethod
    def _parse(cls, raw: Raw) -> float:
        number, suffix = _split(raw, cls.expected)
        if suffix not in _BYTE_SUFFIXES:
            raise ValueError(f"{raw!r} is not {cls.expected} (unknown suffix {suffix!r})")
        if number < 0:
            raise ValueError(f"{raw!r}: a size cannot be negative")
        return number * (cls.plain_multiplier if suffix == "" else _BYTE_SUFFIXES[suffix])


class GigabyteQuantity(ByteQuantity):
    """Size in bytes where a plain number means GiB (node memory/disk as written in the reference)."""

    expected = "a size like '4Gi', '512Mi' or a number of GB"
    plain_multiplier = 2.0**30


class Frequency(_UnitValue):
    """Clock frequency in Hz (``1.4GHz``, ``1400MHz``, or a plain number, see module doc)."""

    unit = " Hz"
    expected = "a frequency like '1.4GHz', '1400MHz' or a number"

    @classmethod
    def _parse(cls, raw: Raw) -> float:
        number, suffix = _split(raw, cls.expected)
        if number < 0:
            raise ValueError(f"{raw!r}: a frequency cannot be negative")
        if suffix == "":
            return number * cls._plain_scale(number)[0]
        scale = _FREQ_SUFFIXES.get(suffix.lower())
        if scale is None:
            raise ValueError(f"{raw!r} is not {cls.expected} (unknown unit {suffix!r})")
        return number * scale

    @staticmethod
    def _plain_scale(number: float) -> tuple[float, str]:
        if number < 1e3:
            return 1e9, "GHz"
        if number < 1e6:
            return 1e6, "MHz"
        return 1.0, "Hz"

    @classmethod
    def guess_note(cls, raw: Any) -> str | None:
        """Why a unit-less value needed a guess (None when the unit was explicit or it is plain Hz)."""
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            return None
        try:
            number, suffix = _split(raw, cls.expected)
        except ValueError:
            return None
        if suffix != "":
            return None
        scale, unit = cls._plain_scale(number)
        if unit == "Hz":
            return None
        hz = number * scale
        note = f"frequency {raw!r} has no unit; read as {number:g} {unit}"
        if unit != "GHz":
            note += f" ({hz / 1e9:g} GHz)"
        if hz > 10e9:
            note += "; that is above 10 GHz, check the value"
        return note + f"; write e.g. '{number:g}{unit}' to be explicit"


class Duration(_UnitValue):
    """Time span in seconds (``500ms``, ``5s``, ``2m``, ``1m30s``, plain number = seconds)."""

    unit = " s"
    expected = "a duration like '500ms', '5s', '2m' or a number of seconds"

    @classmethod
    def _parse(cls, raw: Raw) -> float:
        if isinstance(raw, (int, float)):
            if raw < 0:
                raise ValueError(f"{raw!r}: a duration cannot be negative")
            return float(raw)
        text = raw.strip().replace(" ", "")
        if re.fullmatch(_NUMBER, text):
            value = float(text)
        else:
            pos, value = 0, 0.0
            for match in _DURATION_RE.finditer(text):
                if match.start() != pos:
                    break
                value += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(f"{raw!r} is not {cls.expected}")
        if value < 0:
            raise ValueError(f"{raw!r}: a duration cannot be negative")
        return value


def parse_duration(raw: Any) -> float:
    """Seconds from a duration value; raises ValueError naming what was expected."""
    return Duration.parse(raw).value
