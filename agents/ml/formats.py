"""Model formats: how the bytes of an artifact become a served model.

A format is a name (`"onnx"`, `"mlsysops-linear"`, ...) and a loader `(artifact: bytes, card: dict) -> Model`
(usually a `Model.from_bytes` classmethod). Formats register themselves with `register_format` when their
module is imported (or list themselves in a module-level `BUILTIN_FORMATS` table); `load_model` imports
the modules that ship formats on first use, so a registry or a cluster agent can load any built-in format
without knowing where it lives.

`load_model` is the one gate every artifact passes (upload, training result, transfer to an agent): a loader
that raises, or a model whose `feature_names` are not the card's inputs, is a `ModelError` naming the model,
the version and the field.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from mlsysops.agents.ml.card import ModelCard
from mlsysops.agents.ml.errors import ModelError

log = logging.getLogger(__name__)

Loader = Callable[[bytes, dict[str, Any]], Any]
_FORMATS: dict[str, Loader] = {}
# modules that register built-in formats when imported (absent ones are skipped: mlpol's arrive later)
FORMAT_MODULES = ("mlsysops.agents.ml.onnx_model", "mlsysops.agents.ml.model", "mlsysops.agents.ml.trainers")
_discovered = False


def register_format(format: str, loader: Loader) -> None:
    """Declare how to load artifacts of `format` (a later registration of the same name replaces it)."""
    _FORMATS[format] = loader


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for mod in FORMAT_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:       # the module exists but something it needs does not: say so
                log.warning("format module %s could not be imported: %s", mod, exc)
            continue
        for name, loader in (getattr(module, "BUILTIN_FORMATS", None) or {}).items():
            _FORMATS.setdefault(name, loader)     # a module's table of formats, if it keeps one


def formats() -> list[str]:
    _discover()
    return sorted(_FORMATS)


def load_model(format: str, artifact: bytes, card: ModelCard | dict[str, Any]) -> Any:
    """The served model of an artifact, checked against its card (ModelError otherwise)."""
    c = card if isinstance(card, ModelCard) else ModelCard.model_validate(card)
    _discover()
    loader = _FORMATS.get(format)
    if loader is None:
        raise ModelError(c.name, c.version, "format", f"unknown format {format!r}; known: {sorted(_FORMATS)}")
    try:
        model = loader(artifact, c.model_dump())
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a loader may raise anything on bad bytes: that is the verdict
        raise ModelError(c.name, c.version, "artifact",
                         f"the {format} loader refused it: {type(exc).__name__}: {exc}") from None
    names = list(getattr(model, "feature_names", []) or [])
    if names != c.feature_names:
        raise ModelError(c.name, c.version, "card.inputs",
                         f"the card lists {c.feature_names}, the {format} model takes {names}")
    return model
