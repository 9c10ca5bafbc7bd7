"""`mlsysops up` as a user runs it: a subprocess with the embedded XMPP server, apps applied, a fault
injected from a second command, a clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import until_blocking

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def _mlsysops() -> list[str]:
    """This checkout's CLI (`-m` from the repository root: the installed script may import another tree)."""
    return [sys.executable, "-m", "mlsysops.cli"]


def _get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _apps(api: str, token: str) -> dict:
    """app -> component -> status, through the REST API."""
    return {a["name"]: _get(f"{api}/api/v1/apps/{a['name']}", token)["components"]
            for a in _get(f"{api}/api/v1/apps", token)}


def test_up_runs_the_demo_slice_and_heals_a_crashed_node(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}   # run.json and state go to a private home
    slice_file = tmp_path / "demo.yaml"
    text = (ROOT / "examples/slices/demo.yaml").read_text().replace("demo/", f"{ROOT}/examples/slices/demo/")
    slice_file.write_text(text.replace("port: 8080", "port: 0"))
    proc = subprocess.Popen([*_mlsysops(), "up", str(slice_file), "--apply", str(ROOT / "examples/apps"),
                             "--no-progress", "--duration", "60"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        run_file = tmp_path / ".mlsysops" / "demo" / "run.json"
        until_blocking(run_file.exists, 40, "mlsysops up did not start")
        run = json.loads(run_file.read_text())
        api, token_file = run["api"], Path(run["token_file"])
        assert run["control"] == f"{api}/api/v1"
        assert token_file == tmp_path / ".mlsysops" / "demo" / "token" and token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        with urllib.request.urlopen(f"{api}/readyz", timeout=5) as resp:   # no token needed
            assert json.loads(resp.read())["ready"] is True
        try:
            urllib.request.urlopen(f"{api}/api/v1/apps", timeout=5)
            raise AssertionError("the API answered without a token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        running = lambda: all(s["status"] == "running" for app in _apps(api, token).values()  # noqa: E731
                              for s in app.values()) and len(_apps(api, token)) == 2
        until_blocking(running, 30, "apps did not reach running")
        # The Prometheus endpoint serves the slice once digests arrive; the dashboard page is served.
        metrics = lambda: 'system_cpu_utilization{host_name="edge-rpi-1"' in urllib.request.urlopen(  # noqa: E731
            f"{api}/metrics", timeout=5).read().decode()
        until_blocking(metrics, 20, "/metrics never served the nodes' cpu")
        with urllib.request.urlopen(f"{api}/dashboard", timeout=5) as resp:
            assert b"uPlot" in resp.read()
        node = _apps(api, token)["env-monitor"]["sensor-reader"]["nodes"][0]
        out = subprocess.run([*_mlsysops(), "sim", "fail-node", node], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f"crash {node}" in out.stdout
        moved = lambda: (s := _apps(api, token)["env-monitor"]["sensor-reader"])["status"] == "running" \
            and node not in s["nodes"]  # noqa: E731
        until_blocking(moved, 20, "the component was not relocated")
        bad = subprocess.run([*_mlsysops(), "sim", "fail-node", "no-such-node"], env=env, capture_output=True,
                             text=True)
        assert bad.returncode == 1 and "unknown node" in bad.stderr
        explicit = subprocess.run([*_mlsysops(), "sim", "recover-node", node, "--control", run["control"]],
                                  env={**env, "MLSYSOPS_API_TOKEN": token}, capture_output=True, text=True)
        assert explicit.returncode == 0 and f"recover {node}" in explicit.stdout, explicit.stderr
        wrong = subprocess.run([*_mlsysops(), "sim", "recover-node", node, "--control", run["control"]],
                               env={**env, "MLSYSOPS_API_TOKEN": "wrong"}, capture_output=True, text=True)
        assert wrong.returncode == 1 and "bearer token" in wrong.stderr
    finally:
        proc.send_signal(2)   # Ctrl-C
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "shutting down" in out
    assert f"API: {api}" in out and f"cat {token_file}" in out
    assert f"Dashboard: {api}/dashboard#token={token}" in out and f"Metrics: {api}/metrics" in out
    assert not (tmp_path / ".mlsysops" / "demo" / "run.json").exists()
    state = tmp_path / ".mlsysops" / "demo"
    assert state.stat().st_mode & 0o777 == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.suffix in (".db", ".sqlite", ".sqlite3") or "db" in p.name for p in files), files
    assert all(p.stat().st_mode & 0o077 == 0 for p in files), {str(p): oct(p.stat().st_mode) for p in files}


def _slice(tmp_path: Path) -> Path:
    slice_file = tmp_path / "demo.yaml"
    text = (ROOT / "examples/slices/demo.yaml").read_text().replace("demo/", f"{ROOT}/examples/slices/demo/")
    slice_file.write_text(text.replace("port: 8080", "port: 0"))
    return slice_file


def _server_pids(workdir: Path) -> list[int]:
    """Processes whose command line names the embedded server's workdir (the server and its workers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(workdir).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _start_up(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`mlsysops up` with a private HOME and TMPDIR; returns it and the embedded server's workdir."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp)}
    proc = subprocess.Popen([*_mlsysops(), "up", str(_slice(tmp_path)), "--no-progress"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    until_blocking((tmp_path / ".mlsysops" / "demo" / "run.json").exists, 40, "mlsysops up did not start")
    workdirs = list(tmp.glob("mlsysops-xmpp-*"))
    assert len(workdirs) == 1, workdirs
    assert _server_pids(workdirs[0]), "no embedded server process found"
    return proc, workdirs[0]


def test_piped_up_stops_on_ctrl_c_after_its_reader_died(tmp_path):
    """`mlsysops up | tee log` and Ctrl-C: tee dies first, so every later write hits a closed pipe."""
    proc, workdir = _start_up(tmp_path)
    proc.stdout.close()   # the reader is gone
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    until_blocking(lambda: not _server_pids(workdir), 10, "the embedded XMPP server outlived `up`")
    assert not workdir.exists(), "the server's workdir (CA key, account database) was left behind"
    assert not (tmp_path / ".mlsysops" / "demo" / "run.json").exists()


def test_kill_9_of_up_leaves_no_server_nor_keys(tmp_path):
    proc, workdir = _start_up(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()
    until_blocking(lambda: not _server_pids(workdir), 15, "the embedded XMPP server outlived `up` (kill -9)")
    until_blocking(lambda: not workdir.exists(), 5, "the server's workdir outlived `up` (kill -9)")
