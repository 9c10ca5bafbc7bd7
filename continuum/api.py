"""The northbound REST API, served by the continuum agent's process (FastAPI on uvicorn, same event loop).

`create_app(backend, tokens)` builds the app; `ApiServer` runs it as a task of the running loop (no
threads, no signal handling of its own). The same app serves

* `mlsysops up`: `ApiBackend(runtime=rt)`: every agent of the slice lives in the process, plus the
  simulator (`/api/v1/sim/...`);
* `mlsysops agent continuum`: `ApiBackend(agent)`: only the continuum agent; infrastructure views are
  built from what clusters registered and report in heartbeats, so both modes show the same thing.

Errors are `{"detail": ...}`. Invalid descriptions give 422 with the validator's issues (field `path`,
`message`, `expected`, `suggestion`); unknown ids 404; a different app under an existing name 409.
OpenAPI at `/docs` and `/openapi.json`; `/healthz`, `/readyz` and those two need no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mlsysops.agents.agent_base import RequestFailed, RequestTimeout
from mlsysops.agents.descriptions import (
    DescriptionError,
    Document,
    MLSysOpsApp,
    MLSysOpsNode,
    ValidationIssue,
    load_obj,
    load_text,
    to_k8s,
)
from mlsysops.agents.protocol import Kind, Ping
from mlsysops.continuum import api_telemetry
from mlsysops.continuum.api_auth import Role, TokenAuth

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
PING_TIMEOUT = 5.0
MAX_DECISIONS = 1000


# -- backend ----------------------------------------------------------------------------------------------
class ApiBackend:
    """What the API reads and drives: the continuum agent, and with a `SliceRuntime` every agent and the
    simulator of the process."""

    def __init__(self, continuum: Any = None, *, runtime: Any = None) -> None:
        if continuum is None and runtime is None:
            raise ValueError("ApiBackend needs the continuum agent or a SliceRuntime")
        self._continuum = continuum
        self.runtime = runtime

    @property
    def continuum(self) -> Any:
        return self._continuum if self.runtime is None else self.runtime.continuum

    def agents(self) -> dict[str, Any]:
        """Every managed agent of this process by agent id (continuum first)."""
        out = {self.continuum.agent_id: self.continuum}
        if self.runtime is not None:
            out.update({a.agent_id: a for a in self.runtime.clusters.values()})
            out.update({a.agent_id: a for a in self.runtime.nodes.values()})
        return out

    @property
    def sim(self) -> Any:
        return None if self.runtime is None else self.runtime.sim

    def sim_nodes(self) -> set[str]:
        return set(self.runtime.spec.nodes) if self.runtime is not None else set()


# -- response models --------------------------------------------------------------------------------------
class Health(BaseModel):
    ok: bool
    time: float


class Readiness(BaseModel):
    ready: bool
    clusters_alive: int
    clusters_known: int


class ComponentStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str
    cluster: str | None = None
    nodes: list[str] = Field(default_factory=list)
    since: float | None = None
    reason: str | None = None


class AppSummary(BaseModel):
    name: str
    submitted: float | None
    components: int
    status: dict[str, int] = Field(description="number of components per status")


class AppDetail(BaseModel):
    name: str
    submitted: float | None
    description: dict[str, Any] = Field(description="the description in Kubernetes form")
    components: dict[str, ComponentStatus]


class AppAccepted(BaseModel):
    name: str
    result: Literal["created", "replaced", "unchanged"]
    components: int
    warnings: list[dict[str, Any]] = Field(default_factory=list)


class AppRemoved(BaseModel):
    name: str
    result: Literal["removed"] = "removed"


class HostedComponent(BaseModel):
    app: str
    component: str
    status: str


class NodeSummary(BaseModel):
    name: str
    cluster: str
    alive: bool | None = Field(description="as last reported by its cluster; null while the cluster agent is lost")
    cpu_utilization: float | None
    last_heartbeat: float | None = Field(description="time of the cluster's last heartbeat carrying this node")
    components: list[HostedComponent]


class NodeDetail(NodeSummary):
    description: dict[str, Any]


class ClusterSummary(BaseModel):
    id: str
    jid: str
    registered: bool
    alive: bool
    joined_at: float | None = None
    last_heartbeat: float | None = None
    lost_reason: str | None = None
    nodes: int
    nodes_alive: int


class ClusterDetail(ClusterSummary):
    description: dict[str, Any] | None
    node_status: list[NodeSummary]


class ContinuumView(BaseModel):
    id: str
    jid: str
    connected: bool
    started_at: float
    description: dict[str, Any]
    clusters: int
    clusters_alive: int
    apps: int


class NodeAdded(BaseModel):
    name: str
    cluster: str
    result: Literal["added"] = "added"


class NodeRemoved(BaseModel):
    name: str
    relocated: int
    result: Literal["removed"] = "removed"


class ModeRequest(BaseModel):
    mode: Literal["heuristic", "ml"]
    agent: str | None = Field(None, description="one agent of this process; omitted: the whole slice")


class PingRequest(BaseModel):
    agent: str | None = Field(None, description="cluster id; omitted: the API -> continuum agent round trip")


class PingResult(BaseModel):
    agent: str
    transport: Literal["xmpp", "in-process"]
    latency_ms: float


class FaultRequest(BaseModel):
    kind: Literal["crash", "recover", "slow", "spike", "degrade_link", "clear"]
    node: str | None = None
    factor: float | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)
    cpu_cores: float | None = Field(None, ge=0)
    a: str | None = Field(None, description="degrade_link: one end")
    b: str | None = Field(None, description="degrade_link: the other end")
    extra_ms: float | None = Field(None, ge=0)


class FaultResult(BaseModel):
    injected: str


# -- helpers ----------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """A JSON-safe copy (decision inputs, sim snapshots and echoed bad values may hold anything, even
    inf/nan, which strict JSON responses reject)."""
    return json.loads(json.dumps(value, default=str), parse_constant=str)


def _invalid(exc: DescriptionError) -> HTTPException:
    return HTTPException(422, {"message": str(exc), **_jsonable(exc.to_dict())})


def _issue(message: str, path: str = "", **kw: Any) -> HTTPException:
    return _invalid(DescriptionError([ValidationIssue(message, path=path, file="<request body>", **kw)]))


def _not_found(what: str, name: str, known: Any = None) -> HTTPException:
    detail = f"unknown {what} {name!r}"
    if known is not None:
        detail += f"; known: {sorted(known)}"
    return HTTPException(404, detail)


async def _read_app(request: Request, inventory: Any) -> Document:
    """One MLSysOpsApp from the body: JSON (either form) or YAML text (Content-Type application/yaml)."""
    return await _read_one(request, inventory, MLSysOpsApp)


async def _read_one(request: Request, inventory: Any, kind: type) -> Document:
    """One description of `kind` from the body: JSON (either form) or YAML (Content-Type application/yaml)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError:
        raise _issue("the body is not UTF-8 text") from None
    source = "<request body>"
    try:
        if ctype in YAML_TYPES:
            docs = load_text(text, source=source, inventory=inventory)
        elif ctype == "application/json" or ctype.endswith("+json"):
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise _issue(f"invalid JSON: {exc}") from None
            docs = [load_obj(obj, source=source, inventory=inventory)]
        else:
            raise HTTPException(415, f"unsupported Content-Type {ctype!r}: send application/json or "
                                     "application/yaml")
    except DescriptionError as exc:
        raise _invalid(exc) from None
    if len(docs) != 1:
        raise _issue(f"expected one application per request, got {len(docs)} documents")
    if not isinstance(docs[0].spec, kind):
        raise _issue(f"expected an {kind.kind}, got {docs[0].kind}", path="kind", expected=kind.kind)
    return docs[0]


