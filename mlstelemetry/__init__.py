"""A stand-in for the `mlstelemetry` client that original MLSysOps plugins and apps import.

    from mlstelemetry import MLSTelemetry
    client = MLSTelemetry("policy_cpu", "policy_cpu")
    client.pushMetric("requests", "counter", 1)

Backed by this project's OpenTelemetry SDK (no gRPC, unlike the original package): every client of a
process shares one MeterProvider with an in-memory reader, so `getLocalMetrics()` /
`getTelemetryLatest()` answer with what was recorded, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
original's `MLS_OTEL_ENDPOINT`) names a collector, an OTLP/HTTP exporter pushes the same values there (the
endpoint an agent's `telemetry.otlp_endpoint` points to). Instruments: `counter` (monotonic, adds each
value), `async_counter` and `gauge` (report the last value). The service name is `application_name`,
the component goes into the `mlsysops.component` attribute.

Not provided (they queried fixed Prometheus/Loki addresses of the original testbed): `getTelemetryRange`,
`getLogs`, `subscribeToLocalLogs`, `subscribeToMetrics`; calling them raises NotImplementedError that says so.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

__all__ = ["MLSTelemetry"]

_lock = threading.Lock()
_provider: MeterProvider | None = None
_reader: InMemoryMetricReader | None = None
log = logging.getLogger("mlstelemetry")


def _endpoint() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("MLS_OTEL_ENDPOINT")


def _shared() -> tuple[MeterProvider, InMemoryMetricReader]:
    global _provider, _reader
    with _lock:
        if _provider is None:
            _reader = InMemoryMetricReader()
            readers: list[MetricReader] = [_reader]
            endpoint = _endpoint()
            if endpoint:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

                url = endpoint.rstrip("/")
                url = url if url.endswith("/v1/metrics") else url + "/v1/metrics"
                url = url if "://" in url else "http://" + url
                readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url, timeout=5),
                                                             export_interval_millis=10_000))
            _provider = MeterProvider(resource=Resource.create({"service.name": "mlstelemetry"}),
                                      metric_readers=readers)
        assert _reader is not None
        return _provider, _reader


class _LastValue:
    """An observable instrument's value: the last one pushed per attribute set."""

    def __init__(self) -> None:
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def set(self, value: float, attributes: dict[str, Any]) -> None:
        self.values[tuple(sorted((str(k), str(v)) for k, v in attributes.items()))] = float(value)

    def observe(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(v, dict(k)) for k, v in list(self.values.items())]


class MLSTelemetry:
    def __init__(self, application_name: str = "default", application_component: str = "none") -> None:
        self.name = application_name
        self.component = application_component
        provider, self._reader = _shared()
        self._meter = provider.get_meter(f"mlstelemetry.{application_name}")
        self._instruments: dict[str, tuple[str, Any]] = {}
        self.default_attributes = {"service.name": application_name, "mlsysops.component": application_component}
        self.logger = logging.getLogger(f"mlstelemetry.{application_name}.{application_component}")

    # -- metrics ------------------------------------------------------------------------------------------
    def _instrument(self, name: str, instrument_type: str, description: str, unit: str) -> tuple[str, Any]:
        known = self._instruments.get(name)
        if known is not None:
            return known
        if instrument_type == "counter":
            made: tuple[str, Any] = ("counter", self._meter.create_counter(name, unit=unit, description=description))
        elif instrument_type in ("async_counter", "gauge"):
            last = _LastValue()
            create = (self._meter.create_observable_counter if instrument_type == "async_counter"
                      else self._meter.create_observable_gauge)
            create(name, callbacks=[last.observe], unit=unit, description=description)
            made = (instrument_type, last)
        else:
            raise ValueError(f"Unknown instrument type: {instrument_type!r}; expected counter, async_counter "
                             "or gauge")
        self._instruments[name] = made
        return made

    def pushMetric(self, name: str, instrument_type: str, value: float, description: str = "",  # noqa: N802
                   frequency: int = 1, attributes: dict[str, Any] | None = None, unit: str = "") -> None:
        kind, instrument = self._instrument(name, instrument_type, description, unit)
        attrs = {**(attributes or {}), **self.default_attributes}
        if kind == "counter":
            instrument.add(value, attrs)
        else:
            instrument.set(value, attrs)

    pushTracedMetric = pushMetric   # noqa: N815 - the original added a span around the same recording

    def getLocalMetrics(self, metric_label: str = "") -> dict[str, float]:  # noqa: N802
        """{metric: latest value} of what this process recorded (one metric with `metric_label`)."""
        data = self._reader.get_metrics_data()
        out: dict[str, float] = {}
        for rm in (data.resource_metrics if data else []):
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric_label and metric.name != metric_label:
                        continue
                    points = list(metric.data.data_points)
                    if points:
                        out[metric.name] = float(max(points, key=lambda p: p.time_unix_nano).value)
        return out

    getTelemetryLatest = getLocalMetrics   # noqa: N815

    def getMetric(self, name: str) -> float | None:  # noqa: N802
        return self.getLocalMetrics(name).get(name)

    # -- logs ---------------------------------------------------------------------------------------------
    def getHandler(self) -> logging.Handler:  # noqa: N802
        return logging.NullHandler()

    def pushLogInfo(self, message: str, attributes: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.logger.info(message)

    def pushLogDebug(self, message: str, attributes: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.logger.debug(message)

    def pushLogError(self, message: str, attributes: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.logger.error(message)

    # -- not provided -------------------------------------------------------------------------------------
    def _absent(self, what: str) -> Any:
        raise NotImplementedError(f"mlstelemetry stand-in: {what} queried the original testbed's Prometheus/"
                                  "Loki; read telemetry through the policy's `telemetry['query']` instead")

    def getTelemetryRange(self, *_a: Any, **_k: Any) -> Any:  # noqa: N802
        return self._absent("getTelemetryRange")

    def getLogs(self, *_a: Any, **_k: Any) -> Any:  # noqa: N802
        return self._absent("getLogs")

    async def subscribeToLocalLogs(self, *_a: Any, **_k: Any) -> Any:  # noqa: N802
        return self._absent("subscribeToLocalLogs")

    async def subscribeToMetrics(self, *_a: Any, **_k: Any) -> Any:  # noqa: N802
        return self._absent("subscribeToMetrics")
