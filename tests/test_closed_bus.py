"""The slice on a production-style XMPP server: registration closed, STARTTLS required, the server's
certificate verified, one account per agent made by `mlsysops xmpp accounts`. Run on prosody and on
ejabberd (both Debian packages; `.ci/run` installs them), one agent per process, as an operator would."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsysops.agents.agent_base import AgentStartError, MLSysOpsAgent
from mlsysops.agents.xmpp_ejabberd import EjabberdServer, ejabberd_available
from mlsysops.agents.xmpp_prosody import ProsodyServer, prosody_available
from mlsysops.agents.xmpp_tls import TlsVerification
from tests.support import ROOT, until_blocking
from tests.test_cli_agents import APP, WORKER_NOT_YET, _cmd, _get, _url_line

NODES = ROOT / "examples/slices/demo/nodes"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module", params=["prosody", "ejabberd"])
def closed_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server the slice does not own: accounts only through its admin tool."""
    if request.param == "prosody":
        if not prosody_available():
            pytest.fail("prosody is not installed: `apt-get install prosody` (.ci/run does it)")
        server: Any = ProsodyServer(tmp_path_factory.mktemp("prosody-closed"), allow_registration=False)
        server.ctl_command = f"prosodyctl --config {server.config_path}"
    else:
        if not ejabberd_available():
            why = "ejabberd is not installed: `apt-get install ejabberd` (.ci/run does it)"
            pytest.fail(why) if os.environ.get("CI") == "true" else pytest.skip(why)
        server = EjabberdServer(tmp_path_factory.mktemp("ejabberd"))
    server.kind = request.param
    server.start_sync()
    yield server
    server.stop_sync()


def _slice(tmp_path: Path, server: Any, ca_file: Path) -> Path:
    path = tmp_path / "slice.yaml"
    path.write_text(textwrap.dedent(f"""
        slice: closed
        xmpp: {{server: external, host: localhost, port: {server.port}, password_dir: {tmp_path / "accounts"},
                ca_file: {ca_file}}}
        clusters:
          - {{MLSysOpsCluster: {{cluster_id: edge-1, nodes: []}}}}
        nodes: ["{NODES}/edge-rpi-1.yaml", "{NODES}/edge-jetson-1.yaml"]
        intervals: {{heartbeat: 0.5s, analyze: 0.5s, monitor: 0.2s, status_report: 0.5s}}
        state_dir: {tmp_path / "state"}
    """))
    return path


def _other_ca(tmp_path: Path) -> Path:
    """A valid certificate for the same name that the server does not use."""
    crt = tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(tmp_path / "o.key"),
                    "-out", str(crt)], check=True, capture_output=True)
    return crt


