"""SPADE without the embedded XMPP server in the process: the one place mlsysops imports SPADE from.

`spade/__init__` imports `spade.container`, which imports pyjabber's server (and through it SQLAlchemy,
its web admin, ...: ~40 MB and half a second of start-up) even in an agent that talks to prosody and never
runs a server. While SPADE is imported, `pyjabber.server` and `pyjabber.server_parameters` are stand-ins
whose `Server`/`Parameters` import the real module when first called (`spade.run()` with its embedded
server still works); afterwards the stand-ins leave `sys.modules`, so anyone else importing pyjabber
(mlsysops' own embedded server runs it in a subprocess) gets the real one.

SPADE's web interface (`spade.web`: aiohttp's server, jinja2, timeago: ~14 MB) is built by every agent's
constructor although no mlsysops agent serves it: while SPADE is imported, `spade.web` is a stand-in whose
`WebApp` builds the real one only when something uses it (`is_started()` answers False without building).

aiohttp (~10 MB with what it imports) is loaded by `spade.behaviour` and by slixmpp's HTTP-upload plugin
(XEP-0363, which SPADE's client registers), only for SPADE's file upload/download helpers, which no mlsysops
agent calls; loguru (~1 MB) by `spade.container`, only to silence SPADE's own embedded server. While SPADE
and that plugin are imported, both are stand-ins whose names resolve to the real module's on first use
(`ClientSession(...)`, `aiohttp.ClientError`, `loguru.logger`), so those paths still work; afterwards they
leave `sys.modules` like the others, so `import aiohttp` elsewhere gets the real module.

slixmpp itself comes through `mlsysops.agents.slixmpp_lite` (without its pygments highlighter until used).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

from mlsysops.agents import slixmpp_lite  # noqa: F401 - slixmpp first, the agents' way

_DEFERRED = {"pyjabber.server": "Server", "pyjabber.server_parameters": "Parameters"}


def _on_first_call(module: str, name: str) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    make.__name__ = make.__qualname__ = name
    return make


class _WebAppOnDemand:
    """Stands in for `spade.web.WebApp`: the real one (and its imports) only once something uses it."""

    def __init__(self, agent: Any) -> None:
        self._agent = agent
        self._real: Any = None

    def is_started(self) -> bool:
        return self._real is not None and self._real.is_started()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._real is None:
            self._real = importlib.import_module("spade.web").WebApp(agent=self._agent)
        return getattr(self._real, name)


def _module_on_demand(module: str, calls: tuple[str, ...] = ()) -> types.ModuleType:
    """A stand-in whose attributes are the real module's, imported on first access (PEP 562 `__getattr__`).
    `calls`: names that `from module import name` binds while the stand-in is placed: they become calls that
    resolve the real one then (a class is only instantiated there, never subclassed or checked against)."""
    stand_in = types.ModuleType(module, f"stand-in for {module} (mlsysops.agents.spade_lite)")

    def real() -> types.ModuleType:
        if sys.modules.get(module) is stand_in:   # used while still placed: make way for the real one
            del sys.modules[module]
        return importlib.import_module(module)

    def attribute(name: str) -> Any:
        if name.startswith("__"):   # `from m import X` asks for `__path__`: not a reason to load it
            raise AttributeError(name)
        return getattr(real(), name)

    def call(name: str) -> Callable[..., Any]:
        def resolve(*args: Any, **kwargs: Any) -> Any:
            return getattr(real(), name)(*args, **kwargs)
        resolve.__name__ = resolve.__qualname__ = name
        return resolve

    stand_in.__getattr__ = attribute  # type: ignore[attr-defined]
    for name in calls:
        setattr(stand_in, name, call(name))
    return stand_in


# aiohttp: `spade.behaviour` (`import aiohttp`) and slixmpp's upload plugin (`from aiohttp import ClientSession`);
# loguru: `spade.container`, only to silence the embedded server of `spade.run(..., embedded_xmpp_server=True)`
_ON_DEMAND = {"aiohttp": ("ClientSession",), "loguru": ()}


def _import_spade() -> None:
    if "spade.container" in sys.modules:
        return
    placed: dict[str, types.ModuleType] = {}
    if "spade.web" not in sys.modules:
        web = types.ModuleType("spade.web", "stand-in for spade.web (mlsysops.agents.spade_lite)")
        web.WebApp = _WebAppOnDemand  # type: ignore[attr-defined]
        placed["spade.web"] = sys.modules["spade.web"] = web
    for module, name in _DEFERRED.items():
        if module not in sys.modules:
            stand_in = types.ModuleType(module, f"stand-in for {module} (mlsysops.agents.spade_lite)")
            setattr(stand_in, name, _on_first_call(module, name))
            placed[module] = sys.modules[module] = stand_in
    for module, calls in _ON_DEMAND.items():
        if module not in sys.modules:
            placed[module] = sys.modules[module] = _module_on_demand(module, calls)
    try:
        importlib.import_module("spade.container")
        # registered by SPADE's client on every connect: imported now, it binds the stand-in's names
        importlib.import_module("slixmpp.plugins.xep_0363")
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
