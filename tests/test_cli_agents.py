"""One agent per process, as in production: `mlsysops sim serve` + `mlsysops agent continuum|cluster|node`
over a real XMPP server (prosody). An app is placed, a node crash kills that node's agent process-wise
(it goes offline), the component is relocated, and everything shuts down on SIGINT."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.support import AGENT_PASSWORD, until_blocking

ROOT = Path(__file__).resolve().parents[1]
WORKER_NOT_YET = (OSError, KeyError, IndexError)   # API not listening, app or component not known yet
NODES = ROOT / "examples/slices/demo/nodes"
pytestmark = pytest.mark.timeout(150)

APP = """
MLSysOpsApp:
  name: solo
  components:
    - metadata: {name: worker}
      node_placement: {continuum_layer: [edge]}
      containers:
        - image: registry.example.org/worker:1
          platform_requirements: {cpu: {requests: 200m}, memory: {requests: 64Mi}}
"""


def _cmd() -> list[str]:
    exe = shutil.which("mlsysops", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mlsysops.cli"]


def _get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _url_line(proc: subprocess.Popen, marker: str) -> str:
    line = proc.stdout.readline()
    assert marker in line, f"expected '{marker}', got {line!r}"
    return line.split(marker, 1)[1].split()[0]


def test_agents_in_separate_processes_form_the_hierarchy_and_heal(prosody, tmp_path):
    slice_file = tmp_path / "slice.yaml"
    slice_file.write_text(textwrap.dedent(f"""
        slice: procs
        xmpp: {{server: external, host: localhost, port: {prosody.port}, ca_file: {prosody.ca_file}}}
        clusters:
          - {{MLSysOpsCluster: {{cluster_id: edge-1, nodes: []}}}}
        nodes: ["{NODES}/edge-rpi-1.yaml", "{NODES}/edge-rpi-2.yaml", "{NODES}/edge-jetson-1.yaml"]
        intervals: {{heartbeat: 0.5s, analyze: 0.5s, monitor: 0.2s, status_report: 0.5s}}
        state_dir: {tmp_path / "state"}
    """))
    app = tmp_path / "app.yaml"
    app.write_text(APP)
    # one account per agent on prosody (it lets them register), with the run's test password: the same JIDs
    # (cluster-edge-1, node-edge-rpi-1) were created by earlier tests
    env = {**os.environ, "HOME": str(tmp_path), "MLSYSOPS_XMPP_PASSWORD": AGENT_PASSWORD}
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([*_cmd(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        procs.append(proc)
        return proc

    try:
        sim_url = _url_line(start("sim", "serve", str(slice_file)), "Simulator: ")
        api = _url_line(start("agent", "continuum", "-c", str(slice_file), "--apply", str(app), "--api-port", "0"),
                        "API: ")
        token = (tmp_path / "state" / "token").read_text().strip()   # generated: no tokens configured
        start("agent", "cluster", "-c", str(slice_file), "--id", "edge-1", "--sim", sim_url)
        for node in ("edge-rpi-1", "edge-rpi-2", "edge-jetson-1"):
            start("agent", "node", "-c", str(slice_file), "--id", node, "--sim", sim_url)
        worker = lambda: _get(f"{api}/api/v1/apps/solo", token)["components"]["worker"]  # noqa: E731
        until_blocking(lambda: worker()["status"] == "running", 60, "app did not run across processes",
                       ignoring=WORKER_NOT_YET)
        # the continuum wrote a CLI context (like `up`): the CLI works with no flags
        listed = subprocess.run([*_cmd(), "get", "apps"], env=env, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and "solo" in listed.stdout, listed.stderr
        victim = worker()["nodes"][0]
        cluster = _get(f"{api}/api/v1/clusters/edge-1", token)   # infrastructure from registrations alone
        assert cluster["alive"] and {n["name"] for n in cluster["node_status"]} == \
            {"edge-rpi-1", "edge-rpi-2", "edge-jetson-1"}
        out = subprocess.run([*_cmd(), "sim", "fail-node", victim, "--control", sim_url], env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f"crash {victim}" in out.stdout
        until_blocking(lambda: worker()["status"] == "running" and victim not in worker()["nodes"], 30,
                       "component was not relocated after the node crash", ignoring=WORKER_NOT_YET)
        decisions = _get(f"{api}/api/v1/decisions?app=solo&limit=200", token)
        assert any(d["stage"] == "execute" and d["outcome"] == "completed" for d in decisions)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=30) for proc in procs]
    assert codes == [0] * len(procs)
