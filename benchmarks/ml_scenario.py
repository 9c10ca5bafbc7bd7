"""A drifting workload on the simulated continuum, driven in process with a simulated clock.

One cluster of six nodes whose descriptions hide how they really perform (`mlsysops.sim.QosProfile`):
two 8-core servers, two 4-core "jetson" boards that run at 0.45 x their described speed, two 4-core
"nuc" boxes at 1.4 x; memory-bound components (`db`) slow each other down when they share a node; a
diurnal load from other tenants; and from `drift_at` on, `nuc-1` runs at 0.3 x (no metric says so).
Three apps, each a `front` calling a `db`, with response-time targets.

`run(policy_mode, seed)` builds the same scenario for every contender: a warm-up in which instances
are spread round-robin and reshuffled (the telemetry the model is trained from, identical for all
contenders), then every instance is removed and the contender's policy places and relocates from
scratch. Decisions are made by the policy module the cluster agent runs (`ml_qos_placement`, or the
heuristic `relocation` + `filter_score_placement` through its heuristic mode), with the same inputs a
cluster agent builds (`system_description`, a `Telemetry` view); actions are applied to the sim the
way the sim placement mechanism does (a move starts the new instance and stops the old one once the new
one runs).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.descriptions.loader import load_text
from mlsysops.agents.mape.knowledge import Knowledge, Telemetry
from mlsysops.agents.ml.local_connector import LocalMLConnector
from mlsysops.agents.ml.trainers import QosTrainer
from mlsysops.policies import ml_qos_placement as policy
from mlsysops.sim import NodeDrift, QosProfile, SimClock, SimContinuum, SimNodeSpec

_LOOP = asyncio.new_event_loop()
CLUSTER = "edge-1"
NODES = [("srv-1", "server", 8, "edge_infrastructure"), ("srv-2", "server", 8, "edge_infrastructure"),
         ("jet-1", "jetson", 4, "edge"), ("jet-2", "jetson", 4, "edge"),
         ("nuc-1", "nuc", 4, "edge"), ("nuc-2", "nuc", 4, "edge")]
APPS = ("shop", "maps", "chat")
BASE_MS = {"front": 12.0, "db": 18.0}
TARGET_MS = {"front": 70.0, "db": 45.0}
CPU = {"front": 1.0, "db": 1.2}
DRIFT_NODE = "nuc-1"

NODE_YAML = """
MLSysOpsNode:
  name: {name}
  continuum_layer: {layer}
  cluster_id: edge-1
  labels: ["node-type:{kind}"]
  environment: {{node_type: native, os: ubuntu, container_runtime: [containerd]}}
  hardware:
    cpu: {{cores: {cores}, architecture: amd64}}
    memory: 16Gi
"""

APP_YAML = """
MLSysOpsApp:
  name: {app}
  cluster_placement: {{cluster_id: [edge-1]}}
  components:
    - metadata: {{name: front}}
      node_placement: {{continuum_layer: ["*"]}}
      qos_metrics:
        - {{application_metric_id: response_time_ms, target: {front}, relation: lower_or_equal}}
      containers:
        - image: registry.example.org/{app}/front:1
          platform_requirements:
            cpu: {{requests: "1"}}
            memory: {{requests: 256Mi}}
    - metadata: {{name: db}}
      node_placement: {{continuum_layer: ["*"]}}
      qos_metrics:
        - {{application_metric_id: response_time_ms, target: {db}, relation: lower_or_equal}}
      containers:
        - image: registry.example.org/{app}/db:1
          platform_requirements:
            cpu: {{requests: 1200m}}
            memory: {{requests: 512Mi}}
  component_interactions:
    - {{component_name1: front, type: egress, component_name2: db}}
