"""Check the import contracts in pyproject.toml ([tool.importlinter]).

In a checkout plain `lint-imports` does it (`mlsysops/<room>` links to the room's folder). This script also
runs it on a copy of the sources (`stage`), which the tests use to show that a forbidden import added to
the copy breaks the contracts without touching the checkout. Exit status: lint-imports'.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stage(target: Path) -> Path:
    """A copy of the package's Python sources (the room links followed) in target/mlsysops; returns target."""
    shutil.copytree(ROOT / "mlsysops", target / "mlsysops", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "generated", "dashboard"))
    return target


def lint(where: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with this project's contracts, on the package found in `where`."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([exe, str(ROOT / "pyproject.toml"), "--no-cache"], cwd=where, env=env,
                          capture_output=True, text=True, check=False)


if __name__ == "__main__":
    result = lint()
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise SystemExit(result.returncode)
