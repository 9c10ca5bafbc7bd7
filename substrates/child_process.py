"""What the substrate servers started for a slice (mosquitto, SeaweedFS) share: a child that dies with
its parent, and a stop that asks first and kills only when asked in vain."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn`: SIGKILL the child when its parent dies. PDEATHSIG fires when the *thread* that forked
    exits: starting from an executor thread is fine (its threads live as long as the loop), and the child
    is stopped explicitly before that anyway."""
    with contextlib.suppress(Exception):   # not Linux: the explicit stop still applies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout`; nothing if it already has."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
