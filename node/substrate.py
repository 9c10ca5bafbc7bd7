"""What a node agent observes: one node of the simulated continuum, in process or over HTTP.

`observe()` returns one snapshot ``{"up": bool, "metrics": {...}, "instances": [...]}`` so a remote
substrate costs one round trip per monitor tick. A host substrate (psutil/sysfs) will implement the same
coroutine for real machines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsysops.sim import SimContinuum

if TYPE_CHECKING:
    import aiohttp


def node_snapshot(sim: SimContinuum, node: str) -> dict[str, Any]:
    """Node metrics and its instances (active ones, plus those that ended in the last minute)."""
    if not sim.is_up(node):
        return {"up": False, "metrics": {}, "instances": []}
    horizon = sim.clock.now() - 60.0
    instances = []
    for inst in sim.instances(node=node):
        if inst.state.terminal and inst.state_since < horizon:
            continue
        metrics = sim.component_metrics(inst.instance_id) if not inst.state.terminal else {}
        instances.append({"instance_id": inst.instance_id, "app": inst.app, "component": inst.component,
                          "state": str(inst.state), "since": inst.state_since, "reason": inst.reason,
                          "metrics": metrics})
    return {"up": True, "metrics": sim.node_metrics(node), "instances": instances}


class SimNodeSubstrate:
    def __init__(self, sim: SimContinuum, node: str) -> None:
        self.sim = sim
        self.node = node

    async def observe(self) -> dict[str, Any]:
        return node_snapshot(self.sim, self.node)


class RemoteSimNodeSubstrate:
    """The node's view from a simulator host (`mlsysops sim serve`), for agents in their own process."""

    def __init__(self, base_url: str, node: str, timeout: float = 2.0) -> None:
        self.url = f"{base_url.rstrip('/')}/nodes/{node}"
        self.node = node
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def observe(self) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            import aiohttp  # only a remote-sim node needs it: not loaded over the in-process sim or a host

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        async with self._session.get(self.url) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
