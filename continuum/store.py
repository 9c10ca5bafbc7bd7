"""Durable desired state of the continuum: accepted applications, their cluster assignments, history.

Written before an app is acknowledged, so an accepted app survives any restart; a restarted continuum
agent reloads it and reconciles with what the clusters report instead of deploying again. SQLite, one
file per continuum (`<state_dir>/continuum/desired-state.db`); `path=None` keeps it in memory (tests, or
a slice without a state directory).

A write that fails (full disk, read-only or vanished directory, locked database) raises `PersistError`
naming what was being stored, the cause and the file; nothing is changed in memory by the caller
before the store has said yes, so such a failure loses nothing and the agent keeps running.

Off the event loop: `call(method, ...)` runs a write on the store's own thread and awaits it (the API's
app submissions), `submit(method, ...)` queues one without waiting (assignments, written in order). Every
access holds the store's lock, so the synchronous methods stay usable from any thread.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_FULL_MESSAGES = ("database or disk is full", "disk i/o error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY, description TEXT NOT NULL, submitted REAL NOT NULL, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    app TEXT NOT NULL, component TEXT NOT NULL, cluster TEXT NOT NULL, PRIMARY KEY (app, component));
CREATE TABLE IF NOT EXISTS history (ts REAL NOT NULL, app TEXT NOT NULL, event TEXT NOT NULL);
"""


class PersistError(OSError):
    """The desired state could not be written; `storage_full` tells a full disk from other causes
    (read-only or missing directory, locked database): the API answers 507 for the first, 503 else."""

    def __init__(self, message: str, *, storage_full: bool) -> None:
        super().__init__(errno.ENOSPC if storage_full else errno.EIO, message)
        self.storage_full = storage_full

    def __str__(self) -> str:
        return str(self.strerror)


def _cause(exc: BaseException) -> tuple[str, bool]:
    """(text of the cause, whether it means the storage is full)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {exc.strerror}", exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc) or type(exc).__name__
    return text, text.lower() in _FULL_MESSAGES


class DesiredStateStore:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="desired-state")
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
            self._db.executescript(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise self._failure("open the desired state", exc) from exc

    def _failure(self, what: str, exc: BaseException) -> PersistError:
        cause, full = _cause(exc)
        return PersistError(f"cannot {what}: {cause} at {self.path or ':memory:'}", storage_full=full)

    def _write(self, what: str, write: Callable[[], T]) -> T:
        """Run `write` in one transaction; a failure rolls it back and raises PersistError."""
        try:
            with self._lock, self._db:
                return write()
        except (OSError, sqlite3.Error) as exc:
            raise self._failure(what, exc) from exc

    def save_app(self, name: str, description: dict[str, Any], submitted: float) -> int:
        """Store (or replace) an app; returns its generation (1 for a new app, +1 per change).
        Raises PersistError."""
        def write() -> int:
            row = self._db.execute("SELECT generation FROM apps WHERE name = ?", (name,)).fetchone()
            generation = 1 if row is None else row[0] + 1
            self._db.execute("INSERT OR REPLACE INTO apps VALUES (?, ?, ?, ?)",
                             (name, json.dumps(description, sort_keys=True), submitted, generation))
            self._db.execute("INSERT INTO history VALUES (?, ?, ?)",
                             (time.time(), name, "accepted" if generation == 1 else f"replaced (gen {generation})"))
            return generation

        return self._write(f"persist app {name}", write)

    def delete_app(self, name: str) -> None:
        """Raises PersistError."""
        def write() -> None:
            self._db.execute("DELETE FROM apps WHERE name = ?", (name,))
            self._db.execute("DELETE FROM assignments WHERE app = ?", (name,))
            self._db.execute("INSERT INTO history VALUES (?, ?, ?)", (time.time(), name, "deleted"))

        self._write(f"persist the removal of app {name}", write)

    def save_assignments(self, app: str, assignments: dict[str, str]) -> None:
        """Raises PersistError."""
        def write() -> None:
            self._db.execute("DELETE FROM assignments WHERE app = ?", (app,))
            self._db.executemany("INSERT INTO assignments VALUES (?, ?, ?)",
                                 [(app, c, cid) for c, cid in sorted(assignments.items())])

        self._write(f"persist the assignments of app {app}", write)

    async def call(self, method: Callable[..., T], *args: Any) -> T:
        """`method(*args)` (a method of this store) on the store's thread, awaited."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, method, *args)

    def submit(self, method: Callable[..., T], *args: Any) -> Future[T]:
        """`method(*args)` queued on the store's thread (in order with every other call)."""
        return self._thread.submit(method, *args)

    def load(self) -> tuple[dict[str, tuple[dict[str, Any], float]], dict[str, dict[str, str]]]:
        """(apps: name -> (description, submitted), assignments: app -> {component: cluster})."""
        with self._lock:
            return self._load()

    def _load(self) -> tuple[dict[str, tuple[dict[str, Any], float]], dict[str, dict[str, str]]]:
        apps = {name: (json.loads(desc), submitted)
                for name, desc, submitted, _ in self._db.execute("SELECT * FROM apps ORDER BY submitted")}
        assignments: dict[str, dict[str, str]] = {}
        for app, comp, cid in self._db.execute("SELECT * FROM assignments"):
            assignments.setdefault(app, {})[comp] = cid
        return apps, assignments

    def history(self, app: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT ts, app, event FROM history" + (" WHERE app = ?" if app else "") + " ORDER BY ts DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, ((app, limit) if app else (limit,))).fetchall()
        return [{"ts": ts, "app": a, "event": e} for ts, a, e in reversed(rows)]

    def close(self) -> None:
        self._thread.shutdown(wait=True)   # queued writes land first
        with self._lock:
            self._db.close()
