"""`mlsysops agent continuum|cluster|node`: one agent per process, against any XMPP server.

Every process reads the same slice config and derives the same JIDs, so the hierarchy forms without
further wiring. With the simulated substrate, cluster and node agents reach the simulator host started
by `mlsysops sim serve SLICE` (`--sim URL`). A node agent whose node is down behaves like a crashed host:
it goes offline, and comes back (registering again) when the node is up again.

With substrate `kubernetes`, a cluster agent needs no simulator: it places components on the cluster of
the slice's kubeconfig (`substrate.kubeconfig`/`context`, or the pod's service account) in
`substrate.namespace`, created if missing. Node agents then send metrics only: instance status comes
from the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mlsysops.cli import freeze_startup_heap


class Layer(StrEnum):
    continuum = "continuum"
    cluster = "cluster"
    node = "node"


def agent_password(spec: Any, password_file: Path | None) -> str:
    """This agent's XMPP password: `--password-file`, else the slice's `xmpp.password_env`/`password_file`/
    `password`, else `$MLSYSOPS_XMPP_PASSWORD`; "" when the slice has a `password_dir` (one file per agent,
    read once its JID is known). Missing or empty is an error (there is no default)."""
    from mlsysops.cli.slice_assembly import PASSWORD_ENV, PasswordError, configured_password

    if password_file is not None:
        try:
            value = password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PasswordError(f"--password-file {password_file}: {exc.strerror}") from exc
        if not value:
            raise PasswordError(f"--password-file {password_file} is empty")
        return value
    value = configured_password(spec)
    if value is None and spec.config.xmpp.password_dir is not None:
        return ""
    if value is None:
        raise PasswordError(f"no XMPP password for this agent: pass --password-file, set xmpp.password_dir "
                            f"(`mlsysops xmpp accounts`), xmpp.password_env or password_file in the slice, "
                            f"or ${PASSWORD_ENV}")
    return value


async def _wait(stop: asyncio.Event, condition: Any = None, interval: float = 0.5) -> None:
    while not stop.is_set():
        if condition is not None and await condition():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _run(layer: Layer, config: Path, ident: str | None, sim_url: str | None, xmpp_port: int | None,
               apply: list[Path], api_port: int | None, host_metrics: bool = False,
               push_port: int | None = None, password_file: Path | None = None) -> int:
    from mlsysops.agents.agent_base import AgentStartError
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.agents.xmpp_tls import TlsConfigError, TlsVerification
    from mlsysops.cli.slice_assembly import PasswordError, SliceAssembly

    try:
        spec = load_slice(config)
    except DescriptionError as exc:
        typer.echo(f"invalid slice {config}:\n{exc}", err=True)
        return 1
    os.umask(0o077)   # state files (app descriptions, decision logs) are the operator's alone
    try:
        password = agent_password(spec, password_file)
        TlsVerification.for_slice(spec.config.xmpp).check()
    except (PasswordError, TlsConfigError) as exc:
        typer.echo(str(exc), err=True)
        return 1
    assembly = SliceAssembly(spec, password=password, state_dir=spec.state_dir,
                             xmpp_port=xmpp_port or spec.config.xmpp.port or 5222)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def need(value: str | None, what: str) -> str:
        if not value:
            raise typer.BadParameter(f"--{what} is required for a {layer.value} agent")
        return value

    try:   # a slice with xmpp.password_dir reads this agent's file when its JID is built
        if layer is Layer.continuum:
            return await _run_continuum(assembly, stop, apply, api_port)
        if layer is Layer.cluster:
            return await _run_cluster(assembly, stop, need(ident, "id"), sim_url)
        kube = assembly.substrate == "kubernetes"
        if not host_metrics and kube and not sim_url:
            raise typer.BadParameter("a node agent observes this machine (--host) or a simulator (--sim)")
        return await _run_node(assembly, stop, need(ident, "id"), None if host_metrics else need(sim_url, "sim"),
                               push_port)
    except (PasswordError, AgentStartError) as exc:   # one line, not a traceback: what and where
        typer.echo(str(exc), err=True)
        return 1


async def _run_continuum(assembly: Any, stop: asyncio.Event, apply: list[Path], api_port: int | None) -> int:
    from mlsysops.agents.descriptions import DescriptionError, load_file
    from mlsysops.cli.slice_assembly import api_tokens, default_state_dir, ensure_namespace, kube_connect
    from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
    from mlsysops.continuum.api_auth import TokenError

    spec = assembly.spec
    try:
        tokens, token_file = api_tokens(spec, default_state_dir(spec))
    except TokenError as exc:
        typer.echo(str(exc), err=True)
        return 1
    agent = assembly.continuum_agent()
    karmada_api = None
    if assembly.substrate == "karmada":   # components go to member clusters through Karmada
        try:
            karmada_api = await kube_connect(spec.config.substrate)
            await ensure_namespace(karmada_api, assembly.namespace)
        except Exception as exc:   # noqa: BLE001 - say why, like the cluster agent does
            typer.echo(f"Karmada API server: {exc}", err=True)
            return 1
        agent.use_dispatch(assembly.karmada_dispatch(karmada_api, agent))
    mirror = None
    if assembly.substrate in ("kubernetes", "karmada"):   # karmada: in its API server
        try:
            mirror = assembly.app_mirror(await kube_connect(spec.config.substrate),
                                         os.environ.get("POD_NAMESPACE") or None)
        except Exception as exc:   # noqa: BLE001 - the CRs are a view: the agent runs without them
            typer.echo(f"MLSysOpsApp custom resources disabled: {exc}", err=True)
        else:
            agent.attach_app_mirror(mirror)
    await agent.start_agent()
    freeze_startup_heap()
    app = create_app(ApiBackend(agent), tokens, metrics_auth=spec.config.telemetry.metrics_auth,
                     original_cli=spec.config.api.original_cli)
    api = ApiServer(app, host=spec.config.api.host, port=spec.config.api.port if api_port is None else api_port)
    try:
        url = await api.start()
    except OSError:
        api = ApiServer(app, host=spec.config.api.host, port=0)
        url = await api.start()
    hint = f"token: cat {token_file}" if token_file else "tokens: api.token_file / $MLSYSOPS_API_TOKENS"
    typer.echo(f"continuum agent {agent.jid} up; API: {url}  (docs: {url}/docs; {hint})")
    fragment = ""
    if token_file is not None:   # the generated local token: a CLI context and a dashboard link that work
        from mlsysops.cli.client_config import save_context

        token = token_file.read_text().strip()
        cfg = save_context(spec.config.slice, url, token)
        typer.echo(f"CLI context '{spec.config.slice}' written to {cfg} (try: mlsysops get apps)")
        fragment = f"#token={token}"   # in the fragment: never sent to the server or logged
    typer.echo(f"Dashboard: {url}/dashboard{fragment}")
    typer.echo(f"Metrics: {url}/metrics")
    for path in apply:
        try:
            for doc in load_file(path, inventory=spec.inventory):
                agent.submit_app(doc)
                typer.echo(f"applied {doc.kind}/{doc.name}")
        except DescriptionError as exc:
            typer.echo(f"not applied: {path}\n{exc}", err=True)
    await _wait(stop)
    await api.stop()
    await agent.stop()
    if mirror is not None:
        await mirror.stop()
        await mirror.api.close()
    if karmada_api is not None:
        await karmada_api.close()
    return 0


async def _run_cluster(assembly: Any, stop: asyncio.Event, cid: str, sim_url: str | None) -> int:
    from mlsysops.cli.slice_assembly import ensure_namespace, kube_connect

    spec = assembly.spec
    if cid not in spec.clusters:
        typer.echo(f"unknown cluster {cid!r}; the slice has {sorted(spec.clusters)}", err=True)
        return 1
    kube = assembly.substrate == "kubernetes"
    api = None
    if kube:
        try:
            api = await kube_connect(spec.config.substrate)
            await ensure_namespace(api, assembly.namespace)
        except Exception as exc:   # noqa: BLE001 - SubstrateError or an unreachable server: say why
            if api is not None:
                await api.close()
            typer.echo(f"Kubernetes substrate: {exc}", err=True)
            return 1
    elif not sim_url:
        raise typer.BadParameter("--sim is required for a cluster agent")
    mech = assembly.placement_for(cid, sim_url=sim_url, kube_api=api)
    agent = assembly.cluster_agent(cid, mech, assembly.traffic_for(cid, kube_api=api))
    await agent.start_agent()
    freeze_startup_heap()
    views = None
    if kube:   # Kubernetes Nodes merged with the descriptions (a view: the agent runs without it)
        # MLSysOpsCluster/MLSysOpsNode `.status` on the description CRs `deploy apply` created
        views = await assembly.cluster_views(cid, api, os.environ.get("POD_NAMESPACE") or None)
        if not views.listed:
            typer.echo("Kubernetes Node inventory: no first list yet (retrying in the background)", err=True)
        assembly.attach_cluster_views(agent, views)
    where = f" (Kubernetes namespace {mech.namespace})" if kube else ""
    typer.echo(f"cluster agent {agent.jid} up{where}")
    _serve_metrics(agent, spec)
    await _wait(stop)
    await agent.stop()
    if views is not None:
        await views.stop()
    await (api.close() if api is not None else mech.close())
    return 0


async def _run_node(assembly: Any, stop: asyncio.Event, name: str, sim_url: str | None,
                    push_port: int | None) -> int:
    """A node agent over the simulator (`sim_url`) or this machine (None). While its node is down the agent
    is offline, like a crashed host; it registers again when the node is back."""
    spec = assembly.spec
    if name not in spec.nodes:
        typer.echo(f"unknown node {name!r}; the slice has {sorted(spec.nodes)}", err=True)
        return 1
    gateway = _device_gateway(spec, name)
    if isinstance(gateway, str):
        typer.echo(gateway, err=True)
        return 1
    if sim_url is None:
        from mlsysops.node.host_substrate import HostNodeSubstrate
        substrate: Any = HostNodeSubstrate(name)
    else:
        from mlsysops.node.substrate import RemoteSimNodeSubstrate
        substrate = RemoteSimNodeSubstrate(sim_url, name)
    settings = assembly.settings("node")
    push = None
    if push_port is not None:
        from mlsysops.agents.telemetry.push import ComponentMetricsInbox, PushServer
        push = PushServer(ComponentMetricsInbox(ttl=max(10.0, 5 * settings.monitor)),
                          host=spec.config.api.host, port=push_port)
        typer.echo(f"component metrics: POST {await push.start()}/v1/component-metrics")

    async def node_up() -> bool:
        try:
            return bool((await substrate.observe()).get("up"))
        except Exception:   # noqa: BLE001 - host not reachable yet: keep waiting
            return False

    async def node_down() -> bool:
        return not await node_up()

    while not stop.is_set():
        await _wait(stop, node_up)
        if stop.is_set():
            break
        agent = assembly.node_agent(name, substrate, device_gateway=gateway)
        if push is not None:
            agent.pushed_metrics = push.inbox
        await agent.start_agent()
        freeze_startup_heap()
        typer.echo(f"node agent {agent.jid} up", err=False)
        _serve_metrics(agent, spec)
        await _wait(stop, node_down, interval=settings.monitor)
        await agent.stop()
        if not stop.is_set():
            typer.echo(f"node {name} is down: agent offline until it recovers")
    await substrate.close()
    if push is not None:
        await push.stop()
    return 0


def _device_gateway(spec: Any, name: str) -> Any:
    """The node's `DeviceGateway` when the slice config's `devices.gateways` names it (kept across the
    agent's restarts, as under `up`), None when it does not, or why it cannot be one (a message)."""
    devices = spec.config.devices
    if devices is None or name not in devices.gateways:
        return None
    if devices.broker == "embedded":
        return (f"node {name} is a device gateway (devices.gateways), but an embedded broker runs only under "
                f"`mlsysops up`: set devices.broker: external with the broker's host and port")
    from mlsysops.cli.device_runtime import external_password
    from mlsysops.cli.slice_assembly import SubstrateError
    from mlsysops.node.device_gateway import DeviceGateway

    try:
        password = external_password(devices)
    except SubstrateError as exc:
        return str(exc)
    typer.echo(f"device gateway: MQTT broker {devices.host}:{devices.port}"
               + (f" as {devices.username}" if devices.username else ""))
    return DeviceGateway(name, host=devices.host, port=devices.port, username=devices.username, password=password)


def _serve_metrics(agent: Any, spec: Any) -> None:
    """Prometheus /metrics of a cluster or node agent on `telemetry.prometheus_port` (when set)."""
    port = spec.config.telemetry.prometheus_port
    if port is None:
        return
    try:
        bound = agent.telemetry.serve_prometheus(port, host=spec.config.api.host)
    except OSError as exc:   # a busy port costs the export, never the agent
        typer.echo(f"Prometheus endpoint not started on port {port}: {exc.strerror}", err=True)
        return
    typer.echo(f"Metrics: http://{spec.config.api.host}:{bound}/metrics")


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent(
        layer: Annotated[Layer, typer.Argument(help="Which agent to run")],
        config: Annotated[Path, typer.Option("--config", "-c", help="Slice config YAML", exists=True)],
        ident: Annotated[str | None, typer.Option("--id", help="Cluster id or node name")] = None,
        sim: Annotated[str | None, typer.Option(help="Simulator host URL (mlsysops sim serve)")] = None,
        xmpp_port: Annotated[int | None, typer.Option(help="XMPP client port (default: slice config)")] = None,
        apply: Annotated[list[Path], typer.Option("--apply", "-f", help="Apps to submit (continuum)")] = [],  # noqa: B006
        api_port: Annotated[int | None, typer.Option(help="Continuum: REST API port (default: slice api.port; "
                                                          "0 = any free port)")] = None,
        host: Annotated[bool, typer.Option("--host", help="Node: observe this machine (psutil/sysfs) "
                                                         "instead of a simulator")] = False,
        push_port: Annotated[int | None, typer.Option(help="Node: serve POST /v1/component-metrics on this "
                                                           "port (0 = any free port)")] = None,
        password_file: Annotated[Path | None, typer.Option(help="File holding this agent's XMPP password "
                                                                "(default: the slice's xmpp.password_env, "
                                                                "$MLSYSOPS_XMPP_PASSWORD)")] = None,
        verbose: Annotated[bool, typer.Option("-v", help="Log at INFO level (default: warnings only)")] = False,
    ) -> None:
        """Run one agent of the slice as its own process (the per-layer launch used in production).

        `mlsysops agent far-edge --help`: the lightweight far-edge agent (its own flags, JSON config)."""
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        try:
            code = asyncio.run(_run(layer, config, ident, sim, xmpp_port, apply, api_port, host, push_port,
                                    password_file))
        except KeyboardInterrupt:   # SIGINT before the agent's own handler was installed (still starting)
            typer.echo("interrupted while starting: stopped", err=True)
            code = 0
        raise typer.Exit(code)