"""


def profile(t0: float, drift_at: float | None) -> QosProfile:
    return QosProfile(kind_speed={"jetson": 0.45, "nuc": 1.4, "server": 1.0},
                      component_kinds={"front": "cpu", "db": "memory"},
                      interference={"memory/memory": 0.9, "cpu/memory": 0.15, "memory/cpu": 0.1},
                      diurnal_amplitude=0.5, diurnal_period_s=240.0,
                      drifts=(NodeDrift(DRIFT_NODE, t0 + drift_at, 0.3),) if drift_at is not None else ())


@dataclass
class Result:
    name: str
    seed: int
    violation_s: float = 0.0
    relocations: int = 0
    decisions: int = 0
    decide_s: float = 0.0
    inference_ms: list[float] = field(default_factory=list)
    inference_cpu_ms: list[float] = field(default_factory=list)
    false_alarms: int = 0               # fallbacks before the drift
    drift_visible: bool | None = None   # something ran on the drifted node when it drifted
    training_s: float = 0.0
    drift_t: float | None = None
    fallback_t: float | None = None
    restored_t: float | None = None
    interval: float = 1.0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    explanations: list[dict[str, Any]] = field(default_factory=list)
    actions: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    final_version: int | None = None
    violations: list[tuple[float, str, str, str]] = field(default_factory=list)   # (t, app, component, node)

    @property
    def fallback_intervals(self) -> float | None:
        if self.drift_t is None or self.fallback_t is None:
            return None
        return (self.fallback_t - self.drift_t) / self.interval


class Cluster:
    """The sim, the knowledge and the system description a cluster agent would build."""

    def __init__(self, seed: int, drift_at: float | None) -> None:
        self.clock = SimClock.manual(start=1_000_000.0)
        self.t0 = self.clock.now()
        specs = [SimNodeSpec(name, CLUSTER, layer, cpu_cores=cores, labels=[f"node-type:{kind}"])
                 for name, kind, cores, layer in NODES]
        self.sim = SimContinuum.from_specs(specs, seed=seed, clock=self.clock, qos=profile(self.t0, drift_at))
        self.models = {name: load_text(NODE_YAML.format(name=name, kind=kind, cores=cores, layer=layer))[0].spec
                       for name, kind, cores, layer in NODES}
        self.apps = {app: load_text(APP_YAML.format(app=app, **TARGET_MS))[0].spec for app in APPS}
        for app in APPS:
            self.sim.set_interactions(app, [("front", "db")])
        self.knowledge = Knowledge(max_age=None)
        self.telemetry = Telemetry(self.knowledge)
        self.moving: list[tuple[str, str]] = []   # (new instance, old instance) waiting for the new to run

    @property
    def now(self) -> float:
        return self.clock.now()

    def step(self, dt: float) -> dict[str, dict[str, float]]:
        self.clock.advance(dt)
        now = self.now
        for name, m in self.sim.all_node_metrics().items():
            if "system.cpu.utilization" in m:
                self.knowledge.record("system.cpu.utilization", m["system.cpu.utilization"], {"node": name}, ts=now)
        observed = {}
        for inst in self.sim.instances():
            if inst.state.value != "running":
                continue
            m = self.sim.component_metrics(inst.instance_id)
            self.knowledge.record("response_time_ms", m["response_time_ms"],
                                  {"node": inst.node, "app": inst.app, "component": inst.component,
                                   "instance": inst.instance_id}, ts=now)
            observed[inst.instance_id] = {"app": inst.app, "component": inst.component, "node": inst.node,
                                          "rt": m["response_time_ms"]}
        for new, old in list(self.moving):
            if self.sim.instance(new).state.value == "running":
                self.sim.remove(old)
                self.moving.remove((new, old))
        return observed

    def system_description(self) -> dict[str, Any]:
        util = {n: self.knowledge.latest("system.cpu.utilization", node=n) or 0.0 for n in self.models}
        instances = []
        for inst in self.sim.instances():
            if inst.state.terminal:
                continue
            instances.append({"instance_id": inst.instance_id, "app": inst.app, "component": inst.component,
                              "node": inst.node, "status": "running" if inst.state.value == "running" else "deploying",
                              "cpu_request_cores": inst.cpu_request_cores,
                              "memory_request_bytes": inst.memory_request_bytes, "since": inst.created_at,
                              "reason": None})
        names = list(self.models)
        latency = {a: {b: round(self.sim.latency_ms(a, b), 3) for b in names if b != a} for a in names}
        return {"cluster_id": CLUSTER, "now": self.now,
                "nodes": {n: {"model": m, "alive": self.sim.is_up(n), "cpu_utilization": util[n]}
                          for n, m in self.models.items()},
                "instances": instances, "latency_ms": latency, "app_models": dict(self.apps),
                "assigned": {a: ["front", "db"] for a in APPS}, "qos": self._qos(), "proposals": []}

    def _qos(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for inst in self.sim.instances():
            if inst.state.value != "running":
                continue
            labels = {"node": inst.node, "app": inst.app, "component": inst.component, "instance": inst.instance_id}
            values = [v for ts, v in self.knowledge.window("response_time_ms", labels) if ts >= (inst.running_at or 0)][-5:]
            key = f"{inst.app}/{inst.component}"
            if values and (key not in out or values[-1] > out[key][-1]):
                out[key] = values
        return out

    def deploy(self, app: str, component: str, node: str, iid: str) -> None:
        self.sim.deploy(iid, app, component, node, cpu_request_cores=CPU[component],
                        memory_request_bytes=512 << 20, base_response_ms=BASE_MS[component],
                        interactions=["db"] if component == "front" else [])

    def apply(self, actions: list[dict[str, Any]], app: str) -> int:
        moves = 0
        for a in actions:
            try:
                if a["action"] == "deploy":
                    self.deploy(app, a["component"], a["node"], a["instance_id"])
                elif a["action"] == "move":
                    new = a.get("new_instance_id") or f"{a['instance_id']}-moved"
                    self.deploy(app, a["component"], a["to"], new)
                    self.moving.append((new, a["instance_id"]))
                    moves += 1
                elif a["action"] == "remove":
                    self.sim.remove(a["instance_id"])
            except Exception:   # noqa: BLE001 - a refused action (capacity) is the substrate's answer
                continue
        return moves


def warm_up(cluster: Cluster, connector: LocalMLConnector, seconds: float, seed: int) -> None:
    """Round-robin spread, reshuffled every 15 s: outcomes on every node, kind and co-location."""
    import random

    rng = random.Random(seed)
    names = [n for n, *_ in NODES]
    pairs = [(app, comp) for app in APPS for comp in ("front", "db")]
    view_ctx: dict[str, Any] = {}
    t = 0.0
    epoch = 0
    while t < seconds:
        if t % 15.0 == 0.0:
            for inst in cluster.sim.instances():
                if not inst.state.terminal:
                    cluster.sim.remove(inst.instance_id)
            for k, (app, comp) in enumerate(pairs):
                node = names[(k + epoch + rng.randrange(len(names))) % len(names)]
                try:
                    cluster.deploy(app, comp, node, f"{app}.{comp}.w{epoch}@{node}")
                except Exception:   # noqa: BLE001 - node full: skip this one
                    pass
            epoch += 1
        cluster.step(1.0)
        t += 1.0
        system = cluster.system_description()
        for app in APPS:
            ctx = view_ctx.setdefault(app, policy.initialize())
            _LOOP.run_until_complete(policy._observe(ctx, policy._state(ctx), app, policy._View.of(system, app),
                                        cluster.telemetry, connector, None, cluster.now))
    for inst in cluster.sim.instances():
        if not inst.state.terminal:
            cluster.sim.remove(inst.instance_id)


class OracleModel:
    """The sim's own response-time formula on the policy's features (hidden speeds, interference and the
    drift included, noise left out): what a perfect model of this scenario would predict. It satisfies the
    Model protocol, so the same policy code decides with it."""

    name, version, output_name, format = "qos-response-time", 1, "response_time_ms", "oracle"

    def __init__(self, qos: QosProfile, clock: Any) -> None:
        self.qos, self.clock = qos, clock
        nodes = [n for n, *_ in NODES]
        comps = [f"{a}/{c}" for a in APPS for c in BASE_MS]
        self.feature_names = ([f"comp={c}" for c in comps] + [f"kind={k}" for k in {k for _, k, *_ in NODES}]
                              + [f"node={n}" for n in nodes] + [f"coloc={c}" for c in BASE_MS] + ["queue", "net_ms"])
        self._idx = {n: i for i, n in enumerate(self.feature_names)}
        self._specs = {n: SimNodeSpec(n, CLUSTER, layer, cpu_cores=cores, labels=[f"node-type:{kind}"])
                       for n, kind, cores, layer in NODES}

    def predict(self, X: Any) -> Any:
        import numpy as np

        X = np.atleast_2d(np.asarray(X, dtype=float))
        out = np.zeros(X.shape[0])
        now = self.clock()
        for r, row in enumerate(X):
            comp = next((n.split("/", 1)[1] for n, i in self._idx.items() if n.startswith("comp=") and row[i]), None)
            node = next((n[5:] for n, i in self._idx.items() if n.startswith("node=") and row[i]), None)
            if comp is None or node is None:
                continue
            coloc = [c for c in BASE_MS for _ in range(int(round(row[self._idx[f"coloc={c}"]])))]
            work = BASE_MS[comp] * self.qos.interference_factor(comp, coloc)
            out[r] = work / self.qos.hidden_speed(self._specs[node], now) * row[self._idx["queue"]] \
                + row[self._idx["net_ms"]]
        return out

    def predict_with_uncertainty(self, X: Any) -> Any:
        import numpy as np

        mean = self.predict(X)
        return mean, np.full(mean.shape, 1.0)

    def attributions(self, x: Any, baseline: Any) -> Any:
        from mlsysops.agents.ml.model import sampling_shapley

        return sampling_shapley(self.predict, x, baseline, permutations=16)

    def to_bytes(self) -> bytes:
        raise NotImplementedError("the oracle reads the simulator; it is not a servable model")


class _OracleConnector:
    training_s = 0.0

    def __init__(self, model: OracleModel) -> None:
        self.model = model

    def cached(self, name: str) -> Any:
        return self.model

    async def get_model(self, name: str, version: int | None = None) -> Any:
        return self.model

    async def report(self, *args: Any, **kw: Any) -> None:
        return None

    async def submit_training(self, name: str, *, seed: int = 0) -> None:
        return None


class _TimedModel:
    """Wraps a model to time every inference call (the policy code is unchanged)."""

    def __init__(self, model: Any, sink: list[float], cpu_sink: list[float]) -> None:
        self._m, self._sink, self._cpu = model, sink, cpu_sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    def predict_with_uncertainty(self, X: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        out = self._m.predict_with_uncertainty(X)
        self._sink.append((time.perf_counter() - t) * 1000.0)
        self._cpu.append((time.thread_time() - c) * 1000.0)
        return out


class _TimedConnector:
    def __init__(self, inner: LocalMLConnector, sink: list[float], cpu_sink: list[float]) -> None:
        self.inner, self.sink, self.cpu_sink = inner, sink, cpu_sink
        self.training_s = 0.0

    def cached(self, name: str) -> Any:
        m = self.inner.cached(name)
        return _TimedModel(m, self.sink, self.cpu_sink) if m is not None else None

    async def get_model(self, name: str, version: int | None = None) -> Any:
        return self.cached(name)

    async def report(self, *args: Any, **kw: Any) -> None:
        t = time.perf_counter()
        runs = len(self.inner.runs)
        await self.inner.report(*args, t=kw.pop("t", None), **kw)
        if len(self.inner.runs) > runs:      # a scheduled retraining ran
            self.training_s += time.perf_counter() - t

    async def submit_training(self, name: str, *, seed: int = 0) -> Any:
        t = time.perf_counter()
        run = self.inner.train_now(name, seed)
        self.training_s += time.perf_counter() - t
        return run


def run(name: str, mode: str, seed: int, *, seconds: float = 300.0, drift_at: float | None = 150.0,
        warmup_s: float = 120.0, interval: float = 1.0, context_overrides: dict[str, Any] | None = None,
        keep_explanations: bool = False, retrain_every_s: float | None = 60.0,
        trainer: QosTrainer | None = None) -> Result:
    cluster = Cluster(seed, None if drift_at is None else warmup_s + drift_at)
    inner = LocalMLConnector(trainers={policy.MODEL: trainer or QosTrainer()}, clock=lambda: cluster.now,
                             retrain_every_s=retrain_every_s)
    result = Result(name, seed, interval=interval)
    warm_up(cluster, inner, warmup_s, seed)
    if mode != "heuristic" and name != "oracle":
        t = time.perf_counter()
        run0 = inner.train_now(policy.MODEL, seed)
        result.training_s = time.perf_counter() - t
        if not run0.promoted:
            raise RuntimeError(f"initial training failed: {run0.error}")
    connector: Any = _TimedConnector(inner, result.inference_ms, result.inference_cpu_ms)
    if name == "oracle":
        connector = _OracleConnector(OracleModel(cluster.sim.qos, lambda: cluster.now))
    contexts = {app: {**policy.initialize(), **(context_overrides or {})} for app in APPS}
    start = cluster.now
    if drift_at is not None:
        result.drift_t = drift_at
    steps = int(seconds / interval)
    seen_state: dict[str, str] = {}
    for _ in range(steps):
        observed = cluster.step(interval)
        if drift_at is not None and result.drift_visible is None and cluster.now - start >= drift_at:
            result.drift_visible = any(o["node"] == DRIFT_NODE for o in observed.values())
        worst: dict[tuple[str, str], tuple[float, str]] = {}
        for o in observed.values():
            key = (o["app"], o["component"])
            if o["rt"] > worst.get(key, (0.0, ""))[0]:
                worst[key] = (o["rt"], o["node"])
        for (app, comp), (rt, node) in worst.items():
            if rt > TARGET_MS[comp]:
                result.violation_s += interval
                result.violations.append((cluster.now - start, app, comp, node))
        for app in APPS:
            # what the cluster agent does: its instance table follows each executed plan, so the next
            # app's policy sees the instances the previous one just placed
            system = cluster.system_description()
            desc = {"name": app, "management_mode": mode}
            ctx = contexts[app]
            t = time.perf_counter()
            needed, ctx, expl = _LOOP.run_until_complete(policy.analyze(ctx, desc, system, {}, cluster.telemetry, connector))
            commands: dict[str, Any] = {}
            if needed:
                commands, ctx, expl = _LOOP.run_until_complete(policy.plan(ctx, desc, system, {}, cluster.telemetry, connector))
            result.decide_s += time.perf_counter() - t
            result.decisions += 1
            contexts[app] = ctx
            if keep_explanations and commands:
                result.explanations.append(expl)
            actions = commands.get(policy.MECHANISM, {}).get("actions", [])
            result.actions.extend((cluster.now - start, app, dict(a)) for a in actions)
            result.relocations += cluster.apply(actions, app)
            state = (expl.get("management", {}).get("auto") or {}).get("state")
            if state and state != seen_state.get(app):
                rel = cluster.now - start
                result.transitions.append({"t": rel, "app": app, "state": state,
                                           "reason": expl["management"]["auto"]["reason"]})
                if state == "fallback" and drift_at is not None and rel < drift_at:
                    result.false_alarms += 1
                elif state == "fallback" and result.fallback_t is None:
                    result.fallback_t = rel
                if state == "ml" and app in seen_state and result.fallback_t is not None and result.restored_t is None:
                    result.restored_t = rel
                seen_state[app] = state
    result.training_s += connector.training_s
    final = inner.cached(policy.MODEL)
    result.final_version = final.version if final is not None else None
    return result
