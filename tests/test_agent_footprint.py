"""A node (or cluster) agent process does not import what it does not run: the embedded XMPP server
(pyjabber, and SQLAlchemy through it), the REST API stack (FastAPI, Starlette, uvicorn), SPADE's web
interface (jinja2, timeago) nor an ML stack (scikit-learn, SciPy). Checked in a
fresh interpreter that builds the agents the way `mlsysops agent node|cluster` does.

A node agent over the simulator or its host, registered over prosody and doing its work, also never loads
aiohttp (SPADE's file helpers and slixmpp's HTTP-upload plugin), loguru (SPADE's embedded server), slixmpp's
pygments highlighter nor MQTT (only a device gateway needs it); each still works when something calls it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.agents.slice_config import load_slice
from tests.support import AGENT_PASSWORD, until

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


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (what it imports is the point), which must succeed."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=100)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.mark.timeout(120)
def test_node_and_cluster_agents_import_neither_the_embedded_server_nor_the_api() -> None:
    out = _python(PROBE)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "spade" in loaded and "slixmpp" in loaded          # the probe did build agents
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_the_far_edge_agent_builds_without_pygments() -> None:
    """The far-edge agent takes slixmpp the agents' way too (~3 MB less on a board)."""
    out = _python("import asyncio, sys\n"
                  "from mlsysops.far_edge.agent import FarEdgeAgent\n"
                  "async def main():\n"
                  "    FarEdgeAgent('board-1@localhost', 'x', parent='edge-1@localhost', node='board-1',\n"
                  "                 components=[])\n"
                  "asyncio.run(main())\n"
                  "print('pygments' in sys.modules, 'slixmpp' in sys.modules)")
    assert out.stdout.split() == ["False", "True"]


def test_spade_still_finds_its_embedded_server_when_asked() -> None:
    """The stand-ins leave `sys.modules`: importing pyjabber afterwards gets the real server."""
    code = ("import mlsysops.agents.agent_base, sys; assert 'pyjabber' not in sys.modules\n"
            "from pyjabber.server import Server; import spade.container as c\n"
            "print(Server.__module__, c.Server.__name__)")
    out = _python(code)
    assert out.stdout.split() == ["pyjabber.server", "Server"]


def test_spade_builds_its_web_interface_when_asked() -> None:
    """An agent's `web` is a stand-in until used; using it builds SPADE's real WebApp."""
    code = ("import mlsysops.agents.agent_base, sys\n"
            "from mlsysops.agents.spade_lite import Agent\n"
            "a = Agent('probe@localhost', 'x')\n"
            "assert not a.web.is_started() and 'jinja2' not in sys.modules\n"
            "print(type(a.web.app).__name__, 'jinja2' in sys.modules)")
    out = _python(code)
    assert out.stdout.split() == ["Application", "True"]


# -- a node agent at work, in its own process -----------------------------------------------------------
NOT_IN_A_NODE = (*FORBIDDEN, "aiohttp", "loguru", "pygments", "aiomqtt", "paho")
DEMO = ROOT / "examples" / "slices" / "demo.yaml"
FAST = {"heartbeat": 0.2, "monitor": 0.1, "analyze": 0.1, "status_report": 0.2}

NODE_AT_WORK = """
import asyncio, json, sys
from mlsysops.agents.managed_agent import AgentSettings
from mlsysops.agents.slice_config import load_slice
from mlsysops.mechanisms.sim_placement import sim_node_spec
from mlsysops.node.agent import NodeAgent
from mlsysops.node.substrate import SimNodeSubstrate
from mlsysops.sim import SimClock, SimContinuum

async def main(port, password, parent, fast, demo):
    spec = load_slice(demo)
    desc = spec.nodes["edge-server-1"]
    sim = SimContinuum.from_specs([sim_node_spec(desc)], seed=1, clock=SimClock.realtime())
    sim.deploy("fp.c0.0@edge-server-1", "fp", "c0", "edge-server-1", 0.2, 64 * 2**20)
    agent = NodeAgent("node-fp-edge-server-1@localhost", password, description=desc,
                      substrate=SimNodeSubstrate(sim, "edge-server-1"), parent=parent,
                      settings=AgentSettings(**fast), port=port, force_xmpp=True)
    ticking = asyncio.create_task(sim.run(interval=0.05))
    await agent.start_agent()
    def working():   # registered, and its monitor has sampled the node and its instance several times
        cpu = agent.knowledge.series("system.cpu.utilization")
        return agent.membership.connected and cpu and min(len(s) for s in cpu.values()) >= 5 and agent._instances
    while not working():
        await asyncio.sleep(0.05)
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), flush=True)
    await asyncio.to_thread(sys.stdin.readline)   # until the test has seen it alive at the cluster
    await agent.stop()
    ticking.cancel()

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]))
"""


