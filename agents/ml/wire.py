"""The ML connector's messages between agents (registered like every other kind: schema + sender rule).

* `model.fetch` (REQUEST, child -> parent): one chunk of a model version's artifact. The parent answers
  with at most `CHUNK_BYTES` of the artifact (base64) plus what identifies it (version, format, size,
  sha256); the card comes with the first chunk only. A model is thus never one oversized stanza
  (`protocol.MAX_MESSAGE_BYTES`). A request that says which sha256 it already has is answered
  `unchanged` without data when that is still the version asked for.
* `model.report` (INFORM, child -> parent): observed outcomes (features, prediction, observed) for drift
  and retraining; batches stay under the message limit; relayed up to the continuum.
* `model.train` (REQUEST, child -> parent): ask for a training job; relayed up to the continuum.

All three come only from a registered child (`FROM_CHILDREN`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlsysops.agents.authorization import FROM_CHILDREN, register_rule
from mlsysops.agents.ml.card import NAME_PATTERN
from mlsysops.agents.protocol import Performative, register_payload

MODEL_FETCH = "model.fetch"
MODEL_REPORT = "model.report"
MODEL_TRAIN = "model.train"
CHUNK_BYTES = 32 * 1024          # raw bytes per chunk: 43.7 KB of base64, under the 64 KiB message limit
MAX_REPORT_BATCH = 200
MAX_REPORT_BYTES = 40 * 1024       # of JSON rows per batch (the envelope adds little)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelFetch(_Body):
    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1)       # None: production
    offset: int = Field(0, ge=0)
    have_sha256: str | None = Field(None, max_length=64)


class ModelChunk(_Body):
    name: str
    version: int
    format: str
    size: int = Field(ge=0)
    sha256: str
    offset: int = Field(ge=0)
    data: str = ""                                  # base64 of artifact[offset:offset + CHUNK_BYTES]
    card: dict[str, Any] | None = None              # with offset 0 only
    unchanged: bool = False


class Observation(_Body):
    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = None
    ts: float
    features: dict[str, float] = Field(default_factory=dict, max_length=256)
    prediction: float | None = None
    observed: float


class ModelReports(_Body):
    observations: list[Observation] = Field(max_length=MAX_REPORT_BATCH)


class ModelTrain(_Body):
    name: str = Field(pattern=NAME_PATTERN)
    seed: int = 0
    trainer: str | None = Field(None, max_length=256)


register_payload(MODEL_FETCH, Performative.REQUEST, ModelFetch)
register_payload(MODEL_FETCH, Performative.INFORM, ModelChunk)
register_payload(MODEL_REPORT, Performative.INFORM, ModelReports)
register_payload(MODEL_TRAIN, Performative.REQUEST, ModelTrain)
for _kind in (MODEL_FETCH, MODEL_REPORT, MODEL_TRAIN):
    register_rule(_kind, FROM_CHILDREN)
