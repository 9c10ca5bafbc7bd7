"""The kubectl-like CLI against a running slice, as a user runs it: `mlsysops up` in one process, then
`mlsysops apply/get/describe/events/ping/policy/delete` as separate commands using the context `up` wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(180)


def _cmd() -> list[str]:
    """This checkout's CLI (`-m` from the repository root: the installed script may import another tree)."""
    return [sys.executable, "-m", "mlsysops.cli"]


@pytest.fixture(scope="module")
def slice_up(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "HOME": str(home)}
    env.pop("MLSYSOPS_API", None)
    env.pop("MLSYSOPS_TOKEN", None)
    slice_file = home / "demo.yaml"
    text = (ROOT / "examples/slices/demo.yaml").read_text().replace("demo/", f"{ROOT}/examples/slices/demo/")
    slice_file.write_text(text.replace("port: 8080", "port: 0"))
    proc = subprocess.Popen([*_cmd(), "up", str(slice_file), "--no-progress", "--duration", "150"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 40
    while not (home / ".mlsysops" / "config.yaml").exists():
        assert time.monotonic() < deadline and proc.poll() is None, "mlsysops up did not write its CLI context"
        time.sleep(0.2)
    yield env
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def run(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_cmd(), *args], env=env, capture_output=True, text=True, timeout=60)


def wait_json(env, args: tuple[str, ...], predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        out = run(env, *args)
        if out.returncode == 0 and predicate(json.loads(out.stdout)):
            return json.loads(out.stdout)
        assert time.monotonic() < deadline, f"{args}: {out.stdout} {out.stderr}"
        time.sleep(0.5)


def test_apply_get_describe_events_delete(slice_up):
    env = slice_up
    out = run(env, "apply", "-f", str(ROOT / "examples/apps/env-monitor.yaml"))
    assert out.returncode == 0 and "app/env-monitor created" in out.stdout, out.stderr
    again = run(env, "apply", "-f", str(ROOT / "examples/apps/env-monitor.yaml"))
    assert "app/env-monitor unchanged" in again.stdout
    wait_json(env, ("get", "apps", "-o", "json"),
              lambda apps: apps and apps[0]["status"] == {"running": 2})
    table = run(env, "get", "apps")
    assert "env-monitor" in table.stdout and "running=2" in table.stdout
    detail = run(env, "describe", "app", "env-monitor", "-o", "table")
    assert "aggregator" in detail.stdout and "edge-server-1" in detail.stdout
    nodes = wait_json(env, ("get", "nodes", "-o", "json"), lambda ns: len(ns) == 7 and all(n["alive"] for n in ns))
    assert {n["name"] for n in nodes} >= {"edge-rpi-1", "cloud-vm-1"}
    assert "edge-1" in run(env, "get", "clusters").stdout
    events = run(env, "events", "env-monitor")
    assert "filter_score_placement" in events.stdout
    decisions = json.loads(run(env, "get", "decisions", "--app", "env-monitor", "--limit", "1000",
                               "-o", "json").stdout)
    assert any(d["stage"] == "execute" and d["outcome"] == "completed" for d in decisions)
    # Telemetry reaches the continuum in cluster digests (every telemetry.digest_interval): wait for it.
    top_nodes = wait_json(env, ("top", "nodes", "-o", "json"),
                          lambda rows: any(r["node"] == "edge-server-1" and r.get("running") for r in rows))
    assert any(r["node"] == "edge-server-1" and 0 <= r["system.cpu.utilization"] <= 1 and r["cluster"] == "edge-1"
               for r in top_nodes)
    wait_json(env, ("top", "apps", "-o", "json"),
              lambda rows: any(r["component"] == "aggregator" and r.get("response_time_ms", 0) > 0 for r in rows))
    yaml_out = run(env, "get", "clusters", "-o", "yaml")
    assert "id: edge-1" in yaml_out.stdout
    gone = run(env, "delete", "app", "env-monitor")
    assert gone.returncode == 0 and "app/env-monitor deleted" in gone.stdout
    assert json.loads(run(env, "get", "apps", "-o", "json").stdout) == []


def test_ping_and_policies(slice_up):
    env = slice_up
    out = run(env, "ping", "edge-1")
    assert out.returncode == 0 and "latency_ms=" in out.stdout, out.stderr
    listed = run(env, "policy", "list", "-o", "json")
    assert "relocation" in listed.stdout
    assert run(env, "policy", "disable", "edge-1", "relocation").returncode == 0
    after = json.loads(run(env, "policy", "list", "-o", "json").stdout)
    edge = next(p for p in after if p["agent"] == "edge-1" and p["name"] == "relocation")
    assert edge["enabled"] is False
    assert run(env, "policy", "enable", "edge-1", "relocation").returncode == 0


def test_policy_upload_is_validated_before_activation(slice_up, tmp_path):
    env = slice_up
    good = tmp_path / "tiny_probe.py"
    good.write_text("def initialize():\n    return {'scope': 'global', 'configuration': {'analyze_interval': 5}}\n"
                    "async def analyze(c, a, s, m, t, ml):\n    return False, c\n"
                    "async def plan(c, a, s, m, t, ml):\n    return {}, c\n")
    out = run(env, "policy", "upload", "edge-1", str(good))
    assert out.returncode == 0 and "policy tiny_probe added on edge-1" in out.stdout, out.stderr
    listed = json.loads(run(env, "policy", "list", "-o", "json").stdout)
    assert any(p["agent"] == "edge-1" and p["name"] == "tiny_probe" for p in listed)
    bad = tmp_path / "broken_probe.py"
    bad.write_text("def initialize():\n    return {'scope': 'sideways'}\n")   # no analyze/plan
    rejected = run(env, "policy", "upload", "edge-1", str(bad))
    assert rejected.returncode == 1 and "rejected" in rejected.stderr
    listed = json.loads(run(env, "policy", "list", "-o", "json").stdout)
    assert not any(p["name"] == "broken_probe" for p in listed)


def test_errors_go_to_stderr_with_a_non_zero_exit(slice_up, tmp_path):
    env = slice_up
    broken = tmp_path / "broken.yaml"
    broken.write_text("MLSysOpsApp:\n  name: b\n  componets: []\n")
    out = run(env, "apply", "-f", str(broken))
    assert out.returncode == 1 and "componets" in out.stderr and "components" in out.stderr
    missing = run(env, "describe", "app", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr
    unauthorised = run(env, "get", "apps", "--token", "not-a-token")
    assert unauthorised.returncode == 1 and "401" in unauthorised.stderr
    nowhere = run({**env, "HOME": str(tmp_path)}, "get", "apps")
    assert nowhere.returncode == 1 and "no API configured" in nowhere.stderr


def test_management_mode_propagates_and_pauses_policies(slice_up, tmp_path):
    env = slice_up
    ml = tmp_path / "ml_placement.py"
    ml.write_text("def initialize():\n    return {'scope': 'application', 'mode': 'ml',\n"
                  "            'mechanisms': ['component_placement'], 'configuration': {'analyze_interval': 5}}\n"
                  "async def analyze(c, a, s, m, t, ml):\n    return False, c\n"
                  "async def plan(c, a, s, m, t, ml):\n    return {}, c\n")
    assert run(env, "policy", "upload", "edge-1", str(ml)).returncode == 0

    def enabled(name: str) -> bool:
        rows = json.loads(run(env, "policy", "list", "-o", "json").stdout)
        return next(r for r in rows if r["agent"] == "edge-1" and r["name"] == name)["enabled"]

    assert enabled("ml_placement") is False          # heuristic mode pauses ML policies
    out = run(env, "mode", "ml")
    assert out.returncode == 0 and "edge-1: ml" in out.stdout and "edge-rpi-1: ml" in out.stdout, out.stdout
    shown = run(env, "mode").stdout
    agents = [line for line in shown.strip().splitlines() if not line.startswith("  ")]   # not per-app lines
    assert agents and all(line.endswith("\tml") for line in agents), shown
    assert enabled("ml_placement") is True
    assert enabled("filter_score_placement") is False  # an ML policy covers its mechanism on edge-1
    assert enabled("relocation") is False
    cloud = {r["name"]: r["enabled"] for r in json.loads(run(env, "policy", "list", "-o", "json").stdout)
             if r["agent"] == "cloud-1"}
    # every cluster has the built-in ML placement policy: in ml mode it decides there (with the
    # heuristics' code until it has a model), so the heuristics sharing its mechanism are paused
    assert cloud["ml_qos_placement"] is True and cloud["filter_score_placement"] is False
    assert run(env, "mode", "heuristic").returncode == 0
    assert enabled("ml_placement") is False and enabled("filter_score_placement") is True
    bad = run(env, "mode", "quantum")
    assert bad.returncode == 1 and "422" in bad.stderr


def test_apply_and_delete_a_node(slice_up, tmp_path):
    env = slice_up
    text = (ROOT / "examples/slices/demo/nodes/edge-rpi-1.yaml").read_text().replace("edge-rpi-1", "edge-rpi-8")
    assert "edge-rpi-8" in text
    node_file = tmp_path / "edge-rpi-8.yaml"
    node_file.write_text(text)
    out = run(env, "apply", "-f", str(node_file))
    assert out.returncode == 0 and "node/edge-rpi-8 registered" in out.stdout, out.stderr
    wait_json(env, ("get", "nodes", "-o", "json"),
              lambda ns: any(n["name"] == "edge-rpi-8" and n["alive"] for n in ns))
    gone = run(env, "delete", "node", "edge-rpi-8")
    assert gone.returncode == 0 and "node/edge-rpi-8 drained (0 relocated) and removed" in gone.stdout, gone.stderr
    assert not any(n["name"] == "edge-rpi-8" for n in json.loads(run(env, "get", "nodes", "-o", "json").stdout))


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (45.9, "45s"), (119, "119s"), (120, "2m"), (330, "5m30s"), (42 * 60, "42m"),
    (4 * 3600 + 53 * 60, "4h53m"), (5 * 3600, "5h"), (30 * 3600, "30h"), (3 * 86400 + 4 * 3600, "3d4h"),
    (12 * 86400 + 5, "12d"), (-3, "0s"),
])
def test_ages_read_like_kubectl(seconds, shown):
    from mlsysops.cli.client_cmd import human_age

    assert human_age(seconds) == shown
