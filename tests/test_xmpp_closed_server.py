"""The embedded server of `mlsysops up` is a closed bus: the slice's accounts exist, nobody can add one.

A stranger's client asks for an account with XEP-0077 anyway (pyjabber used to grant it although it did
not advertise registration) and then tries to log in; the provisioned agents still talk to each other.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import subprocess
import sys
import textwrap

import pytest
import slixmpp
from slixmpp.stanza import StreamFeatures

from mlsysops.agents.agent_base import MLSysOpsAgent
from mlsysops.agents.xmpp_server import OWNER_FILE, EmbeddedXMPPServer, remove_stale_workdirs
from tests.support import until, until_blocking

pytestmark = pytest.mark.timeout(60)
async_test = pytest.mark.asyncio(loop_scope="session")


class Stranger(slixmpp.ClientXMPP):
    """Registers (forced, as an attacker would) then tries to log in; records what the server said."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.registration = "not attempted"
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE   # pyjabber's self-signed certificate
        self.register_plugin("xep_0077")   # the stanza types; the server does not advertise registration
        self.asked: asyncio.Task[None] | None = None
        self.add_filter("in", self._register_anyway)
        self.add_event_handler("session_start", lambda _: self._done("logged in"))
        self.add_event_handler("failed_auth", lambda _: self._done("auth failed"))
        self.add_event_handler("disconnected", lambda _: self._done("disconnected"))

    def _register_anyway(self, stanza: object) -> object:
        """On the encrypted stream, before authenticating: ask for an account whatever was advertised."""
        if isinstance(stanza, StreamFeatures) and self.asked is None:
            xml = stanza.xml
            if (xml.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
                    and xml.find("{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms") is not None):
                self.asked = asyncio.get_running_loop().create_task(self._register())
        return stanza

    def _done(self, what: str) -> None:
        if not self.outcome.done():
            self.outcome.set_result(what)

    async def _register(self) -> None:
        iq = self.Iq(stype="set")
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=5)
            self.registration = "accepted"
        except slixmpp.exceptions.IqError as exc:
            self.registration = exc.condition
        except slixmpp.exceptions.IqTimeout:
            self.registration = "timeout"


async def _stranger_tries(port: int, jid: str, password: str) -> tuple[str, str]:
    client = Stranger(jid, password)
    client.enable_plaintext = False
    client["feature_mechanisms"].unencrypted_plain = False
    client.connect(host="localhost", port=port)
    try:
        outcome = await asyncio.wait_for(client.outcome, 15)
        if client.asked is not None:
            await asyncio.wait_for(client.asked, 10)
    finally:
        client.disconnect()
    return client.registration, outcome


@async_test
async def test_strangers_cannot_register_nor_log_in_while_the_slice_agents_work(tmp_path) -> None:
    passwords = {"continuum-x": secrets.token_urlsafe(16), "cluster-x": secrets.token_urlsafe(16)}
    async with EmbeddedXMPPServer(workdir=tmp_path / "xmpp", accounts=passwords) as server:
        registration, outcome = await _stranger_tries(server.port, "intruder@localhost", "hunter2")
        assert registration == "not-allowed"
        assert outcome != "logged in"
        # a slice account with a guessed password does not open either
        _, outcome = await _stranger_tries(server.port, "continuum-x@localhost", "a-guessed-password")
        assert outcome != "logged in"
        agents = [MLSysOpsAgent(f"{local}@localhost", pw, port=server.port, force_xmpp=True)
                  for local, pw in passwords.items()]
        try:
            for agent in agents:
                await agent.start_agent(timeout=10)
            assert all(a.is_alive() for a in agents)
        finally:
            for agent in agents:
                await agent.stop()
        assert (server.db_path.stat().st_mode & 0o777) == 0o600
        assert (server.workdir.stat().st_mode & 0o777) == 0o700


@async_test
async def test_a_test_server_may_allow_registration(xmpp_server) -> None:
    """The session server (tests/conftest.py) lets fixtures create agents on the fly."""
    registration, outcome = await _stranger_tries(xmpp_server.port, f"newcomer-{secrets.token_hex(4)}@localhost",
                                                  secrets.token_urlsafe(8))
    assert (registration, outcome) == ("accepted", "logged in")


def test_the_server_dies_with_its_parent_and_takes_its_workdir() -> None:
    """kill -9 of the owner: the pyjabber process group goes (watchdog pipe) and its temp workdir too."""
    script = textwrap.dedent("""
        import sys, time
        from mlsysops.agents.xmpp_server import EmbeddedXMPPServer
        server = EmbeddedXMPPServer()
        server.start_sync()
        print(server.pid, server.workdir, flush=True)
        time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=os.getcwd())
    try:
        pid, workdir = owner.stdout.readline().split()
        pgid = int(pid)
        assert os.path.isfile(os.path.join(workdir, OWNER_FILE))
    finally:
        owner.kill()
        owner.wait(10)
        owner.stdout.close()

    def group_gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    until_blocking(group_gone, 15, "the XMPP server outlived its parent")
    until_blocking(lambda: not os.path.exists(workdir), 5, "the workdir outlived the server")


def test_a_dead_owners_workdir_is_swept(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "mlsysops-xmpp-stale"
    stale.mkdir()
    (stale / OWNER_FILE).write_text(f"{dead.pid}\n")
    (stale / "ca_key.pem").write_text("secret")
    live = tmp_path / "mlsysops-xmpp-live"
    live.mkdir()
    (live / OWNER_FILE).write_text(f"{os.getpid()}\n")
    foreign = tmp_path / "mlsysops-xmpp-unknown"   # no owner file: not ours to judge
    foreign.mkdir()
    assert remove_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()


@async_test
async def test_close_removes_the_workdir_it_created() -> None:
    server = EmbeddedXMPPServer(accounts={"a": secrets.token_urlsafe(8)})
    await server.start()
    workdir = server.workdir
    assert (workdir / "xmpp.db").exists()
    await server.aclose()
    await until(lambda: not workdir.exists(), 5, "workdir left behind")
