"""Knowledge: what the Monitor keeps current and Analyze reads.

One `Knowledge` per agent. It holds
- telemetry windows: a ring buffer per series, a series being (metric, frozenset(labels.items())); each buffer
  is bounded by length (`window_size`) and optionally by age (`max_age` seconds, pruned on write and read);
- application descriptions (`apps`), a free-form `system` dict the agent keeps current, the last known
  mechanism states (`mechanisms`) and a bounded deque of recent events.

It is plain data with no locking: it lives on the agent's event loop and only that loop's coroutines touch it.
Policies get a read-only `Telemetry` view, never the store itself.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

LabelKey = frozenset[tuple[str, str]]
Sample = tuple[float, float]  # (epoch seconds, value)


def label_key(labels: Mapping[str, Any] | None) -> LabelKey:
    """Canonical, hashable form of a label set (values are stringified, as in Prometheus)."""
    if not labels:
        return frozenset()
    return frozenset((str(k), str(v)) for k, v in labels.items())


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Summary of one window of samples."""

    count: int
    min: float
    max: float
    mean: float
    last: float
    first_ts: float
    last_ts: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "last": self.last,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


def compute_stats(samples: list[Sample]) -> WindowStats | None:
    """Stats over samples (ordered by time); None for an empty window."""
    if not samples:
        return None
    values = [v for _, v in samples]
    return WindowStats(
        count=len(values),
        min=min(values),
        max=max(values),
        mean=sum(values) / len(values),
        last=values[-1],
        first_ts=samples[0][0],
        last_ts=samples[-1][0],
    )


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened (node lost, app added, plugin reloaded, ...), kept for context."""

    ts: float
    kind: str
    data: dict[str, Any]


class Knowledge:
    """The K of MAPE-K for one agent (see module docstring)."""

    def __init__(self, window_size: int = 512, max_age: float | None = 600.0, max_events: int = 1000) -> None:
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        self.window_size = window_size
        self.max_age = max_age
        self._series: dict[str, dict[LabelKey, deque[Sample]]] = {}
        self.apps: dict[str, dict[str, Any]] = {}
        self.system: dict[str, Any] = {}
        self.mechanisms: dict[str, dict[str, Any]] = {}
        self.events: deque[Event] = deque(maxlen=max_events)
        self.version = 0   # bumped by every change to the series (readers key cached answers on it)

    # -- telemetry ---------------------------------------------------------------------------------------
    def record(
        self, metric: str, value: float, labels: Mapping[str, Any] | None = None, ts: float | None = None
    ) -> None:
        """Append one sample. Out-of-order samples are kept in arrival order (callers send in order)."""
        ts = time.time() if ts is None else float(ts)
        by_labels = self._series.setdefault(metric, {})
        key = label_key(labels)
        buf = by_labels.get(key)
        if buf is None:
            buf = by_labels[key] = deque(maxlen=self.window_size)
        buf.append((ts, float(value)))
        self.version += 1
        self._prune(buf, ts)

    def _prune(self, buf: deque[Sample], now: float | None = None) -> None:
        if self.max_age is None:
            return
        cutoff = (time.time() if now is None else now) - self.max_age
        while buf and buf[0][0] < cutoff:
            buf.popleft()

    def metrics(self) -> list[str]:
        return sorted(self._series)

    def series(self, metric: str) -> dict[LabelKey, list[Sample]]:
        """All series of a metric: label key -> samples (oldest first)."""
        out: dict[LabelKey, list[Sample]] = {}
        for key, buf in self._series.get(metric, {}).items():
            self._prune(buf)
            if buf:
                out[key] = list(buf)
        return out

    def last(self, metric: str, labels: Mapping[str, Any] | None = None) -> Sample | None:
        """The newest sample of exactly one series (no copy of the window), or None."""
        buf = self._series.get(metric, {}).get(label_key(labels))
        return buf[-1] if buf else None

    def recent(self, metric: str, since: float) -> dict[LabelKey, list[float]]:
        """Per series of a metric, the values at/after `since` (oldest first); series without any are left
        out. Scans from the newest sample back, so it costs what it returns, not the window length."""
        out: dict[LabelKey, list[float]] = {}
        for key, buf in self._series.get(metric, {}).items():
            values: list[float] = []
            for ts, v in reversed(buf):
                if ts < since:
                    break
                values.append(v)
            if values:
                values.reverse()
                out[key] = values
        return out

    def window(
        self, metric: str, labels: Mapping[str, Any] | None = None, since: float | None = None
    ) -> list[Sample]:
        """Samples of exactly one series (labels match exactly), optionally only those at/after `since`."""
        buf = self._series.get(metric, {}).get(label_key(labels))
        if not buf:
            return []
        self._prune(buf)
        if since is None:
            return list(buf)
        return [s for s in buf if s[0] >= since]

    def _matching(
        self, metric: str, label_filter: Mapping[str, Any]
    ) -> Iterator[tuple[LabelKey, deque[Sample]]]:
        wanted = label_key(label_filter)
        for key, buf in self._series.get(metric, {}).items():
            if wanted <= key:
                self._prune(buf)
                if buf:
                    yield key, buf

    def latest(self, metric: str, **label_filter: Any) -> float | None:
        """Most recent value among series whose labels include `label_filter` (subset match); None if none."""
        best: Sample | None = None
        for _, buf in self._matching(metric, label_filter):
            if best is None or buf[-1][0] >= best[0]:
                best = buf[-1]
        return None if best is None else best[1]

    def stats(
        self, metric: str, labels: Mapping[str, Any] | None = None, last_seconds: float | None = None
    ) -> WindowStats | None:
        """min/max/mean/last over one series' window, or over its last `last_seconds` seconds."""
        since = None if last_seconds is None else time.time() - last_seconds
        return compute_stats(self.window(metric, labels, since))

    def forget_series(self, metric: str, labels: Mapping[str, Any] | None = None) -> None:
        """Drop one series (e.g. the node it described left), or all series of a metric if labels is None."""
        self.version += 1
        if labels is None:
            self._series.pop(metric, None)
        else:
            self._series.get(metric, {}).pop(label_key(labels), None)

    # -- events ------------------------------------------------------------------------------------------
    def add_event(self, kind: str, **data: Any) -> Event:
        ev = Event(time.time(), kind, data)
        self.events.append(ev)
        return ev

    def recent_events(self, kind: str | None = None, limit: int = 100) -> list[Event]:
        evs = [e for e in self.events if kind is None or e.kind == kind]
        return evs[-limit:]


