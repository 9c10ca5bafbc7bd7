"""`MLConnectorClient`: what every agent's policies get as `ml_connector`, and the relay of its children.

On the continuum the client reads the registry of the `MLConnectorService` in the same process. Below it,
`get_model` fetches the version from the parent over XMPP in `wire.CHUNK_BYTES` chunks, checks size and
sha256, loads it (`formats.load_model`, which checks the card) and caches it in memory and, when the
agent has a state directory, on disk (`model-cache/`, so a restarted agent serves its last model while its
parent is away). A cluster agent answers its nodes' `model.fetch` from that cache (fetching from the
continuum first), and relays their `model.report` / `model.train` up.

What a policy sees:
* `await get_model(name, version=None, features=None)`: the model (None = production), or None when there
  is no usable one - then the agent records, once per change, "no model NAME (why): deciding with
  heuristics". A fetched version that fails its checks is refused and the previous cached version keeps
  serving. `features` (optional) is the policy's feature list: a card with other inputs is refused.
  A production lookup reuses the cached model for `refresh_interval` seconds (no round trip per decision),
  and a lookup that found nothing is not retried for as long (a new model is seen within that time).
* `cached(name)`: sync, the last model loaded for `name` (or None), for hot paths; a production model
  older than `refresh_interval` is refreshed in the background, so a promotion reaches hot paths too.
* `await submit_training(name, seed=0, trainer=None)`: the job's row (a training job at the continuum).
* `await report(name, version, features, prediction, observed)`: buffered (never waits for the network),
  flushed every `report_interval`; if the buffer overflows, the oldest are dropped *and* that is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsysops.agents.agent_base import HandlerError, RequestError, RequestFailed
from mlsysops.agents.ml import wire
from mlsysops.agents.ml.card import ModelCard, check_features
from mlsysops.agents.ml.errors import ModelError
from mlsysops.agents.ml.formats import load_model
from mlsysops.agents.protocol import Envelope, Performative

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 5.0
REPORT_INTERVAL = 1.0
REPORT_BUFFER = 10_000
FETCH_TIMEOUT = 2.0         # per chunk, one retry: a first fetch must fit in a policy's timeout


@dataclass
class Cached:
    name: str
    version: int
    format: str
    sha256: str
    card: dict[str, Any]
    artifact: bytes
    model: Any
    checked: float            # monotonic time of the last confirmation from the parent
    production: bool          # fetched as "the production version"


class MLConnectorClient:
    def __init__(self, agent: Any, *, cache_dir: Path | None = None, refresh_interval: float = REFRESH_INTERVAL,
                 report_interval: float = REPORT_INTERVAL, fetch_timeout: float = FETCH_TIMEOUT) -> None:
        self.agent = agent
        self.service: Any = None         # MLConnectorService when this agent hosts the registry (continuum)
        self.cache_dir = cache_dir
        self.refresh_interval = refresh_interval
        self.report_interval = report_interval
        self.fetch_timeout = fetch_timeout
        self._models: dict[tuple[str, int], Cached] = {}
        self._production: dict[str, Cached] = {}
        self._last: dict[str, Cached] = {}
        self._locks: dict[tuple[str, int | None], asyncio.Lock] = {}
        self._said: dict[str, str] = {}          # name -> the last availability statement recorded
        self._reports: deque[dict[str, Any]] = deque()
        self.reports_dropped = 0
        self._flusher: asyncio.Task[None] | None = None
        self._refreshing: dict[str, asyncio.Task[Any]] = {}
        self._misses: dict[tuple[str, int | None], tuple[float, ModelError]] = {}   # recent failed fetches
        self.stats = {"fetches": 0, "chunks": 0, "bytes": 0, "unchanged": 0, "refused": 0}
        self._load_disk_cache()
        agent.on(wire.MODEL_FETCH, self._handle_fetch)
        agent.on(wire.MODEL_REPORT, self._handle_report, performatives=(Performative.INFORM,))
        agent.on(wire.MODEL_TRAIN, self._handle_train)

    # -- what policies call ---------------------------------------------------------------------------
    async def get_model(self, name: str, version: int | None = None, *,
                        features: Sequence[str] | None = None) -> Any:
        try:
            entry = await self._entry(name, version)
            if features is not None:
                check_features(entry.card, list(features))
        except ModelError as exc:
            self._say(name, f"no model {name}" + (f" v{version}" if version else "") + f" ({exc}): deciding with "
                      "heuristics", "error", {"model": name, "version": version, "field": exc.field})
            return None
        self._last[name] = entry
        self._say(name, f"model {name} v{entry.version} in use", "info", {"model": name, "version": entry.version,
                                                                        "sha256": entry.sha256})
        return entry.model

    def cached(self, name: str) -> Any:
        """The last model loaded for `name`, without waiting; when it is the production one and older than
        `refresh_interval`, a refresh runs in the background (the next call sees a newly promoted version)."""
        entry = self._last.get(name) or self._production.get(name)
        if entry is None:
            return None
        if entry.production and time.monotonic() - entry.checked >= self.refresh_interval:
            task = self._refreshing.get(name)
            if task is None or task.done():
                self._refreshing[name] = self.agent.spawn(self.get_model(name), name=f"ml-refresh:{name}")
        return entry.model

    async def submit_training(self, name: str, seed: int = 0, trainer: str | None = None, *,
                              _remote: bool = False) -> dict[str, Any]:
        """The job's row (`status` queued ...), or `{"status": "refused", "error": ...}` when it could not be
        asked for (no trainer, parent unreachable): recorded, never raised into the policy."""
        try:
            if self.service is not None:
                return self.service.train(name, seed=seed, trainer=trainer, remote=_remote)
            if self.agent.parent is None:
                raise ModelError(name, None, "transfer", "this agent has no parent to ask for training")
            reply = await self.agent.request(self.agent.parent, wire.MODEL_TRAIN,
                                             wire.ModelTrain(name=name, seed=seed, trainer=trainer))
            return reply.body
        except (ModelError, RequestError) as exc:
            if _remote and isinstance(exc, ModelError):
                raise                                  # a child's request: the FAILURE carries the reason
            why = str(exc) if isinstance(exc, ModelError) else _why(exc).replace("transfer", "training request")
            record = getattr(self.agent, "record_event", None)
            if record is not None:
                record(f"training of {name} not started: {why}", outcome="error", inputs={"model": name})
            return {"name": name, "status": "refused", "error": why}

    async def report(self, name: str, version: int | None, features: Any, prediction: float | None,
                     observed: float, t: float | None = None) -> None:
        if not isinstance(features, dict):     # values in the order of the model's inputs
            names = getattr(self.cached(name), "feature_names", None)
            values = [float(v) for v in features]
            if names is None or len(names) != len(values):
                raise ModelError(name, version, "features", f"{len(values)} values without names: give a "
                                 "{name: value} dict" + ("" if names is None else f" or values for {names}"))
            features = dict(zip(names, values))
        self._queue([{"name": name, "version": version, "ts": time.time() if t is None else float(t),
                      "features": {str(k): float(v) for k, v in features.items()},
                      "prediction": None if prediction is None else float(prediction), "observed": float(observed)}])

    # -- cache and fetch ------------------------------------------------------------------------------
    async def _entry(self, name: str, version: int | None) -> Cached:
        if self.service is not None:        # the registry is here
            info, model = self.service.registry.load(name, version)
            return Cached(name, info.version, info.format, info.sha256, info.card, b"", model, time.monotonic(),
                          version is None)
        if version is not None and (name, version) in self._models:
            return self._models[(name, version)]     # a numbered version never changes
        current = self._production.get(name) if version is None else None
        if current is not None and time.monotonic() - current.checked < self.refresh_interval:
            return current
        miss = self._misses.get((name, version))
        if current is None and miss is not None and time.monotonic() - miss[0] < self.refresh_interval:
            raise miss[1]      # asked again too soon: no round trip per decision while there is no model
        lock = self._locks.setdefault((name, version), asyncio.Lock())
        async with lock:
            current = self._production.get(name) if version is None else None
            if current is not None and time.monotonic() - current.checked < self.refresh_interval:
                return current
            try:
                entry = await self._fetch_or_miss(name, version, current)
            except ModelError as exc:
                self.stats["refused"] += 1
                if current is not None:     # the previous version keeps serving
                    self._say(name, f"model {name}: {exc}; keeping v{current.version}", "error",
                              {"model": name, "version": exc.version, "field": exc.field})
                    current.checked = time.monotonic()
                    return current
                raise
            except (RequestError, OSError) as exc:
                why = _why(exc)
                if current is not None:
                    current.checked = time.monotonic()
                    self._say(name, f"model {name}: {why}; serving cached v{current.version}", "error",
                              {"model": name, "version": current.version})
                    return current
                raise ModelError(name, version, "transfer", why) from None
            return entry

    async def _fetch_or_miss(self, name: str, version: int | None, current: Cached | None) -> Cached:
        try:
            entry = await self._fetch(name, version, current)
        except (ModelError, RequestError, OSError) as exc:
            if current is None:
                self._misses[(name, version)] = (time.monotonic(), exc if isinstance(exc, ModelError) else
                                                 ModelError(name, version, "transfer", _why(exc)))
            raise
        self._misses.pop((name, version), None)
        return entry

    async def _fetch(self, name: str, version: int | None, current: Cached | None) -> Cached:
        """Fetch a version chunk by chunk from the parent (restarting once if it changed in between)."""
        if self.agent.parent is None:
            raise ModelError(name, version, "transfer", "this agent has no parent to fetch models from")
        self.stats["fetches"] += 1
        for _attempt in range(2):
            first = await self._chunk(name, version, 0, current.sha256 if current is not None else None)
            if first.unchanged and current is not None:
                self.stats["unchanged"] += 1
                current.checked = time.monotonic()
                return current
            parts = [base64.b64decode(first.data)]
            got = len(parts[0])
            while got < first.size:
                nxt = await self._chunk(name, first.version, got, None)
                if nxt.sha256 != first.sha256:
                    break               # promoted or replaced meanwhile: start again
                piece = base64.b64decode(nxt.data)
                if not piece:
                    raise ModelError(name, first.version, "transfer", f"empty chunk at offset {got} of {first.size}")
                parts.append(piece)
                got += len(piece)
            else:
                return await self._accept(first, b"".join(parts), version is None)
        raise ModelError(name, version, "transfer", "the version changed twice during the transfer")

    async def _chunk(self, name: str, version: int | None, offset: int, have: str | None) -> wire.ModelChunk:
        reply = await self.agent.request(self.agent.parent, wire.MODEL_FETCH,
                                         wire.ModelFetch(name=name, version=version, offset=offset, have_sha256=have),
                                         timeout=self.fetch_timeout, retries=1)
        chunk = reply.payload if isinstance(reply.payload, wire.ModelChunk) else wire.ModelChunk.model_validate(reply.body)
        self.stats["chunks"] += 1
        self.stats["bytes"] += len(chunk.data)
        return chunk

    async def _accept(self, first: wire.ModelChunk, data: bytes, production: bool) -> Cached:
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != first.size or digest != first.sha256:
            raise ModelError(first.name, first.version, "artifact",
                             f"transfer check failed: {len(data)} bytes with sha256 {digest[:12]}, the parent "
                             f"announced {first.size} bytes with sha256 {first.sha256[:12]}")
        if first.card is None:
            raise ModelError(first.name, first.version, "card", "the first chunk carried no card")
        card = ModelCard.model_validate(first.card)
        if card.name != first.name or card.version != first.version:
            raise ModelError(first.name, first.version, "card", f"the card is for {card.name} v{card.version}")
        model = await asyncio.to_thread(load_model, first.format, data, card)   # off the loop: may take a while
        entry = Cached(first.name, first.version, first.format, digest, card.model_dump(), data, model,
                       time.monotonic(), production)
        self._models[(first.name, first.version)] = entry
        if production:
            self._production[first.name] = entry
        self._save_disk(entry)
        return entry

    # -- disk cache ------------------------------------------------------------------------------------
    def _save_disk(self, entry: Cached) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            base = self.cache_dir / f"{entry.name}-v{entry.version}"
            base.with_suffix(".bin").write_bytes(entry.artifact)
            meta = {"name": entry.name, "version": entry.version, "format": entry.format, "sha256": entry.sha256,
                    "card": entry.card, "production": entry.production}
            base.with_suffix(".json").write_text(json.dumps(meta))
        except OSError as exc:
            log.warning("[%s] cannot cache model %s on disk: %s", self.agent.agent_id, entry.name, exc)

    def _load_disk_cache(self) -> None:
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return
        for meta_path in sorted(self.cache_dir.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
                data = meta_path.with_suffix(".bin").read_bytes()
                if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    raise ModelError(meta["name"], meta["version"], "artifact", f"{meta_path.with_suffix('.bin')} "
                                     "does not match its sha256")
                model = load_model(meta["format"], data, meta["card"])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("[%s] ignoring cached model %s: %s", self.agent.agent_id, meta_path.name, exc)
                continue
            entry = Cached(meta["name"], meta["version"], meta["format"], meta["sha256"], meta["card"], data, model,
                           float("-inf"), bool(meta.get("production")))
            self._models[(entry.name, entry.version)] = entry
            prev = self._production.get(entry.name)
            if entry.production and (prev is None or prev.version < entry.version):
                self._production[entry.name] = entry

    # -- reports --------------------------------------------------------------------------------------
    def _queue(self, rows: list[dict[str, Any]]) -> None:
        self._reports.extend(rows)
        over = len(self._reports) - REPORT_BUFFER
        if over > 0:
            for _ in range(over):
                self._reports.popleft()
            self.reports_dropped += over
            self._say("*reports*", f"ML report buffer full: dropped the {self.reports_dropped} oldest observations "
                      "so far (parent unreachable?)", "error", {"dropped": self.reports_dropped})
        if self._flusher is None or self._flusher.done():
            self._flusher = self.agent.spawn(self._flush_loop(), name="ml-reports")

    async def _flush_loop(self) -> None:
        while self._reports:
            await asyncio.sleep(self.report_interval)
            await self.flush_reports()

    async def flush_reports(self) -> None:
        while self._reports:
            batch, size = [], 0
            for row in self._reports:    # by count and by bytes: a batch stays well under the message limit
                size += len(json.dumps(row, default=str)) + 1
                if batch and (len(batch) >= wire.MAX_REPORT_BATCH or size > wire.MAX_REPORT_BYTES):
                    break
                batch.append(row)
            try:
                if self.service is not None:
                    self.service.registry.add_observations(batch, agent=self.agent.agent_id)
                else:
                    if self.agent.parent is None or not self.agent.connected:
                        return
                    await self.agent.inform(self.agent.parent, wire.MODEL_REPORT,
                                            wire.ModelReports(observations=batch))
            except Exception as exc:  # noqa: BLE001 - kept in the buffer, retried on the next tick
                log.debug("[%s] ML reports not sent: %s", self.agent.agent_id, exc)
                return
            for _ in batch:
                self._reports.popleft()

    # -- the relay: requests from this agent's children -------------------------------------------------
    async def _handle_fetch(self, env: Envelope) -> dict[str, Any]:
        q = env.payload
        assert isinstance(q, wire.ModelFetch)
        try:
            if self.service is not None:
                info, data = self.service.registry.artifact(q.name, q.version)
                version, fmt, digest, card = info.version, info.format, info.sha256, info.card
            else:
                entry = await self._entry(q.name, q.version)
                version, fmt, digest, card, data = entry.version, entry.format, entry.sha256, entry.card, entry.artifact
        except ModelError as exc:
            raise HandlerError(str(exc)) from None
        if q.have_sha256 == digest and q.offset == 0:
            return wire.ModelChunk(name=q.name, version=version, format=fmt, size=len(data), sha256=digest, offset=0,
                                   unchanged=True).model_dump()
        if q.offset > len(data):
            raise HandlerError(f"model {q.name} version {version}: offset: {q.offset} is past the end ({len(data)})")
        piece = data[q.offset:q.offset + wire.CHUNK_BYTES]
        return wire.ModelChunk(name=q.name, version=version, format=fmt, size=len(data), sha256=digest,
                               offset=q.offset, data=base64.b64encode(piece).decode(),
                               card=card if q.offset == 0 else None).model_dump()

    async def _handle_report(self, env: Envelope) -> None:
        rep = env.payload
        assert isinstance(rep, wire.ModelReports)
        rows = [o.model_dump() for o in rep.observations]
        if self.service is not None:
            sender = self.agent.identity_of(env.sender) or env.sender
            self.service.registry.add_observations(rows, agent=sender)
        else:
            self._queue(rows)

    async def _handle_train(self, env: Envelope) -> dict[str, Any]:
        q = env.payload
        assert isinstance(q, wire.ModelTrain)
        try:
            return await self.submit_training(q.name, seed=q.seed, trainer=q.trainer, _remote=True)
        except ModelError as exc:
            raise HandlerError(str(exc)) from None

    # -- statements ---------------------------------------------------------------------------------------
    def _say(self, name: str, text: str, outcome: str, inputs: dict[str, Any]) -> None:
        """Record an availability statement once per change (not once per decision)."""
        if self._said.get(name) == text:
            return
        self._said[name] = text
        (log.warning if outcome == "error" else log.info)("[%s] %s", self.agent.agent_id, text)
        record = getattr(self.agent, "record_event", None)
        if record is not None:
            record(text, outcome=outcome, inputs=inputs)

    def describe(self) -> dict[str, Any]:
        return {"hosted": self.service is not None,
                "cached": [{"name": e.name, "version": e.version, "sha256": e.sha256, "production": e.production}
                           for e in self._models.values()],
                "in_use": {n: e.version for n, e in self._last.items()}, "pending_reports": len(self._reports),
                "reports_dropped": self.reports_dropped, **self.stats}


def _why(exc: BaseException) -> str:
    if isinstance(exc, RequestFailed):
        return f"the parent refused the transfer: {exc.reason}"
    return f"parent unreachable ({exc or type(exc).__name__})"
