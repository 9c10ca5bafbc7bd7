"""Telemetry digests: compact summaries of an agent's windows, sent up the tree over XMPP.

A digest summarises every series that has samples in the last `window` seconds as one row
``[metric, labels, last, min, max, mean, count]``. Nodes send one to their cluster each report interval;
clusters merge what their nodes sent with their own and send one to the continuum every
`telemetry.digest_interval`; the continuum keeps a bounded slice-wide history from them. The row form keeps
a digest small (about 60 bytes per series); a digest larger than the message limit is split into parts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from mlsysops.agents.mape.knowledge import Knowledge

Row = list[Any]   # [metric, labels, last, min, max, mean, count]
MAX_DIGEST_BYTES = 40 * 1024   # below the 64 KiB message limit, with room for the envelope


def _r(value: float) -> float:
    """Six significant digits: enough for monitoring, and it keeps digests short."""
    return float(f"{value:.6g}")


def summarise(knowledge: Knowledge, window: float, *, now: float | None = None,
              keep: Callable[[str], bool] | None = None) -> list[Row]:
    """One row per series with samples in the last `window` seconds."""
    now = time.time() if now is None else now
    since = now - window
    rows: list[Row] = []
    for metric in knowledge.metrics():
        if keep is not None and not keep(metric):
            continue
        for key, recent in knowledge.recent(metric, since).items():
            rows.append([metric, dict(sorted(key)), _r(recent[-1]), _r(min(recent)), _r(max(recent)),
                         _r(sum(recent) / len(recent)), len(recent)])
    return rows


def size_of(rows: list[Row]) -> int:
    return len(json.dumps(rows, separators=(",", ":")))


def split(rows: list[Row], limit: int = MAX_DIGEST_BYTES) -> list[list[Row]]:
    """Parts of at most ~`limit` bytes each (a single oversized row still goes, alone)."""
    parts: list[list[Row]] = [[]]
    size = 0
    for row in rows:
        n = size_of([row])
        if parts[-1] and size + n > limit:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += n
    return parts


def apply(knowledge: Knowledge, rows: list[Row], ts: float, extra: dict[str, str] | None = None,
          stats: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, float]] | None = None) -> int:
    """Record each row's last value at `ts` (labels + `extra`); keep its window stats in `stats`."""
    n = 0
    for metric, labels, last, lo, hi, mean, count in rows:
        labels = {**labels, **(extra or {})}
        knowledge.record(metric, last, labels, ts=ts)
        if stats is not None:
            stats[(metric, frozenset(labels.items()))] = {"min": lo, "max": hi, "mean": mean,
                                                          "count": count, "ts": ts}
        n += 1
    return n
