"""Session-wide fixtures: one embedded XMPP server per test run and a factory of started agents.

* ``xmpp_server``: the session server (``.port``, ``.domain``). Set ``MLSYSOPS_TEST_XMPP_PORT`` (and
  optionally ``MLSYSOPS_TEST_XMPP_DOMAIN``) to run against an external server (prosody, ejabberd).
* ``make_agent(cls=MLSysOpsAgent, prefix="agent", jid=None, **kw)``: starts an agent with a unique JID
  (or the given ``jid``, e.g. to restart "the same" agent) and stops it at teardown. Agents made here
  send over the XMPP server by default (``force_xmpp=True``); pass ``force_xmpp=False`` to allow the
  in-process shortcut. Command line ``--in-process`` flips that default for the whole run.
* ``force_xmpp``: also forces raw SPADE behaviours' ``send`` over the server (patches the Container).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from mlsysops.agents.agent_base import MLSysOpsAgent
from mlsysops.agents.xmpp_server import EmbeddedXMPPServer
from tests.support import AGENT_PASSWORD


class _GcPauses:
    """Longest garbage-collector pauses of the run, printed at the end: whole-process freezes are what
    liveness in one-process slice tests is most sensitive to, so CI logs should show them."""

    def __init__(self) -> None:
        self.started = 0.0
        self.longest: list[tuple[float, int]] = []   # (seconds, generation)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.longest = sorted([*self.longest, (time.perf_counter() - self.started, info["generation"])],
                                  reverse=True)[:3]


GC_PAUSES = _GcPauses()
gc.callbacks.append(GC_PAUSES)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Everything imported so far (kubernetes client models, pydantic schemas, ...) lives until the end:
    # out of the collector's reach, later gen-2 passes scan only what the tests create (as `mlsysops up` does).
    gc.collect()
    gc.freeze()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    pauses = ", ".join(f"{sec * 1000:.0f} ms (gen {gen})" for sec, gen in GC_PAUSES.longest)
    terminalreporter.write_line(f"longest GC pauses: {pauses or 'none'}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--in-process", action="store_true", default=False,
                     help="let make_agent agents use SPADE's in-process shortcut instead of the server")
    parser.addoption("--live", action="store_true", default=False, help="run live/karmada_live tests against $KUBECONFIG / $KARMADA_KUBECONFIG")


@dataclass(frozen=True)
class ExternalServer:
    port: int
    domain: str


@pytest.fixture(scope="session")
def xmpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedXMPPServer | ExternalServer]:
    """The XMPP server shared by the whole run (a pyjabber subprocess unless configured otherwise)."""
    if os.environ.get("MLSYSOPS_TEST_XMPP_PORT"):
        yield ExternalServer(int(os.environ["MLSYSOPS_TEST_XMPP_PORT"]),
                             os.environ.get("MLSYSOPS_TEST_XMPP_DOMAIN", "localhost"))
        return
    server = EmbeddedXMPPServer(workdir=tmp_path_factory.mktemp("xmpp"), allow_registration=True)
    server.start_sync()
    try:
        yield server
    finally:
        server.stop_sync()


def unique_jid(prefix: str, domain: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@{domain}"


MakeAgent = Callable[..., Awaitable[Any]]


@pytest_asyncio.fixture(loop_scope="session")
async def make_agent(xmpp_server: Any, request: pytest.FixtureRequest) -> AsyncIterator[MakeAgent]:
    """Factory of started agents with unique JIDs; all are stopped at teardown."""
    started: list[MLSysOpsAgent] = []
    default_force = not request.config.getoption("--in-process")

    async def _make(cls: type[MLSysOpsAgent] = MLSysOpsAgent, prefix: str = "agent", *,
                    jid: str | None = None, server: Any = None, start: bool = True,
                    **kw: Any) -> MLSysOpsAgent:
        srv = server or xmpp_server
        kw.setdefault("force_xmpp", default_force)
        agent = cls(jid or unique_jid(prefix, srv.domain), AGENT_PASSWORD, port=srv.port, **kw)
        started.append(agent)
        if start:
            await agent.start_agent(timeout=10)
        return agent

    yield _make
    await asyncio.gather(*(_stop_quietly(a) for a in started))


async def _stop_quietly(agent: MLSysOpsAgent) -> None:
    if agent.is_alive():
        try:
            await asyncio.wait_for(agent.stop(), timeout=10)
        except Exception:  # teardown must not mask the test result
            pass


@pytest.fixture
def force_xmpp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force raw SPADE behaviour sends over the XMPP server (no in-process Container shortcut)."""
    from spade.container import Container

    async def send(self: Any, msg: Any, behaviour: Any) -> None:
        await behaviour._xmpp_send(msg=msg)

    # Patch the class itself: instantiating the singleton here could bind it to a wrong event loop.
    monkeypatch.setattr(Container, "send", send)


@pytest.fixture(scope="session")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real prosody server for tests that need many agents over the wire (pyjabber mis-routes there).
    Missing prosody is a failure, not a skip: `.ci/run` installs it."""
    from mlsysops.agents.xmpp_prosody import ProsodyServer, prosody_available

    if not prosody_available():
        pytest.fail("prosody is not installed: `apt-get install prosody` (.ci/run does it)")
    server = ProsodyServer(tmp_path_factory.mktemp("prosody"))
    server.start_sync()
    yield server
    server.stop_sync()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Any]:
    """A real mosquitto broker on a free loopback port, for the device gateway (`.host`, `.port`). Missing
    mosquitto is a failure, not a skip: `.ci/run` installs it."""
    from mlsysops.substrates.mqtt.broker import BrokerStartError, MosquittoBroker

    broker = MosquittoBroker()
    try:
        broker.start()
    except BrokerStartError as exc:
        pytest.fail(f"{exc} (.ci/run installs it)")
    yield broker
    broker.stop()
