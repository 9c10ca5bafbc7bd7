"""One `kubernetes.aio` ApiClient per cluster, and bounded retries around every call.

`call(fn, *args, **kw)` retries what a later attempt can fix: timeouts, connection errors, 5xx and 429
(honouring Retry-After), with exponential backoff and full jitter, at most `RetryPolicy.attempts` tries.
It adds a per-request timeout so a hung server cannot hang the agent. Anything else, and the last
failure, becomes a `KubeError` the caller reports (agents never crash on the API server's behalf).

409 Conflict: a server-side apply without `force` is retried once with `force=True` (we own the fields
we apply); other 409s (AlreadyExists, stale resourceVersion) go to the caller, who knows whether they
mean "already done" or "re-read and retry".
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
from kubernetes.aio import client as k
from kubernetes.aio import config as kcfg

log = logging.getLogger(__name__)

T = TypeVar("T")
FIELD_MANAGER = "mlsysops"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class KubeError(Exception):
    """An API call that failed for good; `status` is the HTTP status (0: no answer from the server)."""

    def __init__(self, message: str, status: int = 0, reason: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.attempts = attempts

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_s: float = 0.1
    cap_s: float = 5.0
    request_timeout_s: float = 10.0

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** attempt))


def retry_after_s(exc: k.ApiException) -> float | None:
    headers = exc.headers or {}
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        try:
            import datetime as dt
            return max(0.0, (parsedate_to_datetime(raw) - dt.datetime.now(dt.UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def _api_message(exc: k.ApiException) -> str:
    import json
    try:
        body = json.loads(exc.body) if exc.body else {}
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


TRANSIENT = (asyncio.TimeoutError, TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


async def call(fn: Callable[..., Awaitable[T]], *args: Any, policy: RetryPolicy | None = None,
               **kwargs: Any) -> T:
    """Await `fn(*args, **kwargs)` with bounded retries; raises `KubeError` when it gives up."""
    policy = policy or RetryPolicy()
    kwargs.setdefault("_request_timeout", policy.request_timeout_s)
    name = getattr(fn, "__name__", "call")
    forced = False
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn(*args, **kwargs)
        except k.ApiException as exc:
            status = int(exc.status or 0)
            if (status == 409 and kwargs.get("_content_type") == APPLY and not kwargs.get("force")
                    and not forced):
                log.warning("%s: apply conflict, re-applying with force: %s", name, _api_message(exc))
                kwargs["force"] = forced = True
                continue
            retryable = status == 429 or status >= 500
            if not retryable or attempt >= policy.attempts:
                raise KubeError(f"{name}: {status} {_api_message(exc)}", status, str(exc.reason or ""),
                                attempt) from exc
            delay = retry_after_s(exc) if status == 429 else None
            delay = min(policy.cap_s, delay) if delay is not None else policy.backoff(attempt)
            log.info("%s: %s, retry %d/%d in %.2fs", name, status, attempt, policy.attempts - 1, delay)
        except TRANSIENT as exc:
            if attempt >= policy.attempts:
                raise KubeError(f"{name}: API server unreachable: {type(exc).__name__} {exc}", 0,
                                type(exc).__name__, attempt) from exc
            delay = policy.backoff(attempt)
            log.info("%s: %s, retry %d/%d in %.2fs", name, type(exc).__name__, attempt,
                     policy.attempts - 1, delay)
        await asyncio.sleep(delay)


async def apply(patch_fn: Callable[..., Awaitable[T]], *args: Any, body: dict[str, Any],
                policy: RetryPolicy | None = None, **kwargs: Any) -> T:
    """Server-side apply with our field manager, forcing ownership of the fields we set."""
    return await call(patch_fn, *args, body, field_manager=FIELD_MANAGER, force=True,
                      _content_type=APPLY, policy=policy, **kwargs)


async def delete(method: Callable[..., Awaitable[Any]], *args: Any, policy: RetryPolicy | None = None,
                 **kwargs: Any) -> bool:
    """Delete with retries; True if deleted, False if it was already gone. The answer is not parsed:
    servers answer some deletes with a Status instead of the object (Services on 1.20), which the
    typed models reject."""
    raw = getattr(method.__self__, f"{method.__name__}_without_preload_content")

    async def once(*a: Any, **kw: Any) -> bool:
        resp = await raw(*a, **kw)
        try:
            body = await resp.read()
            if resp.status >= 400:
                exc = k.ApiException(status=resp.status, reason=resp.reason)
                exc.body, exc.headers = body, resp.headers
                raise exc
        finally:
            resp.release()
        return True

    once.__name__ = method.__name__
    try:
        return await call(once, *args, policy=policy, **kwargs)
    except KubeError as exc:
        if exc.not_found:
            return False
        raise


async def connect(kubeconfig: str | None = None, context: str | None = None) -> k.ApiClient:
    """An ApiClient for one cluster (kubeconfig + context; None: $KUBECONFIG / ~/.kube/config).
    Close it with `await api.close()` or `async with api:`."""
    return await kcfg.new_client_from_config(config_file=kubeconfig, context=context)


class ClusterClients:
    """One ApiClient per cluster id, created on first use and closed together."""

    def __init__(self, sources: dict[str, tuple[str | None, str | None]]) -> None:
        self._sources = dict(sources)    # cluster id -> (kubeconfig path, context)
        self._clients: dict[str, k.ApiClient] = {}
        self._lock = asyncio.Lock()

    async def get(self, cluster: str) -> k.ApiClient:
        async with self._lock:
            if cluster not in self._clients:
                if cluster not in self._sources:
                    raise KubeError(f"no kubeconfig for cluster {cluster!r}")
                self._clients[cluster] = await connect(*self._sources[cluster])
            return self._clients[cluster]

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for api in clients:
            await api.close()
