"""What an agent's Monitor collects, how often, and who asked for it.

The set is the layer's defaults plus every metric an enabled policy declares in its context
(`metrics: [...]`), every `qos_metrics[].application_metric_id` of the apps the agent manages, and what its
parent requested (a cluster passes its own wants down to its nodes in a `config.update`). The interval is the
configured monitor interval, lowered by any policy's `telemetry.system_scrape_interval` or the parent's.
It is recomputed every Monitor tick, so installing, enabling or disabling a policy or submitting an app
changes collection without a restart; `describe()` is what the API shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NODE_DEFAULTS = frozenset({
    "system.cpu.utilization", "system.cpu.logical.count", "system.cpu.frequency",
    "system.memory.usage", "system.memory.limit", "system.memory.utilization",
    "system.network.io", "system.disk.io",
    "hw.power", "hw.energy",            # watts and the joules counter (sim power model, RAPL on hosts)
})
COMPONENT_DEFAULTS = frozenset({"running", "response_time_ms", "cpu_usage_cores", "memory_usage_bytes"})


class CollectionPlan:
    def __init__(self, defaults: Iterable[str] = (), interval: float = 1.0) -> None:
        self.defaults = frozenset(defaults)
        self.base_interval = interval
        self.interval = interval
        self.requested: dict[str, list[str]] = {}      # metric -> who asked (beyond the defaults)
        self.parent_metrics: list[str] = []
        self.parent_interval: float | None = None
        self.version = 0

    def wants(self, metric: str) -> bool:
        return metric in self.defaults or metric in self.requested

    def metrics(self) -> list[str]:
        return sorted(self.defaults | set(self.requested))

    def set_parent(self, metrics: Iterable[str], interval: float | None) -> None:
        self.parent_metrics = sorted(set(metrics))
        self.parent_interval = interval

    def update(self, policies: Iterable[Any], app_metrics: dict[str, list[str]]) -> tuple[set[str], set[str]]:
        """Recompute from the enabled policies and the apps' QoS metrics; returns (added, removed)."""
        requested: dict[str, list[str]] = {}
        intervals = [self.base_interval]
        for pol in policies:
            for m in getattr(pol, "metrics", None) or []:
                requested.setdefault(m, []).append(f"policy:{pol.name}")
            if getattr(pol, "scrape_interval", None):
                intervals.append(float(pol.scrape_interval))
        for app, names in app_metrics.items():
            for m in names:
                requested.setdefault(m, []).append(f"app:{app}")
        for m in self.parent_metrics:
            requested.setdefault(m, []).append("parent")
        if self.parent_interval:
            intervals.append(self.parent_interval)
        before, before_interval = set(self.requested), self.interval
        self.requested = requested
        self.interval = max(0.05, min(intervals))
        added, removed = set(requested) - before, before - set(requested)
        if added or removed or self.interval != before_interval:
            self.version += 1   # children are sent the new request
        return added, removed

    def request_for_children(self) -> dict[str, Any]:
        """What this agent asks its children to collect on its behalf (beyond their defaults)."""
        return {"metrics": sorted(self.requested), "interval": self.interval}

    def describe(self) -> dict[str, Any]:
        return {"metrics": self.metrics(), "defaults": sorted(self.defaults),
                "requested": {m: sorted(set(s)) for m, s in sorted(self.requested.items())},
                "interval": self.interval, "version": self.version}


def app_qos_metrics(apps: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """`components[].qos_metrics[].application_metric_id` per app (apps in Kubernetes-form dicts)."""
    out: dict[str, list[str]] = {}
    for name, app in apps.items():
        spec = app.get("spec", app) if isinstance(app, dict) else {}
        ids: set[str] = set()
        for comp in spec.get("components") or []:
            for q in (comp.get("qos_metrics") or []) if isinstance(comp, dict) else []:
                if isinstance(q, dict) and q.get("application_metric_id"):
                    ids.add(str(q["application_metric_id"]))
        if ids:
            out[name] = sorted(ids)
    return out
