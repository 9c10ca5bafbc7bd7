"""The original MLSysOps northbound API (`/apps/...`, `/infra/...`, `/manage/...`) over ours, so its `mls`
CLI works against a running slice. Paths, methods and response shapes are the original's
(ORIGINAL-INTERFACES.md, "Northbound API"); the answers are real where the original had stubs:

| original | here |
|---|---|
| POST `/apps/deploy` | submits the app (any of the three description forms); 400 if it exists |
| GET `/apps/list_all/` | `{"System_status": {app: state}}` from the component statuses |
| GET `/apps/status/{id}` | `{"app_id", "status"}`; 404 for an unknown app (the original answered 500) |
| GET `/apps/apps/details/{id}` | `{"app_id", "state", "components": [{name, details: {pods: [...]}}]}`: where each runs |
| GET `/apps/performance/{id}` | `[[metric, {"value": v} or None], ...]` for the app's QoS metrics |
| DELETE `/apps/remove/{id}` | removes the app |
| POST `/infra/register` | `{"yaml": <node description>}` registers the node (simulated slice); `{"uri"}` is refused (422) |
| GET `/infra/list/` | the continuum and its clusters (`type` = Continuum / Cluster / Datacenter / All, `name`) |
| GET `/manage/ping` | the continuum agent and every cluster agent, over XMPP |
| PUT `/manage/mode/{0|1}` | heuristic / ml management mode, slice-wide |

Auth (the `mls` CLI sends no token): a bearer token works as everywhere; without one, a request is admitted
only when the slice sets `api.original_cli: true`, which the slice config allows only with a loopback
`api.host`, and only from a loopback peer. `/ml/...` is not served here (no ML connector in this slice).
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from mlsysops.agents.descriptions import load_obj
from mlsysops.agents.descriptions.errors import DescriptionError
from mlsysops.continuum.api.bodies import PERSIST_RESPONSES, invalid, jsonable
from mlsysops.continuum.api.deps import Backend
from mlsysops.continuum.api.models import PingRequest
from mlsysops.continuum.api.routers import apps as our_apps
from mlsysops.continuum.api.routers import infrastructure as our_infra
from mlsysops.continuum.api.routers import management as our_management

router = APIRouter(tags=["original MLSysOps API"])
MODES = {0: "heuristic", 1: "ml"}
UNKNOWN_APP = {404: {"description": "no app of that id"}}
INVALID = {422: {"description": "invalid input (the detail says which field and what was expected)"}}


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def app_state(statuses: list[str]) -> str:
    """One word for an app from its components' statuses (the original showed a queue state)."""
    if not statuses:
        return "Queued"
    counts = Counter(statuses)
    if counts.get("failed") or counts.get("lost"):
        return "Failed"
    if counts.get("removed") == len(statuses):
        return "Removed"
    if counts.get("running") == len(statuses):
        return "Running"
    return "Deploying"


def _known(backend: Backend, app_id: str) -> None:
    cont = backend.continuum
    if app_id not in cont.apps and not cont.app_status(app_id):
        raise HTTPException(404, f"app {app_id!r} not found; known: {sorted(cont.apps)}")


@router.post("/apps/deploy", responses={400: {"description": "an app of that name exists"},
             415: {"description": "not JSON or YAML"}, **INVALID, **PERSIST_RESPONSES})
async def deploy(request: Request, response: Response, backend: Backend) -> dict[str, Any]:
    try:
        accepted = await our_apps.accept(backend, request, response, None)
    except HTTPException as exc:
        if exc.status_code == 409:
            raise HTTPException(400, exc.detail) from None
        raise
    if accepted.result == "unchanged":
        raise HTTPException(400, f"app {accepted.name!r} already exists")
    response.status_code = 200
    return {"app_id": accepted.name, "status": "Queued successfully", "warnings": accepted.warnings}


@router.get("/apps/list_all/")
async def list_all(backend: Backend) -> dict[str, Any]:
    cont = backend.continuum
    return {"System_status": {name: app_state([s["status"] for s in cont.app_status(name).values()])
                              for name in sorted(cont.apps)}}


@router.get("/apps/status/{app_id}", responses=UNKNOWN_APP)
async def status(app_id: str, backend: Backend) -> dict[str, Any]:
    _known(backend, app_id)
    comps = backend.continuum.app_status(app_id)
    return {"app_id": app_id, "status": app_state([s["status"] for s in comps.values()])}


@router.get("/apps/apps/details/{app_id}", responses=UNKNOWN_APP)
async def details(app_id: str, backend: Backend) -> dict[str, Any]:
    _known(backend, app_id)
    comps = backend.continuum.app_status(app_id)
    components = []
    for comp, st in sorted(comps.items()):
        pods = [{"pod_name": f"{app_id}-{comp}-{node}", "pod_status": st["status"], "node_name": node,
                 "cluster_name": st.get("cluster") or ""} for node in st.get("nodes") or []]
        components.append({"name": comp, "details": {"pods": pods or "not placed",
                                                     "status": st["status"], "reason": st.get("reason")}})
    return {"app_id": app_id, "state": app_state([s["status"] for s in comps.values()]), "components": components}


