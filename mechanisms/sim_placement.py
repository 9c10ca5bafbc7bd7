"""Component placement on the simulated continuum (the cluster agent's default mechanism).

Actions (see `placement_commands`): deploy, move (make-before-break), remove, change_spec. The mechanism
only acts on the nodes of its own cluster. It decides nothing: which node, which instance id and which
resources come from the plan or from the `resolve` callable: given at construction, or built from the app
models the registering cluster agent passes to `initialize(app_models=...)`. Instance ids are deterministic per plan, so a retried command is a no-op in the sim.

`get_state()` is the substrate's truth (like listing pods by label): every instance on this cluster's
nodes with its app/component, so a restarted cluster agent adopts what runs instead of redeploying it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlsysops.mechanisms.placement_commands import CommandError, PlacementAction, parse_command
from mlsysops.sim import InstanceState, SimContinuum, SimError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ComponentDeploySpec:
    """What the substrate needs to run one instance of a component."""

    cpu_cores: float = 0.1
    memory_bytes: int = 64 * 2**20
    base_response_ms: float = 20.0
    calls: list[str] = field(default_factory=list)   # components this one sends requests to


Resolver = Callable[[str, str, dict[str, Any] | None], ComponentDeploySpec]


def new_instance_id(app: str, component: str) -> str:
    return f"{app}.{component}.{uuid.uuid4().hex[:6]}"


class SimPlacementMechanism:
    """Mechanism plugin object: `apply(command)`, `get_state()`, `get_options()`."""

    name = "component_placement"

    def __init__(self, sim: SimContinuum, cluster_id: str, resolve: Resolver | None = None,
                 *, move_timeout: float = 5.0, poll_interval: float = 0.02) -> None:
        self.sim = sim
        self.cluster_id = cluster_id
        self.resolve = resolve or unbound_resolver
        self.move_timeout = move_timeout
        self.poll_interval = poll_interval

    def initialize(self, *, app_models: Mapping[str, Any]) -> None:
        """Bound by the cluster agent that registers this mechanism: its app models (a live table), so a
        mechanism kept across cluster-agent restarts always reads the current agent's apps."""
        self.resolve = resolver_for(app_models)

    # -- contract -----------------------------------------------------------------------------------
    async def get_options(self) -> dict[str, Any]:
        return {"actions": ["deploy", "move", "remove", "change_spec"],
                "formats": ["mlsysops", "fluidity"], "nodes": self._nodes()}

    async def get_state(self) -> dict[str, Any]:
        nodes = self._nodes()
        instances = [i.as_dict() for n in nodes for i in self.sim.instances(node=n)
                     if not i.state.terminal]
        latency = {a: {b: round(self.sim.latency_ms(a, b), 3) for b in nodes if b != a} for a in nodes}
        return {"cluster": self.cluster_id, "instances": instances, "latency_ms": latency,
                "nodes_up": {n: self.sim.is_up(n) for n in nodes}}

    async def apply(self, command: Any) -> dict[str, Any]:
        try:
            actions = parse_command(command)
        except CommandError as exc:
            return {"ok": False, "detail": f"invalid command: {exc}"}
        results = []
        ok = True
        for act in actions:
            try:
                detail = await self._apply_one(act)
                results.append({**act.to_dict(), "ok": True, **detail})
            except (SimError, CommandError, ValueError, TimeoutError) as exc:
                ok = False
                results.append({**act.to_dict(), "ok": False, "error": str(exc)})
                log.warning("placement action %s failed: %s", act.to_dict(), exc)
        return {"ok": ok, "detail": results}

    # -- actions ------------------------------------------------------------------------------------
    def _nodes(self) -> list[str]:
        return [n.name for n in self.sim.nodes() if n.cluster == self.cluster_id]

    def _check_node(self, node: str | None) -> str:
        if node is None or node not in self._nodes():
            raise CommandError(f"node {node!r} is not in cluster {self.cluster_id}")
        return node

    async def _apply_one(self, act: PlacementAction) -> dict[str, Any]:
        if act.action == "deploy":
            return self._deploy(act.app, act.component, self._check_node(act.node), act.instance_id, act.spec)
        if act.action == "remove":
            return self._remove(act)
        if act.action == "move":
            return await self._move(act)
        return await self._change_spec(act)

    def _deploy(self, app: str, component: str, node: str, instance_id: str | None,
                spec: dict[str, Any] | None) -> dict[str, Any]:
        want = self.resolve(app, component, spec)
        iid = instance_id or new_instance_id(app, component)
        if want.calls:
            pairs = set(self.sim.interactions(app)) | {(component, c) for c in want.calls}
            self.sim.set_interactions(app, sorted(pairs))
        inst = self.sim.deploy(iid, app, component, node, want.cpu_cores, want.memory_bytes,
                               base_response_ms=want.base_response_ms, interactions=want.calls)
        return {"instance_id": inst.instance_id, "node": node, "state": str(inst.state)}

    def _find(self, app: str, component: str, node: str | None, instance_id: str | None):
        for inst in self.sim.instances(app=app):
            if inst.state.terminal or inst.component != component:
                continue
            if instance_id is not None and inst.instance_id != instance_id:
                continue
            if node is not None and inst.node != node:
                continue
            return inst
        return None

    def _remove(self, act: PlacementAction) -> dict[str, Any]:
        inst = self._find(act.app, act.component, act.node, act.instance_id)
        if inst is None:   # already gone: removal is idempotent
            return {"removed": None}
        self.sim.remove(inst.instance_id)
        return {"removed": inst.instance_id, "node": inst.node}

    async def _wait_running(self, instance_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.move_timeout
        while True:
            inst = self.sim.instance(instance_id)
            if inst.state is InstanceState.RUNNING:
                return
            if inst.state.terminal:
                raise SimError(f"new instance {instance_id} ended {inst.state}: {inst.reason}")
            if loop.time() > deadline:
                raise TimeoutError(f"new instance {instance_id} not running after {self.move_timeout}s")
            await asyncio.sleep(self.poll_interval)

    async def _move(self, act: PlacementAction) -> dict[str, Any]:
        """Make-before-break: start the new instance, wait until it runs, then stop the old one."""
        target = self._check_node(act.target)
        old = self._find(act.app, act.component, act.source, act.instance_id)
        new_id = (act.extra.get("new_instance_id") or
                  (f"{act.instance_id}.m" if act.instance_id else new_instance_id(act.app, act.component)))
        placed = self._deploy(act.app, act.component, target, new_id, act.spec)
        source_alive = old is not None and self.sim.is_up(old.node)
        if source_alive:
            try:
                await self._wait_running(placed["instance_id"])
            except (SimError, TimeoutError):
                self.sim.remove(placed["instance_id"])   # break nothing: the old instance keeps serving
                raise
            self.sim.remove(old.instance_id)
        return {"instance_id": placed["instance_id"], "node": target,
                "replaced": old.instance_id if old else act.instance_id, "waited_for_running": source_alive}

    async def _change_spec(self, act: PlacementAction) -> dict[str, Any]:
        """A new spec means a new instance (like a rolling update of one replica): make-before-break."""
        old = self._find(act.app, act.component, act.node, act.instance_id)
        if old is None:
            raise CommandError(f"no running instance of {act.app}/{act.component} on {act.node}")
        move = PlacementAction("move", act.app, act.component, source=old.node, target=old.node,
                               instance_id=old.instance_id, spec=act.spec,
                               extra={"new_instance_id": new_instance_id(act.app, act.component)})
        return await self._move(move)


def sim_node_spec(node: Any) -> Any:
    """An MLSysOpsNode description as a simulated node (the sim itself never sees descriptions)."""
    from mlsysops.sim import SimNodeSpec

    loc = tuple(node.location[:2]) if node.location and len(node.location) >= 2 else None
    return SimNodeSpec(
        name=node.name, cluster=node.cluster_id or "", layer=str(node.continuum_layer),
        cpu_cores=float(node.cpu_cores or 1), memory_bytes=int(node.memory_bytes or 2**30),
        cpu_freqs_hz=list(node.cpu_frequencies_hz), gpu=node.gpu_present,
        architecture=node.architecture or "amd64",
        sensors=[f"{s.type}:{s.model}" if s.model else s.type for s in node.sensor_refs],
        labels=list(node.labels or []), location=loc, mobile=bool(node.mobile))


def unbound_resolver(app: str, component: str, spec: dict[str, Any] | None) -> ComponentDeploySpec:
    """Until a cluster agent registers the mechanism, nothing can be resolved (a failed command, not a crash)."""
    raise CommandError(f"cannot resolve {app}/{component}: no app models (the mechanism is not registered "
                       "with a cluster agent)")


def resolver_for(apps: Mapping[str, Any]) -> Resolver:
    """Build the `resolve` callable from the cluster agent's app models (name -> MLSysOpsApp)."""
    from mlsysops.agents.placement.adapters import calls

    def resolve(app: str, component: str, spec: dict[str, Any] | None) -> ComponentDeploySpec:
        model = apps.get(app)
        comp = model.component(component) if model is not None else None
        if comp is None:
            raise CommandError(f"unknown component {app}/{component}")
        if spec is not None:   # change_spec: the new component description
            from mlsysops.agents.descriptions.app import Component
            comp = Component.model_validate(spec)
        return ComponentDeploySpec(cpu_cores=comp.cpu_request_cores or 0.05,
                                   memory_bytes=comp.memory_request_bytes or 32 * 2**20,
                                   calls=calls(model, component))
    return resolve
