"""Embedded XMPP server (SPADE's pyjabber) run as a subprocess.

Why a subprocess: pyjabber hijacks signal handlers, keeps process-global singletons (one server per
process, never restartable), forks a worker pool and must run on uvloop. Isolating it in a child process
gives us restartability (tests for reconnection) and a clean parent.

Workarounds applied in the child (see docs on pyjabber 0.4.5): loopback-only binding (no LAN IP), file
database in ``workdir`` (the in-memory one loses accounts), certificates generated in ``workdir`` (not in
site-packages), no HTTP-upload plugin (frees :9090), uvloop.

The XMPP domain is ``domain``; agents connect to their JID's domain as host name, so it must resolve to
the loopback interface (``localhost`` does).

Accounts: the parent provisions them (``accounts=``/``add_account``: salted PBKDF2 hashes in pyjabber's own
format, written straight into the file database, plaintext never on disk) and, unless ``allow_registration``
(test servers only), the child refuses XEP-0077 in-band registration: pyjabber would otherwise register
anyone who asks, advertised or not.

Lifetime: the child reads a watchdog pipe from the parent (its stdin) and kills its process group (itself
and its PBKDF2 workers) when the pipe closes, so a parent killed with SIGKILL leaves no server behind. A
workdir this class creates holds the parent's pid (``owner.pid``) and is deleted on ``close()``; one whose
owner is dead (kill -9) is removed by the next server that starts.

Run directly: ``python -m mlsysops.agents.xmpp_server --client-port 5222 --server-port 5269 --workdir DIR``
prints ``READY`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

READY_LINE = "READY"
DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 5.0
WORKDIR_PREFIX = "mlsysops-xmpp-"
OWNER_FILE = "owner.pid"
DB_FILE = "xmpp.db"
PBKDF2_ITERATIONS = 100_000   # pyjabber's own cost; the iteration count is stored with each hash


class XMPPServerError(RuntimeError):
    """The embedded server could not be started."""


def password_hash(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """pyjabber's stored credential: ``sha256$ITERATIONS$SALT_HEX$PBKDF2_HEX`` (what its SASL verifies)."""
    salt = os.urandom(16) if salt is None else salt
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"sha256${iterations}${binascii.hexlify(salt).decode()}${binascii.hexlify(derived).decode()}"


