"""The endpoint components push their QoS metrics to: a small HTTP server on the node agent.

    POST /v1/component-metrics
    {"app": "shop", "component": "web", "instance": "web-7d9f", "metrics": {"response_time_ms": 41.5}}

answers 202 (accepted), or 400/422 with what is wrong. A pushed value counts as the component's current
value for `ttl` seconds (a component that stops pushing stops being reported, rather than showing a stale
value forever). The node agent's Monitor merges the current values into its samples each tick, so pushed
metrics go through the same OTel SDK, windows, digests and exports as everything else.
`GET /healthz` answers 200. Components reach it at the node's address (in Kubernetes via `status.hostIP`).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

NAME = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$"


class ComponentMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    app: str = Field(min_length=1, max_length=253)
    component: str = Field(min_length=1, max_length=253)
    instance: str | None = Field(None, max_length=253)
    metrics: dict[str, float] = Field(min_length=1, max_length=100)


class ComponentMetricsInbox:
    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._values: dict[tuple[str, str, str], tuple[float, dict[str, float]]] = {}

    def put(self, body: ComponentMetrics) -> None:
        bad = [n for n in body.metrics if not re.match(NAME, n)]
        if bad:
            raise ValueError(f"metrics: invalid metric name(s) {bad} (letters, digits, _ . : -)")
        key = (body.app, body.component, body.instance or body.component)
        self._values[key] = (time.monotonic(), dict(body.metrics))

    def current(self) -> list[tuple[str, dict[str, str], float]]:
        now = time.monotonic()
        out = []
        for key, (ts, metrics) in list(self._values.items()):
            if now - ts > self.ttl:
                del self._values[key]
                continue
            app, comp, inst = key
            out.extend((name, {"app": app, "component": comp, "instance": inst}, v) for name, v in metrics.items())
        return out


class PushServer:
    def __init__(self, inbox: ComponentMetricsInbox, host: str = "127.0.0.1", port: int = 0) -> None:
        self.inbox, self.host, self.port = inbox, host, port
        self._runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.Response:
        try:
            raw = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"detail": "body is not JSON"}, status=400)
        try:
            self.inbox.put(ComponentMetrics.model_validate(raw))
        except ValidationError as exc:
            issues = [{"path": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
            return web.json_response({"detail": issues}, status=422)
        except ValueError as exc:
            return web.json_response({"detail": str(exc)}, status=422)
        return web.json_response({"accepted": True}, status=202)

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/v1/component-metrics", self._post)
        app.router.add_get("/healthz", _ok)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]   # type: ignore[union-attr]
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _ok(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def attach(agent: Any, inbox: ComponentMetricsInbox) -> None:
    """Make a node agent merge what components push into its samples."""
    agent.pushed_metrics = inbox
