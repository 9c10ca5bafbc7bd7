"""The far-edge agent's components: local processes it starts, watches and (through its rules) restarts.

A component is ``{"name", "app", "command": [argv...], "restart": "on-failure"|"always"|"never"}``. Its
instance id is ``<node>.<app>.<name>``. States follow the node agent's vocabulary (`starting`, `running`,
`failed`, `stopped`) so the cluster reads them as it reads any node's instances. The supervisor never
decides to restart anything itself: it reports exits, and the local rules (`rules.py`) act on them, so
each restart is a recorded decision.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RESTART_POLICIES = ("on-failure", "always", "never")


class ComponentError(ValueError):
    """A component definition that cannot run: the message names the field and what was expected."""


@dataclass
class Component:
    name: str
    app: str
    command: list[str]
    restart: str = "on-failure"
    instance_id: str = ""
    state: str = "stopped"
    since: float = field(default_factory=time.time)
    reason: str | None = None
    restarts: int = 0
    pid: int | None = None
    exit_code: int | None = None
    _proc: Any = None
    _cpu: tuple[float, float] | None = None   # (monotonic, seconds of CPU) at the previous read

    @classmethod
    def parse(cls, raw: Any, node: str, where: str) -> Component:
        if not isinstance(raw, dict):
            raise ComponentError(f"{where}: expected an object with name, app, command")
        name, app, command = raw.get("name"), raw.get("app", "far-edge"), raw.get("command")
        if not isinstance(name, str) or not name:
            raise ComponentError(f"{where}.name: expected a non-empty string, got {name!r}")
        if not isinstance(app, str) or not app:
            raise ComponentError(f"{where}.app: expected a non-empty string, got {app!r}")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            raise ComponentError(f"{where}.command: expected a non-empty list of strings (argv), got {command!r}")
        restart = raw.get("restart", "on-failure")
        if restart not in RESTART_POLICIES:
            raise ComponentError(f"{where}.restart: expected one of {list(RESTART_POLICIES)}, got {restart!r}")
        unknown = set(raw) - {"name", "app", "command", "restart"}
        if unknown:
            raise ComponentError(f"{where}: unknown field(s) {sorted(unknown)}")
        return cls(name=name, app=app, command=list(command), restart=restart, instance_id=f"{node}.{app}.{name}")

    def cpu_cores(self) -> float | None:
        """CPU used since the previous read, in cores (from /proc/<pid>/stat)."""
        if self.pid is None or self.state != "running":
            return None
        try:
            fields = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        now, prev = time.monotonic(), self._cpu
        self._cpu = (now, seconds)
        return None if prev is None or now <= prev[0] else max(0.0, (seconds - prev[1]) / (now - prev[0]))

    def view(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "app": self.app, "component": self.name, "state": self.state,
                "since": self.since, "reason": self.reason, "restarts": self.restarts, "pid": self.pid}


class Supervisor:
    """Starts components as child processes and reports every state change to `on_change`."""

    def __init__(self, components: list[Component], on_change: Callable[[Component], None]) -> None:
        self.components = {c.name: c for c in components}
        self.on_change = on_change

    def _set(self, comp: Component, state: str, reason: str | None = None) -> None:
        comp.state, comp.reason, comp.since = state, reason, time.time()
        self.on_change(comp)

    async def start(self, name: str) -> None:
        comp = self.components[name]
        if comp.state in ("starting", "running"):
            return
        self._set(comp, "starting")
        try:
            # Popen, polled every monitor tick: no asyncio child watcher (absent under some loop policies)
            proc = subprocess.Popen(comp.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            comp.pid, comp.exit_code = None, None
            self._set(comp, "failed", f"could not start {comp.command[0]}: {exc.strerror or exc}")
            return
        comp._proc, comp.pid, comp.exit_code, comp._cpu = proc, proc.pid, None, None
        self._set(comp, "running")

    def poll(self) -> None:
        """Notice exits (called every monitor tick)."""
        for comp in self.components.values():
            proc = comp._proc
            if proc is None or proc.poll() is None:
                continue
            code = proc.returncode
            comp._proc, comp.pid, comp.exit_code = None, None, code
            if comp.state == "stopped":
                continue
            if code == 0:
                self._set(comp, "stopped", "exited with status 0")
            else:
                why = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
                self._set(comp, "failed", why)

    async def start_all(self) -> None:
        for name in self.components:
            await self.start(name)

    async def stop(self, name: str, timeout: float = 5.0) -> None:
        comp = self.components[name]
        proc = comp._proc
        if comp.state not in ("starting", "running") and proc is None:
            return
        self._set(comp, "stopped", "stopped by the agent")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        comp._proc, comp.pid = None, None

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(n) for n in self.components), return_exceptions=True)

    def instances(self) -> list[dict[str, Any]]:
        return [c.view() for c in self.components.values()]
