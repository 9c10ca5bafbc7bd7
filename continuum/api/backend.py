"""What the API reads and drives: the continuum agent (and, in `mlsysops up`, the whole slice runtime).

Views of other agents (their decision records, what they collect) are read over the protocol from the
continuum agent down (`mlsysops.agents.tree_reads`) in both run modes, so `mlsysops up` and one agent per
process answer alike; only management actions on in-process agents (policies, per-agent mode) and the
simulator need the runtime.
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.tree_reads import (
    DecisionsPage,
    DecisionsQuery,
    TelemetryConfigQuery,
    collect_decisions,
    collect_plans,
)

TREE_WAIT = 2.0        # seconds the API waits for the clusters (they give their nodes half of it)
TREE_PAGES = 20        # pages per cluster for one decision read (each under the protocol's message limit)


class ApiBackend:
    """The continuum agent, and with a `SliceRuntime` every agent and the simulator of the process."""

    def __init__(self, continuum: Any = None, *, runtime: Any = None, tree_wait: float = TREE_WAIT) -> None:
        if continuum is None and runtime is None:
            raise ValueError("ApiBackend needs the continuum agent or a SliceRuntime")
        self._continuum = continuum
        self.runtime = runtime
        self.tree_wait = tree_wait

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

    async def decisions(self, q: DecisionsQuery) -> DecisionsPage:
        """Decision records of the continuum and, over the protocol, of its subtree."""
        q = q.model_copy(update={"subtree": True, "reply_within": self.tree_wait})
        page = await collect_decisions(self.continuum, q, wait=self.tree_wait, budget=None, pages=TREE_PAGES)
        if q.agent is None or q.agent in self.continuum.cluster_jids:
            page.unanswered.update({k: v for k, v in self._unregistered().items()
                                    if q.agent in (None, k)})
        return page

    async def collection_plans(self) -> dict[str, Any]:
        """What every agent of the slice collects (over the protocol), plus who did not answer."""
        q = TelemetryConfigQuery(subtree=True, reply_within=self.tree_wait)
        out = await collect_plans(self.continuum, q, wait=self.tree_wait, budget=None, pages=TREE_PAGES)
        out["unanswered"].update(self._unregistered())
        return out

    @property
    def sim(self) -> Any:
        return None if self.runtime is None else self.runtime.sim

    def sim_nodes(self) -> set[str]:
        return set(self.runtime.spec.nodes) if self.runtime is not None else set()
