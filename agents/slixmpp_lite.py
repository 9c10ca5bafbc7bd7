"""slixmpp without its pygments highlighter until something uses it: where agents import slixmpp from.

When imported, slixmpp builds an XML highlighter (pygments' lexer and 256-colour formatter: ~3 MB of RSS in
every agent) that only its own test helpers call. While slixmpp is imported, pygments is hidden, so slixmpp
takes its fallback; afterwards `slixmpp.xmlstream.highlight` is a stand-in that builds slixmpp's real
highlighter on first call, and `import pygments` works as usual. If slixmpp or pygments was imported before
this module, nothing is changed (nothing would be saved).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

_highlighter: Callable[[Any], Any] | None = None


def highlight(string: Any) -> Any:
    """Stands in for `slixmpp.xmlstream.highlight`: slixmpp's own highlighter, built on first call."""
    global _highlighter
    if _highlighter is None:
        _highlighter = importlib.import_module("slixmpp.xmlstream.tostring")._get_highlight()
    return _highlighter(string)


def _import_slixmpp() -> None:
    if "slixmpp.xmlstream.tostring" in sys.modules or "pygments" in sys.modules:
        return
    sys.modules["pygments"] = None  # type: ignore[assignment]  # `from pygments import ...` raises ImportError
    try:
        importlib.import_module("slixmpp")
    finally:
        if "pygments" in sys.modules and sys.modules["pygments"] is None:
            del sys.modules["pygments"]
    for module in ("slixmpp.xmlstream.tostring", "slixmpp.xmlstream"):
        sys.modules[module].highlight = highlight  # type: ignore[attr-defined]


_import_slixmpp()

from slixmpp import JID, ClientXMPP  # noqa: E402

__all__ = ["JID", "ClientXMPP", "highlight"]
