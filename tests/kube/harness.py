"""A real local Kubernetes control plane for tests and benchmarks: etcd + kube-apiserver 1.20
(+ kube-controller-manager + kube-scheduler), loopback only, random ports, one temporary directory.

Recipe and measurements: ../shared/tools/KUBERNETES.md ("Starting it"). The binaries come from
scripts/build_kube.sh (env MLSYSOPS_KUBE_BIN or ~/.cache/mlsysops/kube-1.20.2); etcd from PATH.

    stack = KubeStack.start(tmpdir)          # blocks until /readyz answers (~3.5 s)
    ... stack.kubeconfig, stack.server, stack.token ...
    stack.stop()
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import support

DEFAULT_BIN_DIR = Path.home() / ".cache" / "mlsysops" / "kube-1.20.2"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def bin_dir() -> Path:
    return Path(os.environ.get("MLSYSOPS_KUBE_BIN") or DEFAULT_BIN_DIR)


def missing_binaries(controllers: bool = True) -> list[str]:
    """Names of the executables that cannot be found (empty when the stack can start)."""
    wanted = CONTROL_PLANE if controllers else CONTROL_PLANE[:1]
    missing = [str(bin_dir() / b) for b in wanted if not os.access(bin_dir() / b, os.X_OK)]
    if shutil.which("etcd") is None:
        missing.append("etcd (apt-get install etcd-server)")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kubeconfig(path: Path, server: str, token: str, name: str = "mlsysops-test") -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {name}\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n"
        f"users:\n- name: admin\n  user:\n    token: {token}\n"
        f"contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: admin\n"
        f"current-context: {name}\n")
    return path


@dataclass
class KubeStack:
    workdir: Path
    server: str
    token: str
    kubeconfig: Path
    etcd_url: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_in_s: float = 0.0

    # -- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, workdir: Path, *, controllers: bool = True, timeout: float = 60.0) -> KubeStack:
        missing = missing_binaries(controllers)
        if missing:
            raise FileNotFoundError(f"missing: {', '.join(missing)} (run scripts/build_kube.sh)")
        t0 = time.monotonic()
        workdir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        (workdir / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
        subprocess.run(["openssl", "genrsa", "-out", str(workdir / "sa.key"), "2048"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(workdir / "sa.key"), "-pubout",
                        "-out", str(workdir / "sa.pub")], check=True, capture_output=True)
        etcd_port, peer_port, secure_port = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{secure_port}"
        stack = cls(workdir, server, token, write_kubeconfig(workdir / "kubeconfig", server, token),
                    etcd_url=f"http://127.0.0.1:{etcd_port}")
        try:
            stack._spawn("etcd", [
                shutil.which("etcd") or "etcd", "--data-dir", str(workdir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync"])
            stack._spawn("kube-apiserver", [
                str(bin_dir() / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1", f"--secure-port={secure_port}", "--advertise-address=127.0.0.1",
                f"--cert-dir={workdir / 'certs'}", f"--token-auth-file={workdir / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={workdir / 'sa.pub'}",
                f"--service-account-signing-key-file={workdir / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/24", "--authorization-mode=RBAC",   # the rendered Roles are enforced
                "--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none",
                # ConfigMap watches go straight to etcd, so `compact_etcd()` gives real 410s on them
                "--watch-cache-sizes=configmaps#0"])
            stack.wait_ready(timeout)
            if controllers:
                kc = str(stack.kubeconfig)
                stack._spawn("kube-controller-manager", [
                    str(bin_dir() / "kube-controller-manager"), f"--kubeconfig={kc}", "--leader-elect=false",
                    "--bind-address=127.0.0.1", "--secure-port=0", "--port=0",
                    f"--service-account-private-key-file={workdir / 'sa.key'}",
                    "--use-service-account-credentials=false", "--controllers=*,-serviceaccount-token"])
                stack._spawn("kube-scheduler", [
                    str(bin_dir() / "kube-scheduler"), f"--kubeconfig={kc}", "--leader-elect=false",
                    "--bind-address=127.0.0.1", "--secure-port=0", "--port=0"])
        except BaseException:
            stack.stop()
            raise
        stack.started_in_s = time.monotonic() - t0
        return stack

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")   # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /readyz until it answers 200; fail early (with the log tail) if a process died."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            req = urllib.request.Request(f"{self.server}/readyz",
                                         headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"kube-apiserver not ready after {timeout}s:\n"
                                   f"{self.log_tail('kube-apiserver')}")
            time.sleep(0.1)

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision (what the API server does every 5 min); watches from an
        older resourceVersion then get 410 Gone. Returns the revision."""
        import json

        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(f"{self.etcd_url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())

        rev = int(post("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop in reverse start order: terminate, wait, then kill what is left."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
        self.procs.clear()


async def until(probe: Callable[[], Any], timeout: float = 20.0, message: str = "condition",
                interval: float = 0.05) -> Any:
    """`tests.support.until` with a longer default: the API server and simulated kubelets are slower than
    the agents."""
    return await support.until(probe, timeout, message, interval)
