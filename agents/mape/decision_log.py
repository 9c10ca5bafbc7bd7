"""Decision log: every analyze result, plan, scheduling decision and execution outcome of one agent.

Contract
- `record()` is synchronous and cheap: it appends to a bounded in-memory deque (`capacity`) and, when a SQLite
  path is configured, to a pending batch. The batch is written in a worker thread (never on the event loop)
  once it reaches `batch_size` or `flush_interval` seconds after the first pending record, whichever is first.
  `await flush()` forces the write; `close()` writes what is left synchronously and closes the database.
- `inputs` are stored as a compact digest (`digest()`): long strings, lists and dicts are truncated, deep
  structures summarised, so a whole description is never stored per record. Callers pass references
  (name + hash, see `fingerprint()`) for descriptions rather than the descriptions themselves.
- `query()` reads the in-memory window; `load_recent(n)` reloads the newest n persisted records into memory
  after a restart (and returns them).
- Listeners (`add_listener`) see each record as it is made, e.g. to forward records up the agent tree.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STAGES = frozenset({"analyze", "plan", "schedule", "execute", "event"})
OUTCOMES = frozenset(
    {
        "plan_needed",
        "no_plan",
        "planned",
        "accepted",
        "discarded",
        "completed",
        "failed",
        "timeout",
        "memory_exceeded",
        "error",
        "info",
        "held",   # a policy sees a problem it cannot fix now (unplaceable, QoS violated with nowhere to go)
    }
)

_MAX_STR = 256
_MAX_ITEMS = 20
_MAX_DEPTH = 4


def fingerprint(value: Any) -> str:
    """Short stable hash of a JSON-able value; lets records reference a description without copying it."""
    blob = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def digest(
    value: Any, *, max_str: int = _MAX_STR, max_items: int = _MAX_ITEMS, depth: int = _MAX_DEPTH
) -> Any:
    """A JSON-able, size-bounded copy of `value` for storing as record inputs."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if len(value) <= max_str:
            return value
        cut = value.rfind(" ", 0, max_str)   # at a word boundary, never mid-word
        cut = cut if cut > max_str // 2 else max_str
        return value[:cut] + f" ...(+{len(value) - cut} chars)"
    if depth <= 0:
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            return f"<{type(value).__name__} of {len(value)} items, sha1 {fingerprint(value)}>"
        return digest(repr(value), max_str=max_str)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= max_items:
                out["..."] = f"+{len(value) - max_items} keys"
                break
            out[str(k)] = digest(v, max_str=max_str, max_items=max_items, depth=depth - 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        out_l = [digest(v, max_str=max_str, max_items=max_items, depth=depth - 1) for v in items[:max_items]]
        if len(items) > max_items:
            out_l.append(f"...(+{len(items) - max_items} items)")
        return out_l
    # numpy scalars and other objects: prefer a number, else a bounded repr
    try:
        return float(value)
    except (TypeError, ValueError):
        return digest(repr(value), max_str=max_str)


@dataclass(slots=True)
class DecisionRecord:
    """One decision. `chosen`/`alternatives` hold the selected option and the rejected ones with reasons."""

    id: str
    ts: float
    agent: str
    stage: str
    outcome: str
    reason: str
    policy: str | None = None
    mechanism: str | None = None
    app: str | None = None
    plan_id: str | None = None
    inputs: Any = None
    chosen: Any = None
    alternatives: Any = None
    explanation: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionRecord:
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


_COLUMNS = ("id", "ts", "agent", "stage", "outcome", "reason", "policy", "mechanism", "app", "plan_id")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, agent TEXT NOT NULL, stage TEXT NOT NULL, outcome TEXT NOT NULL,
    reason TEXT, policy TEXT, mechanism TEXT, app TEXT, plan_id TEXT, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions(ts);
CREATE INDEX IF NOT EXISTS decisions_app ON decisions(app, ts);
"""


@dataclass
class _Store:
    """SQLite side of the log; every method runs in a worker thread (or at close) under `lock`."""

    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)

    def write(self, records: list[DecisionRecord]) -> None:
        if not records:
            return
        rows = [
            tuple(getattr(r, c) for c in _COLUMNS) + (json.dumps(r.to_dict(), default=str),) for r in records
        ]
        with self.lock:
            if self.conn is None:
                return
            self.conn.executemany(
                f"INSERT OR REPLACE INTO decisions ({', '.join(_COLUMNS)}, body) "
                f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
                rows,
            )
            self.conn.commit()

    def read_recent(self, n: int, agent: str | None) -> list[DecisionRecord]:
        with self.lock:
            if self.conn is None:
                return []
            if agent is None:
                cur = self.conn.execute(
                    "SELECT body FROM decisions ORDER BY ts DESC, rowid DESC LIMIT ?", (n,)
                )
            else:
                cur = self.conn.execute(
                    "SELECT body FROM decisions WHERE agent = ? ORDER BY ts DESC, rowid DESC LIMIT ?",
                    (agent, n),
                )
            rows = cur.fetchall()
        return [DecisionRecord.from_dict(json.loads(b)) for (b,) in reversed(rows)]

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None


class DecisionLog:
    """Bounded, queryable, optionally persisted log of one agent's decisions (see module docstring)."""

    def __init__(
        self,
        agent_id: str,
        capacity: int = 10_000,
        sqlite_path: str | Path | None = None,
        *,
        batch_size: int = 200,
        flush_interval: float = 0.5,
    ) -> None:
        self.agent_id = agent_id
        self.capacity = capacity
        self._records: deque[DecisionRecord] = deque(maxlen=capacity)
        self._pending: list[DecisionRecord] = []
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._flush_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[DecisionRecord], None]] = []
        self._counts: dict[str, int] = {}
        self._store: _Store | None = None
        if sqlite_path is not None:
            self._store = _Store(Path(sqlite_path))
            self._store.open()

    # -- writing -----------------------------------------------------------------------------------------
    def record(
        self,
        stage: str,
        outcome: str,
        reason: str,
        *,
        policy: str | None = None,
        mechanism: str | None = None,
        app: str | None = None,
        plan_id: str | None = None,
        inputs: Any = None,
        chosen: Any = None,
        alternatives: Any = None,
        explanation: Any = None,
    ) -> DecisionRecord:
        if stage not in STAGES:
            raise ValueError(f"unknown decision stage {stage!r}; expected one of {sorted(STAGES)}")
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown decision outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
        rec = DecisionRecord(
            id=uuid.uuid4().hex[:16],
            ts=time.time(),
            agent=self.agent_id,
            stage=stage,
            outcome=outcome,
            reason=reason,
            policy=policy,
            mechanism=mechanism,
            app=app,
            plan_id=plan_id,
            inputs=digest(inputs) if inputs is not None else None,
            chosen=digest(chosen) if chosen is not None else None,
            alternatives=digest(alternatives) if alternatives is not None else None,
            # explanations are what people read: long enough for a whole reason
            explanation=digest(explanation, max_items=50, max_str=2048) if explanation is not None else None,
        )
        self._records.append(rec)
        self._counts[outcome] = self._counts.get(outcome, 0) + 1
        if self._store is not None:
            self._pending.append(rec)
            self._schedule_flush()
        for listener in list(self._listeners):
            try:
                listener(rec)
            except Exception:  # a faulty listener must not break decision making
                log.exception("[%s] decision log listener failed", self.agent_id)
        return rec

    def add_listener(self, fn: Callable[[DecisionRecord], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[DecisionRecord], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (sync use): written on flush_sync()/close()
            if len(self._pending) >= self._batch_size:
                self.flush_sync()
            return
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = loop.create_task(self._delayed_flush())

    async def _delayed_flush(self) -> None:
        deadline = time.monotonic() + self._flush_interval
        while len(self._pending) < self._batch_size and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, self._flush_interval))
        await self.flush()

    async def flush(self) -> None:
        """Write pending records to SQLite in a worker thread."""
        if self._store is None or not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._store.write, batch)
        except Exception:
            log.exception("[%s] could not persist %d decision records", self.agent_id, len(batch))

    def flush_sync(self) -> None:
        if self._store is None or not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self._store.write(batch)
        except Exception:
            log.exception("[%s] could not persist %d decision records", self.agent_id, len(batch))

    def close(self) -> None:
        """Write what is pending and close the database. Safe to call twice."""
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
        self.flush_sync()
        if self._store is not None:
            self._store.close()

    # -- reading -----------------------------------------------------------------------------------------
    def load_recent(self, n: int = 1000, *, all_agents: bool = False) -> list[DecisionRecord]:
        """Reload the newest `n` persisted records (this agent's unless all_agents) into memory; return them.

        Meant for startup: records already in memory are kept and not duplicated.
        """
        if self._store is None:
            return []
        loaded = self._store.read_recent(n, None if all_agents else self.agent_id)
        known = {r.id for r in self._records}
        fresh = [r for r in loaded if r.id not in known]
        merged = sorted([*fresh, *self._records], key=lambda r: r.ts)
        self._records = deque(merged, maxlen=self.capacity)
        return loaded

    def query(
        self,
        agent: str | None = None,
        app: str | None = None,
        policy: str | None = None,
        stage: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        *,
        mechanism: str | None = None,
        plan_id: str | None = None,
    ) -> list[DecisionRecord]:
        """At most `limit` matching records (the newest ones, oldest first) from the in-memory window."""
        out: list[DecisionRecord] = []
        for r in reversed(self._records):
            if since is not None and r.ts < since:
                break  # records are in time order
            if (
                (agent is None or r.agent == agent)
                and (app is None or r.app == app)
                and (policy is None or r.policy == policy)
                and (stage is None or r.stage == stage)
                and (outcome is None or r.outcome == outcome)
                and (mechanism is None or r.mechanism == mechanism)
                and (plan_id is None or r.plan_id == plan_id)
                and (until is None or r.ts <= until)
            ):
                out.append(r)
                if len(out) >= limit:
                    break
        out.reverse()
        return out

    def __len__(self) -> int:
        return len(self._records)

    def counts(self) -> dict[str, int]:
        """Records made by this process per outcome (not reset by the memory bound)."""
        return dict(self._counts)

    def to_dict(self, limit: int = 100) -> dict[str, Any]:
        return {
            "agent": self.agent_id,
            "capacity": self.capacity,
            "size": len(self._records),
            "persisted": self._store is not None,
            "counts": self.counts(),
            "records": [r.to_dict() for r in self.query(limit=limit)],
        }
