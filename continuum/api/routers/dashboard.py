"""Dashboard routes: `GET /api/v1/dashboard/state`, `GET /api/v1/stream` (Server-Sent Events, one
`snapshot` per interval) and the page itself (`page_router`: `/dashboard`, static, vendored uPlot; it reads
with the API token). A snapshot holds the topology, app status, QoS against targets, new decisions (read
over the protocol with a short timeout, like `/decisions`) and alerts."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from mlsysops.agents.tree_reads import DecisionsQuery
from mlsysops.continuum.api import views
from mlsysops.continuum.api.bodies import jsonable
from mlsysops.continuum.api.deps import Backend
from mlsysops.continuum.api.loop_bridge import on_agents

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboard"
NODE_SERIES = ("system.cpu.utilization", "system.memory.utilization", "hw.power", "hw.energy")
MAX_STREAM_DECISIONS = 50

router = APIRouter(tags=["dashboard"])
page_router = APIRouter(include_in_schema=False)


def _series(k: Any, metric: str, **labels: str) -> dict[Any, list[tuple[float, float]]]:
    want = set(labels.items())
    return {key: s for key, s in k.series(metric).items() if want <= set(key)}


def _latest_point(k: Any, metric: str, **labels: str) -> tuple[float | None, float | None]:
    """(time, value) of the newest sample among the matching series: the page plots samples at the time
    they were taken, so a node that stops reporting leaves a gap instead of repeating its last value."""
    best = max((s[-1] for s in _series(k, metric, **labels).values() if s), default=None, key=lambda p: p[0])
    return (None, None) if best is None else (best[0], best[1])


def node_status_word(alive: bool | None) -> str:
    """kubectl's words: a crashed (or lost) node is NotReady until it reports again."""
    return "Ready" if alive is True else "NotReady" if alive is False else "Unknown"


def _topology(c: Any, alerts: list[dict[str, str]]) -> list[dict[str, Any]]:
    where = views.hosted(c)
    k = c.slice_telemetry
    clusters = []
    for cid in sorted(c.cluster_jids):
        d = views.cluster_detail(c, cid, where)
        if not d.alive:
            alerts.append({"level": "error", "text": f"cluster agent {cid} is "
                           + ("lost: " + (d.lost_reason or "no heartbeat") if d.registered else "not registered")})
        nodes = []
        cluster_lag, node_lags = c.loop_lags(cid)
        for n in d.node_status:
            points = {m: _latest_point(k, m, node=n.name, cluster=cid) for m in NODE_SERIES}
            metrics = {m: p[1] for m, p in points.items()}
            nodes.append({"name": n.name, "alive": n.alive, "status": node_status_word(n.alive),
                          "cpu": metrics[NODE_SERIES[0]], "mem": metrics[NODE_SERIES[1]],
                          "power": metrics["hw.power"], "energy": metrics["hw.energy"],
                          # when each value was sampled (the charts plot it there)
                          "at": {"cpu": points[NODE_SERIES[0]][0], "mem": points[NODE_SERIES[1]][0],
                                 "power": points["hw.power"][0]},
                          "trust": n.trust, "loop_lag_ms": node_lags.get(n.name), "trust_reason": n.trust_reason,
                          "components": [h.model_dump() for h in n.components]})
            if n.trust is not None and n.trust < 0.5:
                alerts.append({"level": "warning", "text": f"node {n.name} ({cid}) trust {n.trust:.2f}: "
                               f"{n.trust_reason or ''}"})
            if n.alive is False:
                alerts.append({"level": "error", "text": f"node {n.name} ({cid}) is down (NotReady)"})
        clusters.append({"id": cid, "alive": d.alive, "registered": d.registered, "loop_lag_ms": cluster_lag,
                         "nodes": nodes})
    return clusters


def _apps(c: Any, alerts: list[dict[str, str]], down: set[str]) -> list[dict[str, Any]]:
    """Apps with their components' use and QoS; `down` nodes count for nothing (their last samples are
    stale, not live)."""
    k = c.slice_telemetry
    apps = []
    for name in sorted(c.apps):
        model = c.apps[name]
        comps = []
        for comp, st in c.app_status(name).items():
            entry = {"component": comp, "status": st.get("status"), "cluster": st.get("cluster"),
                     "nodes": st.get("nodes") or [], "reason": st.get("reason"), "qos": [], "at": {}}
            for key, metric in (("cpu", "cpu_usage_cores"), ("memory", "memory_usage_bytes")):
                # the component's use across its instances (latest of each series on its live nodes)
                last = [s[-1] for lbl, s in _series(k, metric, app=name, component=comp).items()
                        if dict(lbl).get("node") in entry["nodes"] and dict(lbl).get("node") not in down]
                entry[key] = sum(v for _, v in last) if last else None
                entry["at"][key] = max(t for t, _ in last) if last else None
            spec = model.component(comp)
            for q in (spec.qos_metrics or []) if spec is not None else []:
                if not q.application_metric_id:
                    continue
                last = [s[-1] for lbl, s in _series(k, q.application_metric_id, app=name, component=comp).items()
                        if dict(lbl).get("node") not in down]
                entry["qos"].append({"metric": q.application_metric_id,
                                     "value": max(v for _, v in last) if last else None,
                                     "ts": max(t for t, _ in last) if last else None,
                                     "target": None if q.target is None else float(q.target),
                                     "relation": str(q.relation) if q.relation else None})
            if st.get("status") == "failed":
                alerts.append({"level": "error", "text": f"{name}/{comp} failed: {st.get('reason') or ''}"})
            comps.append(entry)
        apps.append({"name": name, "components": comps})
    return apps