def _components(cont: Any, app: str) -> dict[str, dict[str, Any]]:
    return cont.app_status(app)


def _child(cont: Any, cid: str) -> Any:
    return cont.children.child(cont.cluster_jids[cid])


def _hosted(cont: Any) -> dict[tuple[str, str], list[HostedComponent]]:
    """(cluster, node) -> the components the continuum believes run there."""
    out: dict[tuple[str, str], list[HostedComponent]] = {}
    for app in sorted(cont.apps):
        for comp, st in _components(cont, app).items():
            for node in st.get("nodes") or []:
                out.setdefault((st.get("cluster") or "", node), []).append(
                    HostedComponent(app=app, component=comp, status=st["status"]))
    return out


def _nodes_of(cont: Any, cid: str, hosted: dict[tuple[str, str], list[HostedComponent]]) -> Iterator[NodeDetail]:
    rec = _child(cont, cid)
    digest = (rec.digest or {}) if rec is not None else {}
    for name, model in sorted(cont.cluster_nodes.get(cid, {}).items()):
        alive = digest.get("nodes", {}).get(name) if rec is not None and rec.alive else None
        yield NodeDetail(name=name, cluster=cid, alive=alive, cpu_utilization=digest.get("cpu", {}).get(name),
                         last_heartbeat=rec.last_heartbeat if rec is not None else None,
                         components=hosted.get((cid, name), []), description=to_k8s(model))


