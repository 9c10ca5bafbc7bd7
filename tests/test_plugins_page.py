"""docs/plugins.md: its example blocks are the example files, and they run as the page shows them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlsysops.agents.mape import DecisionLog, Knowledge, MAPEEngine
from mlsysops.plugins import MechanismRegistry, PolicyRegistry

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "plugins.md"
EMBEDDED = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```python\n(?P<code>.*?)```", re.S)


def embedded_files() -> dict[str, str]:
    return {m["path"]: m["code"] for m in EMBEDDED.finditer(PAGE.read_text())}


def test_the_page_shows_the_example_files_verbatim() -> None:
    blocks = embedded_files()
    assert set(blocks) == {"examples/plugins/policies/cpu_governor.py", "examples/plugins/mechanisms/cpu_knob.py"}
    for path, code in blocks.items():
        assert code == (ROOT / path).read_text(), f"docs/plugins.md shows an outdated {path}"


@pytest.mark.asyncio
async def test_the_example_policy_drives_the_example_mechanism(tmp_path: Path) -> None:
    # the page's blocks, written out and loaded exactly as the page's last block does
    for path, code in embedded_files().items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    policies = PolicyRegistry([tmp_path / "examples/plugins/policies"], entry_point_group=None)
    policies.load_all()
    mechanisms = MechanismRegistry()
    mechanisms.load_directory(tmp_path / "examples/plugins/mechanisms", cores=4)
    assert policies.names() == ["cpu_governor"] and "cpu_knob" in mechanisms and not mechanisms.errors

    system = {"node": "n1", "now": 0.0, "cpu_utilization": [0.9, 0.95, 0.92], "instances": []}
    log = DecisionLog("n1")
    engine = MAPEEngine("n1", Knowledge(), policies, mechanisms, log, assets=dict, system_description=lambda: system)
    await engine.refresh_mechanisms()
    assert await engine.run_cycle("cpu_governor", None) == "completed"
    state = mechanisms.get("cpu_knob").target.get_state()
    assert state == {"frequency": "max", "cores": 4, "changes": 1}
    plan = log.query(stage="plan")[0]
    assert plan.explanation == {"summary": "cpu 92% -> frequency max", "alternatives": ["min", "max"]}
    assert log.query(stage="execute")[0].outcome == "completed"

    assert await engine.run_cycle("cpu_governor", None) == "no_plan"   # it is at max already
    system["cpu_utilization"] = [0.1, 0.1, 0.2]
    assert await engine.run_cycle("cpu_governor", None) == "completed"
    assert mechanisms.get("cpu_knob").target.get_state()["frequency"] == "min"
    await engine.stop()
