"""Node trust: how far a cluster agent believes a node, from how the node has behaved.

Six signals, each turned into a penalty with an operator-set weight; the trust score is
``exp(-sum(penalties))`` in (0, 1] (1 = nothing held against the node):

- ``flapping``: times the node was lost (a decayed count: every event halves in weight each
  ``half_life_s``), weight per loss;
- ``failed_deployments``: instances that failed on the node (decayed count), weight per failure;
- ``heartbeat_jitter``: coefficient of variation of the node's heartbeat inter-arrival times (last
  ``JITTER_SAMPLES``) above ``jitter_tolerance``, weight per unit. Measured where the heartbeats arrive, so
  a parent that was itself stalled would count against every child alike: the receiver's own stalls (the
  time its membership watchdog credits to the children) are left out;
- ``contradictions``: reports that contradict what the cluster knows (an instance claimed on this node that
  the cluster placed elsewhere, telemetry labelled with another node's name), decayed count;
- ``impersonation``: messages refused because their body named another node (decayed count);
- ``anomalies``: fraction of the node's recent metric samples (cpu and memory utilisation) that a streaming
  Half-Space-Trees detector (`half_space_trees`) scores above ``anomaly_threshold``, above ``anomaly_tolerance``.

Every score comes with the signals' raw values, the penalties, and plain-language reasons for the ones
that count, so a placement that avoided a node can say why.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mlsysops.agents.half_space_trees import HalfSpaceTrees

__all__ = ["NodeTrust", "TrustReport", "TrustWeights"]

JITTER_SAMPLES = 20
ANOMALY_WINDOW = 50       # samples the anomaly fraction is taken over
DETECTOR_WINDOW = 50      # Half-Space Trees reference window (samples before a node is judged)
SIGNALS = ("flapping", "failed_deployments", "heartbeat_jitter", "contradictions", "impersonation", "anomalies")


@dataclass(frozen=True, slots=True)
class TrustWeights:
    flapping: float = 0.35
    failed_deployments: float = 0.2
    heartbeat_jitter: float = 1.0
    contradictions: float = 0.5
    impersonation: float = 1.5
    anomalies: float = 3.0
    half_life_s: float = 600.0
    jitter_tolerance: float = 0.5
    anomaly_tolerance: float = 0.1
    anomaly_threshold: float = 0.8

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, path: str = "trust") -> TrustWeights:
        """Validated overrides; a ValueError names the field (`trust.weights.flapping: ...`)."""
        if not values:
            return cls()
        known = {f.name for f in fields(cls)}
        out: dict[str, float] = {}
        def at(key: str) -> str:
            return f"{path}.{key}" if path else key

        for key, value in values.items():
            if key not in known:
                raise ValueError(f"{at(key)}: unknown; known: {', '.join(sorted(known))}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{at(key)}: expected a non-negative number, got {value!r}")
            out[key] = float(value)
        weights = replace(cls(), **out)
        if weights.half_life_s <= 0:
            raise ValueError(f"{at('half_life_s')}: must be > 0")
        if not 0 < weights.anomaly_threshold <= 1:
            raise ValueError(f"{at('anomaly_threshold')}: must be in (0, 1]")
        return weights


@dataclass(frozen=True, slots=True)
class TrustReport:
    node: str
    score: float
    signals: dict[str, float]
    penalties: dict[str, float]
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 3), "signals": {k: round(v, 3) for k, v in self.signals.items()},
                "penalties": {k: round(v, 3) for k, v in self.penalties.items() if v > 0},
                "reasons": list(self.reasons)}


class _Decayed:
    """A count whose events lose half their weight every half-life."""

    __slots__ = ("value", "at")

    def __init__(self) -> None:
        self.value = 0.0
        self.at = 0.0

    def add(self, now: float, half_life: float, amount: float = 1.0) -> None:
        self.value = self.read(now, half_life) + amount
        self.at = now

    def read(self, now: float, half_life: float) -> float:
        if self.value == 0.0:
            return 0.0
        return self.value * 0.5 ** (max(0.0, now - self.at) / half_life)


@dataclass(slots=True)
class _NodeState:
    counts: dict[str, _Decayed] = field(default_factory=lambda: {s: _Decayed() for s in SIGNALS[:2] + SIGNALS[3:5]})
    last_heartbeat: float | None = None
    stall_mark: float = 0.0
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=JITTER_SAMPLES))
    flagged: deque[bool] = field(default_factory=lambda: deque(maxlen=ANOMALY_WINDOW))
    samples: int = 0
    detector: Any = None
    last_reason: dict[str, str] = field(default_factory=dict)


def _new_detector(seed: int) -> HalfSpaceTrees:
    return HalfSpaceTrees(n_trees=15, height=6, window_size=DETECTOR_WINDOW, seed=seed)


class NodeTrust:
    def __init__(self, weights: TrustWeights | None = None, *, clock: Callable[[], float] = time.time,
                 seed: int = 7) -> None:
        self.weights = weights or TrustWeights()
        self.clock = clock
        self.seed = seed
        self._nodes: dict[str, _NodeState] = {}

    def _state(self, node: str) -> _NodeState:
        st = self._nodes.get(node)
        if st is None:
            st = self._nodes[node] = _NodeState()
        return st

    def _count(self, node: str, signal: str, why: str) -> None:
        st = self._state(node)
        st.counts[signal].add(self.clock(), self.weights.half_life_s)
        st.last_reason[signal] = why

    # -- evidence -----------------------------------------------------------------------------------
    def node_lost(self, node: str, reason: str = "") -> None:
        self._count(node, "flapping", reason)
        self._state(node).last_heartbeat = None   # the gap to the next heartbeat is the outage, not jitter

    def deployment_failed(self, node: str, detail: str = "") -> None:
        self._count(node, "failed_deployments", detail)

    def contradiction(self, node: str, what: str) -> None:
        self._count(node, "contradictions", what)

    def impersonation(self, node: str, what: str) -> None:
        self._count(node, "impersonation", what)

    def heartbeat(self, node: str, mono: float, *, receiver_stalled: float = 0.0) -> None:
        """A heartbeat arrived at monotonic time ``mono``; ``receiver_stalled`` is the receiver's cumulative
        stall time so far: what grew since the node's previous heartbeat was not the node's doing."""
        st = self._state(node)
        if st.last_heartbeat is not None:
            gap = mono - st.last_heartbeat - max(0.0, receiver_stalled - st.stall_mark)
            if gap > 0:
                st.intervals.append(gap)
        st.last_heartbeat, st.stall_mark = mono, receiver_stalled

    def metrics(self, node: str, values: Mapping[str, float]) -> None:
        """One sample of the node's utilisation metrics (each in [0, 1]); scored, then learned."""
        sample = {k: min(1.0, max(0.0, float(v))) for k, v in values.items()
                  if isinstance(v, int | float) and math.isfinite(v)}
        if not sample:
            return
        st = self._state(node)
        if st.detector is None:
            st.detector = _new_detector(self.seed)
        if st.samples >= DETECTOR_WINDOW:   # before a full reference window every point looks new
            st.flagged.append(st.detector.score_one(sample) > self.weights.anomaly_threshold)
        st.detector.learn_one(sample)
        st.samples += 1

    def forget(self, node: str) -> None:
        self._nodes.pop(node, None)

    # -- judgement ----------------------------------------------------------------------------------
    def report(self, node: str) -> TrustReport:
        w = self.weights
        st = self._nodes.get(node)
        if st is None:
            return TrustReport(node, 1.0, dict.fromkeys(SIGNALS, 0.0), dict.fromkeys(SIGNALS, 0.0), [])
        now = self.clock()
        signals = {s: st.counts[s].read(now, w.half_life_s) for s in st.counts}
        if len(st.intervals) >= 3:
            mean = statistics.fmean(st.intervals)
            signals["heartbeat_jitter"] = statistics.pstdev(st.intervals) / mean if mean > 0 else 0.0
        else:
            signals["heartbeat_jitter"] = 0.0
        signals["anomalies"] = (sum(st.flagged) / len(st.flagged)) if st.flagged else 0.0
        penalties = {
            "flapping": w.flapping * signals["flapping"],
            "failed_deployments": w.failed_deployments * signals["failed_deployments"],
            "heartbeat_jitter": w.heartbeat_jitter * max(0.0, signals["heartbeat_jitter"] - w.jitter_tolerance),
            "contradictions": w.contradictions * signals["contradictions"],
            "impersonation": w.impersonation * signals["impersonation"],
            "anomalies": w.anomalies * max(0.0, signals["anomalies"] - w.anomaly_tolerance),
        }
        score = math.exp(-sum(penalties.values()))
        reasons = [self._reason(s, signals[s], st.last_reason.get(s, ""))
                   for s in sorted(penalties, key=lambda k: -penalties[k]) if penalties[s] >= 0.005]
        return TrustReport(node, score, {s: signals[s] for s in SIGNALS}, {s: penalties[s] for s in SIGNALS},
                           reasons)

    def score(self, node: str) -> float:
        return self.report(node).score

    def _reason(self, signal: str, value: float, last: str) -> str:
        w = self.weights
        tail = f" (last: {last})" if last else ""
        if signal == "flapping":
            return f"lost {value:.1f}x recently{tail}"
        if signal == "failed_deployments":
            return f"{value:.1f} failed deployment(s) recently{tail}"
        if signal == "heartbeat_jitter":
            return f"heartbeat jitter {value:.2f} (coefficient of variation; tolerated {w.jitter_tolerance:.2f})"
        if signal == "contradictions":
            return f"{value:.1f} report(s) contradicting the cluster's view{tail}"
        if signal == "impersonation":
            return f"{value:.1f} message(s) sent under another node's name{tail}"
        return f"{value:.0%} of recent metric samples anomalous (tolerated {w.anomaly_tolerance:.0%})"
