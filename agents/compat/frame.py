"""A small, pandas-like table of telemetry rows: what an original policy's `await telemetry['query'](...)`
returns. The original returned a pandas DataFrame (one `timestamp` column and one column per metric);
policies index it as `frame[metric].values[0]`, check `frame.empty` and iterate `to_dict('records')`.
Only that surface is provided: pandas is not a dependency of this project."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Column:
    def __init__(self, name: str, values: list[Any]) -> None:
        self.name = name
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values)

    def __getitem__(self, i: int) -> Any:
        return self.values[i]

    def tolist(self) -> list[Any]:
        return list(self.values)


class _Rows:
    def __init__(self, frame: MetricFrame) -> None:
        self._frame = frame

    def __getitem__(self, index: int | slice) -> Any:
        rows = self._frame.rows
        if isinstance(index, slice):
            return MetricFrame(rows[index], self._frame.columns)
        return dict(rows[index])


class MetricFrame:
    """Rows of `{"timestamp": t, metric: value, ...}`, oldest first; a missing value is None."""

    def __init__(self, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
        self.rows = rows
        self.columns = columns if columns is not None else sorted({k for r in rows for k in r} - {"timestamp"})
        if "timestamp" not in self.columns:
            self.columns = ["timestamp", *self.columns]

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def iloc(self) -> _Rows:
        return _Rows(self)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, column: object) -> bool:
        return column in self.columns

    def __getitem__(self, column: str) -> Column:
        if column not in self.columns:
            raise KeyError(f"no telemetry column {column!r}; columns: {self.columns}")
        return Column(column, [r.get(column) for r in self.rows])

    def to_dict(self, orient: str = "records") -> Any:
        if orient == "records":
            return [{c: r.get(c) for c in self.columns} for r in self.rows]
        if orient == "list":
            return {c: [r.get(c) for r in self.rows] for c in self.columns}
        raise ValueError(f"orient {orient!r} is not supported; use 'records' or 'list'")

    def copy(self) -> MetricFrame:
        return MetricFrame([dict(r) for r in self.rows], list(self.columns))

    def __repr__(self) -> str:
        return f"MetricFrame({len(self.rows)} rows, columns={self.columns})"


def frame_from_telemetry(telemetry: Any, *, latest: bool = False, start_time: float | None = None,
                         end_time: float | None = None, resolution: float = 1.0) -> MetricFrame:
    """Rows from our `Telemetry` view: samples of every series grouped by time (`resolution` seconds).

    A metric with several label sets (one per node, instance, ...) keeps the newest sample per row. With
    `latest`, one row holding each metric's newest value, stamped with the newest time."""
    buckets: dict[float, dict[str, tuple[float, float]]] = {}
    newest: dict[str, tuple[float, float]] = {}
    only_newest = latest and start_time is None and end_time is None
    for metric in list(telemetry):
        for samples in telemetry.series(metric).values():
            for ts, value in (samples[-1:] if only_newest else samples):
                if start_time is not None and ts < start_time or end_time is not None and ts > end_time:
                    continue
                if metric not in newest or ts >= newest[metric][0]:
                    newest[metric] = (ts, value)
                key = round(ts / resolution) * resolution
                row = buckets.setdefault(key, {})
                if metric not in row or ts >= row[metric][0]:
                    row[metric] = (ts, value)
    columns = sorted(newest)
    if latest:
        if not newest:
            return MetricFrame([], columns)
        return MetricFrame([{"timestamp": max(t for t, _ in newest.values()),
                             **{m: v for m, (_, v) in newest.items()}}], columns)
    return MetricFrame([{"timestamp": key, **{m: v for m, (_, v) in row.items()}}
                        for key, row in sorted(buckets.items())], columns)