def store_accounts(db_path: Path, accounts: Mapping[str, str]) -> None:
    """Create or reset the accounts (local part -> password) in pyjabber's file database. The table has
    pyjabber's schema: created here first, its own ``create_all`` then leaves it as it is."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS credentials "
                   "(id INTEGER NOT NULL PRIMARY KEY, jid VARCHAR NOT NULL, hash_pwd VARCHAR NOT NULL)")
        for local, password in accounts.items():
            if not password:
                raise ValueError(f"account {local!r}: empty password")
            db.execute("DELETE FROM credentials WHERE jid = ?", (local,))
            db.execute("INSERT INTO credentials (jid, hash_pwd) VALUES (?, ?)", (local, password_hash(password)))
    os.chmod(db_path, 0o600)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    return True


def remove_stale_workdirs(tmp: Path | None = None) -> list[Path]:
    """Delete our temp workdirs whose owner process is gone (left by a kill -9). Directories without an
    owner file are not ours to judge and stay."""
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            if path.stat().st_uid != os.getuid():
                continue
            pid = int((path / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a currently free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedXMPPServer:
    """Handle on one pyjabber subprocess. Restartable: ports and workdir (accounts) are kept."""

    def __init__(
        self,
        workdir: Path | None = None,
        client_port: int = 0,
        server_port: int = 0,
        domain: str = "localhost",
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        accounts: Mapping[str, str] | None = None,
        allow_registration: bool = False,
    ) -> None:
        self._owns_workdir = workdir is None
        if workdir is None:
            remove_stale_workdirs()
            workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))   # 0700
            (workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        self.workdir = Path(workdir).absolute()   # the child runs elsewhere
        self._accounts = dict(accounts or {})
        self.allow_registration = allow_registration
        self._watchdog: int | None = None   # write end of the pipe the child watches
        self._client_port = client_port
        self._server_port = server_port
        self.domain = domain
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None
        self._lock = threading.Lock()

    # -- properties ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """Client-to-server port (0 until the first start when it was left to be picked)."""
        return self._client_port

    @property
    def server_port(self) -> int:
        return self._server_port

    @property
    def db_path(self) -> Path:
        return self.workdir / DB_FILE

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def alive(self) -> bool:
        """True while the subprocess runs (it may have died on its own)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- sync API (pytest session fixtures, CLI) ----------------------------------------------------
    def start_sync(self) -> None:
        """Start the subprocess and block until it prints READY (or fail with the log path)."""
        with self._lock:
            if self.alive:
                return
            self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.workdir, 0o700)
            if self._accounts:
                store_accounts(self.db_path, self._accounts)
            if not self._client_port:
                self._client_port = free_port()
            if not self._server_port:
                self._server_port = free_port()
            cmd = [
                sys.executable, "-m", "mlsysops.agents.xmpp_server",
                "--client-port", str(self._client_port),
                "--server-port", str(self._server_port),
                "--workdir", str(self.workdir),
                "--domain", self.domain,
                *(["--allow-registration"] if self.allow_registration else []),
            ]
            log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
            self._log_file = log
            env = dict(os.environ)
            # The child must import this package even when the cwd is elsewhere.
            pkg_root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            watch_r, watch_w = os.pipe()
            try:
                # cwd: `-m` looks there first, and the child must run this very tree's module
                proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own module
                    cmd, stdout=subprocess.PIPE, stderr=log, stdin=watch_r, env=env, cwd=pkg_root,
                    start_new_session=True,
                )
            except BaseException:
                os.close(watch_w)
                raise
            finally:
                os.close(watch_r)
            os.set_inheritable(watch_w, False)
            self._watchdog = watch_w
            self._proc = proc
            line = self._read_ready_line(proc, self.start_timeout)
            if line.strip() != READY_LINE:
                self._kill_locked()
                raise XMPPServerError(
                    f"embedded XMPP server did not start within {self.start_timeout:.0f}s on "
                    f"{self.domain}:{self._client_port} (got {line.strip()!r}); see log {self.log_path}"
                )
            assert proc.stdout is not None
            proc.stdout.close()
            logger.info("embedded XMPP server ready on %s:%d (pid %d, workdir %s)",
                        self.domain, self._client_port, proc.pid, self.workdir)

    def stop_sync(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Terminate the subprocess (SIGTERM, then SIGKILL after ``timeout``). Keeps the workdir."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                proc.terminate()   # the main process first: its workers serve it until it is gone
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("XMPP server pid %d ignored SIGTERM; killing", proc.pid)
                    proc.kill()
                    proc.wait(timeout=timeout)
            # pyjabber's worker processes must not outlive it: orphaned, they kept serving (and holding the
            # port for) the old sessions, so clients never saw the server go away
            _signal_group(proc, signal.SIGKILL)
            self._cleanup_locked()

    def add_account(self, local: str, password: str) -> None:
        """Create (or reset the password of) an account; takes effect at once, running or not."""
        with self._lock:
            self._accounts[local] = password
            self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            store_accounts(self.db_path, {local: password})

    def kill_sync(self) -> None:
        """Simulate a crash: SIGKILL without a graceful shutdown."""
        with self._lock:
            self._kill_locked()

    def close(self) -> None:
        """Stop and delete the workdir if this object created it."""
        self.stop_sync()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- async API (never blocks the loop) ---------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        await asyncio.to_thread(self.stop_sync, timeout)

    async def add_account_async(self, local: str, password: str) -> None:
        await asyncio.to_thread(self.add_account, local, password)

    async def kill(self) -> None:
        await asyncio.to_thread(self.kill_sync)

    # -- context managers --------------------------------------------------------------------------
    def __enter__(self) -> EmbeddedXMPPServer:
        self.start_sync()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> EmbeddedXMPPServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- internals ---------------------------------------------------------------------------------
    @staticmethod
    def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
        """Read the first stdout line with a deadline; killing the child unblocks the reader."""
        result: list[bytes] = []

        def reader() -> None:
            assert proc.stdout is not None
            result.append(proc.stdout.readline())

        thread = threading.Thread(target=reader, daemon=True, name="xmpp-server-ready")
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            proc.kill()
            thread.join(5)
            return ""
        return result[0].decode(errors="replace") if result else ""

    def _kill_locked(self) -> None:
        if self._proc is not None:
            _signal_group(self._proc, signal.SIGKILL)   # the whole group: workers included
            self._proc.wait(timeout=DEFAULT_STOP_TIMEOUT)
        self._cleanup_locked()

    def _cleanup_locked(self) -> None:
        if self._proc is not None and self._proc.stdout is not None and not self._proc.stdout.closed:
            self._proc.stdout.close()
        self._proc = None
        if self._watchdog is not None:
            os.close(self._watchdog)
            self._watchdog = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the server's process group (it runs in a session of its own: start_new_session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ------------------------------------------------------------------------------------------------
# child process
# ------------------------------------------------------------------------------------------------
def _refuse_registration() -> None:
    """pyjabber's SASL stage registers any XEP-0077 request, advertised or not: answer not-allowed."""
    from xml.etree import ElementTree as ET

    from pyjabber import AppConfig
    from pyjabber.features.SASL.SASL import SASL

    async def handle_iq(self: SASL, element: ET.Element) -> None:
        iq = ET.Element("iq", attrib={"type": "error", "from": AppConfig.app_config.host,
                                      **({"id": element.attrib["id"]} if "id" in element.attrib else {})})
        error = ET.SubElement(iq, "error", attrib={"type": "cancel"})
        ET.SubElement(error, "not-allowed", attrib={"xmlns": "urn:ietf:params:xml:ns:xmpp-stanzas"})
        self._transport.write(ET.tostring(iq))

    SASL.handle_iq = handle_iq   # type: ignore[method-assign]


def _watch_parent(loop: asyncio.AbstractEventLoop, workdir: str) -> None:
    """Our stdin is the parent's watchdog pipe: EOF means the parent is gone, so the whole process group
    (this server and its worker pool) goes too, and a temp workdir the parent created (it holds the
    owner file) with it."""
    fd = sys.stdin.fileno()
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):   # run by hand: no parent to watch
        return

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if os.path.exists(os.path.join(workdir, OWNER_FILE)):
                shutil.rmtree(workdir, ignore_errors=True)
            os.killpg(os.getpgrp(), signal.SIGKILL)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


