"""A state directory that cannot be written, or a desired-state write that fails, is reported with its
cause (which app, which file, why) instead of a traceback or a bare 500, and loses nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mlsysops.cli.main import app
from mlsysops.continuum.store import DesiredStateStore, PersistError

ROOT = Path(__file__).resolve().parents[1]


class FailingWrites:
    """A sqlite connection whose writes fail with `error` (reads pass through)."""

    def __init__(self, db: sqlite3.Connection, error: Exception) -> None:
        self.db, self.error = db, error

    def execute(self, sql: str, *args: Any) -> Any:
        if not sql.lstrip().upper().startswith("SELECT"):
            raise self.error
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        raise self.error

    def __enter__(self) -> Any:
        return self.db.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.db.__exit__(*exc)

    def close(self) -> None:
        self.db.close()


def test_full_disk_names_app_cause_and_file(tmp_path):
    store = DesiredStateStore(tmp_path / "continuum" / "desired-state.db")
    store.save_app("kept", {"a": 1}, 1.0)
    real = store._db
    store._db = FailingWrites(real, sqlite3.OperationalError("database or disk is full"))
    with pytest.raises(PersistError) as err:
        store.save_app("probe", {"a": 2}, 2.0)
    assert err.value.storage_full
    assert str(err.value) == f"cannot persist app probe: database or disk is full at {store.path}"
    with pytest.raises(PersistError, match="assignments of app kept"):
        store.save_assignments("kept", {"c": "edge-1"})
    store._db = real
    assert set(store.load()[0]) == {"kept"}      # nothing half-written, nothing lost


def test_read_only_database_is_not_storage_full(tmp_path):
    store = DesiredStateStore(tmp_path / "d.db")
    store._db = FailingWrites(store._db, sqlite3.OperationalError("attempt to write a readonly database"))
    with pytest.raises(PersistError) as err:
        store.delete_app("x")
    assert not err.value.storage_full and "readonly" in str(err.value)


def test_state_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(PersistError) as err:
        DesiredStateStore(blocker / "demo" / "continuum" / "desired-state.db")
    assert "cannot open the desired state" in str(err.value) and str(blocker) in str(err.value)
    assert "[Errno" in str(err.value) and not err.value.storage_full


def test_up_with_unwritable_state_dir_is_one_line(tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("not a directory")
    cfg = yaml.safe_load((ROOT / "examples/slices/demo.yaml").read_text())
    cfg["state_dir"] = str(blocker / "demo")
    slice_file = ROOT / "examples/slices" / f".test-unwritable-{tmp_path.name}.yaml"   # its paths are relative
    slice_file.write_text(yaml.safe_dump(cfg))
    try:
        result = CliRunner().invoke(app, ["up", str(slice_file), "--no-progress", "--duration", "1"])
    finally:
        slice_file.unlink()
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    assert f"cannot write the state directory {blocker / 'demo'}" in text and "state_dir:" in text
    assert "Traceback" not in result.output
