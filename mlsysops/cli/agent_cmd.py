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


async def _wait(stop: asyncio.Event, condition: Any = None, interval: float = 0.5) -> None:
    while not stop.is_set():
        if condition is not None and await condition():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _run(layer: Layer, config: Path, ident: str | None, sim_url: str | None, xmpp_port: int | None,
               apply: list[Path], api_port: int | None, host_metrics: bool = False,
               push_port: int | None = None) -> int:
    from mlsysops.agents.descriptions import DescriptionError, load_file
    from mlsysops.agents.slice_config import load_slice
    from mlsysops.cli.slice_runtime import DEV_PASSWORD, agent_jid, layer_settings

    try:
        spec = load_slice(config)
    except DescriptionError as exc:
        typer.echo(f"invalid slice {config}:\n{exc}", err=True)
        return 1
    xc = spec.config.xmpp
    domain = xc.domain or xc.host or "localhost"
    port = xmpp_port or xc.port or 5222
    password = xc.resolve_password() or DEV_PASSWORD
    settings = layer_settings(spec, layer.value, spec.state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def need(value: str | None, what: str) -> str:
        if not value:
            raise typer.BadParameter(f"--{what} is required for a {layer.value} agent")
        return value

    if layer is Layer.continuum:
        from mlsysops.cli.slice_runtime import default_state_dir
        from mlsysops.continuum.agent import ContinuumAgent
        from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
        from mlsysops.continuum.api_auth import Role, TokenError, configured_tokens, dev_token

        try:
            tokens = configured_tokens(spec.config.api.token_file)
        except TokenError as exc:
            typer.echo(str(exc), err=True)
            return 1
        token_file = None
        if not tokens:
            token, token_file = dev_token(default_state_dir(spec))
            tokens = {token: Role.admin}
        cont = spec.continuum
        agent = ContinuumAgent(agent_jid("continuum", cont.continuum_id, domain), password, description=cont,
                               cluster_jids={c: agent_jid("cluster", c, domain) for c in spec.clusters},
                               inventory=spec.inventory, settings=settings, port=port)
        karmada_api = None
        if spec.config.substrate.type == "karmada":   # components go to member clusters through Karmada
            from mlsysops.cli.slice_runtime import (
                ensure_namespace,
                karmada_dispatch,
                kube_connect,
                workload_namespace,
            )

            try:
                karmada_api = await kube_connect(spec.config.substrate)
                await ensure_namespace(karmada_api, workload_namespace(spec))
            except Exception as exc:   # noqa: BLE001 - say why, like the cluster agent does
                typer.echo(f"Karmada API server: {exc}", err=True)
                return 1
            agent.use_dispatch(karmada_dispatch(spec, karmada_api, workload_namespace(spec), agent))
        mirror = None
        if spec.config.substrate.type in ("kubernetes", "karmada"):   # karmada: in its API server
            try:
                mirror = await _app_mirror(spec)
            except Exception as exc:   # noqa: BLE001 - the CRs are a view: the agent runs without them
                typer.echo(f"MLSysOpsApp custom resources disabled: {exc}", err=True)
            else:
                agent.attach_app_mirror(mirror)
        await agent.start_agent()
        freeze_startup_heap()
        app = create_app(ApiBackend(agent), tokens, metrics_auth=spec.config.telemetry.metrics_auth)
        api = ApiServer(app, host=spec.config.api.host, port=spec.config.api.port if api_port is None else api_port)
        try:
            url = await api.start()
        except OSError:
            api = ApiServer(app, host=spec.config.api.host, port=0)
            url = await api.start()
        hint = f"token: cat {token_file}" if token_file else "tokens: api.token_file / $MLSYSOPS_API_TOKENS"
        typer.echo(f"continuum agent {agent.jid} up; API: {url}  (docs: {url}/docs; {hint})")
        typer.echo(f"Dashboard: {url}/dashboard")
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

    kube = spec.config.substrate.type == "kubernetes"
    if layer is Layer.cluster:
        from mlsysops.cluster.agent import ClusterAgent

        cid = need(ident, "id")
        if cid not in spec.clusters:
            typer.echo(f"unknown cluster {cid!r}; the slice has {sorted(spec.clusters)}", err=True)
            return 1
        nodes = {n.name: n for n in spec.cluster_nodes(cid)}
        if kube:
            try:
                mech, close = await _kube_placement(spec, cid)
            except Exception as exc:   # noqa: BLE001 - SubstrateError or an unreachable server: say why
                typer.echo(f"Kubernetes substrate: {exc}", err=True)
                return 1
        else:
            from mlsysops.mechanisms.remote_sim_placement import RemoteSimPlacementMechanism

            mech = RemoteSimPlacementMechanism(need(sim_url, "sim"), cid)  # type: ignore
            close = mech.close
        agent = ClusterAgent(agent_jid("cluster", cid, domain), password, description=spec.clusters[cid],
                             nodes=nodes, node_jids={n: agent_jid("node", n, domain) for n in nodes},
                             placement=mech, parent=agent_jid("continuum", spec.continuum.continuum_id, domain),
                             settings=settings, port=port)
        await agent.start_agent()
        freeze_startup_heap()
        inventory = None
        if kube:   # Kubernetes Nodes merged with the descriptions (a view: the agent runs without it)
            from mlsysops.cluster.kube_inventory import NodeInventory

            inventory = NodeInventory(mech.api, cid, nodes)
            if not await inventory.start():
                typer.echo("Kubernetes Node inventory: no first list yet (retrying in the background)", err=True)
            agent.attach_inventory(inventory)
            from mlsysops.cluster.kube_status_writer import StatusWriter

            # MLSysOpsCluster/MLSysOpsNode `.status` on the description CRs `deploy apply` created
            writer = StatusWriter(mech.api, os.environ.get("POD_NAMESPACE") or mech.namespace)
            writer.start()
            agent.attach_status_writer(writer)
        where = f" (Kubernetes namespace {mech.namespace})" if kube else ""
        typer.echo(f"cluster agent {agent.jid} up{where}")
        _serve_metrics(agent, spec)
        await _wait(stop)
        await agent.stop()
        if inventory is not None:
            await inventory.stop()
            await writer.stop()
        await close()
        return 0

    from mlsysops.node.agent import NodeAgent
    from mlsysops.node.substrate import RemoteSimNodeSubstrate

    name = need(ident, "id")
    if name not in spec.nodes:
        typer.echo(f"unknown node {name!r}; the slice has {sorted(spec.nodes)}", err=True)
        return 1
    desc = spec.nodes[name]
    if host_metrics:
        from mlsysops.node.host_substrate import HostNodeSubstrate
        substrate: Any = HostNodeSubstrate(name)
    else:
        if kube and not sim_url:
            raise typer.BadParameter("a node agent observes this machine (--host) or a simulator (--sim)")
        substrate = RemoteSimNodeSubstrate(need(sim_url, "sim"), name)
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
        agent = NodeAgent(agent_jid("node", name, domain), password, description=desc, substrate=substrate,
                          parent=agent_jid("cluster", desc.cluster_id or "", domain), settings=settings, port=port,
                          report_instances=not kube)
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


async def _kube_placement(spec: Any, cid: str) -> tuple[Any, Any]:
    """The cluster's Kubernetes placement mechanism and the coroutine function that closes its client."""
    from mlsysops.cli.slice_runtime import ensure_namespace, kube_connect, workload_namespace
    from mlsysops.mechanisms.kube_placement import KubePlacementMechanism

    api = await kube_connect(spec.config.substrate)
    namespace = workload_namespace(spec)
    try:
        await ensure_namespace(api, namespace)
    except BaseException:
        await api.close()
        raise
    return KubePlacementMechanism(api, namespace, cid), api.close


async def _app_mirror(spec: Any) -> Any:
    """The continuum's MLSysOpsApp custom resources: in its pod's namespace, else the workload namespace."""
    from mlsysops.cli.slice_runtime import kube_connect, workload_namespace
    from mlsysops.continuum.kube_app_mirror import AppStatusMirror

    api = await kube_connect(spec.config.substrate)
    mirror = AppStatusMirror(api, os.environ.get("POD_NAMESPACE") or workload_namespace(spec))
    mirror.start()
    return mirror


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
        verbose: Annotated[bool, typer.Option("-v")] = False,
    ) -> None:
        """Run one agent of the slice as its own process (the per-layer launch used in production)."""
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        raise typer.Exit(asyncio.run(_run(layer, config, ident, sim, xmpp_port, apply, api_port, host, push_port)))
