"""Plan scheduler: conflict resolution within a cycle, one command at a time per mechanism, execution.

Scheduling cycle. `submit()` queues a plan; the plans submitted before the scheduler next runs (the same
event-loop tick, or within `cycle_window` seconds of the first one) form one cycle.

Conflict rule. Two plans of one cycle conflict when they target the same mechanism for the same asset
(application name, or None for agent-wide plans). Plans are ranked by priority (higher first), then FIFO
(earlier `created`, then earlier submission). Walking that ranking, a plan is accepted if none of its
(mechanism, asset) targets was claimed by an already accepted plan; otherwise it is discarded as a whole — a
partial plan could leave the asset in a state no policy asked for — and the `discarded` record names the
winner(s). Plans that do not share a target never conflict.

Execution. Each mechanism runs one command at a time: commands wait on a per-mechanism FIFO lock, so accepted
plans for the same mechanism execute in acceptance order and plans for different mechanisms run concurrently.
Commands queued in earlier cycles are not superseded by later ones. `apply(command)` runs isolated
(`call_plugin`) with `execute_timeout`. Outcome: `completed` for None/True/a dict whose "ok" is not False;
`failed` for False, {"ok": False}, an exception or an unsupported return type; `timeout` when it did not
return in time. A plan made by the agent itself may name an operation capability instead of `apply`
(`Plan(..., operation="remove_app")`): its command is then the operation's keyword arguments; it is
scheduled, serialised and recorded exactly like `apply`. A failure is never recorded as completed. The plan's status is the worst of its commands'
outcomes (failed > timeout > completed).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.mape.decision_log import DecisionLog
from mlsysops.agents.mape.isolation import call_plugin
from mlsysops.agents.mape.plugins import MechanismRegistry

log = logging.getLogger(__name__)

_seq = itertools.count()

OnExecuted = Callable[["Plan", str, str, Any], "Awaitable[None] | None"]


@dataclass(slots=True)
class Plan:
    """A policy's plan for one asset: {mechanism: command}."""

    policy: str
    asset: str | None
    commands: dict[str, Any]
    priority: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)
    explanation: dict[str, Any] | None = None
    operation: str = "apply"   # or a declared operation capability (commands are then its kwargs)
    seq: int = field(default_factory=lambda: next(_seq))

    def targets(self) -> set[tuple[str, str | None]]:
        return {(m, self.asset) for m in self.commands}

    def rank(self) -> tuple[int, float, int]:
        return (-self.priority, self.created, self.seq)


@dataclass(slots=True)
class CommandResult:
    mechanism: str
    outcome: str  # completed | failed | timeout
    detail: Any = None
    duration: float = 0.0


@dataclass(slots=True)
class PlanResult:
    plan: Plan
    status: str  # completed | failed | timeout | discarded
    reason: str = ""
    commands: dict[str, CommandResult] = field(default_factory=dict)


_SEVERITY = {"completed": 0, "timeout": 1, "failed": 2}


def interpret_apply_result(value: Any) -> tuple[str, Any]:
    """(outcome, detail) for a value returned by mechanism.apply()."""
    if value is None or value is True:
        return "completed", None
    if value is False:
        return "failed", "apply() returned False"
    if isinstance(value, dict):
        ok = value.get("ok", True)
        detail = value.get("detail", value)
        if ok is False:
            return "failed", detail
        return "completed", detail
    return "failed", f"apply() returned unsupported {type(value).__name__}; expected bool, None or dict"


def resolve_conflicts(plans: list[Plan]) -> tuple[list[Plan], list[tuple[Plan, list[Plan]]]]:
    """Apply the conflict rule: (accepted in rank order, [(discarded plan, the plans it lost to)])."""
    accepted: list[Plan] = []
    discarded: list[tuple[Plan, list[Plan]]] = []
    claimed: dict[tuple[str, str | None], Plan] = {}
    for plan in sorted(plans, key=Plan.rank):
        winners = {id(claimed[t]): claimed[t] for t in plan.targets() if t in claimed}
        if winners:
            discarded.append((plan, sorted(winners.values(), key=Plan.rank)))
            continue
        accepted.append(plan)
        for t in plan.targets():
            claimed[t] = plan
    return accepted, discarded


