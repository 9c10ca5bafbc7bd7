"""Telemetry routes.

- `GET /api/v1/telemetry`: the continuum's slice-wide history (from cluster digests): latest value, stats
  over the history, the last digest's window stats, and optionally the points.
- `GET /api/v1/telemetry/config`: what each agent of the slice collects, how often, and who asked (read
  over the protocol; an agent that did not answer maps to `{"error": why}`).
- `GET /api/v1/telemetry/digests`: bytes per digest, per cluster (received) and per node (as reported).
- `GET /metrics` (`metrics_router`): the continuum's Prometheus exposition (every live series of the slice,
  via its OTel MeterProvider); open unless `telemetry.metrics_auth` is set, like node-exporter.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from mlsysops.continuum.api.bodies import jsonable
from mlsysops.continuum.api.deps import Backend
from mlsysops.continuum.api.loop_bridge import on_agents, on_api_thread

PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter(tags=["telemetry"])
metrics_router = APIRouter(tags=["telemetry"])


@router.get("/telemetry", response_model=list[dict[str, Any]])
@on_api_thread
async def telemetry(request: Request, backend: Backend, node: str | None = None,
                    app_: str | None = Query(None, alias="app"),
                    component: str | None = None, cluster: str | None = None, metric: str | None = None,
                    window: float = Query(0.0, ge=0.0, le=86400.0),
                    limit: int = Query(500, ge=1, le=5000)) -> Response:
    """Slice-wide telemetry held by the continuum (from cluster digests): per series (metric + labels)
    the latest value, min/max/mean over the kept history, the last digest's window stats (`digest`),
    and with `window` > 0 the points of the last `window` seconds."""
    want = {k: v for k, v in (("node", node), ("app", app_), ("component", component),
                              ("cluster", cluster)) if v is not None}
    c = backend.continuum
    # served from the API thread's bytes while no digest changed the history (and at most read_max_age old,
    # as samples also age out); a rebuild reads the history on the agents' loop and encodes here
    key = ("telemetry", tuple(sorted(want.items())), metric, window, limit, c.slice_telemetry.version)

    async def rows() -> list[dict[str, Any]]:
        return telemetry_rows(c, want, metric, window, limit)

    async def build() -> bytes:
        return json.dumps(jsonable(await on_agents(request.app, rows)), separators=(",", ":")).encode()

    return Response(content=await backend.served.get(key, build), media_type="application/json")


def telemetry_rows(c: Any, want: dict[str, str], metric: str | None, window: float,
                   limit: int) -> list[dict[str, Any]]:
    """The rows of `GET /telemetry`, new objects only (the API thread encodes them while the agents go on)."""
    k = c.slice_telemetry
    out: list[dict[str, Any]] = []
    for name in k.metrics():
        if metric is not None and name != metric:
            continue
        for key, samples in k.series(name).items():
            labels = dict(key)
            if any(str(labels.get(lk)) != lv for lk, lv in want.items()):
                continue
            values = [v for _, v in samples]
            digest = c.digest_stats.get((name, key))
            row: dict[str, Any] = {"metric": name, "labels": labels, "cluster": labels.get("cluster"),
                                   "latest": values[-1], "ts": samples[-1][0], "min": min(values),
                                   "max": max(values), "mean": sum(values) / len(values),
                                   "count": len(values), "digest": None if digest is None else dict(digest)}
            if window > 0:
                since = samples[-1][0] - window
                row["points"] = [[ts, v] for ts, v in samples if ts >= since]
            out.append(row)
            if len(out) >= limit:
                return out
    return out


@router.get("/telemetry/config")
async def telemetry_config(backend: Backend) -> dict[str, Any]:
    """Per agent of the slice: the metrics its Monitor collects, the interval, and who asked for each
    metric beyond the layer's defaults (`policy:<name>`, `app:<name>`, `parent`); read over the protocol,
    an agent that did not answer maps to `{"error": why}`."""
    plans = await backend.collection_plans()
    return jsonable({**{aid: {"error": why} for aid, why in plans["unanswered"].items()}, **plans["agents"]})


@router.get("/telemetry/digests")
async def telemetry_digests(backend: Backend) -> dict[str, Any]:
    """Size of the telemetry digests: the last one received from each cluster, and what each node and
    cluster agent reported about its own (metric `mlsysops.telemetry.digest.bytes`)."""
    c = backend.continuum
    senders = {}
    for key, samples in c.slice_telemetry.series("mlsysops.telemetry.digest.bytes").items():
        labels = dict(key)
        senders[labels.get("agent", "?")] = {"bytes": samples[-1][1], "ts": samples[-1][0],
                                              "cluster": labels.get("cluster")}
    return jsonable({"interval": c.settings.digest_interval, "received": c.digests_received,
                     "senders": senders})


@metrics_router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(backend: Backend) -> Response:
    """Prometheus exposition of the continuum's MeterProvider: every live series of the slice (labels
    host_name, mlsysops_cluster, mlsysops_app, ...) and the agent's own counters."""
    tel = backend.continuum.telemetry
    if tel.registry is None:   # an agent built without the Prometheus reader (embedding code, tests)
        raise HTTPException(404, "Prometheus export is not enabled for this continuum agent")
    return Response(tel.prometheus_text(), media_type=PROM_CONTENT_TYPE)
