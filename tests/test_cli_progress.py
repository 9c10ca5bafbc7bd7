"""Progress on long CLI work: a rich bar on a terminal (a real pty here), plain lines elsewhere; and
`apply --wait` against a running slice both ways (`mlsysops up` in another process)."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import time

import pytest

from mlsysops.cli.progress import Progress
from tests.test_cli_client import ROOT, _cmd, run, slice_up  # noqa: F401 - slice_up is a fixture

pytestmark = pytest.mark.timeout(180)
STAMP = re.compile(r"^\[ *\d+\.\d+s\] ")


def _read_pty(master: int, proc: subprocess.Popen, timeout: float) -> bytes:
    """Everything written to the pty until the process ends (bounded by `timeout`)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: the last writer closed the pty
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_plain_lines_without_a_terminal_one_per_change():
    buf = io.StringIO()
    with Progress("waiting for demo", tty=False, stream=buf) as p:
        p.update(done=0, total=2, note="a pending")
        p.update(done=0, total=2, note="a pending")   # nothing moved: no new line
        p.update(done=1, note="b deploying")
        p.advance(note="")
    lines = buf.getvalue().splitlines()
    assert [STAMP.sub("", line) for line in lines] == [
        "waiting for demo: 0/2 (a pending)", "waiting for demo: 1/2 (b deploying)", "waiting for demo: 2/2"]
    assert all(STAMP.match(line) for line in lines) and "\x1b" not in buf.getvalue()


def test_a_bar_on_a_terminal():
    master, slave = pty.openpty()
    try:
        with os.fdopen(os.dup(slave), "w") as tty:
            assert tty.isatty()
            with Progress("applying 3 objects", total=3, stream=tty) as p:
                for i in range(3):
                    p.advance(note=f"Secret/s{i} applied")
                    time.sleep(0.15)   # rich refreshes the bar on its own thread
                tty.flush()
        os.close(slave)
        slave = -1
        out = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = out.decode(errors="replace")
    assert "applying 3 objects" in text and "\x1b[" in text, text   # drawn, and redrawn in place
    assert "━" in text and re.search(r"[0-3]/3", text), text
    assert not STAMP.search(text)                                    # not the plain lines


def test_apply_wait_shows_progress_plain_and_on_a_terminal(slice_up, tmp_path):  # noqa: F811
    env = slice_up
    plain_app, tty_app = tmp_path / "p1.yaml", tmp_path / "p2.yaml"
    source = (ROOT / "examples/apps/env-monitor.yaml").read_text()
    plain_app.write_text(source.replace("name: env-monitor", "name: env-plain"))
    tty_app.write_text(source.replace("name: env-monitor", "name: env-tty"))

    plain = run(env, "apply", "-f", str(plain_app), "--wait", "--timeout", "60")
    assert plain.returncode == 0, plain.stderr
    assert "app/env-plain created" in plain.stdout and "component(s) of env-plain running" in plain.stdout
    lines = [STAMP.sub("", line) for line in plain.stderr.splitlines() if STAMP.match(line)]
    assert lines and lines[-1].startswith("waiting for env-plain: ") and lines[-1].split(": ")[1].split()[0] in (
        "2/2", "3/3"), plain.stderr
    assert len(lines) == len(set(lines)) and "\x1b[" not in plain.stderr

    master, slave = pty.openpty()
    proc = subprocess.Popen([*_cmd(), "apply", "-f", str(tty_app), "--wait", "--timeout", "60"],
                            env={**env, "TERM": "xterm-256color", "COLUMNS": "140"},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    try:
        shown = _read_pty(master, proc, 90).decode(errors="replace")
        stdout = proc.communicate(timeout=30)[0].decode()
    finally:
        os.close(master)
    assert proc.returncode == 0, shown
    assert "component(s) of env-tty running" in stdout
    assert "waiting for env-tty" in shown and "\x1b[" in shown and not STAMP.search(shown), shown
    for name in ("env-plain", "env-tty"):
        run(env, "delete", "app", name)