class Telemetry(Mapping[str, float]):
    """Read-only view of the telemetry windows handed to policies.

    Query methods (`latest`, `window`, `series`, `stats`, `labels`) mirror `Knowledge`. For policies written
    against the original framework, which treat telemetry as a dict, the view is also a Mapping: iterating
    yields metric names and `telemetry["cpu_load"]` is the most recent value of that metric across all its
    series (KeyError when there is none). Use `latest(metric, node="n1")` when labels matter.
    """

    def __init__(self, knowledge: Knowledge) -> None:
        self._k = knowledge

    def __getitem__(self, metric: str) -> float:
        value = self._k.latest(metric)
        if value is None:
            raise KeyError(metric)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([m for m in self._k.metrics() if self._k.latest(m) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def latest(self, metric: str, **label_filter: Any) -> float | None:
        return self._k.latest(metric, **label_filter)

    def window(
        self, metric: str, labels: Mapping[str, Any] | None = None, since: float | None = None
    ) -> list[Sample]:
        return self._k.window(metric, labels, since)

    def series(self, metric: str) -> dict[LabelKey, list[Sample]]:
        return self._k.series(metric)

    def labels(self, metric: str) -> list[dict[str, str]]:
        """Label sets of the live series of a metric, as dicts."""
        return [dict(key) for key in self._k.series(metric)]

    def stats(
        self, metric: str, labels: Mapping[str, Any] | None = None, last_seconds: float | None = None
    ) -> WindowStats | None:
        return self._k.stats(metric, labels, last_seconds)

    def snapshot(self, metrics: list[str] | None = None) -> dict[str, float]:
        """Latest value per metric (all metrics, or the given ones that have data)."""
        names = self._k.metrics() if metrics is None else metrics
        out: dict[str, float] = {}
        for m in names:
            v = self._k.latest(m)
            if v is not None:
                out[m] = v
        return out
