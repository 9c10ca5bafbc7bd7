"""A throw-away prosody server (Debian package) for integration tests and benchmarks.

Same surface as `EmbeddedXMPPServer` (`start`, `stop`, `port`, `domain`). prosody routes stanzas
correctly with many concurrent sessions, which the embedded pyjabber server does not (see the closing
notes); loopback only, a self-signed certificate for the domain generated into the workdir (`ca_file`: a
client that trusts it verifies the server). In-band registration is on by default (test agents create their
own accounts); `allow_registration=False` closes it and accounts come from `register()` (prosodyctl), the
way a production server is run.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

_CONFIG = """
run_as_root = true
pidfile = "{work}/prosody.pid"
data_path = "{work}/data"
log = {{ warn = "{work}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; {register}"posix"; "presence"; }}
modules_disabled = {{ "s2s"; "offline"; }}
authentication = "internal_hashed"
storage = "{storage}"
allow_registration = {allow_registration}
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
limits = {{ c2s = {{ rate = "100mb/s"; }}; }}
network_settings = {{ nagle = false; }}
VirtualHost "{domain}"
  ssl = {{ certificate = "{work}/certs/{domain}.crt"; key = "{work}/certs/{domain}.key"; }}
"""


def prosody_available() -> bool:
    return shutil.which("prosody") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProsodyServer:
    def __init__(self, workdir: Path | None = None, port: int = 0, domain: str = "localhost", *,
                 allow_registration: bool = True, storage: str = "internal") -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mlsysops-prosody-"))
        self.port = port or _free_port()
        self.domain = domain
        self.allow_registration = allow_registration
        # "internal" (files: survives a restart) or "memory". prosody's file store rewrites a user's whole
        # roster on every change: a parent with thousands of children in its roster pays O(children) per
        # subscription, O(children^2) to form (the scale benchmark uses "memory"; an operator uses "sql").
        self.storage = storage
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "prosody.cfg.lua"

    @property
    def ca_file(self) -> Path:
        """The server's self-signed certificate: the trust anchor a verifying client needs."""
        return self.workdir / "certs" / f"{self.domain}.crt"

    def register(self, user: str, password: str) -> None:
        """Create (or reset) an account, as an operator would with prosodyctl; the server may be running."""
        proc = subprocess.run(["prosodyctl", "--config", str(self.config_path), "register", user, self.domain,
                               password], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"prosodyctl register {user}@{self.domain} failed: "
                               f"{(proc.stderr or proc.stdout).strip()}")

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start_sync(self, timeout: float = 10.0) -> None:
        if not prosody_available():
            raise RuntimeError("prosody is not installed (apt-get install prosody)")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        key, crt = certs / f"{self.domain}.key", certs / f"{self.domain}.crt"
        if not crt.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                            "-subj", f"/CN={self.domain}", "-addext", f"subjectAltName=DNS:{self.domain}",
                            "-keyout", str(key), "-out", str(crt)],
                           check=True, capture_output=True)
        cfg = self.config_path
        cfg.write_text(_CONFIG.format(work=self.workdir, port=self.port, domain=self.domain,
                                      register='"register"; ' if self.allow_registration else "",
                                      allow_registration=str(self.allow_registration).lower(),
                                      storage=self.storage))
        self._proc = subprocess.Popen(["prosody", "-F", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                                      stderr=open(self.workdir / "stderr.log", "wb"))
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prosody exited ({self._proc.returncode}); see {self.workdir}/stderr.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"prosody did not listen on {self.port} within {timeout}s")

    def stop_sync(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def kill_sync(self) -> None:
        """SIGKILL: no "unavailable" presence, no stream close (a crashed server, unlike stop_sync)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)
