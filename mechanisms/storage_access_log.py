"""Who reads and writes each bucket, from where, how often and how much: a sliding window of accesses.

The storage mechanism is the data path (`read`/`write`), so it sees every access; the simulator's access
generator reports its simulated accesses here too (`record`). The storage policy reads the aggregate
from the mechanism's state (`summary()`): per bucket and (component, node it runs on), reads/s, writes/s,
bytes/s and the observed latency p95.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Access:
    at: float
    bucket: str        # "<app>/<bucket_id>"
    component: str
    from_node: str     # the node the component runs on (latency is modelled from it)
    op: str            # "read" | "write"
    size: int
    latency_ms: float
    served_by: str     # the site that served it (a write: the slowest replica)


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


class AccessLog:
    def __init__(self, window_s: float = 60.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._entries: deque[Access] = deque(maxlen=max_entries)

    def record(self, bucket: str, component: str, from_node: str, op: str, size: int, latency_ms: float,
               served_by: str, at: float | None = None) -> None:
        if op not in ("read", "write"):
            raise ValueError(f"op: expected 'read' or 'write', got {op!r}")
        self._entries.append(Access(self.clock() if at is None else at, bucket, component, from_node, op,
                                    int(size), float(latency_ms), served_by))

    def recent(self, now: float | None = None) -> list[Access]:
        now = self.clock() if now is None else now
        while self._entries and self._entries[0].at < now - self.window_s:
            self._entries.popleft()
        return list(self._entries)

    def summary(self, now: float | None = None) -> dict[str, list[dict[str, object]]]:
        """bucket -> rows {component, from_node, reads_per_s, writes_per_s, bytes_per_s,
        latency_p95_ms, first_at, last_at} (times on the log's clock)."""
        entries = self.recent(now)
        groups: dict[tuple[str, str, str], list[Access]] = {}
        for a in entries:
            groups.setdefault((a.bucket, a.component, a.from_node), []).append(a)
        out: dict[str, list[dict[str, object]]] = {}
        span = self.window_s
        for (bucket, comp, site), accs in sorted(groups.items()):
            out.setdefault(bucket, []).append({
                "component": comp, "from_node": site,
                "reads_per_s": sum(a.op == "read" for a in accs) / span,
                "writes_per_s": sum(a.op == "write" for a in accs) / span,
                "bytes_per_s": sum(a.size for a in accs) / span,
                "latency_p95_ms": p95([a.latency_ms for a in accs]),
                "first_at": accs[0].at, "last_at": accs[-1].at})
        return out
