"""The far-edge agent's import closure (a fresh interpreter) and its bad-input paths without a server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlsysops.far_edge.cli import ConfigError, build, load, parser
from mlsysops.far_edge.components import Component, ComponentError
from mlsysops.far_edge.outbox import Outbox
from tests.support import ROOT

FORBIDDEN = ("spade", "pydantic", "numpy", "kubernetes", "opentelemetry", "psutil", "aiohttp", "fastapi", "typer")


def test_import_closure_has_none_of_the_heavy_packages() -> None:
    code = ("import sys, mlsysops.far_edge.agent, mlsysops.far_edge.cli\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
            "print(sorted(m for m in sys.modules if m.startswith('mlsysops')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tops, ours = (json.loads(line.replace("'", '"')) for line in out.splitlines())
    assert "slixmpp" in tops
    assert not [m for m in FORBIDDEN if m in tops], tops
    assert "mlsysops.agents.protocol" not in ours and "mlsysops.agents.mape" not in ours


def test_module_entry_point_explains_a_missing_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"jid": "a@b", "parent": "c@b", "components": [{"name": "x", "command": "ls"}]}))
    r = subprocess.run([sys.executable, "-m", "mlsysops.far_edge", "--config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, env={"MLSYSOPS_XMPP_PASSWORD": "pw", "PATH": "/usr/bin"})
    assert r.returncode == 2 and "components[0].command: expected a non-empty list of strings" in r.stderr


@pytest.mark.parametrize("raw, where", [
    ({"jid": "a@b"}, "parent: required"),
    ({"jid": "a@b", "parent": "c@b", "turbo": True}, "unknown field(s) ['turbo']"),
])
def test_config_errors(tmp_path: Path, raw: dict, where: str) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=__import__("re").escape(where)):
        load(parser().parse_args(["--config", str(cfg)]))


def test_garbage_json_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text("{nope")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load(parser().parse_args(["--config", str(cfg)]))


def test_component_definitions_are_checked() -> None:
    with pytest.raises(ComponentError, match=r"c\.restart: expected one of"):
        Component.parse({"name": "x", "command": ["true"], "restart": "sometimes"}, "n", "c")
    with pytest.raises(ComponentError, match=r"c\.name"):
        Component.parse({"command": ["true"]}, "n", "c")


def test_full_buffer_drops_oldest_counts_it_and_says_so() -> None:
    box = Outbox(telemetry_limit=2, event_limit=2)
    for i in range(5):
        box.telemetry.push({"t": i})
    assert [b["t"] for b in box.telemetry.items] == [3, 4]
    assert box.dropped() == {"telemetry": 3}
    for i in range(10):   # instance states coalesce: they never overflow
        box.instance_changed({"instance_id": "a", "state": "failed" if i % 2 else "running"})
    assert len(box.take_states()) == 1


def test_offline_agent_buffers_and_records_a_full_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSYSOPS_XMPP_PASSWORD", "pw")
    async def scenario() -> None:
        args = parser().parse_args(["--jid", "n@example.invalid", "--parent", "c@example.invalid"])
        agent = build(load(args) | {"telemetry_buffer": 2})
        for i in range(4):
            agent._record("x", {"node": agent.node}, float(i))
            await agent._report(float(i))
        assert len(agent.outbox.telemetry) == 2 and agent.outbox.dropped() == {"telemetry": 2}
        assert any(d["policy"] == "far_edge.buffer" and d["outcome"] == "error" for d in agent.decisions)
        assert agent.digest()["dropped"] == {"telemetry": 2}
    asyncio.run(scenario())


def test_mlsysops_agent_far_edge_entry_point() -> None:
    r = subprocess.run([sys.executable, "-c", "import sys; sys.argv=['mlsysops','agent','far-edge','--help'];"
                        "from mlsysops.cli.main import main; main()"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--parent" in r.stdout and "--password-file" in r.stdout


def test_host_metrics_from_proc_and_sysfs_trees(tmp_path: Path) -> None:
    """/proc and sysfs read without psutil (a tree of the same layout stands in for the board's)."""
    from mlsysops.far_edge.hostmetrics import HostMetrics

    proc, sysfs = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:  250 kB\n")
    (proc / "loadavg").write_text("0.50 0.40 0.30 1/100 42\n")
    (proc / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\n")
    rapl = sysfs / "class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text("5000000\n")
    freq = sysfs / "devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    (freq / "scaling_cur_freq").write_text("1200000\n")
    host = HostMetrics(proc, sysfs)
    first = host.sample()
    assert "system.cpu.utilization" not in first             # no reference window yet: absent, not invented
    assert first["system.memory.utilization"] == 0.75 and first["system.cpu.load_average.1m"] == 0.5
    assert first["system.cpu.frequency"] == 1.2e9 and first["hw.energy"] == 5.0
    (proc / "stat").write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")   # 100 busy of 200 jiffies
    (rapl / "energy_uj").write_text("7000000\n")
    second = host.sample()
    assert second["system.cpu.utilization"] == 0.5 and second["hw.energy"] == 7.0 and second["hw.power"] > 0
    assert HostMetrics(tmp_path / "none", tmp_path / "none").sample().keys() == {"system.cpu.logical.count"}


def test_idle_rule_lowers_and_restores_the_governor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local `idle_frequency` rule on a cpufreq tree: powersave while idle, performance when busy, and
    inactive (said once, with the reason) where `cpu_frequency` is not permitted."""
    from tests.test_node_knobs import sysfs_tree

    monkeypatch.setenv("MLSYSOPS_XMPP_PASSWORD", "pw")
    root = sysfs_tree(tmp_path / "cpu")
    governor = root / "cpufreq/policy0/scaling_governor"

    async def scenario(permitted: list[str]) -> Any:
        cfg = load(parser().parse_args(["--jid", "n@example.invalid", "--parent", "c@example.invalid"]))
        agent = build(cfg | {"cpufreq_root": str(root), "permitted_actions": permitted})
        for _ in range(5):
            await agent.rules.run({"system.cpu.utilization": 0.05})
        idle = governor.read_text().strip()
        await agent.rules.run({"system.cpu.utilization": 0.9})
        return agent, idle, governor.read_text().strip()

    agent, idle, busy = asyncio.run(scenario(["cpu_frequency"]))
    assert (idle, busy) == ("powersave", "performance")
    assert [d["chosen"] for d in agent.decisions if d["policy"] == "far_edge.idle_frequency"] == \
        [{"governor": "powersave"}, {"governor": "performance"}]
    governor.write_text("schedutil")
    agent, idle, busy = asyncio.run(scenario([]))
    assert (idle, busy) == ("schedutil", "schedutil")
    said = [d["reason"] for d in agent.decisions if d["policy"] == "far_edge.idle_frequency"]
    assert said == ["rule inactive: permitted_actions do not include cpu_frequency"]
