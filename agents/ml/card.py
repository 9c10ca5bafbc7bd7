"""Model cards: what a model takes (names and units), what it gives, what data it saw, how good it is.

Two JSON forms are accepted, both normalised to `ModelCard`:

* ours: `{"inputs": [{"name", "unit", "type"}], "output": {"name", "unit"}, "training_data": {"start",
  "end", "rows"}, "metrics": {...}, "owner", "created", "description", "tags", "hyperparameters"}`;
* the original MLSysOps ML connector's (`modelname`, `modelkind`, `featurelist: [{feature_name, type, kind,
  units}]`, `modelperformance`, `hyperparameter`, `modeltags`, ...): features of `kind` 0 are the inputs in
  the listed order, the one feature of `kind` 1 is the output. The original card is kept as given under
  `original`.

A card is small (it travels in the first chunk of a model transfer): at most `MAX_CARD_BYTES` of JSON.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlsysops.agents.ml.errors import ModelError

MAX_CARD_BYTES = 16 * 1024
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FEATURE_PATTERN = r"^[^\s\x00-\x1f][^\x00-\x1f]{0,127}$"   # any printable name: "queue", "kind=jetson", ...
ORIGINAL_KEYS = frozenset({"modelname", "modelkind", "featurelist", "modelperformance", "hyperparameter",
                           "trainingresource", "runresource", "inference", "modeltags"})


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FEATURE_PATTERN)
    unit: str = Field("", max_length=32)
    type: Literal["cont", "cat"] = "cont"
    description: str = Field("", max_length=256)


class TrainingWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: float | None = None      # epoch seconds of the oldest row used
    end: float | None = None
    rows: int | None = Field(None, ge=0)


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1)     # assigned by the registry
    format: str = Field(min_length=1, max_length=64)
    inputs: list[Feature] = Field(min_length=1, max_length=256)
    output: Feature
    training_data: TrainingWindow = Field(default_factory=TrainingWindow)
    metrics: dict[str, float] = Field(default_factory=dict)
    owner: str = Field("", max_length=128)
    created: float | None = None
    description: str = Field("", max_length=2048)
    tags: list[str] = Field(default_factory=list, max_length=32)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    trainer: str | None = None       # the trainer that made it (retraining uses the same one)
    seed: int | None = None
    original: dict[str, Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.inputs]


def _from_original(raw: dict[str, Any], name: str, version: int | None) -> dict[str, Any]:
    features = raw.get("featurelist")
    if not isinstance(features, list) or not features:
        raise ModelError(name, version, "featurelist", "the original card must list its features "
                         "(featurelist: [{feature_name, type, kind, units}])")
    inputs, outputs = [], []
    for i, feat in enumerate(features):
        if not isinstance(feat, dict) or not isinstance(feat.get("feature_name"), str):
            raise ModelError(name, version, f"featurelist[{i}].feature_name", "expected a string")
        kind = feat.get("kind", 0)
        if kind not in (0, 1):
            raise ModelError(name, version, f"featurelist[{i}].kind",
                             f"expected 0 (input) or 1 (output), got {kind!r}")
        units = feat.get("units")
        entry = {"name": feat["feature_name"], "type": feat.get("type") or "cont",
                 "unit": "" if units in (None, 0, "") else str(units)}
        (outputs if kind == 1 else inputs).append(entry)
    if len(outputs) != 1:
        raise ModelError(name, version, "featurelist", f"expected exactly one feature of kind 1 (the output), "
                         f"got {len(outputs)}")
    hyper = {h.get("parameter"): h.get("value") for h in raw.get("hyperparameter") or []
             if isinstance(h, dict) and h.get("parameter")}
    return {"name": name, "format": raw.get("format", "onnx"), "inputs": inputs, "output": outputs[0],
            "description": str(raw.get("modelkind") or ""), "tags": list(raw.get("modeltags") or []),
            "hyperparameters": hyper, "original": raw}


def parse_card(raw: Any, *, name: str, format: str | None = None, version: int | None = None) -> ModelCard:
    """Validate a card of either form for model `name`; raises ModelError naming the field."""
    if not isinstance(raw, dict):
        raise ModelError(name, version, "card", f"expected a JSON object, got {type(raw).__name__}")
    size = len(json.dumps(raw, default=str).encode())
    if size > MAX_CARD_BYTES:
        raise ModelError(name, version, "card", f"{size} bytes of JSON, at most {MAX_CARD_BYTES}")
    data = _from_original(raw, name, version) if ORIGINAL_KEYS & set(raw) else dict(raw)
    if data.get("name", name) != name:
        raise ModelError(name, version, "card.name", f"the card names model {data.get('name')!r}")
    data["name"] = name
    if format is not None:
        if data.get("format", format) != format:
            raise ModelError(name, version, "card.format",
                             f"the card says {data.get('format')!r}, the upload says {format!r}")
        data["format"] = format
    data.setdefault("created", time.time())
    if version is not None:
        data["version"] = version       # the registry numbers versions; a number in the upload is ignored
    try:
        card = ModelCard.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "card." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "card"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ModelError(name, version, field, f"{err['msg']}{more}") from None
    names = card.feature_names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ModelError(name, version, "card.inputs", f"duplicate input names {dup}")
    return card


def check_features(card: ModelCard | dict[str, Any], expected: list[str]) -> None:
    """Refuse a card whose inputs are not the features a policy computes (same names, same order)."""
    c = card if isinstance(card, ModelCard) else ModelCard.model_validate(card)
    if c.feature_names != list(expected):
        missing = [f for f in expected if f not in c.feature_names]
        extra = [f for f in c.feature_names if f not in expected]
        raise ModelError(c.name, c.version, "card.inputs",
                         f"expected {list(expected)}, the card lists {c.feature_names}"
                         + (f" (missing {missing})" if missing else "") + (f" (unknown {extra})" if extra else ""))
