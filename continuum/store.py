"""Durable desired state of the continuum: accepted applications, their cluster assignments, history.

Written before an app is acknowledged, so an accepted app survives any restart; a restarted continuum
agent reloads it and reconciles with what the clusters report instead of deploying again. SQLite, one
file per continuum (`<state_dir>/continuum/desired-state.db`); `path=None` keeps it in memory (tests, or
a slice without a state directory).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY, description TEXT NOT NULL, submitted REAL NOT NULL, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    app TEXT NOT NULL, component TEXT NOT NULL, cluster TEXT NOT NULL, PRIMARY KEY (app, component));
CREATE TABLE IF NOT EXISTS history (ts REAL NOT NULL, app TEXT NOT NULL, event TEXT NOT NULL);
"""


class DesiredStateStore:
    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path) if path else ":memory:")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def save_app(self, name: str, description: dict[str, Any], submitted: float) -> int:
        """Store (or replace) an app; returns its generation (1 for a new app, +1 per change)."""
        row = self._db.execute("SELECT generation FROM apps WHERE name = ?", (name,)).fetchone()
        generation = 1 if row is None else row[0] + 1
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO apps VALUES (?, ?, ?, ?)",
                             (name, json.dumps(description, sort_keys=True), submitted, generation))
            self._db.execute("INSERT INTO history VALUES (?, ?, ?)",
                             (time.time(), name, "accepted" if generation == 1 else f"replaced (gen {generation})"))
        return generation

    def delete_app(self, name: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM apps WHERE name = ?", (name,))
            self._db.execute("DELETE FROM assignments WHERE app = ?", (name,))
            self._db.execute("INSERT INTO history VALUES (?, ?, ?)", (time.time(), name, "deleted"))

    def save_assignments(self, app: str, assignments: dict[str, str]) -> None:
        with self._db:
            self._db.execute("DELETE FROM assignments WHERE app = ?", (app,))
            self._db.executemany("INSERT INTO assignments VALUES (?, ?, ?)",
                                 [(app, c, cid) for c, cid in sorted(assignments.items())])

    def load(self) -> tuple[dict[str, tuple[dict[str, Any], float]], dict[str, dict[str, str]]]:
        """(apps: name -> (description, submitted), assignments: app -> {component: cluster})."""
        apps = {name: (json.loads(desc), submitted)
                for name, desc, submitted, _ in self._db.execute("SELECT * FROM apps ORDER BY submitted")}
        assignments: dict[str, dict[str, str]] = {}
        for app, comp, cid in self._db.execute("SELECT * FROM assignments"):
            assignments.setdefault(app, {})[comp] = cid
        return apps, assignments

    def history(self, app: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = "SELECT ts, app, event FROM history" + (" WHERE app = ?" if app else "") + " ORDER BY ts DESC LIMIT ?"
        rows = self._db.execute(query, ((app, limit) if app else (limit,))).fetchall()
        return [{"ts": ts, "app": a, "event": e} for ts, a, e in reversed(rows)]

    def close(self) -> None:
        self._db.close()
