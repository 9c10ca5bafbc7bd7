"""`mlsysops up` (run a slice locally) and `mlsysops sim ...` (inject faults into a running one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from mlsysops.cli import freeze_startup_heap

STATUS_STYLE = {"running": "green", "deploying": "yellow", "pending": "yellow", "relocating": "magenta",
                "failed": "red", "unknown": "red", "removed": "dim"}


ControlOpt = Annotated[str | None, typer.Option(
    help="Where faults go: a simulator host (`mlsysops sim serve`) or a slice's API base URL ending in /api/v1 "
         "(default: the latest `mlsysops up`)")]
TOKEN_ENV = "MLSYSOPS_API_TOKEN"


def secure_state_dir(state_dir: Path) -> None:
    """The state directory (app descriptions, decision logs, the API token) is the operator's alone: 0700
    directories, 0600 files, also for what an earlier run left with looser modes. New files follow the
    process umask, which the launchers set to 077."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    for path in state_dir.rglob("*"):
        with contextlib.suppress(OSError):
            path.chmod(0o700 if path.is_dir() else 0o600)


class _Shutdown:
    """SIGINT/SIGTERM: the first asks for a clean stop; the next one exits at once (the XMPP server, bound
    to this process by its watchdog pipe, goes with it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.requested = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        if self.requested.is_set():
            os._exit(130)
        self.requested.set()


def _say(console, text: str, **kw) -> None:
    """Print, unless the reader is gone (`up | tee log` and Ctrl-C: tee dies first). Shutting down must
    never stop at a message: rich turns a broken pipe into SystemExit(1))."""
    with contextlib.suppress(OSError, ValueError, SystemExit):
        console.print(text, **kw)


def write_run_file(state_dir: Path, api_url: str, xmpp_port: int | None, token_file: Path | None) -> Path:
    """`state_dir/run.json`: where a running `mlsysops up` serves its API (read by `mlsysops sim ...`)."""
    from mlsysops.continuum.api import API_PREFIX

    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "run.json"
    path.write_text(json.dumps({"api": api_url, "control": f"{api_url}{API_PREFIX}", "xmpp_port": xmpp_port,
                                "token_file": str(token_file) if token_file else None, "started": time.time()}))
    path.chmod(0o600)
    return path


def state_dir_problem(state_dir: Path) -> str | None:
    """Why `mlsysops up` cannot keep its state in `state_dir` (one line naming it and the fix), or None.
    Checked before anything starts, so a read-only HOME is an error message, not a traceback."""
    probe = state_dir / ".write-probe"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return (f"cannot write the state directory {state_dir}: {exc.strerror or exc}; "
                "set `state_dir:` in the slice config to a writable directory")
    return None


def _render(rt, started: float):
    from rich.console import Group
    from rich.table import Table

    infra = Table(title=f"slice {rt.spec.config.slice}  (up {time.time() - started:.0f}s)", expand=True)
    infra.add_column("cluster")
    infra.add_column("registered")
    infra.add_column("nodes")
    for cid, info in rt.hierarchy().items():
        nodes = " ".join(f"[{'green' if alive else 'red'}]{n}[/]" for n, alive in sorted(info["nodes"].items()))
        infra.add_row(cid, "[green]yes[/]" if info["registered"] else "[yellow]joining[/]", nodes or "-")
    apps = Table(title="applications", expand=True)
    for col in ("app", "component", "status", "cluster", "nodes", "reason"):
        apps.add_column(col)
    for app in sorted(rt.continuum.apps):
        for comp, st in rt.continuum.app_status(app).items():
            style = STATUS_STYLE.get(st["status"], "white")
            apps.add_row(app, comp, f"[{style}]{st['status']}[/]", st.get("cluster") or "-",
                         ",".join(st.get("nodes") or []) or "-", (st.get("reason") or "")[:60])
    recent = Table(title="recent decisions", expand=True)
    for col in ("agent", "stage", "outcome", "reason"):
        recent.add_column(col)
    records = []
    for agent in [rt.continuum, *rt.clusters.values()]:
        records.extend(r for r in agent.decisions(limit=20) if r["stage"] in ("plan", "execute", "event"))
    for r in sorted(records, key=lambda r: r["ts"])[-8:]:
        recent.add_row(r["agent"], r["stage"], r["outcome"], r["reason"][:100])
    return Group(infra, apps, recent)


async def _up(slice_file: Path, apply: list[Path], progress: bool, duration: float | None) -> int:
    from rich.console import Console
    from rich.live import Live

    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.cli.slice_assembly import SubstrateError, api_tokens, default_state_dir
    from mlsysops.cli.slice_runtime import SliceRuntime
    from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
    from mlsysops.continuum.api_auth import TokenError

    console = Console(stderr=True)
    try:
        spec = load_slice(slice_file)
    except DescriptionError as exc:
        console.print(f"[red]invalid slice {slice_file}[/]\n{exc}")
        return 1
    state_dir = default_state_dir(spec)
    os.umask(0o077)   # what the slice writes (state, tokens, logs) is the operator's alone
    problem = state_dir_problem(state_dir)
    if problem is not None:
        console.print(f"[red]{problem}[/]", soft_wrap=True, highlight=False)
        return 1
    secure_state_dir(state_dir)
    try:
        tokens, token_file = api_tokens(spec, state_dir)
    except TokenError as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    rt = SliceRuntime(spec, state_dir=state_dir)
    started = time.time()
    stop = _Shutdown(asyncio.get_running_loop()).requested
    api = None
    try:
        with console.status("starting the embedded XMPP server and the agents..."):
            try:
                if not await _unless_stopped(rt.start(), stop):
                    return 130   # Ctrl-C during start-up: what started is stopped below
            except SubstrateError as exc:   # unreachable API server, bad kubeconfig: say so, no traceback
                console.print(f"[red]substrate {spec.config.substrate.type}: {exc}[/]", soft_wrap=True)
                return 1
        freeze_startup_heap()
        app = create_app(ApiBackend(runtime=rt), tokens, metrics_auth=spec.config.telemetry.metrics_auth,
                         original_cli=spec.config.api.original_cli)
        api = ApiServer(app, host=spec.config.api.host, port=spec.config.api.port)
        try:
            url = await api.start()
        except OSError:
            console.print(f"[yellow]port {spec.config.api.port} is busy: the API takes a free port[/]")
            api = ApiServer(app, host=spec.config.api.host, port=0)
            url = await api.start()
        write_run_file(state_dir, url, rt.xmpp_port, token_file)
        if token_file is not None:   # like kind writing a kubeconfig: `mlsysops get apps` works at once
            from mlsysops.cli.client_config import save_context

            cfg = save_context(spec.config.slice, url, token_file.read_text().strip())
            console.print(f"CLI context '{spec.config.slice}' written to {cfg} (try: mlsysops get apps)",
                          soft_wrap=True)
        console.print(f"XMPP: embedded server on localhost:{rt.xmpp_port}")
        if rt.devices is not None:
            behind = "; ".join(f"{', '.join(d.name for d in devs)} behind {gw}"
                               for gw, devs in spec.config.devices.gateways.items())
            console.print(f"MQTT: {'embedded broker' if rt.devices.broker else 'broker'} on "
                          f"{rt.devices.host}:{rt.devices.port}; devices: {behind or 'none'} (mlsysops get nodes)",
                          soft_wrap=True, highlight=False)
        # Like Jupyter: the generated local token rides in the fragment (never sent to the server or logged).
        fragment = f"#token={token_file.read_text().strip()}" if token_file is not None else ""
        console.print(f"Dashboard: {url}/dashboard{fragment}", soft_wrap=True, highlight=False)
        console.print(f"Metrics: {url}/metrics", soft_wrap=True, highlight=False)
        console.print(f"API: {url}  (docs: {url}/docs; faults: mlsysops sim fail-node NODE)", soft_wrap=True)
        if token_file is not None:
            console.print(f"API token (admin): cat {token_file}   e.g. curl -H \"Authorization: Bearer "
                          f"$(cat {token_file})\" {url}/api/v1/apps", soft_wrap=True, highlight=False)
        else:
            console.print(f"API tokens: from {spec.config.api.token_file or '$MLSYSOPS_API_TOKENS'}",
                          soft_wrap=True)
        for path in apply:
            files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
            for f in files:
                try:
                    for doc in rt.apply_file(f):
                        console.print(f"applied {doc.kind}/{doc.name} from {f}")
                except DescriptionError as exc:
                    console.print(f"[red]not applied: {f}[/]\n{exc}")
        deadline = None if duration is None else time.monotonic() + duration

        async def wait_tick() -> bool:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            return stop.is_set() or (deadline is not None and time.monotonic() > deadline)

        if progress and sys.stderr.isatty():
            with Live(_render(rt, started), console=console, refresh_per_second=2) as live:
                while not await wait_tick():
                    live.update(_render(rt, started))
        else:
            last = ""
            while not await wait_tick():
                line = json.dumps({a: {c: s["status"] for c, s in rt.continuum.app_status(a).items()}
                                   for a in sorted(rt.continuum.apps)})
                if line != last:
                    _say(console, f"[{time.time() - started:6.1f}s] {line}")
                    last = line
    finally:
        _say(console, "shutting down...")
        try:
            if api is not None:
                try:
                    await api.stop()
                except Exception as exc:   # noqa: BLE001 - the agents and the server must still stop
                    _say(console, f"stopping the API failed: {exc}")
            await rt.stop()
        finally:
            with contextlib.suppress(FileNotFoundError):
                (state_dir / "run.json").unlink()
    return 0


def run_bounded(main, grace: float = 5.0) -> int:
    """`asyncio.run` whose final cancellation of leftover tasks is bounded: a task that ignores it (seen
    after Ctrl-C on a piped `up`) must not keep the process alive once everything was stopped."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=grace))
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _unless_stopped(start, stop: asyncio.Event) -> bool:
    """Run `start` unless a stop is requested first (then it is cancelled); True when it completed."""
    task = asyncio.ensure_future(start)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _serve(slice_file: Path, host: str, port: int) -> int:
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.cli.sim_host import SimHost

    try:
        spec = load_slice(slice_file)
    except DescriptionError as exc:
        typer.echo(f"invalid slice {slice_file}:\n{exc}", err=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim_host = SimHost(spec, host, port)
    url = await sim_host.start()
    typer.echo(f"Simulator: {url}  ({len(spec.nodes)} nodes; faults: mlsysops sim fail-node NODE --control {url})")
    await stop.wait()
    await sim_host.stop()
    return 0


def _control(control: str | None) -> tuple[str, str | None]:
    """The fault endpoint's base URL and the bearer token to send ($MLSYSOPS_API_TOKEN, else the token
    file of the latest `mlsysops up`)."""
    token = os.environ.get(TOKEN_ENV)
    if control:
        return control.rstrip("/"), token
    runs = sorted(Path("~/.mlsysops").expanduser().glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        typer.echo("no running slice found (start one with `mlsysops up SLICE`), or pass --control URL", err=True)
        raise typer.Exit(1)
    run = json.loads(runs[-1].read_text())
    if token is None and run.get("token_file"):
        with contextlib.suppress(OSError):
            token = Path(run["token_file"]).read_text().strip()
    return run["control"], token


def _error_text(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    detail = body.get("detail", body.get("error")) if isinstance(body, dict) else body
    if isinstance(detail, list):   # request validation errors: where and why
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail)
    return detail if isinstance(detail, str) else json.dumps(detail)


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        typer.echo(f"error: {_error_text(exc.read())}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as exc:
        typer.echo(f"cannot reach the slice at {url}: {exc.reason}", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        slice_file: Annotated[Path, typer.Argument(help="Slice config YAML", exists=True, dir_okay=False)],
        apply: Annotated[list[Path], typer.Option("--apply", "-f", help="App description file or directory")] = [],  # noqa: B006
        progress: Annotated[bool, typer.Option(help="Live progress view (on a terminal)")] = True,
        duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
        verbose: Annotated[bool, typer.Option("-v", help="Log agent activity")] = False,
    ) -> None:
        """Start the embedded XMPP server and every agent of the slice, on the simulated continuum."""
        logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        raise typer.Exit(run_bounded(_up(slice_file, apply, progress, duration)))

    sim = typer.Typer(help="Inject faults into the simulated continuum of a running slice.", no_args_is_help=True)
    app.add_typer(sim, name="sim")

    def _fault(body: dict, control: str | None) -> None:
        url, token = _control(control)
        out = _post(f"{url}/sim/faults", body, token)
        typer.echo(f"injected: {out['injected']}")

    @sim.command("serve")
    def serve(slice_file: Annotated[Path, typer.Argument(help="Slice config YAML", exists=True)],
              port: Annotated[int, typer.Option(help="Control port (0: any free port)")] = 0,
              host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1") -> None:
        """Run the slice's simulated continuum as its own process, for agents started with `mlsysops agent`."""
        raise typer.Exit(asyncio.run(_serve(slice_file, host, port)))

    @sim.command("fail-node")
    def fail_node(node: str, control: ControlOpt = None) -> None:
        """Crash a node: its instances fail and its agent dies."""
        _fault({"kind": "crash", "node": node}, control)

    @sim.command("recover-node")
    def recover_node(node: str, control: ControlOpt = None) -> None:
        """Bring a crashed node back (empty); its agent registers again."""
        _fault({"kind": "recover", "node": node}, control)

    @sim.command("slow-node")
    def slow_node(node: Annotated[str, typer.Argument(help="The node")],
                  factor: Annotated[float, typer.Option(help="Response times grow by this factor")] = 5.0,
                  duration: Annotated[float | None, typer.Option(help="Seconds (default: until cleared)")] = None,
                  control: ControlOpt = None) -> None:
        """Slow a node down (response times grow by FACTOR)."""
        _fault({"kind": "slow", "node": node, "factor": factor, "duration_s": duration}, control)

    @sim.command("load-spike")
    def load_spike(node: Annotated[str, typer.Argument(help="The node")],
                   cpu_cores: Annotated[float | None, typer.Option(help="Extra CPU load in cores (default: "
                                                                        "the node's size)")] = None,
                   duration: Annotated[float, typer.Option(help="Seconds")] = 30.0,
                   control: ControlOpt = None) -> None:
        """Add CPU load on a node for DURATION seconds."""
        body = {"kind": "spike", "node": node, "duration_s": duration}
        if cpu_cores is not None:
            body["cpu_cores"] = cpu_cores
        _fault(body, control)
