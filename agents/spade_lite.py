"""SPADE without the embedded XMPP server in the process: the one place mlsysops imports SPADE from.

`spade/__init__` imports `spade.container`, which imports pyjabber's server (and through it SQLAlchemy,
its web admin, ...: ~40 MB and half a second of start-up) even in an agent that talks to prosody and never
runs a server. While SPADE is imported, `pyjabber.server` and `pyjabber.server_parameters` are stand-ins
whose `Server`/`Parameters` import the real module when first called (`spade.run()` with its embedded
server still works); afterwards the stand-ins leave `sys.modules`, so anyone else importing pyjabber
(mlsysops' own embedded server runs it in a subprocess) gets the real one.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

_DEFERRED = {"pyjabber.server": "Server", "pyjabber.server_parameters": "Parameters"}


def _on_first_call(module: str, name: str) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    make.__name__ = make.__qualname__ = name
    return make


def _import_spade() -> None:
    if "spade.container" in sys.modules:
        return
    placed: dict[str, types.ModuleType] = {}
    for module, name in _DEFERRED.items():
        if module not in sys.modules:
            stand_in = types.ModuleType(module, f"stand-in for {module} (mlsysops.agents.spade_lite)")
            setattr(stand_in, name, _on_first_call(module, name))
            placed[module] = sys.modules[module] = stand_in
    try:
        importlib.import_module("spade.container")
    finally:
        for module, stand_in in placed.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


_import_spade()

from spade.agent import Agent, DisconnectedException  # noqa: E402
from spade.behaviour import CyclicBehaviour  # noqa: E402
from spade.message import Message  # noqa: E402
from spade.template import BaseTemplate, Template  # noqa: E402

__all__ = ["Agent", "BaseTemplate", "CyclicBehaviour", "DisconnectedException", "Message", "Template"]
