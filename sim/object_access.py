"""Object access in the simulated continuum: what reading or writing a bucket costs, from where.

latency_ms = RTT(component's node, replica's node) + size / bandwidth + service_ms x (1 + jitter x n)
where a read is served by the nearest replica and a write completes when the farthest replica has it
(synchronous replication), n is seeded noise (|N(0,1)|, so service never beats its floor), and the RTT is
the continuum's network model (`SimContinuum.latency_ms`, link degradations included). So QoS reflects
where data lives.

`AccessStream`s are the components' seeded access patterns (Poisson arrivals of reads and writes of a
fixed object size); `generate_accesses` turns them into a time-ordered list for a window of sim time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .continuum import SimContinuum


@dataclass(frozen=True)
class AccessStream:
    bucket: str           # "<app>/<bucket_id>"
    component: str
    node: str             # where the component runs
    reads_per_s: float
    writes_per_s: float
    object_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.reads_per_s < 0 or self.writes_per_s < 0:
            raise ValueError(f"{self.bucket} {self.component}: access rates must be >= 0")
        if self.object_bytes <= 0:
            raise ValueError(f"{self.bucket} {self.component}: object_bytes must be > 0")


@dataclass(frozen=True)
class SimAccess:
    at: float
    stream: AccessStream
    op: str               # "read" | "write"


def generate_accesses(streams: list[AccessStream], start: float, duration: float, seed: int) -> list[SimAccess]:
    """Seeded Poisson arrivals per stream and operation in [start, start + duration), sorted by time."""
    rng = random.Random(seed)
    out = []
    for stream in streams:
        for op, rate in (("read", stream.reads_per_s), ("write", stream.writes_per_s)):
            t = start
            while rate > 0:
                t += rng.expovariate(rate)
                if t >= start + duration:
                    break
                out.append(SimAccess(t, stream, op))
    out.sort(key=lambda a: (a.at, a.stream.bucket, a.stream.component, a.op))
    return out


class ObjectAccessModel:
    def __init__(self, sim: SimContinuum, *, bandwidth_mb_s: float = 100.0, service_ms: float = 2.0,
                 jitter: float = 0.2, seed: int = 0) -> None:
        if bandwidth_mb_s <= 0 or service_ms < 0:
            raise ValueError("bandwidth_mb_s must be > 0 and service_ms >= 0")
        self.sim = sim
        self.bandwidth_mb_s = bandwidth_mb_s
        self.service_ms = service_ms
        self.jitter = jitter
        self._rng = random.Random(seed)

    def _one(self, from_node: str, replica_node: str, size: int) -> float:
        transfer = size / (self.bandwidth_mb_s * 1e6) * 1000
        service = self.service_ms * (1 + self.jitter * abs(self._rng.gauss(0.0, 1.0)))
        return self.sim.latency_ms(from_node, replica_node) + transfer + service

    def access_ms(self, from_node: str, replica_nodes: dict[str, str], op: str, size: int) -> tuple[float, str]:
        """(latency, serving site) of one access; `replica_nodes` maps each replica's site to its node."""
        if not replica_nodes:
            raise ValueError("the bucket has no replica to access")
        if op not in ("read", "write"):
            raise ValueError(f"op: expected 'read' or 'write', got {op!r}")
        costs = {site: self._one(from_node, node, size) for site, node in sorted(replica_nodes.items())}
        pick = min if op == "read" else max
        site = pick(costs, key=lambda s: (costs[s], s))
        return costs[site], site

    def copy_s(self, source_node: str, target_node: str, total_bytes: int) -> float:
        """How long a replica copy of `total_bytes` takes (one stream; RTT per 8 MiB chunk)."""
        chunks = max(1, total_bytes // (8 * 2**20))
        return (total_bytes / (self.bandwidth_mb_s * 1e6)
                + chunks * self.sim.latency_ms(source_node, target_node) / 1000)
