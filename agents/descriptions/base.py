"""Shared building blocks of the description models.

``Spec`` is the strict base (unknown fields are errors). Two class-level tables drive the loader's
compatibility pass (``normalize.py``): ``compat_renames`` maps a key written by users of the original
framework to the field it means, and ``compat_extensions`` names fields that are not in the original
CRD but appear in its published examples. Both are applied with a warning, never silently.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, WithJsonSchema

API_GROUP = "mlsysops.eu"
API_VERSION = "v1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return value


# A JSON number that keeps ints as ints (so 13 is saved as 13, not 13.0).
Number = Annotated[
    float,
    PlainValidator(_number),
    PlainSerializer(lambda v: v),
    WithJsonSchema({"type": "number"}),
]


class SensorRef(NamedTuple):
    """A sensor a component needs or a node offers: its kind (``camera``) and model (``d455``)."""

    type: str
    model: str | None


class Spec(BaseModel):
    """Strict base model of every description object."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=False)

    compat_renames: ClassVar[dict[str, str]] = {}
    compat_extensions: ClassVar[dict[str, str]] = {}


class Description(Spec):
    """A top-level description (one Kubernetes object of group mlsysops.eu)."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    short_name: ClassVar[str]
    id_field: ClassVar[str]

    @property
    def id(self) -> str:
        """The object's name: ``name``, ``cluster_id``, ``continuum_id`` or ``datacenter_id``."""
        return str(getattr(self, self.id_field))
