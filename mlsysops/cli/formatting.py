"""Shared formatting of the client commands (tables, `describe`, `explain`)."""

from __future__ import annotations

from typing import Any


def human_age(seconds: float) -> str:
    """kubectl-style age: 45s, 5m30s, 42m, 4h53m, 30h, 3d4h, 12d (coarser the older)."""
    s = int(max(0.0, seconds))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def node_status(node: dict[str, Any]) -> str:
    """Ready / NotReady (its cluster says it is down) / Unknown (its cluster agent is lost)."""
    return {True: "Ready", False: "NotReady"}.get(node.get("alive"), "Unknown")
