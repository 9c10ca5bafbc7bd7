"""A throw-away ejabberd server (Debian package) run the way production runs it: registration closed,
STARTTLS required, one account per agent created with `ejabberdctl register`.

Same surface as `ProsodyServer` (`start_sync`, `stop_sync`, `port`, `domain`, `ca_file`, `register`).
Debian's `ejabberdctl` insists on running as the `ejabberd` user (it `su`s when started by root and refuses
anybody else); the server here runs as whoever starts it, from a copy of the script without that
switch, with its config, spool, logs, Erlang cookie and node name all inside the workdir, so several
instances (and the packaged service) can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

EJABBERDCTL = "/usr/sbin/ejabberdctl"


def ejabberd_available() -> bool:
    return Path(EJABBERDCTL).exists() and shutil.which("erl") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(domain: str, port: int, certfile: Path) -> dict[str, object]:
    """ejabberd.yml for a loopback, closed-registration, TLS-required server."""
    return {
        "hosts": [domain],
        "loglevel": "warning",
        "certfiles": [str(certfile)],
        "listen": [{"port": port, "ip": "127.0.0.1", "module": "ejabberd_c2s", "starttls_required": True,
                    "shaper": "none", "max_stanza_size": 262144}],
        "auth_method": "internal",
        # SCRAM-*-PLUS channel binding fails between ejabberd 23.x and slixmpp over TLS 1.3 (measured).
        "disable_sasl_mechanisms": ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"],
        "default_db": "mnesia",
        "acl": {"local": {"user_regexp": ""}},
        "access_rules": {"local": {"allow": "local"}, "c2s": {"allow": "all"}, "register": {"deny": "all"}},
        "shaper_rules": {"max_user_sessions": 10},
        # No mod_register: in-band registration is not offered at all.
        "modules": {"mod_disco": {}, "mod_ping": {}, "mod_roster": {}, "mod_stream_mgmt": {}},
    }


class EjabberdServer:
    def __init__(self, workdir: Path | None = None, port: int = 0, domain: str = "localhost") -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mlsysops-ejabberd-"))
        self.port = port or _free_port()
        self.domain = domain
        # Erlang short node names must be unique per host: one per instance.
        self.node = f"mlsysops{secrets.token_hex(4)}@localhost"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / f"{self.domain}.crt"

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ctl(self) -> list[str]:
        w = self.workdir
        return [str(w / "ejabberdctl"), "--config-dir", str(w / "conf"), "--spool", str(w / "spool"),
                "--logs", str(w / "logs"), "--node", self.node]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.workdir)}

    @property
    def ctl_command(self) -> str:
        """The admin command for this instance (`mlsysops xmpp accounts --ctl`), usable from any shell."""
        return shlex.join(self._ctl())

    def _prepare(self) -> None:
        w = self.workdir
        for d in ("conf", "spool", "logs", "certs"):
            (w / d).mkdir(parents=True, exist_ok=True)
        key, crt = w / "certs" / f"{self.domain}.key", self.ca_file
        if not crt.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                            "-subj", f"/CN={self.domain}", "-addext", f"subjectAltName=DNS:{self.domain}",
                            "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
        pem = w / "conf" / "xmpp.pem"
        pem.write_text(key.read_text() + crt.read_text())
        (w / "conf" / "ejabberd.yml").write_text(yaml.safe_dump(config(self.domain, self.port, pem)))
        (w / "conf" / "ejabberdctl.cfg").write_text("")
        inetrc = Path("/etc/ejabberd/inetrc")
        (w / "conf" / "inetrc").write_text(inetrc.read_text() if inetrc.exists() else "")
        script = Path(EJABBERDCTL).read_text()
        script = re.sub(r"^INSTALLUSER=.*$", "INSTALLUSER=", script, count=1, flags=re.M)
        # the Erlang cookie lives in $HOME: the same for the server and every admin command
        first, _, rest = script.partition("\n")
        script = f"{first}\nHOME={shlex.quote(str(w))}; export HOME\n{rest}"
        ctl = w / "ejabberdctl"
        ctl.write_text(script)
        ctl.chmod(0o755)

    def start_sync(self, timeout: float = 60.0) -> None:
        if not ejabberd_available():
            raise RuntimeError("ejabberd is not installed (apt-get install ejabberd)")
        self._prepare()
        self._proc = subprocess.Popen([*self._ctl(), "foreground"], env=self._env(), stdin=subprocess.DEVNULL,
                                      stdout=open(self.workdir / "stdout.log", "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"ejabberd exited ({self._proc.returncode}); see {self.workdir}/stdout.log "
                                   f"and {self.workdir}/logs")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop_sync()
            raise RuntimeError(f"ejabberd did not listen on {self.port} within {timeout}s")
        # The listener opens before the node accepts commands; `started` waits for the latter.
        while subprocess.run([*self._ctl(), "started"], env=self._env(), capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                self.stop_sync()
                raise RuntimeError("ejabberd did not report started")
            time.sleep(0.2)

    def register(self, user: str, password: str) -> None:
        """Create (or reset) an account with ejabberdctl, as an operator would."""
        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*self._ctl(), *args], env=self._env(), capture_output=True, text=True,
                                  timeout=60)

        proc = run("register", user, self.domain, password)
        if proc.returncode != 0 and "already registered" in (proc.stdout + proc.stderr):
            run("unregister", user, self.domain)
            proc = run("register", user, self.domain, password)
        if proc.returncode != 0:
            raise RuntimeError(f"ejabberdctl register {user}@{self.domain} failed: "
                               f"{(proc.stderr or proc.stdout).strip()}")

    def registered_users(self) -> list[str]:
        proc = subprocess.run([*self._ctl(), "registered_users", self.domain], env=self._env(),
                              capture_output=True, text=True, timeout=60)
        return proc.stdout.split()

    def stop_sync(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # The script runs erl as a child (no exec): signal the whole session it leads.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # the VM outlives the script by a moment
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)
