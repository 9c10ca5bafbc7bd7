"""Telemetry, Prometheus and dashboard routes of the northbound API (registered by `create_app`).

- `GET /api/v1/telemetry`: the continuum's slice-wide history (from cluster digests): latest value, stats over
  the history, the last digest's window stats, and optionally the points.
- `GET /api/v1/telemetry/config`: what each agent of the process collects, how often, and who asked.
- `GET /api/v1/telemetry/digests`: bytes per digest, per cluster (received) and per node (as reported).
- `GET /api/v1/dashboard/state` and `GET /api/v1/stream` (Server-Sent Events, one `snapshot` per interval):
  topology, app status, QoS against targets, new decisions, and alerts.
- `GET /metrics`: the continuum's Prometheus exposition (every live series of the slice, via its OTel
  MeterProvider); open unless `telemetry.metrics_auth` is set, like node-exporter.
- `GET /dashboard`: the page (static, vendored uPlot; it reads with the API token).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NODE_SERIES = ("system.cpu.utilization", "system.memory.utilization")
MAX_STREAM_DECISIONS = 50


def register(app: FastAPI, v1: APIRouter, backend: Any, *, read_auth: Any, metrics_auth: bool) -> None:
    from mlsysops.continuum.api import _cluster_detail, _hosted, _jsonable

    def cont() -> Any:
        return backend.continuum

    @v1.get("/telemetry", tags=["telemetry"])
    async def telemetry(node: str | None = None, app_: str | None = Query(None, alias="app"),
                        component: str | None = None, cluster: str | None = None, metric: str | None = None,
                        window: float = Query(0.0, ge=0.0, le=86400.0),
                        limit: int = Query(500, ge=1, le=5000)) -> list[dict[str, Any]]:
        """Slice-wide telemetry held by the continuum (from cluster digests): per series (metric + labels)
        the latest value, min/max/mean over the kept history, the last digest's window stats (`digest`),
        and with `window` > 0 the points of the last `window` seconds."""
        want = {k: v for k, v in (("node", node), ("app", app_), ("component", component),
                                  ("cluster", cluster)) if v is not None}
        c = cont()
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
                row: dict[str, Any] = {"metric": name, "labels": labels, "cluster": labels.get("cluster"),
                                       "latest": values[-1], "ts": samples[-1][0], "min": min(values),
                                       "max": max(values), "mean": sum(values) / len(values),
                                       "count": len(values), "digest": c.digest_stats.get((name, key))}
                if window > 0:
                    since = samples[-1][0] - window
                    row["points"] = [[ts, v] for ts, v in samples if ts >= since]
                out.append(row)
                if len(out) >= limit:
                    return _jsonable(out)
        return _jsonable(out)

    @v1.get("/telemetry/config", tags=["telemetry"])
    async def telemetry_config() -> dict[str, Any]:
        """Per agent of this process: the metrics its Monitor collects, the interval, and who asked for each
        metric beyond the layer's defaults (`policy:<name>`, `app:<name>`, `parent`)."""
        return {aid: a.collection.describe() for aid, a in backend.agents().items()}

    @v1.get("/telemetry/digests", tags=["telemetry"])
    async def telemetry_digests() -> dict[str, Any]:
        """Size of the telemetry digests: the last one received from each cluster, and what each node and
        cluster agent reported about its own (metric `mlsysops.telemetry.digest.bytes`)."""
        c = cont()
        senders = {}
        for key, samples in c.slice_telemetry.series("mlsysops.telemetry.digest.bytes").items():
            labels = dict(key)
            senders[labels.get("agent", "?")] = {"bytes": samples[-1][1], "ts": samples[-1][0],
                                                  "cluster": labels.get("cluster")}
        return _jsonable({"interval": c.settings.digest_interval, "received": c.digests_received,
                          "senders": senders})

    def state(since: float | None) -> dict[str, Any]:
        c = cont()
        hosted = _hosted(c)
        k = c.slice_telemetry
        clusters = []
        alerts: list[dict[str, str]] = []
        for cid in sorted(c.cluster_jids):
            d = _cluster_detail(c, cid, hosted)
            if not d.alive:
                alerts.append({"level": "error", "text": f"cluster agent {cid} is "
                               + ("lost: " + (d.lost_reason or "no heartbeat") if d.registered else "not registered")})
            nodes = []
            for n in d.node_status:
                metrics = {m: k.latest(m, node=n.name, cluster=cid) for m in NODE_SERIES}
                nodes.append({"name": n.name, "alive": n.alive, "cpu": metrics[NODE_SERIES[0]],
                              "mem": metrics[NODE_SERIES[1]],
                              "components": [h.model_dump() for h in n.components]})
                if n.alive is False:
                    alerts.append({"level": "error", "text": f"node {n.name} ({cid}) is down"})
            clusters.append({"id": cid, "alive": d.alive, "registered": d.registered, "nodes": nodes})
        apps = []
        for name in sorted(c.apps):
            model = c.apps[name]
            comps = []
            for comp, st in c.app_status(name).items():
                entry = {"component": comp, "status": st.get("status"), "cluster": st.get("cluster"),
                         "nodes": st.get("nodes") or [], "reason": st.get("reason"), "qos": []}
                for key, metric in (("cpu", "cpu_usage_cores"), ("memory", "memory_usage_bytes")):
                    # the component's use across its instances (latest of each series on its nodes)
                    vals = [s[-1][1] for lbl, s in _series(k, metric, app=name, component=comp).items()
                            if dict(lbl).get("node") in entry["nodes"]]
                    entry[key] = sum(vals) if vals else None
                spec = model.component(comp)
                for q in (spec.qos_metrics or []) if spec is not None else []:
                    if not q.application_metric_id:
                        continue
                    vals = [s[-1][1] for s in _series(k, q.application_metric_id, app=name,
                                                      component=comp).values()]
                    entry["qos"].append({"metric": q.application_metric_id,
                                         "value": max(vals) if vals else None,
                                         "target": None if q.target is None else float(q.target),
                                         "relation": str(q.relation) if q.relation else None})
                if st.get("status") == "failed":
                    alerts.append({"level": "error", "text": f"{name}/{comp} failed: {st.get('reason') or ''}"})
                comps.append(entry)
            apps.append({"name": name, "components": comps})
        decisions = _stream_decisions(backend.agents().values(), since)
        return _jsonable({"t": time.time(), "continuum": {"id": c.agent_id, "connected": c.connected},
                          "clusters": clusters, "apps": apps, "decisions": decisions, "alerts": alerts,
                          "digest_interval": c.settings.digest_interval})

    @v1.get("/dashboard/state", tags=["dashboard"])
    async def dashboard_state(since: float | None = None) -> dict[str, Any]:
        """What the dashboard shows: topology with liveness and status, apps with QoS against targets,
        decisions (newer than `since`), alerts."""
        return state(since)

    @v1.get("/stream", tags=["dashboard"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(request: Request, interval: float = Query(1.0, ge=0.2, le=60.0)) -> StreamingResponse:
        """Server-Sent Events: a `snapshot` event (the dashboard state, decisions since the previous event)
        every `interval` seconds; a comment line keeps idle proxies from closing the stream."""
        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            since = time.time() - 3600
            while not await request.is_disconnected():
                snap = state(since)
                since = snap["t"]   # the next event carries what happens from now on
                yield f"event: snapshot\ndata: {json.dumps(snap, separators=(',', ':'))}\n\n".encode()
                await asyncio.sleep(interval)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    deps = [Depends(read_auth)] if metrics_auth else []

    @app.get("/metrics", tags=["telemetry"], dependencies=deps, response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus exposition of the continuum's MeterProvider: every live series of the slice (labels
        host_name, mlsysops_cluster, mlsysops_app, ...) and the agent's own counters."""
        tel = cont().telemetry
        if tel.registry is None:   # an agent built without the Prometheus reader (embedding code, tests)
            raise HTTPException(404, "Prometheus export is not enabled for this continuum agent")
        return Response(tel.prometheus_text(), media_type=PROM_CONTENT_TYPE)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    app.mount("/dashboard/static", StaticFiles(directory=DASHBOARD_DIR / "static"), name="dashboard-static")


def _stream_decisions(agents: Any, since: float | None) -> list[dict[str, Any]]:
    """Decisions newer than `since` for the live view: everything but the routine "nothing to do" records
    (the decision log API keeps those), newest `MAX_STREAM_DECISIONS` of them."""
    out: list[dict[str, Any]] = []
    for a in agents:
        out.extend(r for r in a.decisions(since=since, limit=2000) if r["outcome"] != "no_plan")
    out.sort(key=lambda r: r["ts"])
    return out[-MAX_STREAM_DECISIONS:]


def _series(k: Any, metric: str, **labels: str) -> dict[Any, list[tuple[float, float]]]:
    want = set(labels.items())
    return {key: s for key, s in k.series(metric).items() if want <= set(key)}
