"""What the far-edge agent owes its cluster while it cannot reach it: bounded, and never silent.

* instance states are *coalesced* per instance (the latest state wins; a full status report after the
  reconnect tells the cluster everything that runs), so they cannot overflow;
* telemetry digests and local events go to bounded rings; when a ring is full the oldest entry goes, the
  loss is counted per ring, and the next report carries the count (`dropped` in the heartbeat digest and an
  event), so the cluster learns what it did not get.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any


class BoundedRing:
    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"{name} buffer limit must be >= 1, got {limit}")
        self.name = name
        self.limit = limit
        self.items: deque[Any] = deque()
        self.dropped = 0

    def push(self, item: Any) -> Any | None:
        """Append; returns the entry dropped to make room (None when there was room)."""
        lost = None
        if len(self.items) >= self.limit:
            lost = self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        return lost

    def drain(self) -> list[Any]:
        out = list(self.items)
        self.items.clear()
        return out

    def __len__(self) -> int:
        return len(self.items)


class Outbox:
    def __init__(self, telemetry_limit: int = 120, event_limit: int = 200) -> None:
        self.states: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.telemetry = BoundedRing("telemetry", telemetry_limit)
        self.events = BoundedRing("events", event_limit)

    def instance_changed(self, view: dict[str, Any]) -> None:
        self.states[view["instance_id"]] = view
        self.states.move_to_end(view["instance_id"])

    def take_states(self) -> list[dict[str, Any]]:
        out = list(self.states.values())
        self.states.clear()
        return out

    def dropped(self) -> dict[str, int]:
        return {ring.name: ring.dropped for ring in (self.telemetry, self.events) if ring.dropped}

    def pending(self) -> dict[str, int]:
        return {"states": len(self.states), "telemetry": len(self.telemetry), "events": len(self.events)}
