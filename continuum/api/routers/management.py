"""`/api/v1/ping`, `/policies`, `/mode`: reachability and management of the agents."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Request

from mlsysops.agents.agent_base import RequestFailed, RequestTimeout
from mlsysops.agents.protocol import Kind, Ping
from mlsysops.continuum.api.bodies import jsonable, not_found
from mlsysops.continuum.api.deps import Backend
from mlsysops.continuum.api.models import ModeRequest, PingRequest, PingResult

PING_TIMEOUT = 5.0

router = APIRouter(tags=["management"])


@router.post("/ping", response_model=PingResult,
             responses={404: {}, 502: {"description": "the agent refused"}, 504: {"description": "no answer"}})
async def ping(backend: Backend, body: Annotated[PingRequest | None, Body()] = None) -> PingResult:
    """Round trip over XMPP from the continuum agent to a cluster agent (or API -> continuum agent)."""
    cont = backend.continuum
    target = body.agent if body is not None else None
    started = time.perf_counter()
    if target is None or target == cont.agent_id:
        await asyncio.sleep(0)   # one turn of the loop the agent runs on
        return PingResult(agent=cont.agent_id, transport="in-process",
                          latency_ms=(time.perf_counter() - started) * 1000)
    if target not in cont.cluster_jids:
        raise not_found("cluster agent", target, cont.cluster_jids)
    try:
        await cont.request(cont.cluster_jids[target], Kind.PING, Ping(sent_at=time.time()),
                           timeout=PING_TIMEOUT, retries=0)
    except RequestTimeout:
        raise HTTPException(504, f"cluster agent {target!r} did not answer within {PING_TIMEOUT:g}s") from None
    except RequestFailed as exc:
        raise HTTPException(502, f"cluster agent {target!r} refused the ping: {exc}") from None
    return PingResult(agent=target, transport="xmpp", latency_ms=(time.perf_counter() - started) * 1000)


@router.get("/policies")
async def policies(backend: Backend) -> dict[str, list[dict[str, Any]]]:
    """Loaded policies per agent of this process."""
    return {aid: jsonable(a.policies.list()) for aid, a in backend.agents().items()}


@router.post("/policies/{agent}/{name}/{action}", responses={404: {}})
async def set_policy(agent: str, name: str, action: Literal["enable", "disable"], backend: Backend) -> dict[str, Any]:
    """Enable or disable a policy of an agent in this process."""
    agents = backend.agents()
    if agent not in agents:
        raise not_found("agent", agent, agents)
    registry = agents[agent].policies
    if registry.get(name) is None:
        raise not_found(f"policy of {agent}:", name, registry.names())
    (registry.enable if action == "enable" else registry.disable)(name)
    agents[agent].trigger(reason=f"policy {name} {action}d")
    return jsonable(registry.get(name).describe())


@router.get("/mode")
async def get_mode(backend: Backend) -> dict[str, str]:
    """Management mode (heuristic | ml | auto | shadow) of every agent of this process."""
    return {aid: a.mode for aid, a in backend.agents().items()}


@router.get("/mode/status")
async def get_mode_status(backend: Backend) -> dict[str, Any]:
    """Per agent of this process: the slice's mode, per-app overrides, and per app what its ML policy
    last reported (who acts, why: auto state, the drift alarm with detector, feature and statistic)."""
    return jsonable({aid: a.mode_status() for aid, a in backend.agents().items()})


@router.put("/mode", responses={404: {}, 422: {}})
async def put_mode(body: ModeRequest, backend: Backend) -> dict[str, Any]:
    """Set the management mode slice-wide (continuum, then every cluster and node over XMPP), or of
    one agent of this process."""
    if body.agent is None:
        return jsonable(await backend.continuum.set_mode_tree(body.mode, body.app))
    agents = backend.agents()
    if body.agent not in agents:
        raise not_found("agent", body.agent, agents)
    return jsonable(agents[body.agent].set_mode(body.mode, body.app))


_UPLOAD_BODY = {"requestBody": {"content": {"text/x-python": {"schema": {"type": "string"}}}, "required": True}}
_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {}, 413: {"description": "source too large"},
    422: {"description": "rejected: syntax (with line), missing functions or arguments, or what loading "
                         "it in a sandboxed worker raised"}}


@router.put("/policies/{agent}/{name}", responses=_UPLOAD_RESPONSES, openapi_extra=_UPLOAD_BODY)
@router.post("/policies/{agent}/{name}", responses=_UPLOAD_RESPONSES, openapi_extra=_UPLOAD_BODY)
async def upload_policy(agent: str, name: str, request: Request, backend: Backend) -> dict[str, Any]:
    """Upload a policy file (the Python source as the body; admin token) to an agent of this process.
    `name` may be `NAME` or the original framework's `policy-NAME.py`. The source is checked without
    running it, then loaded in a sandboxed worker; only then is it kept in the agent's state directory
    (reloaded after a restart) and activated, replacing a policy of that name."""
    from mlsysops.agents.mape.policy_source import MAX_SOURCE_BYTES

    agents = backend.agents()
    if agent not in agents:
        raise not_found("agent", agent, agents)
    source = await request.body()
    if len(source) > MAX_SOURCE_BYTES:
        raise HTTPException(413, f"the policy source is {len(source)} bytes; at most {MAX_SOURCE_BYTES}")
    try:
        return await agents[agent].install_policy(name, source)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
