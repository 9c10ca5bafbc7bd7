"""The cluster's table of instances: the only place that writes it.

Rows are what the cluster knows of each instance: ``instance_id, app, component, node, status, since,
reason, cpu_request_cores, memory_request_bytes`` and, for a failed instance the substrate keeps
retrying in place, ``retrying``. Readers get read-only views (`Mapping[str, Mapping]`); the writers are
the methods below, named after who calls them, so the invariants live here:

- `since` moves only when `status` or `reason` changes (QoS windows and "since" in reports rely on it);
- leaving `failed` drops `retrying` (a running instance is not being retried);
- a placement outcome never downgrades a `running` row back to `deploying`;
- nothing is ever deleted: `removed` rows stay so late reports cannot resurrect them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from mlsysops.agents.placement.cluster_view import ACTIVE

Row = Mapping[str, Any]


class InstanceTable(Mapping[str, Row]):
    """Instance id -> row. A read-only mapping for everyone but its owner, the cluster agent."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._clock = clock

    # -- reading (Mapping) --------------------------------------------------------------------------
    def __getitem__(self, iid: str) -> Row:
        return MappingProxyType(self._rows[iid])

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, iid: object) -> bool:
        return iid in self._rows

    def __repr__(self) -> str:
        return f"InstanceTable({self._rows!r})"

    def on_node(self, node: str, statuses: Iterable[str] = ACTIVE) -> list[str]:
        """Ids of the instances on `node` whose status is one of `statuses`."""
        wanted = tuple(statuses)
        return [iid for iid, row in self._rows.items() if row["node"] == node and row["status"] in wanted]

    # -- writing ------------------------------------------------------------------------------------
    def adopt(self, inst: Mapping[str, Any], status: str, reason: str | None = None, *,
              retrying: bool | None = None) -> bool:
        """Record an instance we did not place (substrate state at start-up or reconcile, a node's report):
        inserted only if unknown, so what we know is never overwritten. Returns True if inserted."""
        iid = inst["instance_id"]
        if iid in self._rows:
            return False
        self._rows[iid] = self._new_row(inst, status, reason)
        if retrying is not None:
            self._rows[iid]["retrying"] = retrying
        return True

    def placed(self, inst: Mapping[str, Any]) -> None:
        """A placement action (deploy/move/change_spec) succeeded: the instance is `deploying` from now on,
        unless it already runs (a repeated plan must not make a running instance look like it restarts)."""
        prev = self._rows.get(inst["instance_id"])
        if prev is None or prev["status"] != "running":
            self._rows[inst["instance_id"]] = self._new_row(inst, "deploying")

    def set_status(self, iid: str, status: str, reason: str | None = None, *,
                   retrying: bool | None = None) -> bool:
        """Status (and why) of a known instance; unknown ids are ignored. `retrying`, when given, is set
        after the change (the substrate says whether it keeps retrying a failed instance in place).
        Returns True if status or reason changed."""
        row = self._rows.get(iid)
        if row is None:
            return False
        changed = row["status"] != status or row["reason"] != reason
        if changed:
            row.update(status=status, reason=reason, since=self._clock())
            if status != "failed":
                row.pop("retrying", None)
        if retrying is not None:
            row["retrying"] = retrying
        return changed

    def mark_lost(self, node: str, reason: str) -> list[str]:
        """Every active instance on `node` becomes `lost` (node lost, not ready, or drained): relocation's
        business from now on. Returns their ids."""
        lost = self.on_node(node)
        for iid in lost:
            self.set_status(iid, "lost", reason)
        return lost

    def remove(self, iid: str, reason: str) -> None:
        """The instance is gone for good (removed, replaced, relocated); the row stays as `removed`."""
        self.set_status(iid, "removed", reason)

    def _new_row(self, inst: Mapping[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
        return {"instance_id": inst["instance_id"], "app": inst["app"], "component": inst["component"],
                "node": inst["node"], "status": status, "since": self._clock(), "reason": reason,
                "cpu_request_cores": float(inst.get("cpu_request_cores", 0.0)),
                "memory_request_bytes": int(inst.get("memory_request_bytes", 0))}
