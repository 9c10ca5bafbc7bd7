"""The model registry of a slice: versions, cards, stages, artifacts on disk, metadata in SQLite.

Layout under `root` (the continuum's state directory + `models/`): `registry.db` (SQLite) and
`artifacts/NAME/vN.FORMAT`. Every artifact has a sha256, checked whenever it is read back: a file that
changed on disk is refused (`ModelError`, field `artifact`), never served.

Versions are numbered per model from 1 and never reused. Stages: `candidate` (stored, not served),
`production` (what `get_model(name)` serves; at most one per model) and `archived` (served before, or
replaced). `promote(v)` makes v production and archives the one it replaces; `rollback()` undoes the last
promotion that is still in force (repeated rollbacks walk back through the promotions). Every stage change
is kept in `history` with its reason. Everything survives a restart: the database is the truth, written
before the call returns; artifacts are written to a temporary file, fsynced and renamed before their row
exists, so a crash never leaves a row without its file.

Observations (`add_observations`: features, prediction, observed outcome, reported by the agents that
decide) are kept too, the newest `MAX_OBSERVATIONS` per model: they are retraining data and give each
version's live error (`metrics`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlsysops.agents.ml.card import NAME_PATTERN, ModelCard, parse_card
from mlsysops.agents.ml.errors import ModelError
from mlsysops.agents.ml.formats import load_model

STAGES = ("candidate", "production", "archived")
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
MAX_OBSERVATIONS = 200_000      # retention per model: the oldest beyond it are deleted (like telemetry windows)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, format TEXT NOT NULL, stage TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL, path TEXT NOT NULL, card TEXT NOT NULL,
    source TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, ts REAL NOT NULL, action TEXT NOT NULL,
    version INTEGER, previous INTEGER, reason TEXT NOT NULL, undone INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS observations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, version INTEGER, ts REAL NOT NULL,
    agent TEXT NOT NULL, features TEXT NOT NULL, prediction REAL, observed REAL NOT NULL);
CREATE INDEX IF NOT EXISTS observations_by_model ON observations (name, ts);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, trainer TEXT NOT NULL, seed INTEGER NOT NULL,
    status TEXT NOT NULL, submitted REAL NOT NULL, finished REAL, version INTEGER, promoted INTEGER,
    detail TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY, every REAL NOT NULL, trainer TEXT, seed INTEGER NOT NULL, last_run REAL);
"""


@dataclass(frozen=True)
class Prepared:
    """A checked version not stored yet (`ModelRegistry.prepare` -> `commit`)."""

    name: str
    version: int
    format: str
    artifact: bytes
    card: ModelCard
    model: Any


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    format: str
    stage: str
    sha256: str
    size: int
    path: str
    card: dict[str, Any]
    source: str
    created: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ModelError(name if isinstance(name, str) else None, None, "name",
                         "expected 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit)")
    return name


