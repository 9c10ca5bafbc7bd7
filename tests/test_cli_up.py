"""`mlsysops up` as a user runs it: a subprocess with the embedded XMPP server, apps applied, a fault
injected from a second command, a clean shutdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def _mlsysops() -> list[str]:
    exe = shutil.which("mlsysops", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mlsysops_cli"]


def _status(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/status", timeout=5) as resp:
        return json.loads(resp.read())


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(what)


def test_up_runs_the_demo_slice_and_heals_a_crashed_node(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}   # run.json and state go to a private home
    slice_file = tmp_path / "demo.yaml"
    text = (ROOT / "examples/slices/demo.yaml").read_text().replace("demo/", f"{ROOT}/examples/slices/demo/")
    slice_file.write_text(text.replace("port: 8080", "port: 0"))
    proc = subprocess.Popen([*_mlsysops(), "up", str(slice_file), "--apply", str(ROOT / "examples/apps"),
                             "--no-progress", "--duration", "60"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        run_file = tmp_path / ".mlsysops" / "demo" / "run.json"
        _wait(run_file.exists, 40, "mlsysops up did not start")
        url = json.loads(run_file.read_text())["control"]
        running = lambda: all(s["status"] == "running" for app in _status(url)["apps"].values()  # noqa: E731
                              for s in app.values()) and len(_status(url)["apps"]) == 2
        _wait(running, 30, "apps did not reach running")
        node = _status(url)["apps"]["env-monitor"]["sensor-reader"]["nodes"][0]
        out = subprocess.run([*_mlsysops(), "sim", "fail-node", node], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f"crash {node}" in out.stdout
        moved = lambda: (s := _status(url)["apps"]["env-monitor"]["sensor-reader"])["status"] == "running" \
            and node not in s["nodes"]  # noqa: E731
        _wait(moved, 20, "the component was not relocated")
        bad = subprocess.run([*_mlsysops(), "sim", "fail-node", "no-such-node"], env=env, capture_output=True,
                             text=True)
        assert bad.returncode == 1 and "unknown node" in bad.stderr
    finally:
        proc.send_signal(2)   # Ctrl-C
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "shutting down" in out
    assert not (tmp_path / ".mlsysops" / "demo" / "run.json").exists()
