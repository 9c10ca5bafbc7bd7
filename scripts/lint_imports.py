"""Check the import contracts in pyproject.toml ([tool.importlinter]) against the installed layout.

import-linter walks a package's own folder, but the rooms are top-level folders of the repository that
install under `mlsysops` (setup.py). This stages the sources as the wheel lays them out (mlsysops/agents/,
mlsysops/cluster/, ...) in a temporary folder and runs `lint-imports` there. Exit status: lint-imports'.

    python scripts/lint_imports.py                 # all contracts
    python scripts/lint_imports.py --stage-only D  # only stage into D (the tests add a forbidden import)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from setup_layout import ROOMS  # noqa: E402 - the one list of rooms, shared with setup.py


def stage(target: Path) -> Path:
    """Copy the Python sources into target/mlsysops/... as installed; returns target."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "generated", "dashboard")
    pkg = target / "mlsysops"
    shutil.copytree(ROOT / "mlsysops", pkg, ignore=ignore, dirs_exist_ok=True)
    for room in ROOMS:
        shutil.copytree(ROOT / room, pkg / room, ignore=ignore, dirs_exist_ok=True)
    return target


def lint(staged: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {**os.environ, "PYTHONPATH": str(staged)}
    return subprocess.run([exe, str(ROOT / "pyproject.toml"), "--no-cache"], cwd=staged, env=env,
                          capture_output=True, text=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage-only", type=Path, help="stage into this folder and stop")
    args = parser.parse_args()
    if args.stage_only:
        stage(args.stage_only)
        return 0
    with tempfile.TemporaryDirectory(prefix="mlsysops-imports-") as tmp:
        result = lint(stage(Path(tmp)))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
