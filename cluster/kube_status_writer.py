"""`.status` of our infrastructure custom resources (MLSysOpsCluster, MLSysOpsNode, MLSysOpsContinuum).

Those resources are the operator's descriptions: `mlsysops deploy apply` creates them from the slice (or
kubectl does). Agents own only `.status` and write it through the status subresource as a JSON merge patch
of what changed, like a kubelet writes its Node's status. A missing resource is reported (once, and in
`missing`) and retried, never created: a status without its description would be an object nobody owns.

An agent states what it observes with `set(kind, name, status)`: synchronous and cheap, so calling it every
monitor tick is fine; unchanged statuses are not written. Conditions are given as
`{"type", "status": bool, "reason", "message"}`; `lastTransitionTime` is added here and moves only when a
condition's status flips.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes.aio import client as k

from mlsysops.substrates.kubernetes.client import KubeError, RetryPolicy
from mlsysops.substrates.kubernetes.crds import update_status
from mlsysops.substrates.kubernetes.manifests import dns_label
from mlsysops.substrates.kubernetes.status_patch import iso, merge_diff
from mlsysops.substrates.kubernetes.sync_loop import SyncLoop

log = logging.getLogger(__name__)


def with_transitions(old: list[dict[str, Any]] | None, new: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Kubernetes-style conditions from `new` (status as bool), keeping each lastTransitionTime of `old`
    whose status did not change."""
    before = {c["type"]: c for c in old or []}
    out = []
    for cond in new:
        status = "True" if cond["status"] else "False"
        prev = before.get(cond["type"])
        since = prev["lastTransitionTime"] if prev and prev["status"] == status else iso(now)
        entry = {"type": cond["type"], "status": status, "reason": cond.get("reason"),
                 "message": cond.get("message"), "lastTransitionTime": since}
        # empty strings are left out: the 1.20 apiserver reads "" in a merge patch as null and rejects it
        out.append({key: value for key, value in entry.items() if value not in (None, "")})
    return out


class StatusWriter(SyncLoop):
    """Status of existing CRs of any of our kinds in one namespace, written on change only."""

    def __init__(self, api: k.ApiClient, namespace: str, *, retry_s: float = 2.0, missing_retry_s: float = 30.0,
                 policy: RetryPolicy | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(retry_s=retry_s, name=f"status-writer-{namespace}")
        self.api = api
        self.namespace = namespace
        self.policy = policy or RetryPolicy(attempts=2, request_timeout_s=5.0)
        self.clock = clock
        self.writes = 0
        self.last_error: str | None = None
        self.missing: set[tuple[str, str]] = set()    # (kind, name) without a resource to write to
        self.missing_retry_s = missing_retry_s          # rarely: a slice may describe nodes it never applied
        self._missing_since: dict[tuple[str, str], float] = {}
        self._wanted: dict[tuple[str, str], dict[str, Any]] = {}
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    def set(self, kind: str, name: str, status: dict[str, Any]) -> None:
        key = (kind, name)
        status = copy.deepcopy(status)
        if "conditions" in status:
            old = (self._wanted.get(key) or {}).get("conditions")
            status["conditions"] = with_transitions(old, status["conditions"], self.clock())
        if self._wanted.get(key) != status:
            self._wanted[key] = status
            self.wake()

    def status_of(self, kind: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self._wanted.get((kind, name)))

    @property
    def pending(self) -> bool:
        return any(self._written.get(key) != status for key, status in self._wanted.items())

    async def sync(self) -> bool:
        """Write what differs; True when everything writable is written. Never raises."""
        ok = True
        async with self._lock:
            now = time.monotonic()
            for key in sorted(self._wanted):
                if key in self.missing and now - self._missing_since[key] < self.missing_retry_s:
                    ok = False   # keeps the loop retrying; the resource may be applied any time
                    continue
                try:
                    await self._write(key)
                except KubeError as exc:
                    if exc.not_found:
                        if key not in self.missing:
                            log.warning("%s/%s has no custom resource in namespace %s: its status is kept "
                                        "and written once the description is applied", *key, self.namespace)
                        self.missing.add(key)
                        self._missing_since[key] = now
                    else:   # said once per distinct error: a down server is retried every retry_s
                        if str(exc) != self.last_error:
                            log.warning("status writer: %s (kept, retried later)", exc)
                        self.last_error = str(exc)
                    ok = False
                except Exception as exc:   # never the agent's problem; keep the state and retry
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("status writer: writing %s/%s failed", *key)
                    ok = False
        if ok:
            self.last_error = None
        return ok

    async def _write(self, key: tuple[str, str]) -> None:
        status = self._wanted[key]
        written = self._written.get(key)
        if written == status:
            return
        kind, name = key
        # unknown server state (first write, or after a failure): send everything, `None` clears nothing
        patch = status if written is None else merge_diff(written, status)
        await update_status(self.api, kind, self.namespace, dns_label(name), patch, policy=self.policy)
        self.writes += 1
        self.missing.discard(key)
        self._written[key] = copy.deepcopy(status)