def _cluster_detail(cont: Any, cid: str, hosted: dict[tuple[str, str], list[HostedComponent]]) -> ClusterDetail:
    rec = _child(cont, cid)
    nodes = list(_nodes_of(cont, cid, hosted))
    desc = (rec.description or {}).get("cluster") if rec is not None else None
    return ClusterDetail(id=cid, jid=cont.cluster_jids[cid], registered=rec is not None,
                         alive=bool(rec and rec.alive), joined_at=rec.joined_at if rec else None,
                         last_heartbeat=rec.last_heartbeat if rec else None,
                         lost_reason=rec.lost_reason if rec else None, nodes=len(nodes),
                         nodes_alive=sum(1 for n in nodes if n.alive), description=desc,
                         node_status=[NodeSummary(**n.model_dump(exclude={"description"})) for n in nodes])


# -- the app ----------------------------------------------------------------------------------------------
def create_app(backend: ApiBackend, tokens: dict[str, Role], *, metrics_auth: bool = False) -> FastAPI:
    """The FastAPI app over `backend`; `tokens` maps bearer tokens to roles (see mlsysops.continuum.api_auth);
    `metrics_auth` requires a token on /metrics too."""
    app = FastAPI(title="mlsysops", version="1", summary="Northbound API of an MLSysOps continuum agent",
                  description=__doc__)
    auth = TokenAuth(tokens)
    read_auth = auth.dependency()
    v1 = APIRouter(prefix=API_PREFIX, dependencies=[Depends(read_auth)])

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the process serves requests."""
        return Health(ok=True, time=time.time())

    @app.get("/readyz", response_model=Readiness, tags=["health"],
             responses={503: {"description": "no cluster agent registered and alive"}})
    async def readyz(response: Response) -> Readiness:
        """Readiness: at least one cluster agent is registered and alive."""
        cont = backend.continuum
        alive = sum(1 for c in cont.children.children() if c.alive and c.jid in cont.jid_clusters)
        if not alive:
            response.status_code = 503
        return Readiness(ready=alive > 0, clusters_alive=alive, clusters_known=len(cont.cluster_jids))

    # -- applications -------------------------------------------------------------------------------------
    app_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "description": "MLSysOpsApp, wrapped "
                                        "(`{MLSysOpsApp: {...}}`) or Kubernetes form"}},
        "application/yaml": {"schema": {"type": "string"}}}}}

    async def accept(request: Request, response: Response, name: str | None) -> AppAccepted:
        cont = backend.continuum
        doc = await _read_app(request, cont.inventory)
        if name is not None and doc.name != name:
            raise _issue(f"the description names app {doc.name!r}, the URL {name!r}", path="name",
                         value=doc.name, expected=repr(name))
        existing = cont.app_docs.get(doc.name)
        warnings = _jsonable([w.to_dict() for w in doc.warnings])
        n = len(doc.spec.components)
        if existing == doc.kubernetes_form:
            response.status_code = 200
            return AppAccepted(name=doc.name, result="unchanged", components=n, warnings=warnings)
        if existing is not None and name is None:
            raise HTTPException(409, f"app {doc.name!r} exists with a different description; "
                                     f"PUT {API_PREFIX}/apps/{doc.name} replaces it")
        try:
            cont.submit_app(doc)
        except DescriptionError as exc:
            raise _invalid(exc) from None
        response.status_code = 201 if existing is None else 200
        return AppAccepted(name=doc.name, result="created" if existing is None else "replaced", components=n,
                           warnings=warnings)

    @v1.post("/apps", response_model=AppAccepted, status_code=201, tags=["apps"], openapi_extra=app_body,
             responses={200: {"description": "identical re-submission", "model": AppAccepted},
                        409: {"description": "an app of that name exists with a different description"},
                        422: {"description": "invalid description (issues with field paths)"}})
    async def submit_app(request: Request, response: Response) -> AppAccepted:
        """Submit an application (idempotent: an identical re-submission is 200)."""
        return await accept(request, response, None)

    @v1.put("/apps/{name}", response_model=AppAccepted, tags=["apps"], openapi_extra=app_body,
            responses={201: {"description": "created", "model": AppAccepted},
                       422: {"description": "invalid description, or its name differs from the URL"}})
    async def put_app(name: str, request: Request, response: Response) -> AppAccepted:
        """Create or replace an application."""
        return await accept(request, response, name)

    @v1.get("/apps", response_model=list[AppSummary], tags=["apps"])
    async def list_apps() -> list[AppSummary]:
        cont = backend.continuum
        out = []
        for name in sorted(cont.apps):
            comps = _components(cont, name)
            out.append(AppSummary(name=name, submitted=cont.submitted.get(name), components=len(comps),
                                  status=dict(Counter(s["status"] for s in comps.values()))))
        return out

    @v1.get("/apps/{name}", response_model=AppDetail, tags=["apps"], responses={404: {}})
    async def get_app(name: str) -> AppDetail:
        cont = backend.continuum
        if name not in cont.apps:
            raise _not_found("app", name)
        return AppDetail(name=name, submitted=cont.submitted.get(name), description=cont.app_docs[name],
                         components={c: ComponentStatus(**s) for c, s in _components(cont, name).items()})

    @v1.delete("/apps/{name}", response_model=AppRemoved, status_code=202, tags=["apps"], responses={404: {}})
    async def delete_app(name: str) -> AppRemoved:
        """Remove an application: clusters are told to remove its components (status becomes `removed`)."""
        if not await backend.continuum.remove_app(name):
            raise _not_found("app", name)
        return AppRemoved(name=name)

    @v1.get("/apps/{name}/events", tags=["apps"], responses={404: {}})
    async def app_events(name: str, limit: int = Query(100, ge=1, le=MAX_DECISIONS)) -> list[dict[str, Any]]:
        """Decision records of every agent in this process about the app, newest last."""
        cont = backend.continuum
        if name not in cont.apps and not _components(cont, name):
            raise _not_found("app", name)
        return _decisions(backend.agents().values(), {"app": name}, limit)

    # -- infrastructure -----------------------------------------------------------------------------------
    @v1.get("/continuum", response_model=ContinuumView, tags=["infrastructure"])
    async def continuum() -> ContinuumView:
        cont = backend.continuum
        records = [c for c in cont.children.children() if c.jid in cont.jid_clusters]
        return ContinuumView(id=cont.agent_id, jid=str(cont.jid), connected=cont.connected,
                             started_at=cont.started_at, description=to_k8s(cont.description),
                             clusters=len(cont.cluster_jids), clusters_alive=sum(1 for c in records if c.alive),
                             apps=len(cont.apps))

    @v1.get("/clusters", response_model=list[ClusterSummary], tags=["infrastructure"])
    async def list_clusters() -> list[ClusterSummary]:
        cont = backend.continuum
        hosted = _hosted(cont)
        return [ClusterSummary(**_cluster_detail(cont, cid, hosted).model_dump()) for cid in sorted(cont.cluster_jids)]

    @v1.get("/clusters/{cid}", response_model=ClusterDetail, tags=["infrastructure"], responses={404: {}})
    async def get_cluster(cid: str) -> ClusterDetail:
        cont = backend.continuum
        if cid not in cont.cluster_jids:
            raise _not_found("cluster", cid, cont.cluster_jids)
        return _cluster_detail(cont, cid, _hosted(cont))

    def all_nodes() -> dict[str, NodeDetail]:
        cont = backend.continuum
        hosted = _hosted(cont)
        return {n.name: n for cid in sorted(cont.cluster_jids) for n in _nodes_of(cont, cid, hosted)}

    @v1.get("/nodes", response_model=list[NodeSummary], tags=["infrastructure"])
    async def list_nodes() -> list[NodeSummary]:
        """Nodes of every registered cluster, as the continuum agent knows them."""
        return [NodeSummary(**n.model_dump(exclude={"description"})) for n in all_nodes().values()]

    @v1.get("/nodes/{name}", response_model=NodeDetail, tags=["infrastructure"], responses={404: {}})
    async def get_node(name: str) -> NodeDetail:
        nodes = all_nodes()
        if name not in nodes:
            raise _not_found("node", name, nodes)
        return nodes[name]

    @v1.post("/nodes", response_model=NodeAdded, status_code=201, tags=["infrastructure"],
             openapi_extra=app_body, responses={409: {}, 422: {}})
    async def register_node(request: Request) -> NodeAdded:
        """Register a node description; with the simulated continuum the node joins it and its agent starts.
        Elsewhere a node joins by starting its node agent (`mlsysops agent node`), so this answers 409."""
        doc = await _read_one(request, None, MLSysOpsNode)
        if backend.runtime is None:
            raise HTTPException(409, "nodes join this slice by starting their node agent (mlsysops agent node)")
        try:
            await backend.runtime.add_node(doc.spec)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return NodeAdded(name=doc.spec.name, cluster=doc.spec.cluster_id or "")

    @v1.delete("/nodes/{name}", response_model=NodeRemoved, status_code=202, tags=["infrastructure"],
               responses={404: {}, 409: {}, 504: {}})
    async def unregister_node(name: str) -> NodeRemoved:
        """Drain a node (its components are relocated first, make-before-break) and remove it."""
        if backend.runtime is None:
            raise HTTPException(409, "stop the node's agent to remove it from this slice")
        if name not in backend.runtime.spec.nodes:
            raise _not_found("node", name, backend.runtime.spec.nodes)
        try:
            moved = await backend.runtime.remove_node(name)
        except TimeoutError as exc:
            raise HTTPException(504, str(exc)) from None
        return NodeRemoved(name=name, relocated=moved)

    # -- decisions ----------------------------------------------------------------------------------------
    @v1.get("/decisions", tags=["decisions"], responses={404: {"description": "unknown agent"}})
    async def decisions(agent: str | None = None, app: str | None = None, policy: str | None = None,
                        stage: str | None = None, outcome: str | None = None, since: float | None = None,
                        until: float | None = None,
                        limit: int = Query(100, ge=1, le=MAX_DECISIONS)) -> list[dict[str, Any]]:
        """Decision records of the agents in this process (in `mlsysops up`: all of them), newest last."""
        agents = backend.agents()
        if agent is not None and agent not in agents:
            raise _not_found("agent", agent, agents)
        chosen = [agents[agent]] if agent is not None else list(agents.values())
        return _decisions(chosen, {"app": app, "policy": policy, "stage": stage, "outcome": outcome,
                                   "since": since, "until": until}, limit)

    # -- management ---------------------------------------------------------------------------------------
    @v1.post("/ping", response_model=PingResult, tags=["management"],
             responses={404: {}, 502: {"description": "the agent refused"}, 504: {"description": "no answer"}})
    async def ping(body: Annotated[PingRequest | None, Body()] = None) -> PingResult:
        """Round trip over XMPP from the continuum agent to a cluster agent (or API -> continuum agent)."""
        cont = backend.continuum
        target = body.agent if body is not None else None
        started = time.perf_counter()
        if target is None or target == cont.agent_id:
            await asyncio.sleep(0)   # one turn of the loop the agent runs on
            return PingResult(agent=cont.agent_id, transport="in-process",
                              latency_ms=(time.perf_counter() - started) * 1000)
        if target not in cont.cluster_jids:
            raise _not_found("cluster agent", target, cont.cluster_jids)
        try:
            await cont.request(cont.cluster_jids[target], Kind.PING, Ping(sent_at=time.time()),
                               timeout=PING_TIMEOUT, retries=0)
        except RequestTimeout:
            raise HTTPException(504, f"cluster agent {target!r} did not answer within {PING_TIMEOUT:g}s") from None
        except RequestFailed as exc:
            raise HTTPException(502, f"cluster agent {target!r} refused the ping: {exc}") from None
        return PingResult(agent=target, transport="xmpp", latency_ms=(time.perf_counter() - started) * 1000)

    @v1.get("/policies", tags=["management"])
    async def policies() -> dict[str, list[dict[str, Any]]]:
        """Loaded policies per agent of this process."""
        return {aid: _jsonable(a.policies.list()) for aid, a in backend.agents().items()}

    @v1.post("/policies/{agent}/{name}/{action}", tags=["management"], responses={404: {}})
    async def set_policy(agent: str, name: str, action: Literal["enable", "disable"]) -> dict[str, Any]:
        """Enable or disable a policy of an agent in this process."""
        agents = backend.agents()
        if agent not in agents:
            raise _not_found("agent", agent, agents)
        registry = agents[agent].policies
        if registry.get(name) is None:
            raise _not_found(f"policy of {agent}:", name, registry.names())
        (registry.enable if action == "enable" else registry.disable)(name)
        agents[agent].trigger(reason=f"policy {name} {action}d")
        return _jsonable(registry.get(name).describe())

    @v1.get("/mode", tags=["management"])
    async def get_mode() -> dict[str, str]:
        """Management mode (heuristic | ml) of every agent of this process."""
        return {aid: a.mode for aid, a in backend.agents().items()}

    @v1.put("/mode", tags=["management"], responses={404: {}, 422: {}})
    async def put_mode(body: ModeRequest) -> dict[str, Any]:
        """Set the management mode slice-wide (continuum, then every cluster and node over XMPP), or of
        one agent of this process."""
        if body.agent is None:
            return _jsonable(await backend.continuum.set_mode_tree(body.mode))
        agents = backend.agents()
        if body.agent not in agents:
            raise _not_found("agent", body.agent, agents)
        return _jsonable(agents[body.agent].set_mode(body.mode))

    @v1.put("/policies/{agent}/{name}", tags=["management"], responses={404: {}, 422: {}},
            openapi_extra={"requestBody": {"content": {"text/x-python": {"schema": {"type": "string"}}},
                                           "required": True}})
    async def upload_policy(agent: str, name: str, request: Request) -> dict[str, Any]:
        """Upload a policy file (the Python source as the body) to an agent of this process; it is
        validated (imported, contract checked) before it is activated, replacing a policy of that name."""
        agents = backend.agents()
        if agent not in agents:
            raise _not_found("agent", agent, agents)
        try:
            source = (await request.body()).decode()
        except UnicodeDecodeError:
            raise HTTPException(422, "the policy source is not UTF-8 text") from None
        try:
            return agents[agent].install_policy(name, source)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    # -- simulator ----------------------------------------------------------------------------------------
    def sim() -> Any:
        if backend.sim is None:
            raise HTTPException(404, "no simulator in this process: send faults to the simulator host "
                                     "(mlsysops sim serve)")
        return backend.sim

    @v1.post("/sim/faults", response_model=FaultResult, tags=["sim"], responses={404: {}, 422: {}})
    async def inject_fault(fault: FaultRequest) -> FaultResult:
        """Inject a fault into the simulated continuum (`mlsysops up` only)."""
        from mlsysops.cli.sim_host import apply_fault

        body = fault.model_dump(exclude_none=True)
        try:
            done = apply_fault(sim(), backend.sim_nodes(), body)
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, str(exc).strip("'\"")) from None
        backend.continuum.record_event(f"fault injected: {done}", inputs=body)
        return FaultResult(injected=done)

    @v1.get("/sim", tags=["sim"], responses={404: {}})
    async def sim_snapshot() -> JSONResponse:
        """The whole simulated continuum: nodes, instances, faults."""
        return JSONResponse(_jsonable(sim().snapshot()))

    api_telemetry.register(app, v1, backend, read_auth=read_auth, metrics_auth=metrics_auth)
    app.include_router(v1)
    return app


def _decisions(agents: Any, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for a in agents:
        out.extend(a.decisions(limit=limit, **{k: v for k, v in filters.items() if v is not None}))
    out.sort(key=lambda r: r["ts"])
    return _jsonable(out[-limit:])


# -- serving ----------------------------------------------------------------------------------------------
class _InLoopServer(uvicorn.Server):
    """uvicorn without its signal handling: the process that embeds it owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """Serves an ASGI app as a task of the running event loop. The socket is bound in `start()`, so a
    busy port raises OSError there (uvicorn itself would exit the process)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> str:
        sock = socket.create_server((self.host, self.port), family=socket.AF_INET6 if ":" in self.host
                                    else socket.AF_INET)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = _InLoopServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the API server stopped during startup")
            if time.monotonic() > deadline:
                raise TimeoutError("the API server did not start")
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 5.0)
        except TimeoutError:
            self._task.cancel()
        self._server = self._task = None
