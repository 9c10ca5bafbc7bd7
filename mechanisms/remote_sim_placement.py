"""Cluster mechanism for a cluster agent in its own process: placement on a simulator host over HTTP.

The simulator host (`mlsysops sim serve`) runs the real `SimPlacementMechanism`; this proxy resolves the
resources of every component the command touches locally (it has the app descriptions) and sends them
along, so the host needs no descriptions. Errors of the host or the network are a failed `apply`, never
an exception into the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from mlsysops.mechanisms.placement_commands import CommandError, parse_command
from mlsysops.mechanisms.sim_placement import Resolver, resolver_for, unbound_resolver


class RemoteSimPlacementMechanism:
    name = "component_placement"

    def __init__(self, base_url: str, cluster_id: str, resolve: Resolver | None = None,
                 timeout: float = 10.0) -> None:
        self.base = f"{base_url.rstrip('/')}/clusters/{cluster_id}"
        self.cluster_id = cluster_id
        self.resolve = resolve or unbound_resolver
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def initialize(self, *, app_models: Mapping[str, Any]) -> None:
        """Bound by the cluster agent that registers this mechanism: its app models (a live table)."""
        self.resolve = resolver_for(app_models)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def get_options(self) -> dict[str, Any]:
        return {"actions": ["deploy", "move", "remove", "change_spec"], "formats": ["mlsysops", "fluidity"],
                "host": self.base}

    async def get_state(self) -> dict[str, Any]:
        async with self._http().get(f"{self.base}/state") as resp:
            resp.raise_for_status()
            return await resp.json()

    async def apply(self, command: Any) -> dict[str, Any]:
        try:
            actions = parse_command(command)
            resources = {}
            for act in actions:
                if act.action != "remove":
                    spec = self.resolve(act.app, act.component, act.spec)
                    resources[f"{act.app}/{act.component}"] = {
                        "cpu_cores": spec.cpu_cores, "memory_bytes": spec.memory_bytes,
                        "base_response_ms": spec.base_response_ms, "calls": list(spec.calls)}
        except CommandError as exc:
            return {"ok": False, "detail": f"invalid command: {exc}"}
        try:
            async with self._http().post(f"{self.base}/apply",
                                         json={"command": command, "resources": resources}) as resp:
                body = await resp.json()
                if resp.status != 200:
                    return {"ok": False, "detail": body.get("error", f"HTTP {resp.status}")}
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            return {"ok": False, "detail": f"simulator host unreachable: {exc!r}"}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
