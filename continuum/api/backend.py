"""What the API reads and drives: the continuum agent (and, in `mlsysops up`, the whole slice runtime).

Views of other agents (their decision records, what they collect) are read over the protocol from the
continuum agent down (`mlsysops.agents.tree_reads`) in both run modes, so `mlsysops up` and one agent per
process answer alike; only management actions on in-process agents (policies, per-agent mode) and the
simulator need the runtime. Those reads go through a `ReadCache`: an answer is reused while it is at most
`read_max_age` seconds old and concurrent readers of the same question share one fan-out (the dashboard
stream, `get decisions -w` and `events` ask the same every second); a state-changing API request drops the
cached answers (`invalidate_reads`). The hottest reads (decisions, telemetry) are also held encoded on the
API thread (`served`, refreshed ahead of expiry), so their readers neither wait for a fan-out nor cost the
agents' loop anything while the answer is fresh.
"""

from __future__ import annotations

import time
from typing import Any

from mlsysops.agents.tree_reads import (
    DecisionsPage,
    DecisionsQuery,
    TelemetryConfigQuery,
    collect_decisions,
    collect_plans,
)
from mlsysops.continuum.api.read_cache import DEFAULT_MAX_AGE, Fresh, ReadCache

TREE_WAIT = 2.0        # seconds the API waits for the clusters (they give their nodes half of it)
TREE_PAGES = 20        # pages per cluster for one decision read (each under the protocol's message limit)
SERVED_REFRESH_AHEAD = 0.5   # an encoded answer past half its max age is rebuilt while it is still served


class ApiBackend:
    """The continuum agent, and with a `SliceRuntime` every agent and the simulator of the process."""

    def __init__(self, continuum: Any = None, *, runtime: Any = None, tree_wait: float = TREE_WAIT,
                 read_max_age: float = DEFAULT_MAX_AGE) -> None:
        if continuum is None and runtime is None:
            raise ValueError("ApiBackend needs the continuum agent or a SliceRuntime")
        self._continuum = continuum
        self.runtime = runtime
        self.tree_wait = tree_wait
        self.reads = ReadCache(read_max_age)     # on the agents' loop
        # encoded answers, touched only on the API's loop (its thread when threaded): see decision_reads
        self.served = ReadCache(read_max_age, refresh_ahead=SERVED_REFRESH_AHEAD)
        self.agents_loop: Any = None   # set by a threaded ApiServer: endpoints run there (loop_bridge)

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

    def known_agents(self) -> set[str]:
        """Agent ids of the slice as the continuum knows them: itself, its clusters and their nodes."""
        cont = self.continuum
        return {cont.agent_id, *cont.cluster_jids, *(n for nodes in cont.cluster_nodes.values() for n in nodes)}

    def _unregistered(self) -> dict[str, str]:
        cont = self.continuum
        registered = {c.jid for c in cont.children.children()}
        return {cid: "cluster agent not registered" for cid, jid in cont.cluster_jids.items()
                if jid not in registered}

    def invalidate_reads(self) -> None:
        """Forget cached reads (after an API request that changes state)."""
        self.reads.invalidate()

    async def decisions(self, q: DecisionsQuery) -> DecisionsPage:
        """Decision records of the continuum and, over the protocol, of its subtree (at most
        `read_max_age` old; shared with other readers: do not mutate)."""
        return (await self.decisions_fresh(q)).value

    async def decisions_fresh(self, q: DecisionsQuery, *, newer_than: float | None = None) -> Fresh:
        """`decisions` with when its fan-out started; `newer_than`: one that started after that."""
        q = q.model_copy(update={"subtree": True, "reply_within": self.tree_wait})
        return await self.reads.get_fresh(("decisions", q.model_dump_json()), lambda: self._read_decisions(q),
                                          newer_than=newer_than)

    async def _read_decisions(self, q: DecisionsQuery) -> DecisionsPage:
        as_of = time.time()
        page = await collect_decisions(self.continuum, q, wait=self.tree_wait, budget=None, pages=TREE_PAGES)
        page.as_of = as_of
        if q.agent is None or q.agent in self.continuum.cluster_jids:
            page.unanswered.update({k: v for k, v in self._unregistered().items()
                                    if q.agent in (None, k)})
        return page

    async def collection_plans(self) -> dict[str, Any]:
        """What every agent of the slice collects (over the protocol), plus who did not answer (at most
        `read_max_age` old; shared with other readers: do not mutate)."""
        return await self.reads.get(("collection_plans",), self._read_plans)

    async def _read_plans(self) -> dict[str, Any]:
        q = TelemetryConfigQuery(subtree=True, reply_within=self.tree_wait)
        out = await collect_plans(self.continuum, q, wait=self.tree_wait, budget=None, pages=TREE_PAGES)
        out["unanswered"].update(self._unregistered())
        return out

    @property
    def sim(self) -> Any:
        return None if self.runtime is None else self.runtime.sim

    def sim_nodes(self) -> set[str]:
        return set(self.runtime.spec.nodes) if self.runtime is not None else set()
