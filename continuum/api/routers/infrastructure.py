"""`/api/v1/continuum`, `/clusters`, `/nodes`: the infrastructure as the continuum agent knows it; nodes
join and leave through it only where the process runs the simulated continuum (`mlsysops up`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from mlsysops.agents.descriptions import MLSysOpsNode, to_k8s
from mlsysops.continuum.api import views
from mlsysops.continuum.api.bodies import DESCRIPTION_BODY, not_found, read_one
from mlsysops.continuum.api.deps import Backend
from mlsysops.continuum.api.models import (
    ClusterDetail,
    ClusterSummary,
    ContinuumView,
    DrainState,
    NodeAdded,
    NodeDetail,
    NodePatch,
    NodeRemoved,
    NodeSummary,
    NodeUncordoned,
)

router = APIRouter(tags=["infrastructure"])


@router.get("/continuum", response_model=ContinuumView)
async def continuum(backend: Backend) -> ContinuumView:
    cont = backend.continuum
    records = [c for c in cont.children.children() if c.jid in cont.jid_clusters]
    return ContinuumView(id=cont.agent_id, jid=str(cont.jid), connected=cont.connected,
                         started_at=cont.started_at, description=to_k8s(cont.description),
                         clusters=len(cont.cluster_jids), clusters_alive=sum(1 for c in records if c.alive),
                         apps=len(cont.apps))


@router.get("/clusters", response_model=list[ClusterSummary])
async def list_clusters(backend: Backend) -> list[ClusterSummary]:
    cont = backend.continuum
    where = views.hosted(cont)
    return [ClusterSummary(**views.cluster_detail(cont, cid, where).model_dump()) for cid in sorted(cont.cluster_jids)]


@router.get("/clusters/{cid}", response_model=ClusterDetail, responses={404: {}})
async def get_cluster(cid: str, backend: Backend) -> ClusterDetail:
    cont = backend.continuum
    if cid not in cont.cluster_jids:
        raise not_found("cluster", cid, cont.cluster_jids)
    return views.cluster_detail(cont, cid, views.hosted(cont))


@router.get("/nodes", response_model=list[NodeSummary])
async def list_nodes(backend: Backend) -> list[NodeSummary]:
    """Nodes of every registered cluster, as the continuum agent knows them."""
    return [NodeSummary(**n.model_dump(exclude={"description"})) for n in views.all_nodes(backend.continuum).values()]


@router.get("/nodes/{name}", response_model=NodeDetail, responses={404: {}})
async def get_node(name: str, backend: Backend) -> NodeDetail:
    nodes = views.all_nodes(backend.continuum)
    if name not in nodes:
        raise not_found("node", name, nodes)
    node = nodes[name]
    drain = backend.runtime.drain_status(name) if backend.runtime is not None else None
    return node.model_copy(update={"drain": DrainState(**drain)}) if drain is not None else node


@router.post("/nodes", response_model=NodeAdded, status_code=201, openapi_extra=DESCRIPTION_BODY,
             responses={409: {}, 422: {}})
async def register_node(request: Request, backend: Backend) -> NodeAdded:
    """Register a node description; with the simulated continuum the node joins it and its agent starts.
    Elsewhere a node joins by starting its node agent (`mlsysops agent node`), so this answers 409."""
    doc = await read_one(request, None, MLSysOpsNode)
    if backend.runtime is None:
        raise HTTPException(409, "nodes join this slice by starting their node agent (mlsysops agent node)")
    try:
        await backend.runtime.add_node(doc.spec)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return NodeAdded(name=doc.spec.name, cluster=doc.spec.cluster_id or "")


@router.delete("/nodes/{name}", response_model=NodeRemoved, status_code=202, responses={404: {}, 409: {}, 504: {}})
async def unregister_node(name: str, backend: Backend) -> NodeRemoved:
    """Drain a node (its components are relocated first, make-before-break) and remove it. A drain that
    cannot complete in 30 s answers 504 saying which components could not move and why; the node stays
    cordoned (its instances keep running) until `PATCH /nodes/{name}` with `{"cordoned": false}`."""
    if backend.runtime is None:
        raise HTTPException(409, "stop the node's agent to remove it from this slice")
    if name not in backend.runtime.spec.nodes:
        raise not_found("node", name, backend.runtime.spec.nodes)
    try:
        moved = await backend.runtime.remove_node(name)
    except TimeoutError as exc:
        raise HTTPException(504, str(exc)) from None
    return NodeRemoved(name=name, relocated=moved)


@router.patch("/nodes/{name}", response_model=NodeUncordoned, responses={404: {}, 409: {}, 422: {}})
async def patch_node(name: str, body: NodePatch, backend: Backend) -> NodeUncordoned:
    """`{"cordoned": false}`: uncordon the node (undo a drain, e.g. one that could not complete)."""
    if backend.runtime is None:
        raise HTTPException(409, "nodes are drained and uncordoned where the slice runs them (mlsysops up)")
    if name not in backend.runtime.spec.nodes:
        raise not_found("node", name, backend.runtime.spec.nodes)
    return NodeUncordoned(**backend.runtime.uncordon_node(name))
