"""The shape of the code: the import contracts of pyproject.toml hold, a forbidden import would break them,
and the wheel claims the one import name `mlsysops` in site-packages (plus `mlstelemetry`, the stand-in
original MLSysOps plugins import)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from scripts.lint_imports import lint, stage
from setup_layout import COMPAT_TOP_LEVEL, ROOMS

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    result = lint()   # the checkout itself, as `lint-imports` sees it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].split("\n")[0].replace("0 broken", "")


def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path) -> None:
    staged = stage(tmp_path)
    (staged / "mlsysops" / "agents" / "forbidden_probe.py").write_text("import mlsysops.cluster.agent\n")
    result = lint(staged)
    assert result.returncode != 0
    assert "the core knows no layer" in result.stdout
    assert "mlsysops.agents.forbidden_probe -> mlsysops.cluster.agent" in result.stdout


def test_a_cycle_breaks_the_contracts(tmp_path: Path) -> None:
    staged = stage(tmp_path)
    (staged / "mlsysops" / "sim" / "clock.py").open("a").write("\nimport mlsysops.sim.continuum  # noqa\n")
    result = lint(staged)
    assert result.returncode != 0 and "No cycles are allowed in mlsysops.sim" in result.stdout


def test_the_wheel_installs_one_top_level_name(tmp_path: Path) -> None:
    # built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "setup_layout.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for room in ("mlsysops", *ROOMS, *COMPAT_TOP_LEVEL):   # the room links inside mlsysops/ stay links
        shutil.copytree(ROOT / room, src / room, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("mlsysops-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    # plus the stand-ins for the original framework's top-level import names (`mlstelemetry`), nothing else
    assert top == {"mlsysops", *COMPAT_TOP_LEVEL}
    assert "mlstelemetry/__init__.py" in names
    for needed in ("mlsysops/agents/generated/crds/mlsysopsapps.mlsysops.eu.yaml",
                   "mlsysops/continuum/dashboard/index.html", "mlsysops/cli/main.py",
                   "mlsysops/substrates/kubernetes/client.py", "mlsysops/agents/placement/types.py"):
        assert needed in names, needed


def test_no_code_imports_a_room_by_its_folder_name() -> None:
    """In a checkout `import policies` would also work (the folder is on sys.path) and load a second copy of
    every module it touches; only `mlsysops.<room>` is the package."""
    pattern = re.compile(rf"^\s*(from|import)\s+({'|'.join(ROOMS)}|mlsysops_cli)(\.|\s|$)", re.M)
    offenders = [f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
                 for folder in ("mlsysops", *ROOMS, "tests", "benchmarks", "examples", "scripts")
                 for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts
                 for m in pattern.finditer(path.read_text())]
    assert offenders == []
