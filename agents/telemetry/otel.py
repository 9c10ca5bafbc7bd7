"""Per-agent OpenTelemetry: one MeterProvider per agent, read back by the agent's own Monitor.

Every agent owns an `AgentTelemetry`. Values observed on a tick are handed to `publish()` (an atomic swap of
a cache); observable gauges created lazily per metric name read that cache. `collect()` pulls them through
the SDK's `InMemoryMetricReader` on the caller's thread, so the Monitor's windows hold exactly what the SDK
recorded and the agent's tick decides when sampling happens (one clock, deterministic tests).

Outward exports are optional and never on the control path: a Prometheus reader on a private registry
(`prometheus_text()` or `serve_prometheus(port)`), and OTLP/HTTP push to a collector on the SDK's own
thread with a timeout no longer than the interval (a dead collector costs that thread's time only).
Several readers re-run every callback; that is why the callbacks read a cache instead of sampling.

Label names: inside an agent the Knowledge keeps short labels (`node`, `cluster`, `app`, `component`,
`instance`) that policies use; at the OTel boundary they become `host.name` (the OTel semantic convention for
a node) and `mlsysops.*` for the rest (no convention exists for them); `to_otel`/`from_otel` map both ways.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.resources import Resource

from mlsysops.agents.telemetry.io_counters import COUNTERS

log = logging.getLogger(__name__)

Sample = tuple[str, dict[str, str], float]   # (metric, labels, value)

_TO_OTEL = {"node": "host.name", "cluster": "mlsysops.cluster", "app": "mlsysops.app",
            "component": "mlsysops.component", "instance": "mlsysops.instance", "agent": "mlsysops.agent"}
_FROM_OTEL = {v: k for k, v in _TO_OTEL.items()}

# Units by metric name (UCUM, as the semantic conventions use); unknown names get "1". Names that already
# end in their unit (response_time_ms) get none: Prometheus would append it again (`..._ms_milliseconds`).
UNITS = {
    "system.cpu.utilization": "1", "system.memory.utilization": "1", "system.memory.usage": "By",
    "system.memory.limit": "By", "system.cpu.frequency": "Hz", "system.cpu.logical.count": "{cpu}",
    "system.network.io": "By", "system.disk.io": "By", "system.cpu.load_average.1m": "1",
    "response_time_ms": "", "cpu_usage_cores": "{cpu}", "memory_usage_bytes": "By",
    "requests_per_second": "{request}/s", "sim.node.power": "W",
    "mlsysops.telemetry.digest.bytes": "By", "mlsysops.agent.loop.lag": "s",
}


def to_otel(labels: Mapping[str, str]) -> dict[str, str]:
    return {_TO_OTEL.get(k, k): str(v) for k, v in labels.items()}


def from_otel(attrs: Mapping[str, Any]) -> dict[str, str]:
    return {_FROM_OTEL.get(k, k): str(v) for k, v in attrs.items()}


class _RateLimitFilter(logging.Filter):
    """Let one record per `period` seconds through: a dead collector must not flood the agent's log."""

    def __init__(self, period: float = 60.0) -> None:
        super().__init__()
        self.period = period
        self._last = 0.0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.period:
                return False
            self._last = now
            return True


_OTLP_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.metric_exporter",
                 "opentelemetry.exporter.otlp.proto.http", "opentelemetry.sdk.metrics._internal.export")
for _name in _OTLP_LOGGERS:
    logging.getLogger(_name).addFilter(_RateLimitFilter())