def _buckets(c: Any, alerts: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The storage service's buckets as the continuum's Monitor last read them from the stores (empty
    without a storage service)."""
    state = (c.knowledge.mechanisms.get("storage") or {}).get("state") or {}
    for name, site in sorted(state.get("sites", {}).items()):
        if not site.get("reachable", True):
            alerts.append({"level": "error", "text": f"storage site {name} unreachable: {site.get('error')}"})
    out = []
    for name, b in sorted(state.get("buckets", {}).items()):
        users = state.get("access", {}).get(f"{b.get('app')}/{b.get('bucket')}", [])
        out.append({"name": f"{b.get('app')}/{b.get('bucket')}" if b.get("declared") else name,
                    "replicas": b.get("replicas", {}), "wanted": b.get("replicas_wanted"), "copy": b.get("copy"),
                    "users": [{"component": u["component"], "node": u["from_node"],
                               "p95_ms": u.get("latency_p95_ms")} for u in users]})
    return out


async def snapshot(backend: Backend, since: float | None) -> tuple[dict[str, Any], float]:
    """One dashboard snapshot, and the time from which the next one must take decisions (when the read
    of the decisions started: it may be a shared read up to `read_max_age` old).

    Decisions: newer than `since`, without the routine "nothing to do" records (the decision log API keeps
    those), the newest `MAX_STREAM_DECISIONS`. They are the newest `MAX_STREAM_DECISIONS` of the slice
    filtered by `since` here, which is the same set as asking the agents with `since` (every record newer
    than `since` that is among the newest is among the newest of all) but one question for every viewer."""
    c = backend.continuum
    t = time.time()
    alerts: list[dict[str, str]] = []
    clusters = _topology(c, alerts)
    down = {n["name"] for cl in clusters for n in cl["nodes"] if n["alive"] is False}
    apps = _apps(c, alerts, down)
    buckets = _buckets(c, alerts)
    routes = [{"app": app, **row} for app in sorted(c.apps) for row in c.traffic.view(app)]
    page = await backend.decisions(DecisionsQuery(exclude_outcomes=["no_plan"], limit=MAX_STREAM_DECISIONS))
    records = page.records if since is None else [r for r in page.records if r["ts"] >= since]
    _add_why(c, apps, page.records)
    alerts += [{"level": "warning", "text": f"decisions of {agent} unavailable: {why}"}
               for agent, why in sorted(page.unanswered.items())]
    body = jsonable({"t": t, "continuum": {"id": c.agent_id, "connected": c.connected,
                                          "loop_lag_ms": round(c.loop_lag.recent_max_s * 1000, 1)},
                     "clusters": clusters, "apps": apps, "buckets": buckets, "routes": routes, "decisions": records,
                     "alerts": alerts,
                     "digest_interval": c.settings.digest_interval})
    return body, t if page.as_of is None else min(t, page.as_of)


def _add_why(c: Any, apps: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    """The "why" of every component not running as desired (`mlsysops explain`), for the apps table."""
    from mlsysops.continuum.explain import explain_app

    nodes = {n: m for per in c.cluster_nodes.values() for n, m in per.items()}
    alive = {n.name: n.alive for n in views.all_nodes(c).values()}
    for app in apps:
        recs = [r for r in records if r.get("app") == app["name"]]
        ex = explain_app(app["name"], c.apps.get(app["name"]), c.app_status(app["name"]), recs, nodes, alive)
        by = {e["component"]: e for e in ex["components"]}
        # the page's "why" panel: the app's summary and every component's reason, evidence, next step
        app["why"] = {"converged": ex["converged"], "summary": ex["summary"],
                      "components": [{"component": e["component"], "converged": e["converged"],
                                      "reason": e["reason"], "next_step": e["next_step"],
                                      "evidence": e["evidence"][:5]} for e in ex["components"]]}
        for comp in app["components"]:
            e = by.get(comp["component"])
            if e is not None and not e["converged"]:
                comp["why"] = {"reason": e["reason"], "next_step": e["next_step"], "evidence": e["evidence"][:5]}


async def state(backend: Backend, since: float | None) -> dict[str, Any]:
    """One dashboard snapshot (see `snapshot`)."""
    return (await snapshot(backend, since))[0]


@router.get("/dashboard/state")
async def dashboard_state(backend: Backend, since: float | None = None) -> dict[str, Any]:
    """What the dashboard shows: topology with liveness and status, apps with QoS against targets,
    decisions (newer than `since`), alerts."""
    return await state(backend, since)


@router.get("/stream", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def stream(request: Request, backend: Backend,
                 interval: float = Query(1.0, ge=0.2, le=60.0)) -> StreamingResponse:
    """Server-Sent Events: a `snapshot` event (the dashboard state, decisions since the previous event)
    every `interval` seconds; a comment line keeps idle proxies from closing the stream."""
    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        since = time.time() - 3600
        while not await request.is_disconnected():
            # the generator runs on the API's loop; the snapshot reads agent state, on theirs
            snap, since = await on_agents(request.app, functools.partial(snapshot, backend, since))
            yield f"event: snapshot\ndata: {json.dumps(snap, separators=(',', ':'))}\n\n".encode()
            await asyncio.sleep(interval)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@page_router.get("/dashboard")
async def dashboard() -> FileResponse:
    return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@page_router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


def mount_static(app: FastAPI) -> None:
    app.mount("/dashboard/static", StaticFiles(directory=DASHBOARD_DIR / "static"), name="dashboard-static")