def _serve(client_port: int, server_port: int, workdir: str, domain: str, allow_registration: bool) -> None:
    """Run pyjabber in this process (the child). Heavy imports stay here."""
    import loguru
    import pyjabber
    import pyjabber.server as pjs
    import uvloop
    from pyjabber.server_parameters import Parameters

    loguru.logger.remove()
    loguru.logger.add(sys.stderr, level="WARNING")
    pjs.setup_query_local_ip = lambda: None  # bind loopback only, never the LAN address
    os.umask(0o077)   # database, WAL and generated certificates: ours only
    pkg_certs = os.path.join(os.path.dirname(pyjabber.__file__), "network", "certs")
    for name in ("ca_cert.pem", "ca_key.pem"):  # the cert generator needs the CA next to the certs
        if not os.path.exists(os.path.join(workdir, name)):
            shutil.copy(os.path.join(pkg_certs, name), workdir)
    defaults = Parameters()
    params = Parameters(
        host=domain,
        client_port=client_port,
        server_port=server_port,
        database_path=os.path.join(workdir, "xmpp.db"),
        cert_path=workdir,
        plugins=[p for p in defaults.plugins if p != "urn:xmpp:http:upload:0"
                 and (allow_registration or p != "jabber:iq:register")],
    )
    if not allow_registration:
        _refuse_registration()
    cwd = os.getcwd()
    server = pjs.Server(params)
    os.chdir(cwd)  # certificate generation chdirs
    from pyjabber.plugins.xep_0363.xep_0363 import HTTPFieldUpload

    HTTPFieldUpload(None)  # the plugin manager instantiates it even when the plugin is disabled

    async def run() -> None:
        _watch_parent(asyncio.get_running_loop(), workdir)
        task = asyncio.create_task(server.start())
        await server.ready.wait()
        sys.stdout.write(READY_LINE + "\n")
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # parent stops reading: never fill the pipe
        await task

    uvloop.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mlsysops embedded XMPP server (pyjabber)")
    parser.add_argument("--client-port", type=int, required=True)
    parser.add_argument("--server-port", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--domain", default="localhost")
    parser.add_argument("--allow-registration", action="store_true",
                        help="let clients create accounts (XEP-0077): test servers only")
    args = parser.parse_args(argv)
    _serve(args.client_port, args.server_port, args.workdir, args.domain, args.allow_registration)


if __name__ == "__main__":
    main()
