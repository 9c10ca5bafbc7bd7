"""An mlsysops agent with a MAPE-K engine: the part every layer shares.

`ManagedAgent` = `MLSysOpsAgent` (XMPP, protocol, reconnection) + Knowledge + DecisionLog + policy and
mechanism registries + MAPEEngine, plus the `decisions.query` and `telemetry.config.query` handlers that
export the decision log and the collection plan (`mlsysops.agents.tree_reads`).
Layers subclass it and provide `assets()`, `system_description()` and `monitor()`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlsysops.agents.agent_base import MLSysOpsAgent, RequestFailed
from mlsysops.agents.mape import (
    DecisionLog,
    Knowledge,
    MAPEEngine,
    MechanismRegistry,
    Plan,
    PlanResult,
    PlanScheduler,
    PolicyRegistry,
)
from mlsysops.agents.mape.sandbox import SandboxLimits
from mlsysops.agents.ml.client import MLConnectorClient
from mlsysops.agents.ml.modes import MODES, check_mode  # noqa: F401 - MODES: its old home was here
from mlsysops.agents.protocol import Envelope, Kind, Performative, register_payload
from mlsysops.agents.telemetry import AgentTelemetry, CollectionPlan, app_qos_metrics
from mlsysops.agents.telemetry.loop_lag import LoopLag
from mlsysops.agents.time_scale import scaled_seconds
from mlsysops.agents.tree_reads import (  # noqa: F401 - DecisionsQuery, MAX_EXPORT_BYTES: their old home
    MAX_EXPORT_BYTES,
    TELEMETRY_CONFIG_QUERY,
    DecisionsQuery,
    TelemetryConfigQuery,
    answer_decisions,
    answer_plans,
)


@dataclass(slots=True)
class AgentSettings:
    """Per-agent knobs, filled from the slice config (durations in seconds)."""

    heartbeat: float = 1.0
    liveness_misses: int = 3
    monitor: float = 1.0
    analyze: float = 2.0
    execute_timeout: float = 10.0
    plugin_timeout: float = 5.0
    policy_memory_mb: int = 1024        # address-space limit of each policy worker process
    builtin_policy_memory_mb: int | None = 512   # agent-RSS growth a built-in policy's calls may keep
    policy_disable_after: int = 5       # consecutive overruns (timeout/memory) before a policy is disabled
    status_report: float = 1.0
    eviction_timeout: float = 30.0      # continuum: how long a lost cluster keeps its components
    node_grace: float = 10.0            # cluster: how long a lost node agent's running instances are kept
    disruption_fraction: float = 0.6    # parents: losing this share of the children at once is a full disruption
    max_heartbeat_rate: float = 200.0   # parents: heartbeats/s of all children together (sparse past that)
    disruption_limit: float | None = None   # parents: how long a full disruption holds losses back (None: auto)
    policies: list[str] = field(default_factory=list)          # module names of built-in policies
    policy_dirs: list[Path] = field(default_factory=list)
    policy_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    disabled_policies: list[str] = field(default_factory=list)
    # plugin mechanisms beyond the layer's built-ins (slice config `mechanisms.<layer>`)
    mechanism_dirs: list[Path] = field(default_factory=list)
    mechanism_names: list[str] | None = None      # `enabled`: load only these plugin mechanisms
    mechanism_entry_points: bool = True
    state_dir: Path | None = None
    # telemetry (slice config `telemetry:`)
    slice_name: str | None = None
    digest_interval: float = 5.0
    telemetry_history: float = 900.0    # continuum: seconds of slice-wide history kept
    prometheus: bool = False
    otlp_endpoint: str | None = None
    otlp_interval: float = 10.0
    time_scale: float = 1.0             # simulated seconds per real second (`scaled`): policy intervals too


SCALED_DURATIONS = ("heartbeat", "monitor", "analyze", "status_report", "eviction_timeout", "digest_interval",
                    "telemetry_history", "node_grace")
"""The settings that are simulated time. Not the execute/plugin timeouts (real work needs real time) nor the
OTLP export interval (a collector's cadence)."""


# Real-time floors: below them an agent's loop (XMPP round trips, a loaded machine) cannot keep the cadence,
# and liveness would misjudge its children. Crashes are still seen at once (presence); only a hung child
# takes more simulated time to be declared lost.
# A lost node's grace stays long enough for a restarted node agent to register again (~0.2 s over prosody).
REAL_FLOORS = {"heartbeat": 0.25, "monitor": 0.1, "analyze": 0.1, "status_report": 0.1, "digest_interval": 0.25,
               "node_grace": 1.0}


def scaled(settings: AgentSettings, time_scale: float) -> AgentSettings:
    """`settings` for a slice whose time runs `time_scale` times faster than real time (each duration
    divided by it, down to its real-time floor)."""
    if time_scale <= 0:
        raise ValueError(f"time_scale: must be > 0, got {time_scale}")
    if time_scale == 1.0:
        return settings
    out: dict[str, float] = {f: scaled_seconds(getattr(settings, f), time_scale, REAL_FLOORS.get(f, 0.0))
                             for f in SCALED_DURATIONS}
    return replace(settings, **out, time_scale=settings.time_scale * time_scale)


class TelemetryRequest(BaseModel):
    """What a parent wants its children to collect beyond their defaults, and how often."""

    model_config = ConfigDict(extra="forbid")
    metrics: list[str] = Field(default_factory=list, max_length=500)
    interval: float | None = Field(None, gt=0)


class ConfigUpdate(BaseModel):
    """Parent -> child: change the management mode (forwarded down the tree when `propagate`) and/or
    the telemetry the parent asks for."""

    mode: Literal["heuristic", "ml", "auto", "shadow"] | None = None
    app: str | None = Field(None, max_length=253)   # the mode of this app only (None: the slice's)
    propagate: bool = True
    telemetry: TelemetryRequest | None = None


register_payload(Kind.CONFIG_UPDATE, Performative.REQUEST, ConfigUpdate)

AGENT_POLICY = "agent"           # the `policy` of the plans an agent makes itself (not a loaded policy's)
AGENT_PLAN_PRIORITY = 1_000_000  # they win a same-cycle conflict: e.g. a removal over a placement


class ManagedAgent(MLSysOpsAgent):
    role = "agent"
    collection_defaults: frozenset[str] = frozenset()

    def __init__(self, jid: str, password: str, *, settings: AgentSettings | None = None,
                 **kwargs: Any) -> None:
        super().__init__(jid, password, **kwargs)
        self.settings = settings or AgentSettings()
        self.knowledge = Knowledge()
        db = None
        if self.settings.state_dir is not None:
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
            db = str(self.settings.state_dir / f"decisions-{self.agent_id}.db")
        self.decision_log = DecisionLog(self.agent_id, sqlite_path=db)
        self.policies = PolicyRegistry([str(d) for d in self.settings.policy_dirs],
                                       modules=self.settings.policies, agent_id=self.agent_id,
                                       sandbox=SandboxLimits(memory_mb=self.settings.policy_memory_mb,
                                                             builtin_memory_mb=self.settings.builtin_policy_memory_mb))
        if self.settings.state_dir is not None:   # uploads persist here and come back after a restart
            self.policies.upload_directories.append(self.upload_dir)
        self.mechanisms = MechanismRegistry(agent_id=self.agent_id)
        # every policy's `ml_connector`; the continuum attaches the registry service to it
        self.ml_connector = MLConnectorClient(   # (agents of one layer may share a state directory)
            self, cache_dir=self.settings.state_dir / "model-cache" / self.agent_id if self.settings.state_dir else None)
        # one scheduler for the agent's lifetime: the engine's plans and the agent's own (execute()) share it,
        # so a mechanism runs one command at a time whoever asked, even before the engine starts
        self.scheduler = PlanScheduler(self.mechanisms, self.decision_log,
                                       execute_timeout=self.settings.execute_timeout, agent_id=self.agent_id)
        self.engine: MAPEEngine | None = None
        self.started_at = time.time()
        self.mode = "heuristic"
        self.app_modes: dict[str, str] = {}   # per-app overrides of the slice's mode
        self._mode_paused: set[str] = set()
        self.telemetry = AgentTelemetry(self.agent_id, self.role, slice_name=self.settings.slice_name,
                                        prometheus=self.settings.prometheus,
                                        otlp_endpoint=self.settings.otlp_endpoint,
                                        otlp_interval=self.settings.otlp_interval)
        self.collection = CollectionPlan(self.collection_defaults, self.settings.monitor)
        self.loop_lag = LoopLag(self.telemetry, self.agent_id)
        self._collection_pushed: dict[str, tuple[float, int]] = {}
        self.last_digest: dict[str, Any] = {}
        self.decision_log.add_listener(self._count_decision)
        self.on(Kind.DECISIONS_QUERY, self._handle_decisions_query)
        self.on(TELEMETRY_CONFIG_QUERY, self._handle_telemetry_config_query)
        self.on(Kind.CONFIG_UPDATE, self._handle_config_update)

    # -- authorization --------------------------------------------------------------------------------
    def slice_children(self) -> frozenset[str] | None:
        """A layer agent has no children unless its layer names them (cluster: nodes; continuum: clusters)."""
        return frozenset()

    def on_refused(self, sender: str, kind: str, reason: str) -> None:
        """Where an operator looks (`mlsysops get decisions`): once per (sender, kind)."""
        self.record_event(reason, outcome="error", inputs={"sender": sender, "kind": kind})

    # -- hooks for layers ---------------------------------------------------------------------------
    def assets(self) -> dict[str, dict[str, Any]]:
        return {}

    def system_description(self) -> dict[str, Any]:
        return {}

    async def monitor(self) -> None:
        """Refresh knowledge from the substrate / children (called every monitor interval)."""

    async def on_executed(self, plan: Any, mechanism: str, outcome: str, detail: Any) -> None:
        """Called after a mechanism executed a command (the layer updates its own tables)."""

    def app_asset(self, name: str, spec: dict[str, Any], policies: list[str] | None) -> dict[str, Any]:
        """The asset handed to the engine. An app's `policies` names policies of any layer; at this agent
        only the ones loaded here count, and when none is, the layer's defaults manage the app."""
        here = [p for p in (policies or []) if self.policies.get(p) is not None]
        return {"name": name, **spec, "policies": here or None}

    @property
    def upload_dir(self) -> Path:
        """Where uploaded policies are kept: the state directory when there is one (reloaded at start); one
        folder per agent, as agents of a layer may share the layer's state directory."""
        if self.settings.state_dir is not None:
            return self.settings.state_dir / "uploaded-policies" / self.agent_id
        # No state directory: a private folder of this agent object (0700, a fresh name), never a fixed
        # path in /tmp that another run (or another user) could have filled with its own files.
        if getattr(self, "_scratch_uploads", None) is None:
            self._scratch_uploads = Path(tempfile.mkdtemp(prefix=f"mlsysops-policies-{self.agent_id}-"))
        return self._scratch_uploads

    async def install_policy(self, name: str, source: str | bytes) -> dict[str, Any]:
        """Validate an uploaded policy file, then activate it (admin-only via the API).

        Nothing of the upload runs in this process: the source is checked statically
        (`mape.policy_source`: size, syntax with line numbers, the three functions and their arguments),
        then loaded in a sandboxed worker from a private staging folder (module body and initialize() run
        there, confined); only a policy that passes is moved into the upload folder (persisted, reloaded
        after a restart) and activated, keeping that worker. Raises ValueError (PolicySourceError) with
        the reason otherwise; the running policies are untouched.
        """
        from mlsysops.agents.mape.plugins import build_sandboxed_policy
        from mlsysops.agents.mape.policy_source import PolicySourceError, check_policy_source, policy_name

        # the file keeps the original framework's `policy-` prefix: it says which contract the code follows
        stem_prefix = "policy-" if name.removesuffix(".py").startswith("policy-") else ""
        try:
            name = policy_name(name)
            text = check_policy_source(name, source)
        except PolicySourceError as exc:
            raise PolicySourceError(f"policy {name} rejected: {exc}") from None
        target_dir = self.upload_dir
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target_dir))
        try:
            staged = staging / f"{stem_prefix}{name}.py"
            staged.write_text(text)
            try:
                # `policy-NAME.py` loads as NAME, in the original framework's contract (the worker adapts it)
                pol = await asyncio.to_thread(build_sandboxed_policy, PolicyRegistry.name_of(staged), staged,
                                              self.policies.sandbox, self.agent_id)
            except Exception as exc:   # noqa: BLE001 - whatever the upload raised is the verdict
                reason = getattr(exc, "summary", None) or f"{type(exc).__name__}: {exc}"
                raise ValueError(f"policy {name} rejected: {reason}") from None
            final = target_dir / f"{stem_prefix}{name}.py"
            assert pol.worker is not None
            async with self.policies.rescan_lock:   # a rescan in progress must not see the file half-installed
                os.replace(staged, final)
                pol.path = pol.worker.path = str(final)
                if target_dir not in self.policies.upload_directories:   # watched: hot reload keeps it
                    self.policies.upload_directories.append(target_dir)
                change = self.policies.install_loaded(pol)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        name = pol.name
        self.record_event(f"policy {name} uploaded and {change.kind}", inputs={"path": str(final)})
        self.trigger(reason=f"policy {name} uploaded")
        return {"agent": self.agent_id, "policy": name, "result": change.kind, "path": str(final)}

    # -- engine -------------------------------------------------------------------------------------
    def load_policies(self) -> None:
        for change in self.policies.load_all():
            if "wants packages" in change.detail:   # an original policy's `packages`: reported, never installed
                self.record_event(f"policy {change.name} {change.kind}: {change.detail}",
                                  inputs={"path": change.path})
        for name, overrides in self.settings.policy_settings.items():
            policy = self.policies.get(name)
            if policy is not None:
                policy.context.update(overrides)
        for name in self.settings.disabled_policies:
            if self.policies.get(name) is not None:
                self.policies.disable(name)
        for err in self.policies.errors:
            self.decision_log.record("event", "error", f"policy failed to load: {err}")
        self.apply_mode()
        self.policies.add_listener(lambda _change: self.apply_mode())

    # -- management mode ----------------------------------------------------------------------------
    def apply_mode(self) -> list[str]:
        """Pause the policies the mode excludes; returns their names.

        A policy says which family it is in its context (`mode: heuristic | ml`; heuristic when silent).
        ML policies are paused only when the slice and every app are in `heuristic` mode. Where an
        enabled ML policy plans for a heuristic policy's mechanisms, the heuristic one is paused - so the
        slice keeps being managed where no ML policy exists, and where one does it decides alone; it
        reads each app's mode (`management_mode` in its application description) and delegates to the
        heuristics' code in `heuristic`, `shadow` and an `auto` fallback (`mlsysops.agents.ml.modes`).
        Policies an operator disabled stay disabled.
        """
        for name in list(self._mode_paused):
            if self.policies.get(name) is not None:
                self.policies.enable(name)
        self._mode_paused.clear()
        pols = [p for p in (self.policies.get(d["name"]) for d in self.policies.list()) if p is not None]
        ml_mechanisms = {m for p in pols if p.enabled and p.context.get("mode") == "ml" for m in p.mechanisms}
        for pol in pols:
            family = pol.context.get("mode", "heuristic")
            pause = ((family == "ml" and not self._ml_wanted()) or
                     (family != "ml" and self._ml_wanted() and set(pol.mechanisms) & ml_mechanisms))
            if pol.enabled and pause:
                self.policies.disable(pol.name)
                self._mode_paused.add(pol.name)
        return sorted(self._mode_paused)

    def _ml_wanted(self) -> bool:
        return self.mode != "heuristic" or any(m != "heuristic" for m in self.app_modes.values())

    def effective_mode(self, app: str | None) -> str:
        return self.app_modes.get(app, self.mode) if app is not None else self.mode

    def set_mode(self, mode: str, app: str | None = None) -> dict[str, Any]:
        """The slice's mode here, or (with `app`) that app's; `app` with mode None-like "slice" is not a
        thing: set the app back to the slice's mode by giving the slice's mode."""
        check_mode(mode)
        if app is None:
            before, self.mode = self.mode, mode
        else:
            before = self.effective_mode(app)
            self.app_modes[app] = mode
        paused = self.apply_mode()
        where = f"app {app}" if app is not None else "slice"
        self.record_event(f"management mode of {where} {before} -> {mode}; paused policies: {paused or 'none'}",
                          app=app)
        self.trigger(app, reason=f"mode {mode}")
        out: dict[str, Any] = {"agent": self.agent_id, "mode": mode, "paused": paused}
        if app is not None:
            out["app"] = app
        return out

    def mode_status(self) -> dict[str, Any]:
        """The slice's mode, the per-app overrides and, per app, what its ML policy last said about who
        acts and why (the `management` part of its latest analyze record: auto state, alarm, detectors)."""
        ml = {p.name for p in (self.policies.get(d["name"]) for d in self.policies.list())
              if p is not None and p.context.get("mode") == "ml"}
        apps: dict[str, Any] = {}
        for rec in reversed(self.decision_log.query(stage="analyze", limit=500)):
            if rec.policy in ml and rec.app and rec.app not in apps and isinstance(rec.explanation, dict) \
                    and isinstance(rec.explanation.get("management"), dict):
                apps[rec.app] = {"policy": rec.policy, "ts": rec.ts, **rec.explanation["management"]}
        return {"agent": self.agent_id, "mode": self.mode, "app_modes": dict(self.app_modes), "apps": apps}

    async def set_mode_tree(self, mode: str, app: str | None = None) -> dict[str, Any]:
        """Set the mode here and on every live child (which forward it to theirs) over XMPP."""
        out = self.set_mode(mode, app)
        children = getattr(self, "children", None)
        if children is None:
            return out
        results: dict[str, Any] = {}
        for child in children.children(alive_only=True):
            try:
                reply = await self.request(child.jid, Kind.CONFIG_UPDATE, ConfigUpdate(mode=mode, app=app))
                results[child.agent_id] = reply.body
            except Exception as exc:   # noqa: BLE001 - report per child; one unreachable child is not fatal
                results[child.agent_id] = {"error": str(exc) or type(exc).__name__}
        out["children"] = results
        return out

    async def _handle_config_update(self, env: Envelope) -> dict[str, Any]:
        update = env.payload
        assert isinstance(update, ConfigUpdate)
        out: dict[str, Any] = {"agent": self.agent_id}
        if update.telemetry is not None:
            self.collection.set_parent(update.telemetry.metrics, update.telemetry.interval)
            self.refresh_collection()
            out["telemetry"] = self.collection.describe()
        if update.mode is not None:
            out.update(await self.set_mode_tree(update.mode, update.app) if update.propagate
                       else self.set_mode(update.mode, update.app))
        return out

    # -- telemetry collection -----------------------------------------------------------------------
    def refresh_collection(self) -> None:
        """Recompute what Monitor collects (policies, apps, parent); log and pass on any change."""
        added, removed = self.collection.update(self.policies.enabled(), app_qos_metrics(self.knowledge.apps))
        if added or removed:
            self.record_event(f"telemetry collection changed: +{sorted(added) or '[]'} -{sorted(removed) or '[]'}"
                              f", interval {self.collection.interval:g}s",
                              inputs=self.collection.describe())
        if self.engine is not None and self.engine.monitor_interval != self.collection.interval:
            self.engine.monitor_interval = self.collection.interval
        self._push_collection()

    def _push_collection(self) -> None:
        children = getattr(self, "children", None)
        if children is None:
            return
        want = self.collection.request_for_children()
        for child in children.children(alive_only=True):
            stamp = (child.joined_at, self.collection.version)
            if self._collection_pushed.get(child.agent_id) == stamp:
                continue
            self._collection_pushed[child.agent_id] = stamp
            self.spawn(self._send_collection(child.jid, child.agent_id, want), name="telemetry-config")

    async def _send_collection(self, jid: str, agent_id: str, want: dict[str, Any]) -> None:
        try:
            await self.request(jid, Kind.CONFIG_UPDATE,
                               ConfigUpdate(propagate=False, telemetry=TelemetryRequest(**want)))
        except RequestFailed as exc:
            # The child answered and refused (an agent without telemetry collection): asking again every
            # tick would only double its traffic; it is asked again when the plan changes or it re-joins.
            self.log.info("telemetry config refused by %s: %s", agent_id, exc.reason)
        except Exception as exc:   # noqa: BLE001 - no answer: retried on the next tick
            self._collection_pushed.pop(agent_id, None)
            self.log.debug("telemetry config to %s failed: %s", agent_id, exc)

    async def send_digest(self, rows: list[list[Any]], window: float, now: float, **ids: str) -> None:
        """A telemetry digest to the parent, split to stay under the message limit; its size is kept
        (`last_digest`) and recorded as `mlsysops.telemetry.digest.bytes`, which travels up with the next."""
        from mlsysops.agents.payloads import TelemetryReport
        from mlsysops.agents.telemetry import digest as digests

        parts = digests.split(rows)
        size = 0
        for i, part in enumerate(parts):
            body = TelemetryReport(source=self.agent_id, t=now, window=window, part=i, parts=len(parts),
                                   series=part, **ids)
            size += len(body.model_dump_json())
            await self.inform(self.parent, Kind.TELEMETRY_REPORT, body)
        self.last_digest = {"bytes": size, "series": len(rows), "parts": len(parts), "t": now}
        self.knowledge.record("mlsysops.telemetry.digest.bytes", float(size), {"agent": self.agent_id}, ts=now)

    def _count_decision(self, rec: Any) -> None:
        self.telemetry.count("mlsysops.agent.decisions", 1,
                             {"agent": self.agent_id, "stage": rec.stage, "outcome": rec.outcome,
                              "policy": rec.policy or ""}, unit="{decision}")

    async def _monitor_tick(self) -> None:
        self.refresh_collection()
        await self.monitor()

    def load_mechanisms(self) -> list[str]:
        """Plugin mechanisms from the configured directories and the `mlsysops.mechanisms` entry points,
        after the layer registered its built-ins (a plugin of the same name replaces one, with a warning).
        Original-contract modules get queues and an `OriginalAgentState` (`mlsysops.agents.compat`).
        Returns the names loaded; load failures are recorded as error events."""
        from mlsysops.agents.compat import OriginalAgentState
        from mlsysops.agents.descriptions import to_dict

        s = self.settings
        description = getattr(self, "description", None)
        own = {description.kind: to_dict(description)} if description is not None else {}
        state = OriginalAgentState(self.agent_id, hostname=getattr(self, "node", self.agent_id),
                                   substrate=getattr(self, "substrate", None),
                                   configuration={"mechanisms": s.mechanism_names, "system_description": own,
                                                  "node": getattr(self, "node", None),
                                                  "cluster": getattr(self, "cluster_id", None) or self.parent})

        def on_message(mechanism: str, msg: Any) -> None:
            self.record_event(f"mechanism {mechanism} sent {str(msg.get('event') if isinstance(msg, dict) else msg)!r}",
                              inputs={"mechanism": mechanism, "message": msg})

        before = len(self.mechanisms.errors)
        loaded = []
        for directory in s.mechanism_dirs:
            if not Path(directory).is_dir():
                self.record_event(f"mechanism directory {directory} does not exist", outcome="error")
                continue
            loaded += self.mechanisms.load_directory(directory, only=s.mechanism_names, agent_state=state,
                                                     on_message=on_message)
        if s.mechanism_entry_points:
            loaded += self.mechanisms.load_entry_points(only=s.mechanism_names, agent_state=state,
                                                        on_message=on_message)
        names = [m.name for m in loaded]
        for mech in loaded:
            self.record_event(f"mechanism {mech.name} loaded ({mech.source}: {mech.path})",
                              inputs={"contract": getattr(mech.target, "contract", "mlsysops")})
        for err in self.mechanisms.errors[before:]:
            self.record_event(f"mechanism failed to load: {err.name} ({err.path}): {err.error}", outcome="error")
        return names

    def start_engine(self) -> MAPEEngine:
        self.load_mechanisms()
        self.engine = MAPEEngine(
            self.agent_id, self.knowledge, self.policies, self.mechanisms, self.decision_log,
            assets=self._assets_with_mode, system_description=self.system_description,
            ml_connector=self.ml_connector,
            default_analyze_interval=self.settings.analyze, plugin_timeout=self.settings.plugin_timeout,
            time_scale=self.settings.time_scale, interval_floor=REAL_FLOORS["analyze"],
            execute_timeout=self.settings.execute_timeout, monitor=self._monitor_tick,
            monitor_interval=self.settings.monitor, on_executed=self.on_executed, scheduler=self.scheduler,
            disable_after=self.settings.policy_disable_after)
        self.engine.start()
        self.loop_lag.start(self.spawn)
        return self.engine

    def _assets_with_mode(self) -> dict[str, dict[str, Any]]:
        """The layer's assets, each app's carrying its effective management mode for the policies."""
        return {name: ({**asset, "management_mode": self.effective_mode(name)} if isinstance(asset, dict) else asset)
                for name, asset in self.assets().items()}

    async def execute(self, mechanism: str, command: dict[str, Any], *, reason: str, app: str | None = None,
                      operation: str = "apply", policy: str = AGENT_POLICY, priority: int = AGENT_PLAN_PRIORITY,
                      ) -> PlanResult:
        """Run a command the agent itself decided (not a policy) through the plan scheduler.

        Recorded like a policy's plan (a `plan` record, then `schedule` and `execute`), serialised with every
        other command of that mechanism; by default it wins a same-cycle conflict on `app`. `operation` is
        `apply` or an operation capability the mechanism declared (`remove_app`, `resync`).
        """
        plan = Plan(policy, app, {mechanism: command}, priority, explanation={"reason": reason},
                    operation=operation)
        self.decision_log.record("plan", "planned", reason, policy=policy, app=app, plan_id=plan.id,
                                 chosen=plan.commands, explanation=plan.explanation)
        return await self.scheduler.submit(plan)

    def trigger(self, asset: str | None = None, reason: str = "") -> None:
        if self.engine is not None:
            self.engine.trigger(asset, reason=reason)

    def record_event(self, reason: str, *, app: str | None = None, outcome: str = "info",
                     inputs: dict[str, Any] | None = None) -> None:
        self.decision_log.record("event", outcome, reason, app=app, inputs=inputs)

    async def stop(self) -> None:
        for name in self.mechanisms.names():
            mech = self.mechanisms.get(name)
            if mech is not None and getattr(mech.target, "contract", None) == "original":
                mech.target.close()   # its inbound queue reader
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        await asyncio.to_thread(self.policies.close)   # policy worker processes, when no engine ever ran
        await self.scheduler.stop()   # the agent's own plans, when no engine ever ran
        try:
            await self.decision_log.flush()
        finally:
            self.decision_log.close()
            self.telemetry.shutdown()
            if getattr(self, "_scratch_uploads", None) is not None:   # kept only for this agent's life
                shutil.rmtree(self._scratch_uploads, ignore_errors=True)
        await super().stop()

    # -- decision export ----------------------------------------------------------------------------
    def decisions(self, **filters: Any) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.decision_log.query(**filters)]

    async def _handle_decisions_query(self, env: Envelope) -> dict[str, Any]:
        """This agent's records (and with `subtree` its children's): `mlsysops.agents.tree_reads`."""
        q = env.payload if isinstance(env.payload, DecisionsQuery) else DecisionsQuery()
        return await answer_decisions(self, q)

    async def _handle_telemetry_config_query(self, env: Envelope) -> dict[str, Any]:
        q = env.payload if isinstance(env.payload, TelemetryConfigQuery) else TelemetryConfigQuery()
        return await answer_plans(self, q)