class ModelRegistry:
    """See the module docstring. Lives on one event loop (like Knowledge): no locking of its own."""

    def __init__(self, root: Path | None) -> None:
        if root is None:   # no state directory: a throw-away one (said in `describe()["persistent"]`)
            self._tmp = tempfile.TemporaryDirectory(prefix="mlsysops-models-")
            root = Path(self._tmp.name)
            self.persistent = False
        else:
            self._tmp = None
            self.persistent = True
        self.root = Path(root)
        self.artifacts = self.root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.root / "registry.db"), isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._loaded: dict[tuple[str, int], tuple[str, Any]] = {}   # (name, version) -> (sha256, model)

    def close(self) -> None:
        self.db.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- versions ------------------------------------------------------------------------------------
    def add_version(self, name: str, format: str, artifact: bytes, card: dict[str, Any], *,
                    source: str = "upload", stage: str = "candidate") -> VersionInfo:
        """Store a new version after loading it once (a model that does not load is refused)."""
        check_name(name)
        return self.commit(self.prepare(name, format, artifact, card, self.next_version(name)),
                           source=source, stage=stage)

    def prepare(self, name: str, format: str, artifact: bytes, card: dict[str, Any], version: int) -> Prepared:
        """The checks of a new version (card, size, loading it): no database access, so it may run in a
        worker thread (`MLConnectorService.upload` does, to keep the agent's loop free)."""
        check_name(name)
        if not isinstance(artifact, (bytes, bytearray)) or not artifact:
            raise ModelError(name, version, "artifact", "empty")
        if len(artifact) > MAX_ARTIFACT_BYTES:
            raise ModelError(name, version, "artifact", f"{len(artifact)} bytes, at most {MAX_ARTIFACT_BYTES}")
        parsed = parse_card(card, name=name, format=format, version=version)
        model = load_model(format, bytes(artifact), parsed)          # raises ModelError naming the field
        return Prepared(name, version, format, bytes(artifact), parsed, model)

    def commit(self, p: Prepared, *, source: str = "upload", stage: str = "candidate") -> VersionInfo:
        """Write a prepared version (artifact first, then its row) and give it its stage."""
        if stage not in STAGES:
            raise ModelError(p.name, p.version, "stage", f"expected one of {list(STAGES)}, got {stage!r}")
        if self.next_version(p.name) != p.version:
            raise ModelError(p.name, p.version, "version", "another upload took this version number: retry")
        name, version, artifact = p.name, p.version, p.artifact
        digest = hashlib.sha256(artifact).hexdigest()
        path = self.artifacts / name / f"v{version}.{re.sub(r'[^A-Za-z0-9_-]', '_', p.format)}"
        _write_atomic(path, artifact)
        now = time.time()
        try:
            self.db.execute("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (name, version, p.format, "candidate", digest, len(artifact), str(path),
                             p.card.model_dump_json(), source, now))
        except sqlite3.Error:
            path.unlink(missing_ok=True)
            raise
        self._loaded[(name, version)] = (digest, p.model)
        self._history(name, "add", version, None, f"{source}: {p.format}, {len(artifact)} bytes, sha256 {digest[:12]}")
        if stage == "production":
            self.promote(name, version, reason=f"{source}: first version" if version == 1 else source)
        elif stage == "archived":
            self._set_stage(name, version, "archived")
        return self.get(name, version)

    def next_version(self, name: str) -> int:
        row = self.db.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()
        return int(row[0] or 0) + 1

    def get(self, name: str, version: int | None = None) -> VersionInfo:
        """One version (None: the production one); ModelError when there is none."""
        if version is None:
            row = self.db.execute("SELECT * FROM versions WHERE name=? AND stage='production'", (name,)).fetchone()
            if row is None:
                known = self.db.execute("SELECT COUNT(*) FROM versions WHERE name=?", (name,)).fetchone()[0]
                raise ModelError(name, None, "stage", "no production version" + (
                    f" ({known} candidate/archived: promote one)" if known else " (unknown model)"))
        else:
            row = self.db.execute("SELECT * FROM versions WHERE name=? AND version=?", (name, version)).fetchone()
            if row is None:
                raise ModelError(name, version, "version", f"no such version; known: {self.version_numbers(name)}")
        return _info(row)

    def version_numbers(self, name: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT version FROM versions WHERE name=? ORDER BY version", (name,))]

    def versions(self, name: str) -> list[VersionInfo]:
        return [_info(r) for r in self.db.execute("SELECT * FROM versions WHERE name=? ORDER BY version", (name,))]

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]

    def has(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM versions WHERE name=? LIMIT 1", (name,)).fetchone() is not None

    def artifact(self, name: str, version: int | None = None) -> tuple[VersionInfo, bytes]:
        """The artifact bytes, checked against the stored size and sha256."""
        info = self.get(name, version)
        try:
            data = Path(info.path).read_bytes()
        except OSError as exc:
            raise ModelError(name, info.version, "artifact", f"cannot read {info.path}: {exc.strerror}") from None
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != info.size or digest != info.sha256:
            raise ModelError(name, info.version, "artifact",
                             f"{info.path} is corrupt: {len(data)} bytes with sha256 {digest[:12]}, "
                             f"stored {info.size} bytes with sha256 {info.sha256[:12]}")
        return info, data

    def load(self, name: str, version: int | None = None) -> tuple[VersionInfo, Any]:
        """The served model of a version (None: production), loaded once per (version, sha256)."""
        info = self.get(name, version)
        hit = self._loaded.get((name, info.version))
        if hit is not None and hit[0] == info.sha256:
            return info, hit[1]
        info, data = self.artifact(name, info.version)
        model = load_model(info.format, data, info.card)
        self._loaded[(name, info.version)] = (info.sha256, model)
        return info, model

    # -- stages --------------------------------------------------------------------------------------
    def production_version(self, name: str) -> int | None:
        row = self.db.execute("SELECT version FROM versions WHERE name=? AND stage='production'", (name,)).fetchone()
        return None if row is None else int(row[0])

    def promote(self, name: str, version: int, *, reason: str = "operator") -> VersionInfo:
        info = self.get(name, version)
        current = self.production_version(name)
        if current == version:
            return info
        self.artifact(name, version)  # what agents will be sent: a file that changed on disk is not promoted
        self.load(name, version)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if current is not None:
                self._set_stage(name, current, "archived")
            self._set_stage(name, version, "production")
            self._history(name, "promote", version, current, reason)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.get(name, version)

    def rollback(self, name: str, *, reason: str = "operator") -> VersionInfo:
        """Undo the promotion that made the current production version: its predecessor serves again."""
        current = self.production_version(name)
        if current is None:
            raise ModelError(name, None, "stage", "no production version to roll back")
        row = self.db.execute("SELECT id, previous FROM history WHERE name=? AND action='promote' AND version=? "
                              "AND undone=0 ORDER BY id DESC LIMIT 1", (name, current)).fetchone()
        if row is None or row["previous"] is None:
            raise ModelError(name, current, "stage", "nothing to roll back to: this version was the first in "
                             "production")
        previous = int(row["previous"])
        self.artifact(name, previous)   # the version to return to must still be intact and load
        self.load(name, previous)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._set_stage(name, current, "archived")
            self._set_stage(name, previous, "production")
            self.db.execute("UPDATE history SET undone=1 WHERE id=?", (row["id"],))
            self._history(name, "rollback", previous, current, reason)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.get(name, previous)

    def _set_stage(self, name: str, version: int, stage: str) -> None:
        self.db.execute("UPDATE versions SET stage=? WHERE name=? AND version=?", (stage, name, version))

    def _history(self, name: str, action: str, version: int | None, previous: int | None, reason: str) -> None:
        self.db.execute("INSERT INTO history (name, ts, action, version, previous, reason) VALUES (?,?,?,?,?,?)",
                        (name, time.time(), action, version, previous, reason))

    def history(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT ts, action, version, previous, reason, undone FROM history WHERE name=? "
                               "ORDER BY id DESC LIMIT ?", (name, limit))
        return [dict(r) | {"undone": bool(r["undone"])} for r in rows]

    # -- observations and metrics ----------------------------------------------------------------------
    def add_observations(self, rows: list[dict[str, Any]], agent: str) -> int:
        """Store reported outcomes (name, version, ts, features, prediction, observed); returns how many."""
        if not rows:
            return 0
        values = [(r["name"], r.get("version"), float(r.get("ts") or time.time()), agent,
                   json.dumps(r.get("features") or {}), r.get("prediction"), float(r["observed"])) for r in rows]
        self.db.execute("BEGIN IMMEDIATE")     # one transaction (one sync) per batch, not one per row
        try:
            self.db.executemany("INSERT INTO observations (name, version, ts, agent, features, prediction, observed) "
                                "VALUES (?,?,?,?,?,?,?)", values)
            for name in {r["name"] for r in rows}:
                self.db.execute("DELETE FROM observations WHERE name=? AND id <= (SELECT id FROM observations "
                                "WHERE name=? ORDER BY id DESC LIMIT 1 OFFSET ?)", (name, name, MAX_OBSERVATIONS))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return len(rows)

    def observations(self, name: str, since: float | None = None, limit: int = MAX_OBSERVATIONS) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT version, ts, agent, features, prediction, observed FROM observations "
                               "WHERE name=? AND ts>=? ORDER BY ts, id LIMIT ?", (name, since or 0.0, limit))
        return [{"kind": "observation", "model": name, "version": r["version"], "ts": r["ts"], "t": r["ts"],
                 "agent": r["agent"],
                 "features": json.loads(r["features"]), "prediction": r["prediction"], "observed": r["observed"]}
                for r in rows]

    def metrics(self, name: str) -> list[dict[str, Any]]:
        """Per version: the card's held-out metrics and the live error of what agents reported."""
        live = {r["version"]: dict(r) for r in self.db.execute(
            "SELECT version, COUNT(*) AS n, AVG(ABS(prediction - observed)) AS mae, "
            "AVG((prediction - observed) * (prediction - observed)) AS mse, MAX(ts) AS last FROM observations "
            "WHERE name=? AND prediction IS NOT NULL GROUP BY version", (name,))}
        out = []
        for info in self.versions(name):
            row = live.get(info.version)
            out.append({"version": info.version, "stage": info.stage, "source": info.source,
                        "training": info.card.get("metrics", {}),
                        "live": None if row is None else {"observations": row["n"], "mae": row["mae"],
                                                         "rmse": (row["mse"] or 0.0) ** 0.5, "last": row["last"]}})
        return out

    # -- jobs and schedules (rows of `training.py`) --------------------------------------------------
    def save_job(self, job: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (job["id"], job["name"], job["trainer"], job["seed"], job["status"], job["submitted"],
                         job.get("finished"), job.get("version"),
                         None if job.get("promoted") is None else int(bool(job["promoted"])),
                         json.dumps(job.get("detail") or {}, default=str)))

    def jobs(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM jobs", []
        if name is not None:
            q, args = q + " WHERE name=?", [name]
        rows = self.db.execute(q + " ORDER BY submitted DESC LIMIT ?", (*args, limit))
        return [dict(r) | {"detail": json.loads(r["detail"]),
                           "promoted": None if r["promoted"] is None else bool(r["promoted"])} for r in rows]

    def job(self, job_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            return None
        return dict(row) | {"detail": json.loads(row["detail"]),
                            "promoted": None if row["promoted"] is None else bool(row["promoted"])}

    def set_schedule(self, name: str, every: float | None, trainer: str | None, seed: int) -> None:
        if every is None:
            self.db.execute("DELETE FROM schedules WHERE name=?", (name,))
        else:
            self.db.execute("INSERT OR REPLACE INTO schedules (name, every, trainer, seed, last_run) VALUES "
                            "(?,?,?,?,(SELECT last_run FROM schedules WHERE name=?))", (name, every, trainer, seed, name))

    def schedules(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM schedules ORDER BY name")]

    def schedule_ran(self, name: str, ts: float) -> None:
        self.db.execute("UPDATE schedules SET last_run=? WHERE name=?", (ts, name))

    # -- views ----------------------------------------------------------------------------------------
    def summary(self, name: str) -> dict[str, Any]:
        versions = self.versions(name)
        prod = next((v for v in versions if v.stage == "production"), None)
        latest = versions[-1] if versions else None
        card = (prod or latest).card if (prod or latest) else {}
        return {"name": name, "production": prod.version if prod else None, "latest": latest.version if latest else None,
                "versions": len(versions), "format": (prod or latest).format if (prod or latest) else None,
                "inputs": [f["name"] for f in card.get("inputs", [])], "output": card.get("output", {}).get("name"),
                "updated": max((v.created for v in versions), default=None)}

    def describe(self, name: str) -> dict[str, Any]:
        if not self.has(name):
            raise ModelError(name, None, "name", f"unknown model; known: {self.names()}")
        sched = next((s for s in self.schedules() if s["name"] == name), None)
        return {**self.summary(name), "persistent": self.persistent,
                "version_list": [v.to_dict() for v in self.versions(name)], "history": self.history(name),
                "jobs": self.jobs(name, limit=10), "schedule": sched}


def _info(row: sqlite3.Row) -> VersionInfo:
    return VersionInfo(name=row["name"], version=row["version"], format=row["format"], stage=row["stage"],
                       sha256=row["sha256"], size=row["size"], path=row["path"], card=json.loads(row["card"]),
                       source=row["source"], created=row["created"])


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def card_of(info: VersionInfo) -> ModelCard:
    return ModelCard.model_validate(info.card)
