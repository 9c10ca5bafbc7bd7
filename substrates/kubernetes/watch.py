"""A resumable watch: list, then watch from the list's resourceVersion, forever.

* stream ends (server timeout) or drops (connection lost): resume from the last resourceVersion seen;
* 410 Gone (that version was compacted away): re-list, hand the full list to `on_sync`, watch again;
* other errors: back off (bounded, jittered) and resume; the watch never ends on its own.

Consumers are level-triggered: `on_sync(items)` gets the complete current state after every (re)list,
`on_event(type, obj)` each change in between (objects are plain dicts, as the API server sent them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes.aio import client as k
from kubernetes.aio import watch as kw

from mlsysops.substrates.kubernetes.client import TRANSIENT, KubeError, RetryPolicy, call

log = logging.getLogger(__name__)

OnSync = Callable[[list[dict[str, Any]]], Awaitable[None]]
OnEvent = Callable[[str, dict[str, Any]], Awaitable[None]]


class ResourceWatch:
    def __init__(self, api: k.ApiClient, list_fn: Callable[..., Awaitable[Any]], *args: Any,
                 on_sync: OnSync, on_event: OnEvent, label_selector: str | None = None,
                 field_selector: str | None = None, timeout_seconds: int = 60,
                 resource_version: str | None = None, policy: RetryPolicy | None = None) -> None:
        self.api = api
        self.list_fn = list_fn
        self.args = args
        self.on_sync = on_sync
        self.on_event = on_event
        self.selectors = {key: value for key, value in
                          (("label_selector", label_selector), ("field_selector", field_selector)) if value}
        self.timeout_seconds = timeout_seconds
        self.policy = policy or RetryPolicy()
        self.resource_version = resource_version   # given: resume from there, without a first list
        self.lists = 0           # initial list + re-lists after 410
        self.resumes = 0         # watch restarts from a known resourceVersion
        self.last_error: str | None = None
        self.synced = asyncio.Event()

    async def relist(self) -> None:
        result = await call(self.list_fn, *self.args, policy=self.policy, **self.selectors)
        raw = self.api.sanitize_for_serialization(result)
        self.resource_version = raw["metadata"]["resourceVersion"]
        self.lists += 1
        await self.on_sync(raw.get("items") or [])
        self.synced.set()

    async def run(self) -> None:
        errors = 0
        need_list = self.resource_version is None
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                await self._stream()
                self.resumes += 1   # stream ended: resume from the last version seen
                errors = 0
            except k.ApiException as exc:
                if exc.status == 410:
                    log.info("watch %s: 410 Gone at %s, re-listing", self._name, self.resource_version)
                    need_list = True
                    continue
                errors += 1
                self.last_error = f"{exc.status} {exc.reason}"
            except (KubeError, *TRANSIENT) as exc:
                errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            if errors:
                delay = self.policy.backoff(min(errors, 8))
                log.info("watch %s: %s, resuming in %.2fs", self._name, self.last_error, delay)
                await asyncio.sleep(delay)

    @property
    def _name(self) -> str:
        return getattr(self.list_fn, "__name__", "watch")

    async def _stream(self) -> None:
        w = kw.Watch()
        async with asyncio.timeout(self.timeout_seconds + self.policy.request_timeout_s):
            try:
                async for ev in w.stream(self.list_fn, *self.args, resource_version=self.resource_version,
                                         timeout_seconds=self.timeout_seconds,
                                         allow_watch_bookmarks=True, **self.selectors):
                    obj = ev["raw_object"]
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if ev["type"] != "BOOKMARK":
                        await self.on_event(ev["type"], obj)
            finally:
                await w.close()
