"""Active faults with optional expiry, and the append-only fault log.

Faults of the same kind stack: slowdown factors multiply, spike cores and link delays add. A fault with
`until=None` lasts until `clear()`. Expired faults are dropped lazily on read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import FaultRecord, SimNodeSpec
from .network import selector_matches


@dataclass(frozen=True, slots=True)
class _NodeFault:
    kind: str  # "slow_node" | "load_spike"
    node: str
    value: float  # slowdown factor or spike cores
    since: float
    until: float | None


@dataclass(frozen=True, slots=True)
class _LinkFault:
    a: str
    b: str
    extra_ms: float
    since: float
    until: float | None


def _alive(until: float | None, now: float) -> bool:
    return until is None or now < until


class FaultBook:
    def __init__(self) -> None:
        self.log: list[FaultRecord] = []
        self._node_faults: dict[str, list[_NodeFault]] = {}
        self._links: list[_LinkFault] = []

    def record(self, now: float, kind: str, target: str, params: dict[str, Any]) -> FaultRecord:
        rec = FaultRecord(time=now, kind=kind, target=target, params=params)
        self.log.append(rec)
        return rec

    def add_node_fault(
        self, kind: str, node: str, value: float, now: float, duration_s: float | None
    ) -> None:
        until = None if duration_s is None else now + duration_s
        self._node_faults.setdefault(node, []).append(_NodeFault(kind, node, value, now, until))

    def add_link_fault(self, a: str, b: str, extra_ms: float, now: float, duration_s: float | None) -> None:
        until = None if duration_s is None else now + duration_s
        self._links.append(_LinkFault(a, b, extra_ms, now, until))

    def _node_active(self, node: str, now: float) -> list[_NodeFault]:
        faults = self._node_faults.get(node)
        if not faults:
            return []
        live = [f for f in faults if _alive(f.until, now)]
        if len(live) != len(faults):
            if live:
                self._node_faults[node] = live
            else:
                del self._node_faults[node]
        return live

    def slowdown(self, node: str, now: float) -> float:
        factor = 1.0
        for f in self._node_active(node, now):
            if f.kind == "slow_node":
                factor *= f.value
        return factor

    def spike_cores(self, node: str, now: float) -> float:
        return sum(f.value for f in self._node_active(node, now) if f.kind == "load_spike")

    def link_extra_ms(self, a: SimNodeSpec, b: SimNodeSpec, now: float) -> float:
        if not self._links or a.name == b.name:
            return 0.0
        if any(not _alive(f.until, now) for f in self._links):
            self._links = [f for f in self._links if _alive(f.until, now)]
        extra = 0.0
        for f in self._links:
            if (selector_matches(f.a, a) and selector_matches(f.b, b)) or (
                selector_matches(f.a, b) and selector_matches(f.b, a)
            ):
                extra += f.extra_ms
        return extra

    def clear(self) -> None:
        self._node_faults.clear()
        self._links.clear()

    def active(self, now: float) -> list[dict[str, Any]]:
        """JSON-able list of the faults in force at `now`."""
        out: list[dict[str, Any]] = []
        for node in sorted(self._node_faults):
            for f in self._node_active(node, now):
                key = "factor" if f.kind == "slow_node" else "cpu_cores"
                out.append({"kind": f.kind, "target": node, key: f.value, "since": f.since, "until": f.until})
        for lf in self._links:
            if _alive(lf.until, now):
                out.append(
                    {
                        "kind": "degrade_link",
                        "target": f"{lf.a}<->{lf.b}",
                        "extra_ms": lf.extra_ms,
                        "since": lf.since,
                        "until": lf.until,
                    }
                )
        return out
