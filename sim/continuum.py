"""SimContinuum: nodes, component instances, workload/QoS, faults and events over one clock.

Contract (decisions a mechanism or agent can rely on):

* State is a function of the clock. Every public call first applies the transitions that are due
  (starting -> running after the node's `startup_s`), so reads are always current; `tick()` does only
  that, for callers that want events without reading anything. Events carry the sim time at which the
  transition happened, and are delivered in time order, synchronously, to `subscribe()`d callbacks.
* `deploy()` rejects with an exception and changes nothing when: the node is unknown
  (`UnknownNodeError`), the node is crashed (`NodeDownError`), the CPU or memory *requests* of the node's
  starting/running instances plus the new one exceed the node's capacity (`InsufficientCapacityError`),
  or an active instance with the same id has a different spec (`DuplicateInstanceError`). Deploying an
  active id with the same spec is a no-op that returns the existing instance (retries are safe);
  deploying the id of a failed/stopped instance starts it afresh.
* `remove()` stops an instance (state `stopped`, resources freed); it is idempotent and returns False
  for unknown or already terminal ids. Failed/stopped instances stay readable (bounded history).
* A crashed node fails all its instances (reason "node crashed"); `node_metrics()` of a down node is
  just `{"sim.node.up": 0.0}`; `recover_node()` brings it back empty.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from .clock import SimClock
from .config import SimConfig
from .errors import (
    DuplicateInstanceError,
    InstanceNotActiveError,
    InsufficientCapacityError,
    NodeDownError,
    UnknownInstanceError,
    UnknownNodeError,
)
from .faults import FaultBook
from .model import LAYERS, EventKind, FaultRecord, InstanceState, SimEvent, SimInstance, SimNodeSpec
from .network import NetworkModel
from .noise import smooth_noise
from .power import EnergyMeter
from .qos import response_time_ms
from .qos_profile import QosProfile
from .records import InstanceRecord, NodeRecord
from .resources import NodeLoad, instance_cpu_cores, instance_memory_bytes, node_load

log = logging.getLogger(__name__)

EventCallback = Callable[[SimEvent], object]

_RESPONSE_SALT = 0x27D4EB2F165667C5
_EPS = 1e-9

NODE_METRICS: dict[str, str] = {
    "sim.node.up": "1 when the node is up, 0 when crashed (the only key of a down node)",
    "system.cpu.logical.count": "CPU cores of the node",
    "system.cpu.utilization": "CPU busy fraction 0..1 (background + instances + spikes, capped)",
    "sim.cpu.used_cores": "busy cores (capped at capacity)",
    "sim.cpu.demand_cores": "cores wanted (may exceed capacity when overloaded)",
    "system.cpu.frequency": "current CPU frequency in Hz (only for nodes with a frequency table)",
    "system.memory.usage": "used memory, bytes",
    "system.memory.limit": "total memory, bytes",
    "system.memory.utilization": "used / total memory, 0..1",
    "system.network.io.receive": "received bytes per second (a rate, not OTel's cumulative counter)",
    "system.network.io.transmit": "transmitted bytes per second (a rate)",
    "sim.node.slowdown": "product of active slowdown factors (1 = none)",
    "sim.node.power": "estimated power draw, watts (same as hw.power; kept for older readers)",
    "hw.power": "power draw, watts (mlsysops.sim.power: idle + dynamic ~ utilisation x f^3)",
    "hw.energy": "energy used since the node was first read, joules (a monotonic counter)",
    "sim.instances.running": "running instances on the node",
    "sim.instances.starting": "starting instances on the node",
}
"""Names (and meaning) of the keys of `node_metrics()`; OTel semantic-convention names where they exist."""

COMPONENT_METRICS: dict[str, str] = {
    "running": "1 when running; when 0 only cpu/memory usage are present",
    "response_time_ms": "modelled response time (see mlsysops.sim.qos)",
    "network_latency_ms": "network part of response_time_ms",
    "missing_peers": "callee components with no running instance (each adds a penalty)",
    "cpu_usage_cores": "CPU used by the instance, cores",
    "memory_usage_bytes": "memory used by the instance, bytes",
    "node_cpu_utilization": "CPU utilisation of the hosting node",
}


class SimContinuum:
    """The embedded simulated continuum. Single event loop, no thread-safety."""

    def __init__(
        self,
        specs: Iterable[SimNodeSpec] = (),
        *,
        seed: int = 0,
        clock: SimClock | None = None,
        config: SimConfig | None = None,
        qos: QosProfile | None = None,
    ) -> None:
        self.seed = seed
        self.qos = qos if qos is not None else QosProfile()
        self.clock = clock if clock is not None else SimClock.realtime()
        self.config = config if config is not None else SimConfig()
        self._rng = random.Random(seed)
        self._nodes: dict[str, NodeRecord] = {}
        self._specs: dict[str, SimNodeSpec] = {}
        self._net = NetworkModel(self.config, self._specs)
        self._faults = FaultBook()
        self._instances: dict[str, InstanceRecord] = {}
        self._terminal: OrderedDict[str, None] = OrderedDict()
        # app -> component -> {instance_id: record} of active instances
        self._by_app: dict[str, dict[str, dict[str, InstanceRecord]]] = {}
        self._edges: dict[str, dict[str, set[str]]] = {}  # app -> caller component -> callees
        self._routes: dict[str, dict[str, dict[str, str]]] = {}  # app -> caller cluster -> callee -> serving cluster
        self._pending: list[tuple[float, int, str, int]] = []  # (due, seq, instance_id, generation)
        self._seq = 0
        self._version = 0
        self._load_cache: dict[str, tuple[float, int, NodeLoad]] = {}
        self._subscribers: list[EventCallback] = []
        self._energy = EnergyMeter(start=self.clock.now())
        self._outbox: deque[SimEvent] = deque()
        self._dispatching = False
        for spec in specs:
            self.add_node(spec)

    @classmethod
    def from_specs(
        cls,
        specs: Iterable[SimNodeSpec],
        *,
        seed: int = 0,
        clock: SimClock | None = None,
        config: SimConfig | None = None,
        qos: QosProfile | None = None,
    ) -> SimContinuum:
        return cls(specs, seed=seed, clock=clock, config=config, qos=qos)

    # ------------------------------------------------------------------ nodes

    def add_node(self, spec: SimNodeSpec) -> None:
        if spec.name in self._nodes:
            raise ValueError(f"node {spec.name!r} already exists")
        lo, hi = self.config.background_load_range
        self._nodes[spec.name] = NodeRecord(
            spec=spec,
            noise_key=self._rng.getrandbits(64),
            background_fraction=self._rng.uniform(lo, hi),
            freq_hz=spec.cpu_freqs_hz[-1] if spec.cpu_freqs_hz else None,
        )
        self._specs[spec.name] = spec
        self._version += 1

    def nodes(self) -> list[SimNodeSpec]:
        return list(self._specs.values())

    def node(self, name: str) -> SimNodeSpec:
        return self._node(name).spec

    def is_up(self, name: str) -> bool:
        return self._node(name).up

    def set_cpu_frequency(self, name: str, hz: float) -> None:
        """Set the node's CPU frequency to one of its `cpu_freqs_hz` (the cpufreq mechanism's knob)."""
        node = self._node(name)
        freqs = node.spec.cpu_freqs_hz
        match = next((f for f in freqs if abs(f - hz) <= 1.0), None)
        if match is None:
            raise ValueError(f"node {name}: frequency {hz} Hz not in {freqs}")
        self._now()
        node.freq_hz = match
        self._version += 1

    def cpu_frequency(self, name: str) -> float | None:
        return self._node(name).freq_hz

    def energy_joules(self, name: str) -> float:
        """Joules the node used so far (sampled now: see `mlsysops.sim.power`)."""
        self._node(name)
        return self._energy.joules(name, self._now())

    def _node(self, name: str) -> NodeRecord:
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNodeError(f"unknown node {name!r}") from None

    # -------------------------------------------------------------- instances

    def deploy(
        self,
        instance_id: str,
        app: str,
        component: str,
        node: str,
        cpu_request_cores: float,
        memory_request_bytes: int,
        *,
        base_response_ms: float = 20.0,
        interactions: Iterable[str] = (),
        activity: float | None = None,
    ) -> SimInstance:
        """Start an instance on `node`; it is `starting` and becomes `running` after the node's startup_s.

        `interactions` names the components of `app` this component calls (added to the app's call
        graph). `activity` overrides the drawn mean CPU use (fraction of the request).
        """
        if cpu_request_cores < 0 or memory_request_bytes < 0:
            raise ValueError("resource requests must be >= 0")
        if base_response_ms <= 0:
            raise ValueError("base_response_ms must be > 0")
        now = self._now()
        callees = tuple(sorted(set(interactions)))
        existing = self._instances.get(instance_id)
        if existing is not None and not existing.state.terminal:
            wanted = (app, component, node, float(cpu_request_cores), int(memory_request_bytes),
                      float(base_response_ms), callees)
            if existing.spec_key() == wanted:
                return existing.view()
            raise DuplicateInstanceError(
                f"instance {instance_id!r} already exists ({existing.state}) on {existing.node} "
                "with a different spec"
            )
        target = self._node(node)
        self._check_placeable(target, instance_id, float(cpu_request_cores), int(memory_request_bytes))
        lo, hi = self.config.activity_range
        mlo, mhi = self.config.memory_use_range
        rec = InstanceRecord(
            instance_id=instance_id,
            app=app,
            component=component,
            node=node,
            state=InstanceState.STARTING,
            reason=None,
            cpu_request=float(cpu_request_cores),
            memory_request=int(memory_request_bytes),
            base_response_ms=float(base_response_ms),
            interactions=callees,
            created_at=now,
            state_since=now,
            running_at=None,
            noise_key=self._rng.getrandbits(64),
            activity=self._rng.uniform(lo, hi) if activity is None else float(activity),
            memory_fraction=self._rng.uniform(mlo, mhi),
        )
        if existing is not None:
            self._terminal.pop(instance_id, None)
        self._instances[instance_id] = rec
        if callees:
            self._edges.setdefault(app, {}).setdefault(component, set()).update(callees)
        self._start(rec, target, now, detail={})
        log.debug("deployed %s (%s/%s) on %s", instance_id, app, component, node)
        self._flush()
        return rec.view()

    def move(self, instance_id: str, node: str) -> SimInstance:
        """Relocate an active instance: it restarts (`starting`) on `node`, keeping its id.

        Same checks as `deploy()` on the target; moving to its current node is a no-op.
        """
        now = self._now()
        rec = self._record(instance_id)
        if rec.state.terminal:
            raise InstanceNotActiveError(
                f"instance {instance_id!r} is {rec.state}; deploy it instead of moving"
            )
        if rec.node == node:
            return rec.view()
        target = self._node(node)
        self._check_placeable(target, instance_id, rec.cpu_request, rec.memory_request)
        source = rec.node
        self._nodes[source].detach(rec)
        self._app_index_remove(rec)
        rec.node = node
        self._start(rec, target, now, detail={"from": source})
        self._flush()
        return rec.view()

    def remove(self, instance_id: str) -> bool:
        """Stop an instance. Returns False (and does nothing) for unknown or already terminal ids."""
        now = self._now()
        rec = self._instances.get(instance_id)
        if rec is None or rec.state.terminal:
            return False
        self._terminate(rec, InstanceState.STOPPED, None, now)
        self._flush()
        return True

    def instance(self, instance_id: str) -> SimInstance:
        self._now()
        return self._record(instance_id).view()

    def instances(
        self, node: str | None = None, app: str | None = None, state: InstanceState | str | None = None
    ) -> list[SimInstance]:
        """Instances matching all given filters; failed/stopped ones are included unless `state` filters."""
        self._now()
        wanted = InstanceState(state) if state is not None else None
        out = []
        for rec in self._instances.values():
            if node is not None and rec.node != node:
                continue
            if app is not None and rec.app != app:
                continue
            if wanted is not None and rec.state is not wanted:
                continue
            out.append(rec.view())
        return out

    def set_interactions(self, app: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Replace the call graph of `app`: (caller, callee) component pairs (directed)."""
        graph: dict[str, set[str]] = {}
        for caller, callee in pairs:
            graph.setdefault(caller, set()).add(callee)
        self._edges[app] = graph
        self._version += 1

    def interactions(self, app: str) -> list[tuple[str, str]]:
        graph = self._edges.get(app, {})
        return sorted((a, b) for a, callees in graph.items() for b in callees)

    def set_routes(self, app: str, cluster: str, routes: dict[str, str]) -> None:
        """Calls from `cluster` to each component of `routes` that has no running instance in `cluster` go
        to the instances in the named serving cluster (the traffic mechanism's EndpointSlice, simulated).
        An empty `routes` removes the cluster's routes for `app`."""
        table = self._routes.setdefault(app, {})
        if routes:
            table[cluster] = dict(routes)
        else:
            table.pop(cluster, None)
        if not table:
            self._routes.pop(app, None)
        self._version += 1

    def routes(self, app: str) -> dict[str, dict[str, str]]:
        return {c: dict(r) for c, r in self._routes.get(app, {}).items()}

    def set_activity(self, instance_id: str, activity: float) -> None:
        """Change the mean CPU use of an instance (fraction of its request) — a workload change."""
        if activity < 0:
            raise ValueError("activity must be >= 0")
        self._now()
        self._record(instance_id).activity = float(activity)
        self._version += 1

    def _record(self, instance_id: str) -> InstanceRecord:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise UnknownInstanceError(f"unknown instance {instance_id!r}") from None

    def _check_placeable(self, target: NodeRecord, instance_id: str, cpu: float, memory: int) -> None:
        spec = target.spec
        if not target.up:
            raise NodeDownError(f"cannot place {instance_id!r}: node {spec.name} is down")
        cpu_after = target.requested_cpu + cpu
        mem_after = target.requested_memory + memory
        if cpu_after > spec.cpu_cores + _EPS:
            raise InsufficientCapacityError(
                f"cannot place {instance_id!r} on {spec.name}: "
                f"cpu requests {cpu_after:g} > {spec.cpu_cores:g} cores"
            )
        if mem_after > spec.memory_bytes:
            raise InsufficientCapacityError(
                f"cannot place {instance_id!r} on {spec.name}: "
                f"memory requests {mem_after} > {spec.memory_bytes} bytes"
            )

    def _start(self, rec: InstanceRecord, target: NodeRecord, now: float, detail: dict[str, Any]) -> None:
        startup = float(target.spec.startup_s or 0.0)
        rec.state = InstanceState.STARTING
        rec.reason = None
        rec.state_since = now
        rec.running_at = now + startup
        rec.generation += 1
        target.attach(rec)
        self._by_app.setdefault(rec.app, {}).setdefault(rec.component, {})[rec.instance_id] = rec
        self._seq += 1
        heapq.heappush(self._pending, (rec.running_at, self._seq, rec.instance_id, rec.generation))
        self._version += 1
        self._emit(SimEvent(now, EventKind.INSTANCE_STARTING, rec.node, rec.instance_id,
                            {"app": rec.app, "component": rec.component, **detail}))
        if startup == 0.0:
            self._advance()

    def _terminate(self, rec: InstanceRecord, state: InstanceState, reason: str | None, now: float) -> None:
        self._nodes[rec.node].detach(rec)
        self._app_index_remove(rec)
        rec.state = state
        rec.reason = reason
        rec.state_since = now
        rec.generation += 1
        self._terminal[rec.instance_id] = None
        while len(self._terminal) > self.config.max_terminal_instances:
            old, _ = self._terminal.popitem(last=False)
            self._instances.pop(old, None)
        self._version += 1
        kind = EventKind.INSTANCE_FAILED if state is InstanceState.FAILED else EventKind.INSTANCE_STOPPED
        detail: dict[str, Any] = {"app": rec.app, "component": rec.component}
        if reason is not None:
            detail["reason"] = reason
        self._emit(SimEvent(now, kind, rec.node, rec.instance_id, detail))

    def _app_index_remove(self, rec: InstanceRecord) -> None:
        comps = self._by_app.get(rec.app)
        if comps is None:
            return
        members = comps.get(rec.component)
        if members is not None:
            members.pop(rec.instance_id, None)
            if not members:
                del comps[rec.component]
        if not comps:
            del self._by_app[rec.app]

    # ---------------------------------------------------------------- network

    def latency_ms(self, a: str, b: str) -> float:
        """Round-trip time between two nodes in ms, including active link degradations."""
        na, nb = self._node(a), self._node(b)
        return self._latency(na, nb, self.clock.now())

    def _latency(self, a: NodeRecord, b: NodeRecord, now: float) -> float:
        base = self._net.base_latency_ms(a.spec.name, b.spec.name)
        return base + self._faults.link_extra_ms(a.spec, b.spec, now)

    def latency_matrix(self, names: list[str] | None = None) -> list[list[float]]:
        names = list(self._nodes) if names is None else names
        return [[self.latency_ms(a, b) for b in names] for a in names]

    # ---------------------------------------------------------------- metrics

    def node_metrics(self, name: str) -> dict[str, float]:
        """Current metrics of a node; keys are documented in `NODE_METRICS`."""
        node = self._node(name)
        now = self._now()
        return self._node_metrics(node, now)

    def all_node_metrics(self) -> dict[str, dict[str, float]]:
        now = self._now()
        return {name: self._node_metrics(node, now) for name, node in self._nodes.items()}

    def _node_metrics(self, node: NodeRecord, now: float) -> dict[str, float]:
        if not node.up:
            return {"sim.node.up": 0.0}
        load = self._load(node, now)
        spec = node.spec
        m = {
            "sim.node.up": 1.0,
            "system.cpu.logical.count": float(spec.cpu_cores),
            "system.cpu.utilization": load.utilization,
            "sim.cpu.used_cores": load.used_cores,
            "sim.cpu.demand_cores": load.demand_cores,
            "system.memory.usage": load.memory_used_bytes,
            "system.memory.limit": float(spec.memory_bytes),
            "system.memory.utilization": load.memory_used_bytes / spec.memory_bytes,
            "system.network.io.receive": load.rx_bytes_s,
            "system.network.io.transmit": load.tx_bytes_s,
            "sim.node.slowdown": load.slowdown,
            "sim.node.power": load.power_watts,
            "hw.power": load.power_watts,
            "hw.energy": self._energy.joules(spec.name, now),
            "sim.instances.running": float(load.running),
            "sim.instances.starting": float(load.starting),
        }
        if node.freq_hz is not None:
            m["system.cpu.frequency"] = node.freq_hz
        return m

    def _load(self, node: NodeRecord, now: float) -> NodeLoad:
        name = node.spec.name
        cached = self._load_cache.get(name)
        if cached is not None and cached[0] == now and cached[1] == self._version:
            return cached[2]
        load = node_load(
            node,
            now,
            self.config,
            spike_cores=self._faults.spike_cores(name, now) + self.qos.diurnal_cores(node.spec, now),
            slowdown=self._faults.slowdown(name, now),
        )
        self._load_cache[name] = (now, self._version, load)
        return load

    def component_metrics(self, instance_id: str) -> dict[str, float]:
        """QoS and resource use of one instance; keys are documented in `COMPONENT_METRICS`."""
        now = self._now()
        rec = self._record(instance_id)
        cfg = self.config
        if rec.state is not InstanceState.RUNNING:
            return {
                "running": 0.0,
                "cpu_usage_cores": instance_cpu_cores(rec, now, cfg),
                "memory_usage_bytes": instance_memory_bytes(rec, now, cfg),
            }
        node = self._nodes[rec.node]
        load = self._load(node, now)
        network_ms, missing = self._peer_latency(rec, now)
        colocated = [r.component for r in node.active.values()
                     if r is not rec and r.state is InstanceState.RUNNING]
        rt = response_time_ms(
            base_ms=rec.base_response_ms * self.qos.interference_factor(rec.component, colocated),
            speed=load.speed * self.qos.hidden_speed(node.spec, now),
            utilization=load.utilization,
            demand_ratio=load.demand_cores / node.spec.cpu_cores,
            network_ms=network_ms,
            noise=smooth_noise(rec.noise_key ^ _RESPONSE_SALT, now, cfg.noise_period_s),
            cfg=cfg,
        )
        return {
            "running": 1.0,
            "response_time_ms": rt,
            "network_latency_ms": network_ms,
            "missing_peers": float(missing),
            "cpu_usage_cores": instance_cpu_cores(rec, now, cfg, node.freq_ratio),
            "memory_usage_bytes": instance_memory_bytes(rec, now, cfg),
            "node_cpu_utilization": load.utilization,
        }

    def _peer_latency(self, rec: InstanceRecord, now: float) -> tuple[float, int]:
        callees = self._edges.get(rec.app, {}).get(rec.component)
        if not callees:
            return 0.0, 0
        comps = self._by_app.get(rec.app, {})
        here = self._nodes[rec.node]
        routes = self._routes.get(rec.app, {}).get(here.spec.cluster, {})
        total, missing = 0.0, 0
        for callee in sorted(callees):
            peer_nodes = self._reachable(
                {p.node for p in comps.get(callee, {}).values() if p.state is InstanceState.RUNNING},
                here.spec.cluster, routes.get(callee))
            if not peer_nodes:
                missing += 1
                total += self.config.missing_peer_penalty_ms
                continue
            total += min(self._latency(here, self._nodes[n], now) for n in peer_nodes)
        return total, missing

    def _reachable(self, running: set[str], cluster: str, routed_to: str | None) -> set[str]:
        """Of the nodes running a callee, those a caller in `cluster` reaches: with a route or in routed
        mode, its own cluster's (their Service) else the routed cluster's; otherwise (direct mode, no
        route) any of them."""
        if routed_to is None and self.config.cross_cluster_calls == "direct":
            return running
        local = {n for n in running if self._specs[n].cluster == cluster}
        if local or routed_to is None:
            return local
        return {n for n in running if self._specs[n].cluster == routed_to}

    # ----------------------------------------------------------------- faults

    @property
    def fault_log(self) -> list[FaultRecord]:
        """Every fault injected, recovery and clear, oldest first (a copy)."""
        return list(self._faults.log)

    def active_faults(self) -> list[dict[str, Any]]:
        return self._faults.active(self._now())

    def crash_node(self, name: str) -> None:
        """Node goes down: its starting/running instances fail with reason "node crashed"."""
        node = self._node(name)
        now = self._now()
        self._faults.record(now, "crash_node", name, {})
        if not node.up:
            return
        log.info("sim: crashing node %s (%d instances)", name, len(node.active))
        for rec in list(node.active.values()):
            self._terminate(rec, InstanceState.FAILED, "node crashed", now)
        node.up = False
        self._version += 1
        self._emit(SimEvent(now, EventKind.NODE_DOWN, name, None, {"reason": "crashed"}))
        self._flush()

    def recover_node(self, name: str) -> None:
        """Bring a crashed node back up, empty."""
        node = self._node(name)
        now = self._now()
        self._faults.record(now, "recover_node", name, {})
        self._recover(node, now)
        self._flush()

    def _recover(self, node: NodeRecord, now: float) -> None:
        if node.up:
            return
        log.info("sim: recovering node %s", node.spec.name)
        node.up = True
        self._version += 1
        self._emit(SimEvent(now, EventKind.NODE_UP, node.spec.name, None, {}))

    def slow_node(self, name: str, factor: float, duration_s: float | None = None) -> None:
        """Divide the node's speed by `factor` (>1 slows down) for `duration_s` (None: until cleared)."""
        self._node(name)
        if factor <= 0:
            raise ValueError("slowdown factor must be > 0")
        _check_duration(duration_s)
        now = self._now()
        self._faults.add_node_fault("slow_node", name, float(factor), now, duration_s)
        self._faults.record(now, "slow_node", name, {"factor": factor, "duration_s": duration_s})
        self._version += 1

    def load_spike(self, name: str, cpu_cores: float, duration_s: float) -> None:
        """Add `cpu_cores` of foreign CPU demand to the node for `duration_s`."""
        self._node(name)
        if cpu_cores <= 0:
            raise ValueError("spike cpu_cores must be > 0")
        _check_duration(duration_s)
        now = self._now()
        self._faults.add_node_fault("load_spike", name, float(cpu_cores), now, duration_s)
        self._faults.record(now, "load_spike", name, {"cpu_cores": cpu_cores, "duration_s": duration_s})
        self._version += 1

    def degrade_link(self, a: str, b: str, extra_ms: float, duration_s: float | None = None) -> None:
        """Add `extra_ms` RTT between matching nodes; `a`/`b` are node names, layer names or "*"."""
        for sel in (a, b):
            if sel != "*" and sel not in LAYERS and sel not in self._nodes:
                raise UnknownNodeError(f"link endpoint {sel!r} is neither a node, a layer nor '*'")
        if extra_ms < 0:
            raise ValueError("extra_ms must be >= 0")
        _check_duration(duration_s)
        now = self._now()
        self._faults.add_link_fault(a, b, float(extra_ms), now, duration_s)
        params = {"extra_ms": extra_ms, "duration_s": duration_s}
        self._faults.record(now, "degrade_link", f"{a}<->{b}", params)
        self._version += 1

    def clear_faults(self) -> None:
        """End every slowdown, spike and link degradation, and bring crashed nodes back up (empty)."""
        now = self._now()
        self._faults.clear()
        self._faults.record(now, "clear_faults", "*", {})
        for node in self._nodes.values():
            self._recover(node, now)
        self._version += 1
        self._flush()

    # ----------------------------------------------------------------- events

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback(event)` for every event; returns an unsubscribe function.

        Callbacks run synchronously inside the sim call that caused the event; exceptions are logged.
        A callback may call back into the sim; its events are delivered after the current one.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def tick(self) -> list[SimEvent]:
        """Apply due transitions, deliver their events, and return them."""
        start = len(self._outbox)
        self._advance()
        new = list(self._outbox)[start:]
        self._flush()
        return new

    def advance(self, dt: float) -> list[SimEvent]:
        """Advance the clock by `dt` and tick (convenience for manual-clock tests)."""
        self.clock.advance(dt)
        return self.tick()

    async def run(self, interval: float = 0.05) -> None:
        """Tick every `interval` real seconds until cancelled (drives events in real-time mode)."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        while True:
            self.tick()
            await asyncio.sleep(interval)

    def _now(self) -> float:
        """Entry point of public calls: apply due transitions and deliver pending events first."""
        now = self._advance()
        self._flush()
        return now

    def _advance(self) -> float:
        now = self.clock.now()
        pending = self._pending
        while pending and pending[0][0] <= now:
            due, _, iid, gen = heapq.heappop(pending)
            if self._energy.next_point() < due:   # grid points before the transition see the state before it
                self._energy.advance(due, self._nodes, self._power_at, inclusive=False)
            rec = self._instances.get(iid)
            if rec is None or rec.generation != gen or rec.state is not InstanceState.STARTING:
                continue
            rec.state = InstanceState.RUNNING
            rec.state_since = due
            self._version += 1
            self._emit(SimEvent(due, EventKind.INSTANCE_RUNNING, rec.node, iid,
                                {"app": rec.app, "component": rec.component}))
        if self._energy.next_point() <= now:
            self._energy.advance(now, self._nodes, self._power_at)
        return now

    def _power_at(self, name: str, t: float) -> float:
        """The node's power at sim time `t` (its state now, the time-varying parts at `t`)."""
        node = self._nodes[name]
        if not node.up:
            return 0.0
        if t == self.clock.now():
            return self._load(node, t).power_watts
        return node_load(node, t, self.config, spike_cores=self._faults.spike_cores(name, t),
                         slowdown=self._faults.slowdown(name, t)).power_watts

    def _emit(self, event: SimEvent) -> None:
        self._outbox.append(event)

    def _flush(self) -> None:
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._outbox:
                event = self._outbox.popleft()
                for cb in list(self._subscribers):
                    try:
                        cb(event)
                    except Exception:
                        log.exception("sim event subscriber %r failed on %s", cb, event.kind)
        finally:
            self._dispatching = False

    # --------------------------------------------------------------- snapshot

    def snapshot(self) -> dict[str, Any]:
        """JSON-able view of the whole sim: nodes (spec, status, metrics), instances, call graphs, faults."""
        now = self._now()
        nodes = []
        for node in self._nodes.values():
            d = node.spec.as_dict()
            d["up"] = node.up
            d["cpu_frequency_hz"] = node.freq_hz
            d["metrics"] = self._node_metrics(node, now)
            nodes.append(d)
        return {
            "time": now,
            "seed": self.seed,
            "nodes": nodes,
            "instances": [rec.view().as_dict() for rec in self._instances.values()],
            "interactions": {app: [list(p) for p in self.interactions(app)] for app in sorted(self._edges)},
            "routes": {app: self.routes(app) for app in sorted(self._routes)},
            "faults": {
                "active": self._faults.active(now),
                "log": [f.as_dict() for f in self._faults.log],
            },
        }


def _check_duration(duration_s: float | None) -> None:
    if duration_s is not None and duration_s <= 0:
        raise ValueError("duration_s must be > 0 (or None for until cleared)")
