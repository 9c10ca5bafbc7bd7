"""Where a bucket's replicas should live, from who accesses it, from where, how often.

Filter, then score (like the placement policies): a site the bucket's location restrictions forbid, or
one whose store is unreachable, is filtered out with its reason; every set of `replicas` allowed sites is
scored by the access latency its users would see: a read goes to the nearest replica, a write to all of
them (it completes at the farthest). A set is ranked by (access targets missed, mean access latency
weighted by each user's operations per second, replicas it must copy). The current placement is kept
unless the best set misses fewer targets or is `hysteresis` (default 20%) faster: each move copies the
whole bucket, so small gains are not worth it. Without any access yet, a new bucket goes where its
owner component runs (nearest site), else to the allowed sites in name order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.descriptions.storage_intents import BucketIntent, StorageSite, site_verdicts

MAX_SETS = 2000   # site subsets scored per bucket (10 sites, 3 replicas: 120)


@dataclass(frozen=True)
class Accessor:
    component: str
    from_node: str
    reads_per_s: float
    writes_per_s: float
    bytes_per_s: float = 0.0


def current_accessors(rows: list[dict[str, Any]]) -> list[Accessor]:
    """Accessors from an access summary (`AccessLog.summary()` rows of one bucket). A component seen from
    several nodes in the window has moved: only the nodes it used since its newest node appeared count,
    so a relocated reader pulls its data along without waiting for the old rows to age out."""
    newest: dict[str, float] = {}
    for r in rows:
        newest[r["component"]] = max(newest.get(r["component"], float("-inf")), float(r.get("first_at", 0.0)))
    return [Accessor(r["component"], r["from_node"], float(r["reads_per_s"]), float(r["writes_per_s"]),
                     float(r.get("bytes_per_s", 0.0)))
            for r in rows if float(r.get("last_at", 0.0)) >= newest[r["component"]]]


@dataclass
class SetScore:
    sites: tuple[str, ...]
    missed: list[str]               # "component: 85 ms > 50 ms target"
    mean_ms: float | None           # None: no access to weigh
    new_replicas: int

    @property
    def rank(self) -> tuple[int, float, int, tuple[str, ...]]:
        return (len(self.missed), self.mean_ms or 0.0, self.new_replicas, self.sites)

    def as_dict(self) -> dict[str, Any]:
        return {"sites": list(self.sites), "missed_targets": self.missed,
                "mean_access_ms": None if self.mean_ms is None else round(self.mean_ms, 2),
                "new_replicas": self.new_replicas}


@dataclass
class ReplicaChoice:
    bucket: str
    sites: list[str]
    current: list[str]
    reason: str
    filtered: dict[str, str] = field(default_factory=dict)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    held: str | None = None       # cannot place now (and why)

    @property
    def changes(self) -> bool:
        return self.held is None and sorted(self.sites) != sorted(self.current)


def _score(sites: tuple[str, ...], accessors: list[Accessor], rtt: dict[str, dict[str, float]],
           targets: dict[str, float], current: list[str]) -> SetScore:
    total_ops = weighted = 0.0
    worst: dict[str, float] = {}
    for a in accessors:
        row = rtt.get(a.from_node)
        if not row:
            continue
        read_ms, write_ms = min(row[s] for s in sites), max(row[s] for s in sites)
        ops = a.reads_per_s + a.writes_per_s
        total_ops += ops
        weighted += a.reads_per_s * read_ms + a.writes_per_s * write_ms
        seen = max(read_ms if a.reads_per_s else 0.0, write_ms if a.writes_per_s else 0.0)
        worst[a.component] = max(worst.get(a.component, 0.0), seen)
    missed = [f"{c}: {worst[c]:.0f} ms > {t:g} ms target" for c, t in sorted(targets.items())
              if c in worst and worst[c] > t]
    return SetScore(sites, missed, weighted / total_ops if total_ops else None,
                    sum(s not in current for s in sites))


def choose_replica_sites(intent: BucketIntent, sites: list[StorageSite], current: list[str],
                         accessors: list[Accessor], rtt: dict[str, dict[str, float]], *,
                         unreachable: set[str] = frozenset(), owner_node: str | None = None,
                         hysteresis: float = 0.2) -> ReplicaChoice:
    filtered = {n: why for n, why in site_verdicts(intent, sites).items() if why}
    for n in sorted(unreachable):
        filtered.setdefault(n, f"site {n}: store unreachable")
    allowed = sorted(s.name for s in sites if s.name not in filtered)
    current = sorted(current)
    k = intent.replicas
    if len(allowed) < k:
        held = (f"{intent.key} needs {k} replica site(s); only {allowed or 'none'} allowed and reachable "
                f"({'; '.join(filtered.values()) or 'no site'})")
        return ReplicaChoice(intent.key, current, current, held, filtered, held=held)
    # a user with no RTT row (never seen) weighs nothing; the owner's node stands in before any access
    if not accessors and owner_node and owner_node in rtt:
        accessors = [Accessor(intent.owner, owner_node, 1.0, 0.0)]
    scored = sorted((_score(combo, accessors, rtt, intent.targets_ms, current)
                     for combo in itertools.islice(itertools.combinations(allowed, k), MAX_SETS)),
                    key=lambda s: s.rank)
    best = scored[0]
    alternatives = [s.as_dict() for s in scored[:6]]
    keep = tuple(current) if len(current) == k and all(c in allowed for c in current) else None
    if keep is not None:
        mine = next((s for s in scored if s.sites == keep), None) or _score(keep, accessors, rtt,
                                                                            intent.targets_ms, current)
        gain = ((mine.mean_ms - best.mean_ms) / mine.mean_ms
                if mine.mean_ms and best.mean_ms is not None else 0.0)
        if best.sites == keep or (len(best.missed) >= len(mine.missed) and gain < hysteresis):
            why = ("already on the best sites" if best.sites == keep else
                   f"best alternative {list(best.sites)} is only {gain:.0%} faster "
                   f"(< {hysteresis:.0%} hysteresis) and misses no fewer targets")
            return ReplicaChoice(intent.key, list(keep), current, f"keep {list(keep)}: {why}", filtered,
                                 alternatives)
        reason = (f"move {list(keep)} -> {list(best.sites)}: mean access "
                  f"{_ms(mine.mean_ms)} -> {_ms(best.mean_ms)}"
                  + (f"; targets missed {len(mine.missed)} -> {len(best.missed)} ({'; '.join(mine.missed)})"
                     if mine.missed else ""))
    elif current:
        lost = [c for c in current if c not in allowed]
        reason = (f"re-place {current} -> {list(best.sites)}: "
                  + (f"{lost} no longer allowed or reachable" if lost else f"{len(current)} of {k} replicas"))
    else:
        reason = f"new bucket on {list(best.sites)}: mean access {_ms(best.mean_ms)}"
    if best.missed:
        reason += f"; still missing: {'; '.join(best.missed)}"
    return ReplicaChoice(intent.key, list(best.sites), current, reason, filtered, alternatives)


def _ms(v: float | None) -> str:
    return "n/a (no access yet)" if v is None else f"{v:.1f} ms"
