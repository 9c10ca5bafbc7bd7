"""`mlsysops sim serve`: the simulated continuum of a slice as its own process, over loopback HTTP.

Agents started one per process (`mlsysops agent ...`) share it: node agents read their node
(`GET /nodes/{name}`), cluster agents place components (`POST /clusters/{id}/apply`, `GET
/clusters/{id}/state`), operators inject faults (`POST /sim/faults`, same body as `mlsysops up`'s control
endpoint). It stands in for the machines and the container runtime, nothing more.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from mlsysops.agents.slice_config import SliceSpec
from mlsysops.mechanisms.placement_commands import CommandError
from mlsysops.mechanisms.sim_placement import ComponentDeploySpec, SimPlacementMechanism, sim_node_spec
from mlsysops.node.substrate import node_snapshot
from mlsysops.sim import SimClock, SimContinuum
from mlsysops.sim.fault_requests import apply_fault


class SimHost:
    def __init__(self, spec: SliceSpec, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spec = spec
        self.sim = SimContinuum.from_specs([sim_node_spec(n) for n in spec.nodes.values()],
                                           seed=spec.config.substrate.seed or 0, clock=SimClock.realtime())
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.add_routes([web.get("/healthz", self._health), web.get("/nodes/{name}", self._node),
                        web.get("/clusters/{cid}/state", self._state),
                        web.post("/clusters/{cid}/apply", self._apply),
                        web.post("/sim/faults", self._fault), web.get("/snapshot", self._snapshot)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._task = asyncio.create_task(self.sim.run(interval=0.05))
        return self.url

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))

    async def _health(self, _req: web.Request) -> web.Response:
        return self._json({"ok": True, "nodes": len(self.spec.nodes)})

    async def _node(self, req: web.Request) -> web.Response:
        name = req.match_info["name"]
        if name not in self.spec.nodes:
            return self._json({"error": f"unknown node {name!r}"}, 404)
        return self._json(node_snapshot(self.sim, name))

    def _mechanism(self, cid: str, resources: dict[str, Any]) -> SimPlacementMechanism:
        def resolve(app: str, component: str, _spec: Any) -> ComponentDeploySpec:
            res = resources.get(f"{app}/{component}")
            if res is None:
                raise CommandError(f"no resources sent for {app}/{component}")
            return ComponentDeploySpec(cpu_cores=float(res["cpu_cores"]), memory_bytes=int(res["memory_bytes"]),
                                       base_response_ms=float(res.get("base_response_ms", 20.0)),
                                       calls=list(res.get("calls", [])))
        return SimPlacementMechanism(self.sim, cid, resolve)

    async def _state(self, req: web.Request) -> web.Response:
        cid = req.match_info["cid"]
        if cid not in self.spec.clusters:
            return self._json({"error": f"unknown cluster {cid!r}"}, 404)
        return self._json(await self._mechanism(cid, {}).get_state())

    async def _apply(self, req: web.Request) -> web.Response:
        cid = req.match_info["cid"]
        if cid not in self.spec.clusters:
            return self._json({"error": f"unknown cluster {cid!r}"}, 404)
        try:
            body = await req.json()
        except json.JSONDecodeError as exc:
            return self._json({"error": f"invalid JSON: {exc}"}, 400)
        return self._json(await self._mechanism(cid, body.get("resources") or {}).apply(body.get("command")))

    async def _fault(self, req: web.Request) -> web.Response:
        try:
            done = apply_fault(self.sim, set(self.spec.nodes), await req.json())
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json({"injected": done})

    async def _snapshot(self, _req: web.Request) -> web.Response:
        return self._json(self.sim.snapshot())