class AgentTelemetry:
    """The OTel side of one agent (see module docstring)."""

    def __init__(self, agent_id: str, role: str, *, slice_name: str | None = None,
                 attributes: Mapping[str, str] | None = None, prometheus: bool = False,
                 otlp_endpoint: str | None = None, otlp_interval: float = 10.0) -> None:
        attrs: dict[str, str] = {"service.name": f"mlsysops-{role}", "service.namespace": "mlsysops",
                                 "service.instance.id": agent_id}
        if slice_name:
            attrs["mlsysops.slice"] = slice_name
        attrs.update(attributes or {})
        self.agent_id = agent_id
        self.reader = InMemoryMetricReader()
        readers: list[MetricReader] = [self.reader]
        self.registry = None
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry
            self.registry = CollectorRegistry()
            readers.append(PrometheusMetricReader(registry=self.registry, scope_info_enabled=False))
        self.otlp_endpoint = otlp_endpoint
        if otlp_endpoint:
            readers.append(_otlp_reader(otlp_endpoint, otlp_interval))
        self.provider = MeterProvider(resource=Resource.create(attrs), metric_readers=readers)
        self.meter = self.provider.get_meter("mlsysops", "0.1.0")
        self._cache: dict[str, list[tuple[dict[str, str], float]]] = {}
        self._own: dict[str, list[tuple[dict[str, str], float]]] = {}   # set_gauge(): kept across publish()
        self._gauges: set[str] = set()
        self._counters: dict[str, Any] = {}
        self._prom_server: Any = None
        self._closed = False

    # -- recording ----------------------------------------------------------------------------------
    def publish(self, samples: Iterable[Sample]) -> None:
        """Replace the current values (one tick's observations; series absent now disappear). Names in
        `COUNTERS` carry cumulative totals and are exported as monotonic counters, the rest as gauges."""
        cache: dict[str, list[tuple[dict[str, str], float]]] = {}
        for name, labels, value in samples:
            cache.setdefault(name, []).append((to_otel(labels), float(value)))
        self._instruments(cache.keys())
        self._cache = cache   # atomic swap: exporter threads read either the old or the new dict

    def set_gauge(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """The agent's own gauge (e.g. its loop lag): unlike `publish`, kept until set again."""
        self._instruments((name,))
        self._own = {**self._own, name: [(to_otel(labels), float(value))]}   # swapped whole, as in publish

    def _instruments(self, names: Iterable[str]) -> None:
        for name in set(names) - self._gauges:
            self._gauges.add(name)
            # cumulative counters (semantic conventions: system.network.io, system.disk.io) stay counters
            create = self.meter.create_observable_counter if name in COUNTERS else self.meter.create_observable_gauge
            create(name, [self._callback(name)], unit=UNITS.get(name, "1"))

    def _callback(self, name: str) -> Any:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            for attrs, value in (*self._cache.get(name, ()), *self._own.get(name, ())):
                yield Observation(value, attrs)
        return observe

    def count(self, name: str, amount: float = 1.0, labels: Mapping[str, str] | None = None,
              unit: str = "1") -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = self.meter.create_counter(name, unit=unit)
        counter.add(amount, to_otel(labels or {}))

    # -- reading back -------------------------------------------------------------------------------
    def collect(self, names: set[str] | None = None) -> list[Sample]:
        """What the SDK holds now, as (metric, labels with our short names, value); gauges and sums only."""
        data = self.reader.get_metrics_data()
        out: list[Sample] = []
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if names is not None and metric.name not in names:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is not None:
                            out.append((metric.name, from_otel(point.attributes or {}), float(value)))
        return out

    # -- exports ------------------------------------------------------------------------------------
    def prometheus_text(self) -> bytes:
        if self.registry is None:
            raise RuntimeError("Prometheus export is not enabled for this agent")
        from prometheus_client import generate_latest
        return generate_latest(self.registry)

    def serve_prometheus(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics from a thread of prometheus_client (agents without an HTTP server of their own)."""
        if self.registry is None:
            raise RuntimeError("Prometheus export is not enabled for this agent")
        from prometheus_client import start_http_server
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._prom_server = server
        return int(server.server_address[1])

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._prom_server is not None:
            self._prom_server.shutdown()
            self._prom_server.server_close()
        try:
            self.provider.shutdown(timeout_millis=2000)
        except Exception:   # noqa: BLE001 - shutdown of a dead exporter must not stop the agent stopping
            log.debug("meter provider shutdown failed", exc_info=True)


def _otlp_reader(endpoint: str, interval: float) -> MetricReader:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/metrics"):
        url += "/v1/metrics"
    timeout = max(0.5, min(interval, 5.0))   # never longer than the interval: exports must not pile up
    exporter = OTLPMetricExporter(endpoint=url, timeout=timeout)
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000,
                                         export_timeout_millis=timeout * 1000)
