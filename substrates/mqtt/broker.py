"""One mosquitto broker process on loopback, for devices behind a gateway.

Started like the embedded XMPP server and the SeaweedFS stores: a temp workdir of its own holding the
config (one listener on 127.0.0.1, anonymous unless `accounts` are given; no persistence), a free port unless one is given, readiness
awaited on the port, the child killed when its parent dies (PR_SET_PDEATHSIG), and `stop()` removes the
workdir, so no broker or file outlives the runtime. mosquitto is Debian's package (`apt-get install
mosquitto`), installed in /usr/sbin, which is not on every user's PATH.

With `accounts` (user -> `Account`: password and the topic filters it may read and write) the broker refuses
anonymous clients and wrong passwords, and drops what a client publishes outside its topics (mosquitto's
`password_file`, hashed with `mosquitto_passwd -U`, and `acl_file`): a device can then speak only for itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlsysops.substrates.child_process import die_with_parent, terminate

WORKDIR_PREFIX = "mlsysops-mqtt-"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin")   # where Debian puts it when PATH has no sbin
DEFAULT_START_TIMEOUT = 10.0
# MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keepalive 60 s, empty client id
_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"


@dataclass(frozen=True, slots=True)
class Account:
    password: str
    topics: tuple[str, ...]   # MQTT topic filters this user may publish and subscribe to


class BrokerStartError(RuntimeError):
    """The broker could not be started (missing binary, early exit, port not listening in time)."""


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (str(Path(d) / "mosquitto") for d in SBIN_DIRS if (Path(d) / "mosquitto").is_file()), None)
    if found is None:
        raise BrokerStartError("the `mosquitto` binary is missing (not on PATH nor in "
                               f"{', '.join(SBIN_DIRS)}): apt-get install mosquitto")
    return found


def _sbin_tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in (*SBIN_DIRS, "/usr/bin") if (Path(d) / name).is_file()), None)
    if found is None:
        raise BrokerStartError(f"the `{name}` binary is missing: apt-get install mosquitto")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """Handle on one mosquitto process. `start()`/`stop()` block: callers on an event loop use a thread."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, accounts: Mapping[str, Account] | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        for user in accounts or {}:
            if not user or any(c in user for c in ": \n#"):
                raise ValueError(f"broker account name {user!r}: must be non-empty, without ':', spaces or '#'")
        self.accounts = dict(accounts or {})
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start and block until the port accepts connections (or raise with the broker's log tail)."""
        if self.alive:
            return
        binary = mosquitto_binary()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        conf = self.workdir / "mosquitto.conf"
        # Started as root, mosquitto drops to user `mosquitto`, and a credential change clears PR_SET_PDEATHSIG:
        # the broker would outlive a killed parent. It stays root then (it listens on loopback only).
        user = "user root\n" if os.geteuid() == 0 else ""
        auth = self._write_accounts() if self.accounts else "allow_anonymous true\n"
        conf.write_text(f"listener {self.port} {self.host}\n{auth}persistence false\n{user}")
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - the child's stderr for its lifetime
        try:   # its log goes to stderr, and a bind error comes before any log_dest would take effect
            self._proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while not self._listening():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {self._proc.returncode}" if self._proc.poll() is not None
                       else f"not listening after {self.start_timeout:g}s")
                tail = self._log_tail()
                self.stop()
                raise BrokerStartError(f"mosquitto on {self.host}:{self.port} {why}; log: {tail}")
            time.sleep(0.05)

    def _write_accounts(self) -> str:
        """The password file (hashed in place) and the ACL file; the config lines that use them."""
        assert self.workdir is not None
        passwords, acl = self.workdir / "passwords", self.workdir / "acl"
        passwords.write_text("".join(f"{u}:{a.password}\n" for u, a in self.accounts.items()))
        passwords.chmod(0o600)
        try:
            subprocess.run([_sbin_tool("mosquitto_passwd"), "-U", str(passwords)], check=True,
                           capture_output=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, BrokerStartError) as exc:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            raise BrokerStartError(f"mosquitto_passwd could not hash the broker's passwords: {exc}") from exc
        acl.write_text("".join(f"user {u}\n" + "".join(f"topic readwrite {t}\n" for t in a.topics) + "\n"
                               for u, a in self.accounts.items()))
        return f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"

    def _listening(self) -> bool:
        """An MQTT CONNECT is answered with a CONNACK: our broker, not whatever else holds the port."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(_CONNECT)
                ack = s.recv(4)
                s.sendall(b"\xe0\x00")   # DISCONNECT
            return ack[:1] == b"\x20" and self.alive
        except OSError:
            return False

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.workdir / "mosquitto.log").read_text(errors="replace").strip().splitlines()  # type: ignore[operator]
        except OSError:
            return "(no log)"
        return " | ".join(line[:200] for line in text[-lines:]) or "(empty)"

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the process and delete the workdir; idempotent."""
        terminate(self._proc, timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
