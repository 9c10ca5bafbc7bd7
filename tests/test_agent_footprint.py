"""A node (or cluster) agent process does not import what it does not run: the embedded XMPP server
(pyjabber, and SQLAlchemy through it), the REST API stack (FastAPI, Starlette, uvicorn), SPADE's web
interface (jinja2, timeago) nor an ML stack (scikit-learn, SciPy). Checked in a
fresh interpreter that builds the agents the way `mlsysops agent node|cluster` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("pyjabber", "sqlalchemy", "fastapi", "starlette", "uvicorn", "jinja2", "aiohttp_jinja2", "timeago",
             "sklearn", "scipy")

PROBE = f"""
import json, sys
import mlsysops.cli.agent_cmd
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.slice_assembly import SliceAssembly
from mlsysops.node.substrate import RemoteSimNodeSubstrate
spec = load_slice({str(ROOT / "examples" / "slices" / "demo.yaml")!r})
assembly = SliceAssembly(spec, password="probe-password")
node = assembly.node_agent("edge-server-1", RemoteSimNodeSubstrate("http://127.0.0.1:9", "edge-server-1"))
cluster = assembly.cluster_agent("edge-1", assembly.placement_for("edge-1", sim_url="http://127.0.0.1:9"))
for i in range(60):   # the cluster judges a node from its metrics (node trust's anomaly detector)
    cluster.trust.metrics("edge-server-1", {{"cpu": 0.3, "memory": 0.5}})
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


@pytest.mark.timeout(120)
def test_node_and_cluster_agents_import_neither_the_embedded_server_nor_the_api() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "spade" in loaded and "slixmpp" in loaded          # the probe did build agents
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_spade_still_finds_its_embedded_server_when_asked() -> None:
    """The stand-ins leave `sys.modules`: importing pyjabber afterwards gets the real server."""
    code = ("import mlsysops.agents.agent_base, sys; assert 'pyjabber' not in sys.modules\n"
            "from pyjabber.server import Server; import spade.container as c\n"
            "print(Server.__module__, c.Server.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["pyjabber.server", "Server"]


def test_spade_builds_its_web_interface_when_asked() -> None:
    """An agent's `web` is a stand-in until used; using it builds SPADE's real WebApp."""
    code = ("import mlsysops.agents.agent_base, sys\n"
            "from mlsysops.agents.spade_lite import Agent\n"
            "a = Agent('probe@localhost', 'x')\n"
            "assert not a.web.is_started() and 'jinja2' not in sys.modules\n"
            "print(type(a.web.app).__name__, 'jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Application", "True"]