@pytest.mark.xmpp
@pytest.mark.timeout(120)
@pytest.mark.asyncio(loop_scope="session")
async def test_a_working_node_agent_loads_no_aiohttp_loguru_pygments_or_mqtt(prosody: Any) -> None:
    from mlsysops.cluster.agent import ClusterAgent
    from mlsysops.mechanisms.sim_placement import SimPlacementMechanism, sim_node_spec
    from mlsysops.sim import SimClock, SimContinuum

    spec = load_slice(DEMO)
    nodes = {n.name: n for n in spec.cluster_nodes("edge-1")}
    sim = SimContinuum.from_specs([sim_node_spec(n) for n in nodes.values()], seed=1, clock=SimClock.realtime())
    node_jid = "node-fp-edge-server-1@localhost"
    cluster = ClusterAgent("cluster-fp-edge-1@localhost", AGENT_PASSWORD, description=spec.clusters["edge-1"],
                           nodes=nodes, node_jids={"edge-server-1": node_jid},
                           placement=SimPlacementMechanism(sim, "edge-1"), parent="continuum-fp@localhost",
                           settings=AgentSettings(**FAST), port=prosody.port, force_xmpp=True)
    await cluster.start_agent()
    proc = subprocess.Popen([sys.executable, "-c", NODE_AT_WORK, str(prosody.port), AGENT_PASSWORD,
                             str(cluster.jid), json.dumps(FAST), str(DEMO)], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=90)   # type: ignore[union-attr]
        assert line, proc.stderr.read()[-2000:]   # type: ignore[union-attr]
        loaded = set(json.loads(line))
        await until(lambda: any(c.jid == node_jid for c in cluster.children.children(alive_only=True)), 30,
                    "the node agent alive at its cluster")
        assert "slixmpp" in loaded and "spade" in loaded and "opentelemetry" in loaded   # a real agent ran
        assert not loaded & set(NOT_IN_A_NODE), sorted(loaded & set(NOT_IN_A_NODE))
    finally:
        await asyncio.to_thread(proc.communicate, "stop\n", 30)
        await cluster.stop()
    assert proc.returncode == 0


SPADE_FILE_HELPERS = """
import asyncio, http.server, socket, sys, tempfile, threading
from pathlib import Path
import mlsysops.agents.agent_base
assert "aiohttp" not in sys.modules, "aiohttp loaded with the agents"
from mlsysops.agents.spade_lite import Agent, CyclicBehaviour

root = Path(tempfile.mkdtemp())
(root / "model.bin").write_bytes(b"weights" * 1000)
received = {}
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=str(root), **k)
    def do_PUT(self):   # what an XEP-0363 slot's PUT URL receives
        received[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201); self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}"
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); closed = s.getsockname()[1]

class Idle(CyclicBehaviour):
    async def run(self):
        pass

async def main():
    b = Idle()
    b.set_agent(Agent("probe@localhost", "x"))
    dest = Path(tempfile.mkdtemp())
    got = await b.download_file(f"{url}/model.bin", str(dest))          # SPADE's helper: aiohttp's client
    assert Path(got).read_bytes() == b"weights" * 1000
    assert await b.download_file(f"http://127.0.0.1:{closed}/x", str(dest)) is None   # aiohttp.ClientError caught
    from slixmpp.plugins.xep_0363 import http_upload   # the upload plugin's own HTTP step
    async with http_upload.ClientSession(headers={"User-Agent": "probe"}) as session:
        async with session.put(f"{url}/slot/model.bin", data=b"up") as resp:
            assert resp.status == 201
    assert received == {"/slot/model.bin": b"up"}
    import aiohttp, aiohttp.web   # anyone else gets the real module
    assert sys.modules["aiohttp"] is aiohttp and isinstance(aiohttp.ClientSession, type), aiohttp
    assert isinstance(session, aiohttp.ClientSession)
    import loguru, spade.container   # SPADE silences its embedded server through the real loguru
    assert spade.container.loguru.logger is loguru.logger
    print("ok")

asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_spade_file_helpers_and_the_upload_plugin_get_the_real_aiohttp_when_called() -> None:
    out = _python(SPADE_FILE_HELPERS)
    assert out.stdout.split() == ["ok"]


def test_slixmpp_still_highlights_xml_when_asked() -> None:
    """slixmpp's highlighter (its test helpers') is built with pygments on first call."""
    code = ("import mlsysops.agents.agent_base, sys; assert 'pygments' not in sys.modules\n"
            "from slixmpp.xmlstream import highlight\n"
            "print(repr(str(highlight('<a/>'))), 'pygments' in sys.modules)")
    out = _python(code)
    text, loaded = out.stdout.split()
    assert "\\x1b[" in text and "<a" in text and loaded == "True"   # ANSI colours around the XML
