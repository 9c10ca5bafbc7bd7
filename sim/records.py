"""Mutable internal records behind the frozen views the sim hands out (not part of the public API)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import InstanceState, SimInstance, SimNodeSpec


@dataclass(slots=True, eq=False)
class InstanceRecord:
    instance_id: str
    app: str
    component: str
    node: str
    state: InstanceState
    reason: str | None
    cpu_request: float
    memory_request: int
    base_response_ms: float
    interactions: tuple[str, ...]
    created_at: float
    state_since: float
    running_at: float | None
    noise_key: int
    activity: float
    memory_fraction: float
    generation: int = 0
    """Bumped on every (re)start so stale scheduled transitions are ignored."""

    def spec_key(self) -> tuple[object, ...]:
        return (
            self.app,
            self.component,
            self.node,
            self.cpu_request,
            self.memory_request,
            self.base_response_ms,
            self.interactions,
        )

    def view(self) -> SimInstance:
        return SimInstance(
            instance_id=self.instance_id,
            app=self.app,
            component=self.component,
            node=self.node,
            state=self.state,
            reason=self.reason,
            cpu_request_cores=self.cpu_request,
            memory_request_bytes=self.memory_request,
            base_response_ms=self.base_response_ms,
            interactions=self.interactions,
            created_at=self.created_at,
            state_since=self.state_since,
            running_at=self.running_at,
        )


@dataclass(slots=True, eq=False)
class NodeRecord:
    spec: SimNodeSpec
    noise_key: int
    background_fraction: float
    freq_hz: float | None
    up: bool = True
    active: dict[str, InstanceRecord] = field(default_factory=dict)
    """Non-terminal (starting/running) instances placed here."""
    requested_cpu: float = 0.0
    requested_memory: int = 0

    def attach(self, rec: InstanceRecord) -> None:
        self.active[rec.instance_id] = rec
        self.requested_cpu += rec.cpu_request
        self.requested_memory += rec.memory_request

    def detach(self, rec: InstanceRecord) -> None:
        if self.active.pop(rec.instance_id, None) is not None:
            self.requested_cpu -= rec.cpu_request
            self.requested_memory -= rec.memory_request
            if not self.active:  # avoid float drift on empty nodes
                self.requested_cpu = 0.0
                self.requested_memory = 0

    @property
    def freq_ratio(self) -> float:
        """Current over maximum CPU frequency (1.0 when the node has no frequency table)."""
        freqs = self.spec.cpu_freqs_hz
        if not freqs or self.freq_hz is None:
            return 1.0
        return self.freq_hz / freqs[-1]