def test_accounts_are_made_per_agent_and_registered_with_the_servers_tool(closed_server, tmp_path):
    slice_file = _slice(tmp_path, closed_server, closed_server.ca_file)
    out = subprocess.run([*_cmd(), "xmpp", "accounts", "-c", str(slice_file), "--register", closed_server.kind,
                          "--ctl", closed_server.ctl_command], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    files = sorted(p.name for p in (tmp_path / "accounts").iterdir())
    assert files == ["cluster-edge-1", "continuum-closed", "node-edge-jetson-1", "node-edge-rpi-1"]
    passwords = {p.name: p.read_text().strip() for p in (tmp_path / "accounts").iterdir()}
    assert len(set(passwords.values())) == 4                       # one secret per agent
    assert all(((tmp_path / "accounts" / f).stat().st_mode & 0o777) == 0o600 for f in files)
    again = subprocess.run([*_cmd(), "xmpp", "accounts", "-c", str(slice_file)], capture_output=True, text=True)
    assert again.returncode == 0
    assert {p.name: p.read_text().strip() for p in (tmp_path / "accounts").iterdir()} == passwords   # kept


def test_a_slice_runs_on_the_closed_server_and_strangers_cannot_join(closed_server, tmp_path):
    slice_file = _slice(tmp_path, closed_server, closed_server.ca_file)
    reg = subprocess.run([*_cmd(), "xmpp", "accounts", "-c", str(slice_file), "--register", closed_server.kind,
                          "--ctl", closed_server.ctl_command], capture_output=True, text=True, timeout=180)
    assert reg.returncode == 0, reg.stderr
    (tmp_path / "app.yaml").write_text(APP)
    env = {k: v for k, v in os.environ.items() if k != "MLSYSOPS_XMPP_PASSWORD"}
    env["HOME"] = str(tmp_path)
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([*_cmd(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        return proc

    try:
        sim_url = _url_line(start("sim", "serve", str(slice_file)), "Simulator: ")
        api = _url_line(start("agent", "continuum", "-c", str(slice_file), "--apply", str(tmp_path / "app.yaml"),
                              "--api-port", "0"), "API: ")
        token = (tmp_path / "state" / "token").read_text().strip()
        start("agent", "cluster", "-c", str(slice_file), "--id", "edge-1", "--sim", sim_url)
        for node in ("edge-rpi-1", "edge-jetson-1"):
            start("agent", "node", "-c", str(slice_file), "--id", node, "--sim", sim_url)
        worker = lambda: _get(f"{api}/api/v1/apps/solo", token)["components"]["worker"]  # noqa: E731
        until_blocking(lambda: worker()["status"] == "running", 90, "app did not run on the closed server",
                       ignoring=WORKER_NOT_YET)
        cluster = _get(f"{api}/api/v1/clusters/edge-1", token)
        assert {n["name"] for n in cluster["node_status"]} == {"edge-rpi-1", "edge-jetson-1"}
        asyncio.run(_strangers_are_refused(closed_server, tmp_path))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=30) for proc in procs]
    assert codes == [0] * len(procs)


async def _strangers_are_refused(server: Any, tmp_path: Path) -> None:
    tls = TlsVerification(verify=True, ca_file=server.ca_file)
    # a new JID cannot register itself (SPADE tries in-band registration first) ...
    stranger = MLSysOpsAgent("mallory@localhost", "pw", port=server.port, tls=tls)
    with pytest.raises(Exception, match="authenticate"):
        await stranger.start_agent(timeout=15)
    # ... and a slice JID does not open with a guessed password
    impostor = MLSysOpsAgent("cluster-edge-1@localhost", "guess", port=server.port, tls=tls)
    with pytest.raises(Exception, match="authenticate"):
        await impostor.start_agent(timeout=15)
    # the right password behind a certificate the agent does not trust: no login at all
    password = (tmp_path / "accounts" / "node-edge-rpi-1").read_text().strip()
    mitm = MLSysOpsAgent("node-edge-rpi-1@localhost", password, port=server.port,
                         tls=TlsVerification(verify=True, ca_file=_other_ca(tmp_path)))
    with pytest.raises(AgentStartError, match="certificate verified against"):
        await mitm.start_agent(timeout=5)


def test_an_agent_says_why_when_its_accounts_or_ca_are_missing(tmp_path):
    slice_file = _slice(tmp_path, type("S", (), {"port": 1})(), tmp_path / "missing-ca.pem")
    env = {k: v for k, v in os.environ.items() if k != "MLSYSOPS_XMPP_PASSWORD"}
    out = subprocess.run([*_cmd(), "agent", "cluster", "-c", str(slice_file), "--id", "edge-1", "--sim",
                          "http://127.0.0.1:1"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1
    assert "missing-ca.pem: no such file" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "missing-ca.pem").write_text(Path(_other_ca(tmp_path)).read_text())
    out = subprocess.run([*_cmd(), "agent", "cluster", "-c", str(slice_file), "--id", "edge-1", "--sim",
                          "http://127.0.0.1:1"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1
    assert "cluster-edge-1" in out.stderr and "mlsysops xmpp accounts" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_printed_prosody_config_runs_closed(tmp_path):
    """`mlsysops xmpp config` is a working server config, not a sketch: prosody starts on it, refuses
    registration and lets a registered agent in."""
    port = ProsodyServer(tmp_path / "p").port
    slice_file = tmp_path / "slice.yaml"
    slice_file.write_text(f"slice: cfg\nxmpp: {{server: external, host: localhost, port: {port}}}\n"
                          f"clusters: []\nnodes: []\n")
    key, crt = tmp_path / "localhost.key", tmp_path / "localhost.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    out = subprocess.run([*_cmd(), "xmpp", "config", "-c", str(slice_file), "--cert", str(crt), "--key", str(key)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # where a packaged install keeps its files, a scratch directory here
    cfg = tmp_path / "prosody.cfg.lua"
    cfg.write_text(f'run_as_root = true\npidfile = "{tmp_path}/p.pid"\ndata_path = "{tmp_path}"\n'
                   f'interfaces = {{ "127.0.0.1" }}\nlog = {{ error = "{tmp_path}/p.log" }}\n' + out.stdout)
    proc = subprocess.Popen(["prosody", "-F", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        until_blocking(lambda: _listening(port), 20, "prosody did not start on the printed config")
        subprocess.run(["prosodyctl", "--config", str(cfg), "register", "alice", "localhost", "pw"], check=True,
                       capture_output=True)

        async def check() -> None:
            tls = TlsVerification(verify=True, ca_file=crt)
            alice = MLSysOpsAgent("alice@localhost", "pw", port=port, tls=tls)
            await alice.start_agent(timeout=15)
            await alice.stop()
            with pytest.raises(Exception, match="authenticate"):
                await MLSysOpsAgent("bob@localhost", "pw", port=port, tls=tls).start_agent(timeout=15)
        asyncio.run(check())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False



@pytest.mark.asyncio(loop_scope="session")
async def test_with_a_ca_file_the_system_store_is_not_trusted(prosody, tmp_path, monkeypatch):
    """`xmpp.ca_file` means that bundle alone: a server whose certificate only the system store trusts
    (here: the store pointed at the server's own certificate) is refused."""

    monkeypatch.setenv("SSL_CERT_FILE", str(prosody.ca_file))   # the "system store" trusts the server
    trusting = MLSysOpsAgent(f"sys-{os.getpid()}@localhost", "pw", port=prosody.port,
                             tls=TlsVerification(verify=True))
    await trusting.start_agent(timeout=15)   # the system store alone: accepted
    await trusting.stop()
    pinned = MLSysOpsAgent(f"pin-{os.getpid()}@localhost", "pw", port=prosody.port,
                           tls=TlsVerification(verify=True, ca_file=_other_ca(tmp_path)))
    with pytest.raises(AgentStartError, match="certificate verified against"):
        await pinned.start_agent(timeout=5)
