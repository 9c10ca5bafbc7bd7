"""The MAPE-K engine of one agent; independent of SPADE and of any layer.

The hosting agent gives it knowledge, registries and callables (`assets()`, `system_description()`, a monitor
hook) and calls `start()`/`stop()`. The engine runs:

- Monitor, every `monitor_interval`: the agent's hook, a refresh of each mechanism's state/options into
  `knowledge.mechanisms`, a policy-directory rescan every `rescan_interval`, and a reconciliation of the
  (policy, asset) pairs with the current apps and enabled policies.
- One loop per (policy, asset) pair. Application-scope policies get one pair per app (an app whose description
  lists `policies: [names]` is managed only by those; otherwise by every enabled application-scope policy);
  global-scope policies get one pair with asset None. A pair runs a cycle when it is created, then every
  policy interval (`configuration.analyze_interval`, else `default_analyze_interval`), or at once on
  `trigger()`. Triggers arriving during a cycle are coalesced into one follow-up cycle. Cycles of one pair
  never overlap.
- A cycle: Analyze -> (if needed) Plan -> validate -> scheduler -> Execute; every step is a decision record.
  The cycle waits for its plan to be executed, so a policy never re-plans over its own plan in flight.

What policies receive: `application_description` is a deep copy of the app's description; for global
policies it is {app name: description} of all apps. `system_description` is the result of the callable,
`mechanisms` is {name: {"state": ..., "options": ...}} from the last refresh, `telemetry` a `Telemetry` view,
`ml_connector` whatever the agent passed. The policy's context is kept per pair and replaced by what analyze
and plan return; it restarts from initialize() when the policy file is reloaded.

Where policies run: see `Policy.call()`: file policies in a worker process each (`sandbox`), built-ins on a
loop thread of their own (`isolation.PolicyLoop`); never on the agent's loop, so a policy that blocks cannot
delay Monitor, the policy rescan, heartbeats or the API.

Failure handling: a policy that raises, times out (`plugin_timeout`), exceeds its memory limit or breaks the
return contract gets an `error`/`timeout`/`memory_exceeded` record (with the limit and the measured figure)
and counts a failure for its pair; after 3 consecutive failures the pair is backed off exponentially (1 s,
2 s, 4 s ... capped at 60 s; see `FailureBackoff`). After `disable_after` consecutive overruns (timeouts or
memory) of a policy, whichever pairs they came from, the policy is disabled with the reason (shown by the
policy list, the API and an `event` record); a new version of its file re-enables it. A built-in over its
memory budget is disabled at its first `memory_exceeded`: the memory stays in the agent's process. Mechanism failures
are execution outcomes, not policy failures.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.mape.decision_log import DecisionLog, fingerprint
from mlsysops.agents.mape.isolation import (
    CallResult,
    FailureBackoff,
    PluginContractError,
    call_plugin,
    validate_analyze_result,
    validate_plan_result,
)
from mlsysops.agents.mape.knowledge import Knowledge, Telemetry
from mlsysops.agents.mape.plugins import (
    MechanismRegistry,
    PluginChange,
    Policy,
    PolicyRegistry,
    parse_interval,
)
from mlsysops.agents.mape.scheduler import OnExecuted, Plan, PlanResult, PlanScheduler
from mlsysops.agents.time_scale import scaled_seconds

log = logging.getLogger(__name__)

PairKey = tuple[str, str | None]
HELD_REPEAT_S = 60.0   # an unchanged "held" situation is recorded again after this long


def held_reason(explanation: Any) -> str | None:
    """The problem a policy reports it cannot fix now: `explanation["held"]` (a string or list of them),
    or the `unplaceable` components of a placement policy (with its `summary`)."""
    if not isinstance(explanation, dict):
        return None
    held = explanation.get("held")
    if held:
        return "; ".join(map(str, held)) if isinstance(held, list | tuple) else str(held)
    unplaceable = explanation.get("unplaceable")
    if unplaceable:
        return str(explanation.get("summary") or "unplaceable: " + ", ".join(map(str, unplaceable)))
    return None


@dataclass(eq=False)
class _Pair:
    policy: str
    asset: str | None
    context: dict[str, Any]
    version: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reasons: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    runs: int = 0
    last_run: float | None = None
    last_outcome: str | None = None
    last_reason: str = ""
    last_plan_id: str | None = None
    next_run: float | None = None  # epoch seconds
    closed: bool = False

    def describe(self, backoff: FailureBackoff) -> dict[str, Any]:
        key = (self.policy, self.asset)
        return {
            "policy": self.policy,
            "asset": self.asset,
            "runs": self.runs,
            "last_run": self.last_run,
            "last_outcome": self.last_outcome,
            "last_reason": self.last_reason,
            "last_plan_id": self.last_plan_id,
            "next_run": self.next_run,
            "consecutive_failures": backoff.failures(key),
            "backoff_remaining": round(backoff.remaining(key), 3),
        }


def _app_policy_names(desc: dict[str, Any]) -> list[str] | None:
    """Names listed under the app's `policies` (strings or {name: ...} entries); None when not given."""
    raw = desc.get("policies")
    if raw is None:
        return None
    names = []
    for item in raw if isinstance(raw, list) else [raw]:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            names.append(item["name"])
    return names


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until the event is set or timeout passes.

    Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the event is set, and
    stop() would then wait for a whole interval.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


