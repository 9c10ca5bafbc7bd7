"""The storage service: apps' buckets as replicas on S3-compatible stores, one store per site.

Commands (what the storage policy emits; anything else is refused naming the field)::

    {"command": "place",  "app": "shop", "bucket": "images", "sites": ["eu-1", "eu-2"], "reason": "..."}
    {"command": "move",   "app": "shop", "bucket": "images", "from": "eu-1", "to": "eu-2"}
    {"command": "delete", "app": "shop", "bucket": "images"}

`place` makes the bucket's replicas exactly `sites` (it also creates a new bucket), make-before-break:
every new replica is copied from a complete one and checksum-verified (`replica_copy`), only then are the
replicas on sites no longer wanted deleted. A copy that fails midway keeps every old replica, so nothing
is lost, and the command fails with the store and operation that failed. Each site is checked against
the bucket's location restrictions first (`site_verdicts`, the same filter admission uses): a site the
bucket may not use is refused with the field path of the restriction.

`get_state()` reads the stores themselves (buckets, replica markers, object counts): after a restart the
service adopts what the stores hold. Reads and writes of objects (`read`/`write`) go through the service,
which records each access in its `AccessLog`: the telemetry the storage policy places replicas from.
boto3 is synchronous, so every store call runs in a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlsysops.agents.descriptions.storage_intents import (
    BucketIntent,
    StorageSite,
    bucket_intents,
    s3_bucket_name,
    site_verdicts,
)
from mlsysops.mechanisms.replica_copy import (
    CopyProgress,
    copy_replica,
    discard_partial,
    read_marker,
    user_objects,
    write_marker,
)
from mlsysops.mechanisms.storage_access_log import AccessLog
from mlsysops.substrates.s3.client import S3Site, StoreError

log = logging.getLogger(__name__)

COMMANDS = ("place", "move", "delete")
LatencyFn = Callable[[str, str], float]     # (from node, site) -> modelled round trip in ms


class StorageCommandError(ValueError):
    """A storage command that cannot be carried out as asked; the message names the field."""


class StorageMechanism:
    name = "storage"

    def __init__(self, sites: Mapping[str, S3Site], models: Sequence[StorageSite], *,
                 app_models: Mapping[str, Any] | None = None, latency_ms: LatencyFn | None = None,
                 access_log: AccessLog | None = None, rtt_nodes: Callable[[], Sequence[str]] | None = None) -> None:
        self.sites = dict(sites)
        self.models = {m.name: m for m in models}
        missing = sorted(set(self.sites) - set(self.models))
        if missing:
            raise ValueError(f"storage sites {missing} have a store but no description")
        self.app_models = app_models if app_models is not None else {}
        self.latency_ms = latency_ms
        self.access = access_log or AccessLog()
        self.rtt_nodes = rtt_nodes     # nodes to tabulate RTTs from besides those that accessed (where apps run)
        # s3 name -> site -> marker state ("complete", "copying", ...), as last read from the stores
        self.replicas: dict[str, dict[str, str]] = {}
        self.unreachable: dict[str, str] = {}
        self.copies: dict[str, CopyProgress] = {}     # in flight, by s3 name
        self.history: list[dict[str, Any]] = []       # finished commands (bounded)
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_copy_object: Callable[[CopyProgress], None] | None = None   # called per copied object (thread)

    def initialize(self, *, app_models: Mapping[str, Any]) -> None:
        self.app_models = app_models

    # -- intents ------------------------------------------------------------------------------------
    def intents(self) -> dict[str, BucketIntent]:
        out = {}
        for model in list(self.app_models.values()):
            for intent in bucket_intents(model):
                out[intent.s3_name] = intent
        return out

    def _intent(self, app: Any, bucket: Any) -> BucketIntent:
        if not isinstance(app, str) or not app:
            raise StorageCommandError(f"app: expected an app name, got {app!r}")
        if not isinstance(bucket, str) or not bucket:
            raise StorageCommandError(f"bucket: expected a bucket_id, got {bucket!r}")
        intent = self.intents().get(s3_bucket_name(app, bucket))
        if intent is None:
            raise StorageCommandError(f"bucket: app {app!r} declares no bucket {bucket!r}")
        return intent

    def _check_sites(self, intent: BucketIntent, sites: Any) -> list[str]:
        if not isinstance(sites, list) or not sites or not all(isinstance(s, str) for s in sites):
            raise StorageCommandError(f"sites: expected a non-empty list of site names, got {sites!r}")
        unknown = [s for s in sites if s not in self.sites]
        if unknown:
            raise StorageCommandError(f"sites: unknown storage site(s) {unknown}; known: {sorted(self.sites)}")
        verdicts = site_verdicts(intent, [self.models[s] for s in sites])
        refused = [why for why in verdicts.values() if why]
        if refused:
            raise StorageCommandError("; ".join(refused))
        return list(dict.fromkeys(sites))

    # -- the stores' truth --------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Which replica each site holds, from the sites themselves (concurrently, one thread each)."""
        results = await asyncio.gather(*(asyncio.to_thread(self._read_site, s) for s in self.sites.values()),
                                       return_exceptions=True)
        seen: dict[str, dict[str, str]] = {}
        for site, res in zip(self.sites, results):
            if isinstance(res, StoreError):
                self.unreachable[site] = str(res)
                # what an unreachable site held is unknown now: keep the last known rows, marked
                for name, by_site in self.replicas.items():
                    if site in by_site:
                        seen.setdefault(name, {})[site] = "unreachable"
                continue
            if isinstance(res, BaseException):
                raise res
            self.unreachable.pop(site, None)
            for name, state in res.items():
                seen.setdefault(name, {})[site] = state
        self.replicas = seen

    def _read_site(self, store: S3Site) -> dict[str, str]:
        out = {}
        for name in store.buckets():
            marker = read_marker(store, name)
            if marker is not None:
                out[name] = str(marker.get("state", "corrupt"))
        return out

    async def get_state(self) -> dict[str, Any]:
        await self.refresh()
        intents = self.intents()
        buckets = {}
        for name in sorted(set(self.replicas) | set(intents)):
            intent = intents.get(name)
            buckets[name] = {
                "app": intent.app if intent else None, "bucket": intent.bucket_id if intent else None,
                "declared": intent is not None, "replicas_wanted": intent.replicas if intent else None,
                "replicas": dict(sorted(self.replicas.get(name, {}).items())),
                "copy": _progress(self.copies[name]) if name in self.copies else None}
        return {"sites": {n: {"region": m.region, "gdpr": m.gdpr, "layer": m.layer, "node": m.node,
                              "endpoint": self.sites[n].endpoint, "reachable": n not in self.unreachable,
                              "error": self.unreachable.get(n)} for n, m in sorted(self.models.items())},
                "buckets": buckets, "access": self.access.summary(), "rtt_ms": self._rtt_table(),
                "history": self.history[-20:]}

    def _rtt_table(self) -> dict[str, dict[str, float]]:
        """Modelled RTT from every node that accessed a bucket recently to every site."""
        if self.latency_ms is None:
            return {}
        nodes = sorted({a.from_node for a in self.access.recent()} | set(self.rtt_nodes() if self.rtt_nodes else ()))
        return {n: {s: round(self.latency_ms(n, s), 3) for s in self.sites} for n in nodes}

    async def get_options(self) -> dict[str, Any]:
        return {"commands": list(COMMANDS), "sites": sorted(self.sites)}

    # -- commands -----------------------------------------------------------------------------------
    async def apply(self, command: Any) -> dict[str, Any]:
        started = time.time()
        try:
            detail = await self._execute(command)
            ok = True
        except (StorageCommandError, StoreError, RuntimeError) as exc:
            detail, ok = str(exc), False
        self.history.append({"at": started, "command": command, "ok": ok, "detail": detail})
        del self.history[:-200]
        if not ok:
            log.warning("storage command failed: %s", detail)
        return {"ok": ok, "detail": detail}

    async def _execute(self, command: Any) -> str:
        if not isinstance(command, dict):
            raise StorageCommandError(f"command: expected a mapping, got {type(command).__name__}")
        op = command.get("command")
        if op not in COMMANDS:
            raise StorageCommandError(f"command: expected one of {list(COMMANDS)}, got {op!r}")
        intent = self._intent(command.get("app"), command.get("bucket"))
        lock = self._locks.setdefault(intent.s3_name, asyncio.Lock())
        async with lock:     # one command per bucket at a time: two moves never interleave
            await self.refresh()
            if op == "delete":
                return await self._delete(intent)
            current = self._holders(intent.s3_name)
            if op == "move":
                src, dst = command.get("from"), command.get("to")
                if src not in current:
                    raise StorageCommandError(f"from: site {src!r} holds no complete replica of {intent.key} "
                                              f"(complete on {current})")
                wanted = [dst if s == src else s for s in current]
            else:
                wanted = command.get("sites")
            return await self._place(intent, self._check_sites(intent, wanted))

    def _holders(self, name: str) -> list[str]:
        return sorted(s for s, st in self.replicas.get(name, {}).items() if st == "complete")

    async def _place(self, intent: BucketIntent, wanted: list[str]) -> str:
        name = intent.s3_name
        holders = self._holders(name)
        if self.replicas.get(name) and not holders:
            raise StorageCommandError(f"bucket {intent.key}: no complete replica is reachable "
                                      f"({self.replicas[name]}); refusing to create an empty one")
        new = [s for s in wanted if s not in holders]
        done = []
        for site in new:
            if site in self.unreachable:
                raise StoreError(site, f"copy {name}", f"site unreachable ({self.unreachable[site]}); "
                                 f"replicas kept on {holders}")
            if not holders and not done:
                await asyncio.to_thread(self._create_empty, self.sites[site], intent)
            else:
                await self._copy(intent, self._nearest(done + holders, site), site)
            done.append(site)
            self.replicas.setdefault(name, {})[site] = "complete"
        # break only after make: every wanted replica is complete now
        dropped = [s for s in holders if s not in wanted]
        for site in dropped:
            await asyncio.to_thread(self.sites[site].delete_bucket, name)
            self.replicas.get(name, {}).pop(site, None)
        if not new and not dropped:
            return f"{intent.key}: already on {sorted(wanted)}"
        return f"{intent.key}: replicas on {sorted(wanted)} (added {new or 'none'}, removed {dropped or 'none'})"

    def _create_empty(self, store: S3Site, intent: BucketIntent) -> None:
        store.create_bucket(intent.s3_name)
        write_marker(store, intent.s3_name, intent.app, intent.bucket_id, "complete")

    def _nearest(self, candidates: list[str], to: str) -> str:
        """The copy source: the complete replica closest to the target site (reachable ones first)."""
        node = self.models[to].node
        def cost(s: str) -> tuple[bool, float, str]:
            rtt = self.latency_ms(node, s) if self.latency_ms is not None and node else 0.0
            return (s in self.unreachable, rtt, s)
        return min(candidates, key=cost)

    async def _copy(self, intent: BucketIntent, source: str, target: str) -> None:
        name = intent.s3_name
        if target in self.replicas.get(name, {}):   # a leftover of a failed copy: start clean
            await asyncio.to_thread(self.sites[target].delete_bucket, name)
        progress = self.copies[name] = CopyProgress(name, source, target)
        try:
            await asyncio.to_thread(copy_replica, self.sites[source], self.sites[target], name, intent.app,
                                    intent.bucket_id, progress, self.on_copy_object)
        except Exception as exc:
            why = await asyncio.to_thread(discard_partial, self.sites[target], name)
            left = f"; the partial copy on {target} stays marked 'copying' ({why})" if why else ""
            raise RuntimeError(f"copy of {intent.key} from {source} to {target} failed after "
                               f"{progress.copied}/{progress.total} objects: {exc}; the replica on {source} "
                               f"is kept{left}") from exc
        finally:
            self.copies.pop(name, None)

    async def _delete(self, intent: BucketIntent) -> str:
        name = intent.s3_name
        sites = sorted(self.replicas.get(name, {}))
        for site in sites:
            await asyncio.to_thread(self.sites[site].delete_bucket, name)
        self.replicas.pop(name, None)
        return f"{intent.key}: deleted from {sites or 'no site'}"

    # -- the data path ------------------------------------------------------------------------------
    def _by_distance(self, sites: list[str], from_node: str) -> list[str]:
        if self.latency_ms is None:
            return sorted(sites)
        return sorted(sites, key=lambda s: (s in self.unreachable, self.latency_ms(from_node, s), s))

    def _replica_sites(self, app: str, bucket: str) -> tuple[str, list[str]]:
        name = s3_bucket_name(app, bucket)
        sites = self._holders(name)
        if not sites:
            raise StorageCommandError(f"bucket {app}/{bucket}: no complete replica (known: "
                                      f"{self.replicas.get(name, {})})")
        return name, sites

    async def read(self, app: str, bucket: str, key: str, *, component: str, from_node: str) -> bytes:
        """From the nearest complete replica; another one if that store fails."""
        name, sites = self._replica_sites(app, bucket)
        errors = []
        for site in self._by_distance(sites, from_node):
            t0 = time.perf_counter()
            try:
                data = await asyncio.to_thread(self.sites[site].get, name, key)
            except StoreError as exc:
                if exc.missing:
                    raise
                errors.append(str(exc))
                continue
            self._record(app, bucket, component, from_node, "read", len(data), site, t0)
            return data
        raise StoreError(sites[0], f"get {name}/{key}", "every replica failed: " + "; ".join(errors))

    async def write(self, app: str, bucket: str, key: str, data: bytes, *, component: str, from_node: str) -> list[str]:
        """To every complete replica and to a copy in flight (its next pass would catch it, this is sooner).
        Succeeds if at least one replica took it; returns the sites that did."""
        name, sites = self._replica_sites(app, bucket)
        copying = self.copies.get(name)
        targets = sites + ([copying.target] if copying and copying.target not in sites else [])
        t0 = time.perf_counter()
        results = await asyncio.gather(*(asyncio.to_thread(self.sites[s].put, name, key, data) for s in targets),
                                       return_exceptions=True)
        ok = [s for s, r in zip(targets, results) if r is None]
        if not any(s in sites for s in ok):
            raise StoreError(sites[0], f"put {name}/{key}", "; ".join(str(r) for r in results if r is not None))
        slowest = max(ok, key=lambda s: self.latency_ms(from_node, s) if self.latency_ms else 0.0)
        self._record(app, bucket, component, from_node, "write", len(data), slowest, t0)
        return ok

    def _record(self, app: str, bucket: str, component: str, from_node: str, op: str, size: int, site: str,
                t0: float) -> None:
        service_ms = (time.perf_counter() - t0) * 1000
        network_ms = self.latency_ms(from_node, site) if self.latency_ms is not None else 0.0
        self.access.record(f"{app}/{bucket}", component, from_node, op, size, service_ms + network_ms, site)

    async def objects(self, app: str, bucket: str) -> dict[str, list[dict[str, Any]]]:
        """Per site holding the bucket: its objects (key, size, etag), read from the store."""
        name = s3_bucket_name(app, bucket)
        out = {}
        for site in sorted(self.replicas.get(name, {})):
            try:
                objs = await asyncio.to_thread(user_objects, self.sites[site], name)
            except StoreError as exc:
                out[site] = [{"error": str(exc)}]
                continue
            out[site] = [{"key": o.key, "size": o.size, "etag": o.etag} for o in objs]
        return out


def _progress(p: CopyProgress) -> dict[str, Any]:
    return {"source": p.source, "target": p.target, "copied": p.copied, "total": p.total, "bytes": p.bytes,
            "since": p.started}