class PlanScheduler:
    """Serialises plans per mechanism and executes them (see module docstring for the rules)."""

    def __init__(
        self,
        mechanisms: MechanismRegistry,
        decision_log: DecisionLog,
        *,
        execute_timeout: float = 10.0,
        on_executed: OnExecuted | None = None,
        cycle_window: float = 0.0,
        agent_id: str = "",
    ) -> None:
        self.mechanisms = mechanisms
        self.decision_log = decision_log
        self.execute_timeout = execute_timeout
        self.on_executed = on_executed
        self.cycle_window = cycle_window
        self.agent_id = agent_id or decision_log.agent_id
        self._pending: list[tuple[Plan, asyncio.Future[PlanResult]]] = []
        self._cycle_task: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: dict[str, str] = {}  # mechanism -> plan id executing now
        self.cycles = 0

    # -- submission ----------------------------------------------------------------------------------------
    def submit(self, plan: Plan) -> asyncio.Future[PlanResult]:
        """Queue a plan for the next cycle; the future resolves when it is discarded or fully executed."""
        if not plan.commands:
            raise ValueError("a plan needs at least one command")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[PlanResult] = loop.create_future()
        self._pending.append((plan, fut))
        if self._cycle_task is None or self._cycle_task.done():
            self._cycle_task = loop.create_task(self._cycle())
        return fut

    async def _cycle(self) -> None:
        await asyncio.sleep(self.cycle_window)
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.cycles += 1
        futures = {p.id: f for p, f in batch}
        accepted, discarded = resolve_conflicts([p for p, _ in batch])
        for plan, winners in discarded:
            names = ", ".join(f"{w.id} (policy {w.policy}, priority {w.priority})" for w in winners)
            shared = sorted(m for m, _ in plan.targets() & set().union(*(w.targets() for w in winners)))
            reason = (
                f"conflicts on {shared} for asset {plan.asset!r} with plan {names}; rule: priority, then FIFO"
            )
            self.decision_log.record(
                "schedule",
                "discarded",
                reason,
                policy=plan.policy,
                app=plan.asset,
                plan_id=plan.id,
                chosen=plan.commands,
                alternatives=[w.id for w in winners],
            )
            futures[plan.id].set_result(PlanResult(plan, "discarded", reason))
        for plan in accepted:
            losers = [p.id for p, ws in discarded if plan in ws]
            self.decision_log.record(
                "schedule",
                "accepted",
                f"priority {plan.priority}" + (f"; won over {losers}" if losers else "; no conflict"),
                policy=plan.policy,
                app=plan.asset,
                plan_id=plan.id,
                chosen=plan.commands,
                alternatives=losers or None,
            )
            task = asyncio.get_running_loop().create_task(self._run_plan(plan, futures[plan.id]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- execution -----------------------------------------------------------------------------------------
    def _lock(self, mechanism: str) -> asyncio.Lock:
        lock = self._locks.get(mechanism)
        if lock is None:
            lock = self._locks[mechanism] = asyncio.Lock()
        return lock

    async def _run_plan(self, plan: Plan, fut: asyncio.Future[PlanResult]) -> None:
        try:
            results = await asyncio.gather(*(self._execute(plan, m, c) for m, c in plan.commands.items()))
        except asyncio.CancelledError:
            if not fut.done():
                fut.cancel()
            raise
        worst = max(results, key=lambda r: _SEVERITY[r.outcome])
        reasons = "; ".join(
            f"{r.mechanism}: {r.outcome}" + (f" ({r.detail})" if r.outcome != "completed" else "")
            for r in results
        )
        if not fut.done():
            fut.set_result(PlanResult(plan, worst.outcome, reasons, {r.mechanism: r for r in results}))

    async def _execute(self, plan: Plan, mechanism: str, command: Any) -> CommandResult:
        async with self._lock(mechanism):
            self._running[mechanism] = plan.id
            start = time.monotonic()
            try:
                outcome, detail = await self._apply(mechanism, command, plan.operation)
            finally:
                self._running.pop(mechanism, None)
            result = CommandResult(mechanism, outcome, detail, time.monotonic() - start)
        self.decision_log.record(
            "execute",
            outcome,
            f"{mechanism}.{plan.operation} {outcome} in {result.duration:.3f}s"
            + (f": {detail}" if outcome != "completed" else ""),
            policy=plan.policy,
            mechanism=mechanism,
            app=plan.asset,
            plan_id=plan.id,
            chosen=command,
            explanation={"detail": detail} if detail is not None else None,
        )
        await self._notify(plan, mechanism, outcome, detail)
        return result

    async def _apply(self, mechanism: str, command: Any, operation: str = "apply") -> tuple[str, Any]:
        mech = self.mechanisms.get(mechanism)
        if mech is None:
            return "failed", f"mechanism {mechanism!r} is not registered"
        try:
            fn = mech.operation(operation)
        except ValueError as exc:
            return "failed", str(exc)
        if operation == "apply":
            res = await call_plugin(fn, command, timeout=self.execute_timeout)
        elif isinstance(command, dict):
            res = await call_plugin(fn, timeout=self.execute_timeout, kwargs=command)
        else:
            return "failed", f"{operation}: the command must be a mapping of keyword arguments"
        if res.status == "timeout":
            mech.last_error = res.reason
            return "timeout", res.reason
        if res.status == "error":
            mech.last_error = res.reason
            return "failed", res.reason
        return interpret_apply_result(res.value)

    async def _notify(self, plan: Plan, mechanism: str, outcome: str, detail: Any) -> None:
        if self.on_executed is None:
            return
        try:
            ret = self.on_executed(plan, mechanism, outcome, detail)
            if inspect.isawaitable(ret):
                await asyncio.wait_for(ret, self.execute_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("[%s] on_executed callback failed for plan %s", self.agent_id, plan.id)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until nothing is pending or executing (raises TimeoutError after `timeout`)."""

        async def _wait() -> None:
            while self._pending or (self._cycle_task and not self._cycle_task.done()) or self._tasks:
                if self._cycle_task and not self._cycle_task.done():
                    await self._cycle_task
                if self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)

        await asyncio.wait_for(_wait(), timeout)

    async def stop(self) -> None:
        """Cancel what is queued or running; their futures are cancelled."""
        if self._cycle_task is not None:
            self._cycle_task.cancel()
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if self._cycle_task is not None:
            tasks.append(self._cycle_task)
        await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "pending": len(self._pending),
            "executing": dict(self._running),
            "plans_in_flight": len(self._tasks),
        }