class MAPEEngine:
    """Runs Monitor/Analyze/Plan/Execute for one agent (see module docstring)."""

    def __init__(
        self,
        agent_id: str,
        knowledge: Knowledge,
        policies: PolicyRegistry,
        mechanisms: MechanismRegistry,
        decision_log: DecisionLog,
        *,
        assets: Callable[[], dict[str, dict[str, Any]]],
        system_description: Callable[[], dict[str, Any]],
        ml_connector: Any = None,
        default_analyze_interval: float = 2.0,
        plugin_timeout: float = 5.0,
        execute_timeout: float = 10.0,
        monitor: Callable[[], Awaitable[None]] | None = None,
        monitor_interval: float = 1.0,
        rescan_interval: float | None = 2.0,
        on_executed: OnExecuted | None = None,
        backoff: FailureBackoff | None = None,
        cycle_window: float = 0.0,
        scheduler: PlanScheduler | None = None,
        disable_after: int | None = 5,
        time_scale: float = 1.0,
        interval_floor: float = 0.1,
    ) -> None:
        self.agent_id = agent_id
        self._held_last: dict[tuple[str, str | None, str], tuple[str, float]] = {}
        self._held_repeats: dict[tuple[str, str | None], bool] = {}   # the last plan of the pair was held
        self.knowledge = knowledge
        self.policies = policies
        self.mechanisms = mechanisms
        self.decision_log = decision_log
        self.assets = assets
        self.system_description = system_description
        self.ml_connector = ml_connector
        self.default_analyze_interval = default_analyze_interval
        # a policy's own analyze_interval is simulated time in a scaled slice (the default one is already
        # real: the agent's settings were scaled), down to a real floor
        self.time_scale = time_scale
        self.interval_floor = interval_floor
        self.plugin_timeout = plugin_timeout
        self.execute_timeout = execute_timeout
        self.monitor = monitor
        self.monitor_interval = monitor_interval
        self.rescan_interval = rescan_interval
        self.backoff = backoff or FailureBackoff()
        self.disable_after = disable_after
        self._overruns: dict[str, list[str]] = {}   # policy -> reasons of its consecutive overruns
        self.telemetry = Telemetry(knowledge)
        self._user_on_executed = on_executed
        if scheduler is None:
            scheduler = PlanScheduler(mechanisms, decision_log, cycle_window=cycle_window, agent_id=agent_id)
        # a scheduler shared with the agent (its own plans, e.g. an app removal, run through it too)
        scheduler.execute_timeout = execute_timeout
        scheduler.on_executed = self._on_executed
        self.scheduler = scheduler
        self._pairs: dict[PairKey, _Pair] = {}
        self._monitor_task: asyncio.Task[None] | None = None
        self._running = False
        self._last_rescan = 0.0
        self._monitor_errors = 0
        self._started_at: float | None = None
        policies.add_listener(self._on_policy_change)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start Monitor and the pair loops on the running event loop."""
        if self._running:
            return
        self._running = True
        self._started_at = time.time()
        self._last_rescan = time.monotonic()
        self.reconcile()
        self._monitor_task = asyncio.get_running_loop().create_task(self._monitor_loop(), name="mape-monitor")
        errors = sorted({e.name for e in self.policies.errors})
        self.decision_log.record(
            "event",
            "info",
            f"engine started; policies {self.policies.names()}"
            + (f"; failed to load: {errors}" if errors else ""),
            inputs={"mechanisms": sorted(self.mechanisms.names())},
        )
        log.info("[%s] MAPE engine started with policies %s", self.agent_id, self.policies.names())

    async def stop(self) -> None:
        """Cancel all loops and in-flight plans, then flush the decision log."""
        self._running = False
        for p in self._pairs.values():
            p.closed = True
        tasks = [p.task for p in self._pairs.values() if p.task is not None]
        if self._monitor_task is not None:
            tasks.append(self._monitor_task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pairs.clear()
        await self.scheduler.stop()
        await asyncio.to_thread(self.policies.close)   # worker processes are reaped off the loop
        await self.decision_log.flush()
        log.info("[%s] MAPE engine stopped", self.agent_id)

    @property
    def running(self) -> bool:
        return self._running

    # -- monitor -------------------------------------------------------------------------------------------
    async def _monitor_loop(self) -> None:
        while self._running:
            try:
                await self.monitor_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("[%s] monitor step failed", self.agent_id)
            await asyncio.sleep(self.monitor_interval)

    async def monitor_once(self) -> None:
        """One Monitor step: agent hook, mechanism states, policy rescan (when due), pair reconciliation."""
        if self.monitor is not None:
            res = await call_plugin(self.monitor, timeout=self.plugin_timeout)
            if not res.ok:
                self._monitor_errors += 1
                log.warning("[%s] monitor hook %s: %s", self.agent_id, res.status, res.reason)
        await self.refresh_mechanisms()
        if self.rescan_interval is not None and time.monotonic() - self._last_rescan >= self.rescan_interval:
            self._last_rescan = time.monotonic()
            await self.policies.rescan()
        self.reconcile()

    async def refresh_mechanisms(self, names: list[str] | None = None) -> None:
        """Read get_state()/get_options() of the mechanisms (isolated, concurrently) into knowledge."""
        names = sorted(self.mechanisms.names()) if names is None else names

        async def one(name: str) -> None:
            mech = self.mechanisms.get(name)
            if mech is None:
                self.knowledge.mechanisms.pop(name, None)
                return
            entry = self.knowledge.mechanisms.setdefault(name, {"state": {}, "options": {}})
            for key, fn in (("state", mech.get_state()), ("options", mech.get_options())):
                if fn is None:
                    continue
                res = await call_plugin(fn, timeout=self.plugin_timeout)
                if res.ok and isinstance(res.value, dict):
                    entry[key] = res.value
                else:
                    mech.last_error = (
                        res.reason or f"get_{key}() returned {type(res.value).__name__}, not dict"
                    )

        await asyncio.gather(*(one(n) for n in names))
        for stale in set(self.knowledge.mechanisms) - set(self.mechanisms.names()):
            del self.knowledge.mechanisms[stale]

    def required_metrics(self) -> list[str]:
        """Union of the metrics the enabled policies declare (what Monitor should collect)."""
        return sorted({m for p in self.policies.enabled() for m in p.metrics})

    def scrape_interval(self) -> float | None:
        """Smallest `telemetry.system_scrape_interval` the enabled policies ask for (None if none does)."""
        values = [p.scrape_interval for p in self.policies.enabled() if p.scrape_interval is not None]
        return min(values) if values else None

    # -- pairs ---------------------------------------------------------------------------------------------
    def _current_assets(self) -> dict[str, dict[str, Any]] | None:
        try:
            apps = self.assets()
        except Exception:
            log.exception("[%s] assets() failed", self.agent_id)
            return None
        return apps if isinstance(apps, dict) else None

    def desired_pairs(self) -> set[PairKey]:
        """The (policy, asset) pairs that should run now (see module docstring for per-app selection)."""
        apps = self._current_assets()
        if apps is None:
            return set(self._pairs)  # keep what runs rather than tearing it down on a transient error
        desired: set[PairKey] = set()
        for pol in self.policies.enabled():
            if pol.scope == "global":
                desired.add((pol.name, None))
                continue
            for app, desc in apps.items():
                chosen = _app_policy_names(desc) if isinstance(desc, dict) else None
                if chosen is None or pol.name in chosen:
                    desired.add((pol.name, app))
        return desired

    def reconcile(self) -> None:
        """Start loops for new pairs and cancel loops of pairs that no longer exist."""
        if not self._running:
            return
        desired = self.desired_pairs()
        for key in [k for k in self._pairs if k not in desired]:
            pair = self._pairs.pop(key)
            pair.closed = True
            if pair.task is not None:
                pair.task.cancel()
            self.backoff.forget(key)
            log.debug("[%s] stopped %s for %s", self.agent_id, *key)
        loop = asyncio.get_running_loop()
        for key in desired:
            pair = self._pairs.get(key)
            if pair is not None and pair.task is not None:
                continue
            pol = self.policies.get(key[0])
            if pol is None:
                continue
            if pair is None:  # (a pair made by run_cycle() before start() is reused)
                pair = self._pairs[key] = _Pair(key[0], key[1], copy.deepcopy(pol.context), pol.version)
            pair.reasons.append("started")
            pair.task = loop.create_task(self._pair_loop(pair), name=f"mape:{key[0]}:{key[1]}")
            log.debug("[%s] started %s for %s", self.agent_id, *key)

    def _interval(self, pol: Policy | None) -> float:
        iv = pol.interval if pol is not None else None
        return self._real(iv) if iv is not None else self.default_analyze_interval

    def _real(self, interval: float) -> float:
        return scaled_seconds(interval, self.time_scale, self.interval_floor)

    def _pair_interval(self, pair: _Pair) -> float:
        """The pair's own `configuration.analyze_interval` (a policy may change it in the context it
        returns, e.g. slower while its last change settles), else the loaded policy's or the default."""
        conf = pair.context.get("configuration") if isinstance(pair.context, dict) else None
        value = conf.get("analyze_interval") if isinstance(conf, dict) else None
        if value is not None:
            try:
                own = parse_interval(value)
                return self._real(own) if own else self._interval(self.policies.get(pair.policy))
            except ValueError:
                log.warning("[%s] policy %s: invalid analyze_interval %r in its context; using the loaded one",
                            self.agent_id, pair.policy, value)
        return self._interval(self.policies.get(pair.policy))

    async def _pair_loop(self, pair: _Pair) -> None:
        key = (pair.policy, pair.asset)
        while not pair.closed:
            blocked = self.backoff.remaining(key)
            if blocked > 0:
                await asyncio.sleep(blocked)
            pair.wake.clear()
            reasons, pair.reasons = pair.reasons, []
            started = time.monotonic()
            try:
                await self.run_cycle(pair.policy, pair.asset, reason="; ".join(reasons) or "interval")
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of ours; keep the loop alive
                log.exception("[%s] cycle %s/%s crashed", self.agent_id, pair.policy, pair.asset)
            interval = self._pair_interval(pair)
            pair.next_run = time.time() + max(0.0, interval - (time.monotonic() - started))
            remaining = interval - (time.monotonic() - started)
            if remaining > 0 and not pair.wake.is_set():
                await _wait_event(pair.wake, remaining)
            if pair.closed:  # a cancel may have been swallowed by a wait that completed at the same time
                return

    def trigger(self, asset: str | None = None, reason: str = "") -> int:
        """Run analysis now for the pairs of `asset` and the global pairs (all pairs if asset is None).

        Non-blocking; returns how many pairs were woken. Triggers that arrive while a pair's cycle runs are
        coalesced into one further cycle.
        """
        self.reconcile()
        woken = 0
        for pair in self._pairs.values():
            if asset is None or pair.asset == asset or pair.asset is None:
                why = f"trigger: {reason or 'unspecified'}"
                if why not in pair.reasons:
                    pair.reasons.append(why)
                pair.wake.set()
                woken += 1
        self.decision_log.record(
            "event", "info", f"trigger ({reason or 'no reason given'}) woke {woken} policy loop(s)", app=asset
        )
        return woken

    # -- one cycle -----------------------------------------------------------------------------------------
    async def run_cycle(self, policy: str, asset: str | None, reason: str = "manual") -> str:
        """Run Analyze (and Plan/Execute if needed) once for a pair; returns the cycle's outcome.

        Serialised with the pair's loop. Usable without start() (the pair state is created on demand).
        """
        key = (policy, asset)
        pair = self._pairs.get(key)
        if pair is None:
            pol = self.policies.get(policy)
            if pol is None:
                raise KeyError(f"unknown policy {policy!r}")
            pair = _Pair(policy, asset, copy.deepcopy(pol.context), pol.version)
            self._pairs[key] = pair
        async with pair.lock:
            outcome, why, plan_id = await self._cycle(pair, reason)
        pair.runs += 1
        pair.last_run = time.time()
        pair.last_outcome, pair.last_reason = outcome, why
        if plan_id is not None:
            pair.last_plan_id = plan_id
        return outcome

    def _failure(
        self, pair: _Pair, stage: str, status: str, reason: str, inputs: Any, res: CallResult | None = None
    ) -> tuple[str, str, None]:
        key = (pair.policy, pair.asset)
        delay = self.backoff.failure(key)
        if delay:
            reason = f"{reason}; {self.backoff.failures(key)} consecutive failures, backing off {delay:g}s"
        if res is not None and res.limit is not None:
            unit = "s" if res.status == "timeout" else "MiB"
            inputs = {**inputs, "limit": res.limit, "measured": res.measured, "unit": unit}
        self.decision_log.record(stage, status, reason, policy=pair.policy, app=pair.asset, inputs=inputs)
        log.warning("[%s] policy %s %s for %s: %s", self.agent_id, pair.policy, status, pair.asset, reason)
        if status in ("timeout", "memory_exceeded"):
            pol = self.policies.get(pair.policy)
            # a built-in's memory stays in the agent (no worker to replace): once over budget, stop it now
            at_once = status == "memory_exceeded" and pol is not None and pol.worker is None
            self._overrun(pair.policy, f"{stage} {status}: {reason}", at_once=at_once)
        return status, reason, None

    def _overrun(self, policy: str, reason: str, *, at_once: bool = False) -> None:
        """Count a consecutive overrun of a policy; disable it (with the reason) after `disable_after`, or
        at once when `at_once` (a built-in over its memory budget)."""
        seen = self._overruns.setdefault(policy, [])
        seen.append(reason)
        if not at_once and (self.disable_after is None or len(seen) < self.disable_after):
            return
        pol = self.policies.get(policy)
        self._overruns.pop(policy, None)
        if pol is None or not pol.enabled:
            return
        why = (f"disabled: it shares the agent's process and kept memory past its budget; {seen[-1]}" if at_once
               else f"disabled after {len(seen)} consecutive overruns; last: {seen[-1]}")
        self.policies.disable(policy, why, automatic=True)
        self.decision_log.record("event", "error", f"policy {policy} {why}", policy=policy,
                                 inputs={"overruns": seen[-self.disable_after:]})
        log.error("[%s] policy %s %s", self.agent_id, policy, why)
        self.reconcile()

    async def _call_policy(self, pol: Policy, fn: str, pair: _Pair, args: tuple[Any, ...]) -> CallResult:
        res = await pol.call(fn, (pair.context, *args), self.plugin_timeout)
        if res.ok:
            self._overruns.pop(pol.name, None)
        return res

    def _policy_inputs(
        self, apps: dict[str, dict[str, Any]], asset: str | None
    ) -> tuple[Any, dict[str, Any]]:
        """Deep copies, so a policy mutating its arguments cannot corrupt the agent's state."""
        app_desc = copy.deepcopy(apps) if asset is None else copy.deepcopy(apps[asset])
        try:
            system = self.system_description()
        except Exception as exc:  # noqa: BLE001 - the agent's callable must not kill the cycle
            log.warning("[%s] system_description() failed: %s", self.agent_id, exc)
            system = {}
        system = copy.deepcopy(system) if isinstance(system, dict) else {}
        return app_desc, system

    async def _cycle(self, pair: _Pair, reason: str) -> tuple[str, str, str | None]:
        pol = self.policies.get(pair.policy)
        if pol is None or not pol.enabled:
            return "skipped", "policy not loaded or disabled", None
        if pol.version != pair.version:
            pair.context, pair.version = copy.deepcopy(pol.context), pol.version
        apps = self._current_assets() or {}
        if pair.asset is not None and pair.asset not in apps:
            return "skipped", f"app {pair.asset!r} is gone", None
        app_desc, system = self._policy_inputs(apps, pair.asset)
        mechanisms = copy.deepcopy(self.knowledge.mechanisms)
        inputs = {
            "trigger": reason,
            "policy_version": pol.version,
            "app": pair.asset,
            "app_sha": fingerprint(app_desc),
            "system_sha": fingerprint(system),
            "mechanisms": sorted(mechanisms),
            "telemetry": self.telemetry.snapshot(pol.metrics) if pol.metrics else {},
        }
        common = {"policy": pair.policy, "app": pair.asset}

        # Analyze
        args = (app_desc, system, mechanisms, self.telemetry, self.ml_connector)
        res = await self._call_policy(pol, "analyze", pair, args)
        if self.policies.get(pol.name) is not pol:   # replaced or removed while it ran: its verdict is moot
            return "skipped", "policy replaced or removed during analyze", None
        if not res.ok:
            return self._failure(pair, "analyze", res.status, f"analyze {res.status}: {res.reason}", inputs, res)
        try:
            needed, pair.context, explanation = validate_analyze_result(res.value)
        except PluginContractError as exc:
            return self._failure(pair, "analyze", "error", str(exc), inputs)
        held = None if needed else self._held(pair, "analyze", explanation)
        # While its plan keeps ending in the same held situation, "analyze -> True" every interval says
        # nothing new: that analysis is recorded as no_plan (hidden unless asked for with --all).
        repeat = needed and self._held_repeats.get((pair.policy, pair.asset), False)
        self.decision_log.record(
            "analyze",
            "held" if held else "no_plan" if repeat else "plan_needed" if needed else "no_plan",
            f"{pair.policy}: {held}" if held else f"{pair.policy} analyze -> {needed} ({reason})"
            + (" (the plan is held, as before)" if repeat else ""),
            inputs=inputs,
            explanation=explanation,
            **common,
        )
        if not needed:
            self.backoff.success((pair.policy, pair.asset))
            return "no_plan", "analyze: no plan needed", None

        # Plan
        res = await self._call_policy(pol, "plan", pair, args)
        if self.policies.get(pol.name) is not pol:
            return "skipped", "policy replaced or removed during plan", None
        if not res.ok:
            return self._failure(pair, "plan", res.status, f"plan {res.status}: {res.reason}", inputs, res)
        try:
            commands, pair.context, explanation = validate_plan_result(
                res.value, self.mechanisms.names(), pol.mechanisms
            )
        except PluginContractError as exc:
            return self._failure(pair, "plan", "error", str(exc), inputs)
        self.backoff.success((pair.policy, pair.asset))
        if not commands:
            held = self._held(pair, "plan", explanation)
            self.decision_log.record(
                "plan", "held" if held else "no_plan", f"{pair.policy}: {held}" if held else "plan returned no commands",
                explanation=explanation, **common
            )
            return "no_plan", "plan: empty", None
        self._held_repeats.pop((pair.policy, pair.asset), None)
        plan = Plan(pair.policy, pair.asset, commands, pol.priority, explanation=explanation)
        self.decision_log.record(
            "plan",
            "planned",
            f"{pair.policy} planned for {sorted(commands)}",
            plan_id=plan.id,
            chosen=commands,
            # policies that weighed options say so in their explanation; surface them as the record's
            # alternatives so the CLI/API show them without digging into the explanation
            alternatives=(explanation or {}).get("alternatives"),
            explanation=explanation,
            **common,
        )

        # Schedule + Execute
        result: PlanResult = await self.scheduler.submit(plan)
        return result.status, result.reason, plan.id

    def _held(self, pair: Any, stage: str, explanation: Any) -> str | None:
        """What a policy says it cannot fix (`explanation["held"]`, or components it found unplaceable),
        once per change of the text or per HELD_REPEAT_S: a stuck app leaves a visible record without one
        per analysis interval."""
        text = held_reason(explanation)
        key = (pair.policy, pair.asset, stage)
        if text is None:
            self._held_last.pop(key, None)
            if stage == "plan":
                self._held_repeats.pop((pair.policy, pair.asset), None)
            return None
        now = time.monotonic()
        last = self._held_last.get(key)
        repeat = last is not None and last[0] == text and now - last[1] < HELD_REPEAT_S
        if stage == "plan":
            self._held_repeats[(pair.policy, pair.asset)] = True
        if repeat:
            return None
        self._held_last[key] = (text, now)
        return text

    async def _on_executed(self, plan: Plan, mechanism: str, outcome: str, detail: Any) -> None:
        await self.refresh_mechanisms([mechanism])  # the next Analyze sees the effect
        if self._user_on_executed is not None:
            ret = self._user_on_executed(plan, mechanism, outcome, detail)
            if asyncio.iscoroutine(ret) or isinstance(ret, asyncio.Future):
                await ret

    # -- policy changes ------------------------------------------------------------------------------------
    def _on_policy_change(self, change: PluginChange) -> None:
        outcome = "error" if change.kind == "failed" else "info"
        self.decision_log.record(
            "event",
            outcome,
            f"policy {change.name} {change.kind}" + (f": {change.detail}" if change.detail else ""),
            policy=change.name,
            inputs={"path": change.path},
        )
        if not self._running:
            return
        try:
            self.reconcile()
        except RuntimeError:  # called from a thread without a loop; the next Monitor step reconciles
            return
        if change.kind == "modified":
            for pair in self._pairs.values():
                if pair.policy == change.name:
                    pair.reasons.append("policy reloaded")
                    pair.wake.set()

    # -- introspection -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Snapshot for the API/CLI: policies, pairs with last run/outcome, counts, scheduler, load errors."""
        return {
            "agent": self.agent_id,
            "running": self._running,
            "started_at": self._started_at,
            "policies": self.policies.list(),
            "pairs": [
                p.describe(self.backoff) for _, p in sorted(self._pairs.items(), key=lambda kv: str(kv[0]))
            ],
            "mechanisms": self.mechanisms.list(),
            "required_metrics": self.required_metrics(),
            "counts": self.decision_log.counts(),
            "scheduler": self.scheduler.status(),
            "monitor_errors": self._monitor_errors,
            "load_errors": [e.to_dict() for e in self.policies.errors[-20:]]
            + [e.to_dict() for e in self.mechanisms.errors[-20:]],
        }
