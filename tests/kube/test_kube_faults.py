"""Failure behaviour of the Kubernetes backend, with a scripted HTTP server of our own (`FaultProxy`):
it answers scripted faults (5xx, 429 + Retry-After, 409, 410 and dropped watch streams, lost answers) and
forwards everything else to the real local apiserver, so "nothing deployed twice" is checked on real state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes.aio import client as k
from kubernetes.aio import config as kcfg

from mlsysops.agents.descriptions.loader import load_file
from mlsysops.mechanisms.kube_placement import KubePlacementMechanism
from mlsysops.substrates.kubernetes.client import KubeError, RetryPolicy, apply, call
from mlsysops.substrates.kubernetes.watch import ResourceWatch
from tests.kube.conftest import unique
from tests.kube.harness import free_port, until, write_kubeconfig

pytestmark = pytest.mark.asyncio(loop_scope="session")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "apps" / "env-monitor.yaml"
FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05, request_timeout_s=2.0)
Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROXY_KEY: web.AppKey[Any] = web.AppKey("proxy", object)


@dataclass
class Rule:
    method: str
    path: str                       # regex, full match on the URL path
    respond: Responder
    times: int = 1                  # how many requests it answers; then it is spent
    query: dict[str, str] = field(default_factory=dict)

    def matches(self, req: web.Request) -> bool:
        return (self.times > 0 and req.method == self.method and re.fullmatch(self.path, req.path) is not None
                and all(req.query.get(key) == value for key, value in self.query.items()))


def status(code: int, reason: str = "", headers: dict[str, str] | None = None) -> Responder:
    async def respond(req: web.Request) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
                "message": f"injected {code}"}
        return web.json_response(body, status=code, headers=headers)
    return respond


class FaultProxy:
    """Scripted faults first (in order), the upstream apiserver for everything else; records requests."""

    def __init__(self, upstream: str | None, token: str) -> None:
        self.upstream = upstream
        self.token = token
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.down = False
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, method: str, path: str, respond: Responder, times: int = 1, **query: str) -> Rule:
        rule = Rule(method, path, respond, times, query)
        self.rules.append(rule)
        return rule

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and re.fullmatch(path, p))

    async def start(self) -> None:
        self.released = asyncio.Event()    # ends held watch streams, so shutdown does not wait on them
        app = web.Application()
        app[PROXY_KEY] = self
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))

    async def stop(self) -> None:
        self.released.set()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, req: web.Request) -> web.StreamResponse:
        self.requests.append((req.method, req.path, dict(req.query)))
        if self.down:   # as if nothing listened: close the connection without an answer
            req.transport.close()
            raise ConnectionResetError("proxy down")
        for rule in self.rules:
            if rule.matches(req):
                rule.times -= 1
                return await rule.respond(req)
        return await self.forward(req)

    async def forward_quietly(self, req: web.Request) -> None:
        """Forward to the upstream and drop its answer (to script "applied, but the answer was lost")."""
        body = await req.read()
        headers = {key: value for key, value in req.headers.items() if key.lower() in ("content-type", "accept")}
        headers["Authorization"] = f"Bearer {self.token}"
        async with self._session.request(req.method, f"{self.upstream}{req.path_qs}", data=body or None,
                                         headers=headers) as up:
            await up.read()

    async def forward(self, req: web.Request) -> web.StreamResponse:
        if self.upstream is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        body = await req.read()
        headers = {key: value for key, value in req.headers.items() if key.lower() in ("content-type", "accept")}
        headers["Authorization"] = f"Bearer {self.token}"
        async with self._session.request(req.method, f"{self.upstream}{req.path_qs}", data=body or None,
                                         headers=headers) as up:
            out = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers.get("Content-Type",
                                                                                                "application/json")})
            await out.prepare(req)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(kube_stack, tmp_path):
    p = FaultProxy(kube_stack.server, kube_stack.token)
    await p.start()
    api = await kcfg.new_client_from_config(config_file=str(write_kubeconfig(tmp_path / "kc", p.url, "t")))
    try:
        yield p, api
    finally:
        await api.close()
        await p.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def scripted(tmp_path):
    """A scripted server with no upstream: only what the test scripts exists."""
    p = FaultProxy(None, "t")
    await p.start()
    api = await kcfg.new_client_from_config(config_file=str(write_kubeconfig(tmp_path / "kc", p.url, "t")))
    try:
        yield p, api
    finally:
        await api.close()
        await p.stop()


DEPLOYMENTS = r"/apis/apps/v1/namespaces/[^/]+/deployments"


async def test_5xx_then_success_is_retried_once(proxy, kube_ns) -> None:
    p, api = proxy
    p.script("GET", DEPLOYMENTS, status(503, "ServiceUnavailable"))
    result = await call(k.AppsV1Api(api).list_namespaced_deployment, kube_ns, policy=FAST)
    assert result.items == [] and p.count("GET", DEPLOYMENTS) == 2


async def test_a_slow_answer_times_out_and_is_retried(proxy, kube_ns) -> None:
    p, api = proxy

    async def slow(req: web.Request) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(p.released.wait(), 3)
        return await p.forward(req)

    p.script("GET", DEPLOYMENTS, slow)
    policy = RetryPolicy(attempts=3, base_s=0.01, cap_s=0.05, request_timeout_s=0.3)
    t0 = time.monotonic()
    assert (await call(k.AppsV1Api(api).list_namespaced_deployment, kube_ns, policy=policy)).items == []
    assert time.monotonic() - t0 < 2 and p.count("GET", DEPLOYMENTS) == 2


async def test_persistent_5xx_gives_up_after_the_bound(proxy, kube_ns) -> None:
    p, api = proxy
    p.script("GET", DEPLOYMENTS, status(500, "InternalError"), times=100)
    with pytest.raises(KubeError) as err:
        await call(k.AppsV1Api(api).list_namespaced_deployment, kube_ns, policy=FAST)
    assert err.value.status == 500 and err.value.attempts == FAST.attempts
    assert p.count("GET", DEPLOYMENTS) == FAST.attempts


async def test_429_honours_retry_after(proxy, kube_ns) -> None:
    p, api = proxy
    p.script("GET", DEPLOYMENTS, status(429, "TooManyRequests", {"Retry-After": "0.4"}))
    policy = RetryPolicy(attempts=3, base_s=0.001, cap_s=2.0)
    t0 = time.monotonic()
    await call(k.AppsV1Api(api).list_namespaced_deployment, kube_ns, policy=policy)
    assert time.monotonic() - t0 >= 0.4 and p.count("GET", DEPLOYMENTS) == 2


async def test_409_on_apply_is_reapplied_with_force_and_other_409s_surface(proxy, kube_ns) -> None:
    p, api = proxy
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}
    p.script("PATCH", r"/api/v1/namespaces/[^/]+/configmaps/cfg", status(409, "Conflict"))
    core = k.CoreV1Api(api)
    await call(core.patch_namespaced_config_map, "cfg", kube_ns, body, field_manager="mlsysops",
               _content_type="application/apply-patch+yaml", policy=FAST)      # no force: conflict -> force
    patches = [q for m, path, q in p.requests if m == "PATCH"]
    assert [q.get("force") for q in patches] == [None, "true"]
    assert (await core.read_namespaced_config_map("cfg", kube_ns)).data == {"a": "1"}
    with pytest.raises(KubeError) as err:      # AlreadyExists is the caller's business: no retry
        await call(core.create_namespaced_config_map, kube_ns, {"metadata": {"name": "cfg"}}, policy=FAST)
    assert err.value.conflict and p.count("POST", r"/api/v1/namespaces/[^/]+/configmaps") == 1


def _list(rv: str, names: list[str]) -> Responder:
    async def respond(req: web.Request) -> web.Response:
        return web.json_response({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
                                  "items": [_cm(n, rv) for n in names]})
    return respond


def _cm(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def _stream(events: list[dict[str, Any]], hold: bool = False, drop: bool = False) -> Responder:
    async def respond(req: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await out.prepare(req)
        for ev in events:
            await out.write((json.dumps(ev) + "\n").encode())
        if drop:   # connection lost mid-stream
            req.transport.close()
            return out
        if hold:   # an idle watch: open until the test ends
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(req.app[PROXY_KEY].released.wait(), 30)
        await out.write_eof()
        return out
    return respond


CMS = r"/api/v1/namespaces/ns/configmaps"


async def _watch(api, p) -> tuple[ResourceWatch, list, list, asyncio.Task]:
    syncs: list[list[str]] = []
    events: list[tuple[str, str]] = []

    async def on_sync(items):
        syncs.append([i["metadata"]["name"] for i in items])

    async def on_event(kind, obj):
        events.append((kind, obj["metadata"]["name"]))

    w = ResourceWatch(api, k.CoreV1Api(api).list_namespaced_config_map, "ns", on_sync=on_sync, on_event=on_event,
                      timeout_seconds=5, policy=FAST)
    return w, syncs, events, asyncio.create_task(w.run())


async def test_410_on_watch_relists(scripted) -> None:
    p, api = scripted
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    p.script("GET", CMS, _stream([{"type": "ADDED", "object": _cm("b", "11")}, gone]), watch="true",
             resourceVersion="10")
    p.script("GET", CMS, _stream([{"type": "ADDED", "object": _cm("c", "21")}], hold=True), watch="true",
             resourceVersion="20")
    lists = [_list("10", ["a"]), _list("20", ["a", "b"])]

    async def list_in_order(req: web.Request) -> web.StreamResponse:
        return await lists.pop(0)(req)

    p.rules.append(Rule("GET", CMS, list_in_order, times=2))   # plain lists (watch requests matched above)
    w, syncs, events, task = await _watch(api, p)
    try:
        await until(lambda: ("ADDED", "c") in events, message="event after the re-list")
        assert syncs == [["a"], ["a", "b"]] and w.lists == 2
        assert events == [("ADDED", "b"), ("ADDED", "c")]
    finally:
        task.cancel()


async def test_dropped_watch_stream_resumes_from_the_last_version(scripted) -> None:
    p, api = scripted
    p.script("GET", CMS, _stream([{"type": "ADDED", "object": _cm("b", "11")}], drop=True), watch="true",
             resourceVersion="10")
    p.script("GET", CMS, _stream([{"type": "MODIFIED", "object": _cm("b", "12")}], hold=True), watch="true",
             resourceVersion="11")
    p.script("GET", CMS, _list("10", ["a"]))
    w, syncs, events, task = await _watch(api, p)
    try:
        await until(lambda: ("MODIFIED", "b") in events, message="event after resuming")
        assert syncs == [["a"]] and w.lists == 1       # resumed at 11, no re-list
        assert events == [("ADDED", "b"), ("MODIFIED", "b")]
    finally:
        task.cancel()


@pytest_asyncio.fixture(loop_scope="session")
async def faulty_env(proxy, kube_client, kube_ns, sim_kubelets):
    """The mechanism talking through the proxy to the real apiserver, sim kubelets on the real one."""
    from mlsysops.sim import SimNodeSpec

    p, api = proxy
    cluster = unique("c")
    node = unique("n")
    await sim_kubelets([SimNodeSpec(node, cluster, "edge", startup_s=0.05)])
    app = load_file(EXAMPLE)[0].spec
    mech = KubePlacementMechanism(api, kube_ns, cluster, {app.name: app}.get, policy=FAST, move_timeout=20)
    return p, mech, node


def _deploy(node: str) -> dict[str, Any]:
    return {"app": "env-monitor", "actions": [{"action": "deploy", "component": "aggregator", "node": node,
                                               "instance_id": f"env-monitor.aggregator.0@{node}"}]}


async def _one_deployment(kube_client, ns: str) -> Any:
    deps = (await k.AppsV1Api(kube_client).list_namespaced_deployment(ns)).items
    assert len(deps) == 1, [d.metadata.name for d in deps]
    return deps[0]


async def test_unreachable_server_is_reported_then_reconciled_without_duplicates(faulty_env, kube_client, kube_ns) -> None:
    p, mech, node = faulty_env
    p.down = True
    res = await mech.apply(_deploy(node))                     # no crash: an answer with the error
    assert not res["ok"] and "unreachable" in res["detail"][0]["error"]
    state = await mech.get_state()
    assert state["stale"] and "unreachable" in state["errors"]["env-monitor/aggregator"]
    assert not (await k.AppsV1Api(kube_client).list_namespaced_deployment(kube_ns)).items
    p.down = False
    assert (await mech.apply(_deploy(node)))["ok"]              # the same desired state, applied when back
    assert (await mech.apply(_deploy(node)))["ok"]
    dep = await _one_deployment(kube_client, kube_ns)
    assert dep.metadata.generation == 1
    state = await mech.get_state()
    assert "stale" not in state and state["errors"] == {}


async def test_lost_answers_and_5xx_do_not_deploy_twice(faulty_env, kube_client, kube_ns) -> None:
    p, mech, node = faulty_env

    async def forward_then_lose(req: web.Request) -> web.StreamResponse:
        await p.forward_quietly(req)          # the server applies it...
        req.transport.close()                 # ...but the answer never arrives
        raise ConnectionResetError("answer lost")

    p.script("PATCH", DEPLOYMENTS + r"/[^/]+", forward_then_lose)
    p.script("PATCH", r"/api/v1/namespaces/[^/]+/services/[^/]+", status(502, "BadGateway"))
    res = await mech.apply(_deploy(node))
    assert res["ok"], res
    dep = await _one_deployment(kube_client, kube_ns)
    assert dep.metadata.generation == 1
    assert p.count("PATCH", DEPLOYMENTS + r"/[^/]+") == 2
    assert len((await k.CoreV1Api(kube_client).list_namespaced_service(kube_ns)).items) == 1
    await until(lambda: _running(mech), timeout=30, message="instance running after the faults")


async def _running(mech) -> bool:
    return [i["state"] for i in (await mech.get_state())["instances"]] == ["running"]


async def test_apply_helper_against_unreachable_port_raises_kube_error(tmp_path) -> None:
    kc = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{free_port()}", "t")
    api = await kcfg.new_client_from_config(config_file=str(kc))
    async with api:
        with pytest.raises(KubeError) as err:
            await apply(k.CoreV1Api(api).patch_namespaced_config_map, "x", "ns",
                        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, policy=FAST)
    assert err.value.status == 0 and err.value.attempts == FAST.attempts
