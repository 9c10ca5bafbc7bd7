"""A small local HTTP control endpoint of a running `mlsysops up` (loopback only).

It lets other terminals inspect the slice and inject simulated faults (`mlsysops sim fail-node`). The
northbound REST API (FastAPI, auth, durable state) is a separate piece of work; this endpoint exists so
the spine can be driven from a shell today. `run.json` in the slice's state directory says where it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from agents.descriptions import DescriptionError, load_text
from mlsysops_cli.sim_host import apply_fault
from mlsysops_cli.slice_runtime import SliceRuntime

def snapshot(rt: SliceRuntime) -> dict[str, Any]:
    cont = rt.continuum
    return {"slice": rt.spec.config.slice, "hierarchy": rt.hierarchy(),
            "apps": {a: cont.app_status(a) for a in cont.apps} if cont else {},
            "faults": rt.sim.active_faults() if rt.sim else []}


class ControlServer:
    def __init__(self, rt: SliceRuntime, host: str = "127.0.0.1", port: int = 0) -> None:
        self.rt = rt
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.add_routes([web.get("/healthz", self._health), web.get("/status", self._status),
                        web.get("/decisions", self._decisions), web.post("/apps", self._apply),
                        web.post("/sim/faults", self._fault)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, _req: web.Request) -> web.Response:
        return web.json_response({"ok": True, "time": time.time()})

    async def _status(self, _req: web.Request) -> web.Response:
        return web.json_response(snapshot(self.rt))

    async def _decisions(self, req: web.Request) -> web.Response:
        agent = req.query.get("agent")
        agents = [self.rt.continuum, *self.rt.clusters.values(), *self.rt.nodes.values()]
        out = []
        for a in agents:
            if a is not None and (agent is None or a.agent_id == agent):
                out.extend(a.decisions(app=req.query.get("app"), limit=int(req.query.get("limit", 50))))
        out.sort(key=lambda r: r["ts"])
        return web.json_response(out[-int(req.query.get("limit", 50)):], dumps=lambda o: json.dumps(o, default=str))

    async def _apply(self, req: web.Request) -> web.Response:
        text = await req.text()
        try:
            docs = load_text(text, source=req.query.get("source", "<upload>"), inventory=self.rt.spec.inventory)
            accepted = [self.rt.continuum.submit_app(d).name for d in docs]
        except DescriptionError as exc:
            return web.json_response({"error": str(exc), "issues": [i.to_dict() for i in exc.issues]},
                                     status=422, dumps=lambda o: json.dumps(o, default=str))
        return web.json_response({"accepted": accepted}, status=202)

    async def _fault(self, req: web.Request) -> web.Response:
        if self.rt.sim is None:
            return web.json_response({"error": "no simulator in this process: send faults to the simulator "
                                               "host (mlsysops sim serve)"}, status=400)
        try:
            body = await req.json()
            done = apply_fault(self.rt.sim, set(self.rt.spec.nodes), body)
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.rt.continuum.record_event(f"fault injected: {done}", inputs=body)
        return web.json_response({"injected": done})


def write_run_file(state_dir: Path, control_url: str, xmpp_port: int | None) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "run.json"
    path.write_text(json.dumps({"control": control_url, "xmpp_port": xmpp_port, "started": time.time()}))
    return path