@router.get("/apps/performance/{app_id}", responses=UNKNOWN_APP)
async def performance(app_id: str, backend: Backend) -> list[list[Any]]:
    """The app's QoS metrics as the continuum last saw them (`[metric, {"value": v}]`, None when unseen:
    the newest sample of any of the app's instances)."""
    _known(backend, app_id)
    cont = backend.continuum
    model = cont.apps.get(app_id)
    metrics = sorted({q.application_metric_id for c in (model.components if model else [])
                      for q in (c.qos_metrics or [])})
    out: list[list[Any]] = []
    for metric in metrics:
        value = cont.slice_telemetry.latest(metric, app=app_id)   # from the clusters' telemetry digests
        out.append([metric, {"value": value} if value is not None else None])
    return out


@router.delete("/apps/remove/{app_id}", responses={**UNKNOWN_APP, **PERSIST_RESPONSES})
async def remove(app_id: str, backend: Backend) -> dict[str, Any]:
    if not await backend.continuum.remove_app(app_id):
        raise HTTPException(404, f"app {app_id!r} not found")
    return {"app_id": app_id, "message": "removal queued: clusters remove its components"}


@router.post("/infra/register", status_code=200, responses={
    409: {"description": "the node cannot join (unknown cluster, name taken, or not a simulated slice)"},
    **INVALID})
async def register(request: Request, backend: Backend) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(422, "expected a JSON body {'yaml': <description>} or {'uri': URL}") from None
    if not isinstance(body, dict) or not ({"yaml", "uri"} & set(body)):
        raise HTTPException(422, "expected a JSON body {'yaml': <description>} or {'uri': URL}")
    if "uri" in body:
        raise HTTPException(422, "uri: this API does not fetch URLs on your behalf (it would reach whatever "
                                 "the server can); send the description itself as {'yaml': ...}")
    try:
        doc = load_obj(body["yaml"], source="<request body>.yaml")
    except DescriptionError as exc:
        raise invalid(exc) from None
    if doc.kind != "MLSysOpsNode":
        raise HTTPException(422, f"{doc.kind}: only nodes join a running slice (clusters and the continuum come "
                                 "from the slice config)")
    if backend.runtime is None:
        raise HTTPException(409, "nodes join this slice by starting their node agent (mlsysops agent node)")
    try:
        await backend.runtime.add_node(doc.spec)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"id": doc.name, "type": "Node", "cluster": doc.spec.cluster_id, "status": "registered"}


@router.get("/infra/list/", responses={404: {"description": "no cluster of that name"}})
async def list_infra(backend: Backend,
                     type: Literal["Continuum", "Cluster", "Datacenter", "All", "continuum", "cluster",
                                   "datacenter", "all"] = Query("All"),
                     name: str | None = None, id_type: str | None = None, id_value: str | None = None,
                     ) -> dict[str, Any]:
    kind = (id_type or type).capitalize()
    wanted = id_value or name
    out: dict[str, Any] = {}
    if kind in ("Continuum", "All"):
        view = await our_infra.continuum(backend)
        if wanted is None or wanted == view.id or kind == "All":
            out["Continuum"] = jsonable(view.model_dump())
    if kind in ("Cluster", "All"):
        clusters = [c.model_dump() for c in await our_infra.list_clusters(backend)]
        out["Cluster"] = [c for c in clusters if wanted is None or kind == "All" or c["id"] == wanted]
        if kind == "Cluster" and wanted is not None and not out["Cluster"]:
            raise HTTPException(404, f"cluster {wanted!r} not found")
    if kind in ("Datacenter", "All"):
        out["Datacenter"] = []   # datacenters are descriptions only: no agent reports on them
    return jsonable(out)


@router.get("/manage/ping")
async def manage_ping(backend: Backend) -> dict[str, Any]:
    cont = backend.continuum
    answers = {}
    for target in [None, *sorted(cont.cluster_jids)]:
        started = time.perf_counter()
        try:
            res = await our_management.ping(backend, PingRequest(agent=target) if target else None)
            answers[res.agent] = f"{res.latency_ms:.1f} ms ({res.transport})"
        except HTTPException as exc:
            answers[target] = f"no answer: {exc.detail} ({(time.perf_counter() - started) * 1000:.0f} ms)"
    alive = sum(1 for v in answers.values() if not v.startswith("no answer"))
    return {"message": f"{alive}/{len(answers)} agents answered: " +
                       ", ".join(f"{a} {v}" for a, v in answers.items()), "agents": answers}


@router.put("/manage/mode/{mode}", responses=INVALID)
async def manage_mode(mode: int, backend: Backend) -> dict[str, Any]:
    if mode not in MODES:
        raise HTTPException(422, f"mode: expected 0 (heuristic) or 1 (ml), got {mode}")
    result = await backend.continuum.set_mode_tree(MODES[mode])
    return {"mode": mode, "name": MODES[mode], "result": jsonable(result)}

