"""Membership between a parent agent and its children: registration, heartbeats, liveness.

Liveness combines two signals, and a child is declared lost only when they are not explained by the
parent's own trouble:

* XMPP presence: a child that stops or whose connection drops is reported unavailable by the server. The
  parent *suspects* it and declares it lost after ``presence_grace`` unless it came back (a new session or a
  registration; a late heartbeat from the old session does not count), or the
  parent itself lost the server meanwhile (a graceful server stop sends every "unavailable" presence before
  the parent notices its own disconnect). Presences received while the parent is disconnected, and for
  ``reconnect_allowance`` after its own reconnect, say nothing about the children (bus outage) and are ignored.
* heartbeats: a child that is connected but hung (or partitioned above XMPP) stops heartbeating and is
  suspected after ``liveness_misses`` intervals (reason ``"missed N heartbeats"``). Misses are judged against
  the receiver's own lag: every tick the watchdog is late (its loop or process stalled: GC, a blocking
  call, a starved CPU, a suspended VM) moves every deadline by as much, and time disconnected from the
  server is not counted; after the parent reconnects, every child has ``reconnect_allowance`` (the time its
  own reconnect backoff may take) plus a full liveness period, counted again from when it is back online.
  Heartbeats are handled ``urgent`` (no handler slot), so other work cannot queue them.

Full disruption (Kubernetes' node controller does the same): when at least ``disruption_fraction`` of the
children (and at least ``disruption_min_children``) are lost at once, the parent suspects itself: the
listeners are not told (nothing is relocated) until the children come back, or the condition lasts past
``disruption_limit`` seconds; both transitions are decision-log events with the reason. Children still silent
when the others came back get a full liveness period from then.

Recovery is level-triggered: a lost child that heartbeats or registers again is *recovered* (so is one whose
session ended and that registers again before it was declared lost: a restarted child); a heartbeat
from a child the parent does not know is answered FAILURE ``"unknown child: re-register"``, which is how a
restarted parent re-learns its children. The child re-registers on that failure, after its own reconnect
and when the parent's presence comes back.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mlsysops.agents.agent_base import HandlerError, MLSysOpsAgent, RequestError, RequestFailed, bare
from mlsysops.agents.authorization import norm_jid
from mlsysops.agents.protocol import (
    Envelope,
    Heartbeat,
    HeartbeatAck,
    Kind,
    MembershipSettings,
    RegisterReply,
    RegisterRequest,
    Role,
)

UNKNOWN_CHILD = "unknown child: re-register"
DEFAULT_MAX_HEARTBEAT_RATE = 200.0   # heartbeats per second a parent asks for in total, whatever its child count
REASON_PRESENCE = "presence: unavailable"
LAG_EPSILON = 0.005   # watchdog lateness below this is timer jitter, not a stall

AcceptFn = Callable[[Envelope], dict[str, Any] | Awaitable[dict[str, Any]]]
ChildListener = Callable[..., Awaitable[None]]


@dataclass
class ChildRecord:
    """What a parent knows about one child. Times are ``time.time()`` for display; liveness uses
    ``last_seen_monotonic``."""

    jid: str
    agent_id: str
    role: Role
    description: dict[str, Any]
    joined_at: float
    last_heartbeat: float
    alive: bool = True
    digest: dict[str, Any] = field(default_factory=dict)
    seq: int = -1
    capabilities: list[str] = field(default_factory=list)
    lost_reason: str | None = None
    last_seen_monotonic: float = field(default_factory=time.monotonic)
    suspected_at: float | None = None   # monotonic: presence or a missed deadline said "gone", not confirmed yet
    suspect_reason: str | None = None
    held: bool = False                  # lost during a full disruption: the listeners were not told
    session_ended: bool = False         # its XMPP session closed (not in an outage): a registration is a restart
    interval: float = 0.0               # heartbeat interval it is judged by (the longest it may still follow)
    told: float = 0.0                   # the interval it was last told (registration or heartbeat ack)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class ParentMembership:
    """Parent side: registry of children and their liveness. Call :meth:`start` once the agent runs."""

    def __init__(
        self,
        agent: MLSysOpsAgent,
        *,
        heartbeat_interval: float = 5.0,
        liveness_misses: int = 3,
        accept: AcceptFn | None = None,
        extra_settings: dict[str, Any] | None = None,
        presence_grace: float | None = None,
        disruption_fraction: float = 0.6,
        disruption_min_children: int = 2,
        disruption_limit: float | None = None,
        reconnect_allowance: float | None = None,
        max_heartbeat_rate: float | None = DEFAULT_MAX_HEARTBEAT_RATE,
    ) -> None:
        self.agent = agent
        self.max_heartbeat_rate = max_heartbeat_rate
        self.settings = MembershipSettings(heartbeat_interval=heartbeat_interval,
                                           liveness_misses=liveness_misses, **(extra_settings or {}))
        self.presence_grace = heartbeat_interval if presence_grace is None else presence_grace
        self.disruption_fraction = disruption_fraction
        self.disruption_min_children = disruption_min_children
        self.disruption_limit = (max(30.0, 10 * self.liveness_period) if disruption_limit is None
                                 else disruption_limit)
        # After a bus outage the children reconnect on their own backoff, which may end after ours: they
        # get this much on top of a liveness period (default: our own reconnect backoff cap, the slice's).
        self.reconnect_allowance = (float(getattr(agent, "reconnect_backoff_max", 0.0))
                                    if reconnect_allowance is None else reconnect_allowance)
        self._accept = accept
        self._children: dict[str, ChildRecord] = {}
        self._joined: list[ChildListener] = []
        self._lost: list[ChildListener] = []
        self._recovered: list[ChildListener] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._heartbeat_listeners: list[Callable[[ChildRecord, float, float], None]] = []
        self.stalls = 0   # times the watchdog found its own loop frozen (see _credit_stall)
        self.lag_credited = 0.0   # seconds of own lag not counted against the children
        self.outages = 0          # own disconnects from the server (bus outages as this parent saw them)
        self.presences_ignored = 0
        self.disruptions = 0
        self.disruption_since: float | None = None   # monotonic, while a full disruption holds losses back
        self._disruption_expired = False
        self._outage_until = 0.0
        agent.on(Kind.REGISTER, self._on_register)
        agent.on(Kind.HEARTBEAT, self._on_heartbeat, urgent=True)
        agent.registered_child = lambda jid: norm_jid(jid) in self._children   # the `from_children` rule
        agent.on_presence(self._on_presence)
        agent.on_reconnected(self._on_reconnected)
        agent.on_disconnected(self._on_disconnected)

    # -- public API --------------------------------------------------------------------------------
    def on_joined(self, listener: Callable[[ChildRecord], Awaitable[None]]) -> None:
        self._joined.append(listener)

    def on_lost(self, listener: Callable[[ChildRecord, str], Awaitable[None]]) -> None:
        self._lost.append(listener)

    def on_heartbeat(self, listener: Callable[[ChildRecord, float, float], None]) -> None:
        """``listener(child, monotonic_arrival, receiver_stalled_seconds_total)``, synchronously."""
        self._heartbeat_listeners.append(listener)

    def on_recovered(self, listener: Callable[[ChildRecord], Awaitable[None]]) -> None:
        self._recovered.append(listener)

    def children(self, *, alive_only: bool = False) -> list[ChildRecord]:
        return [c for c in self._children.values() if c.alive or not alive_only]

    def child(self, jid: str) -> ChildRecord | None:
        return self._children.get(bare(jid))

    def add_proxied(self, key: str, agent_id: str, role: Role, description: dict[str, Any]) -> ChildRecord:
        """A child that cannot speak for itself (a device behind a gateway), known under ``key``: joined like
        a registered child, kept alive by :meth:`heard` (the gateway's heartbeats) and lost by the same
        watchdog, or at once by :meth:`declare_lost`."""
        now, mono = time.time(), time.monotonic()
        rec = self._children.get(key)
        if rec is None:
            rec = ChildRecord(jid=key, agent_id=agent_id, role=role, description=description, joined_at=now,
                              last_heartbeat=now, last_seen_monotonic=mono)
            self._children[key] = rec
            self.agent.log.info("child joined through its gateway: %s (%s)", agent_id, key)
            self._notify(self._joined, rec)
        else:
            rec.description = description
            self._heard(rec, now, mono)
        return rec

    def heard(self, key: str) -> None:
        rec = self._children.get(key)
        if rec is not None:
            self._heard(rec, time.time(), time.monotonic())

    def declare_lost(self, key: str, reason: str) -> None:
        """Lost now (its gateway saw it go): the same path as a confirmed suspicion (disruption rules apply)."""
        rec = self._children.get(key)
        if rec is None or not rec.alive:
            return
        rec.suspected_at, rec.suspect_reason = time.monotonic(), reason
        self._declare([rec], time.monotonic())

    def forget(self, jid: str) -> ChildRecord | None:
        """Drop a child that left the slice for good (a removed node): no loss, no more liveness."""
        return self._children.pop(norm_jid(jid), None)

    @property
    def liveness_period(self) -> float:
        return self.settings.heartbeat_interval * self.settings.liveness_misses

    def heartbeat_interval_now(self) -> float:
        """The interval children are told: the configured one, stretched in whole multiples of it so that all
        children together send at most ``max_heartbeat_rate`` heartbeats a second (sparse heartbeats: a
        crash is seen through presence at any size; heartbeats only catch a child that hangs while connected,
        as Kubernetes' node leases do every 10 s)."""
        base = self.settings.heartbeat_interval
        if not self.max_heartbeat_rate or len(self._children) <= self.max_heartbeat_rate * base:
            return base
        return base * math.ceil(len(self._children) / (self.max_heartbeat_rate * base))

    @staticmethod
    def _follow(rec: ChildRecord, interval: float, gap: float) -> None:
        """``rec`` is told ``interval`` (every ack says it: a lost ack costs nothing). A longer one is what it
        is judged by at once (it may already follow it); a shorter one only once its heartbeats come that
        often (``gap``: since its previous one), so a child that has not learnt it yet is not lost for it."""
        rec.told = interval
        if interval >= rec.interval or gap <= 1.5 * interval:
            rec.interval = interval

    @property
    def in_disruption(self) -> bool:
        return self.disruption_since is not None

    async def start(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = self.agent.spawn(self._watch(), name="membership-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # -- handlers ----------------------------------------------------------------------------------
    async def _on_register(self, env: Envelope) -> dict[str, Any]:
        req = env.payload
        assert isinstance(req, RegisterRequest)
        extra: dict[str, Any] = {}
        if self._accept is not None:
            verdict = await _maybe_await(self._accept(env))
            verdict = dict(verdict or {})
            if verdict.get("accepted", True) is False:
                reason = str(verdict.get("reason", "rejected"))
                self.agent.log.info("rejected registration of %s: %s", env.sender, reason)
                return RegisterReply(accepted=False, reason=reason).model_dump(mode="json")
            verdict.pop("accepted", None)
            extra = verdict
        jid = bare(env.sender)
        now, mono = time.time(), time.monotonic()
        rec = self._children.get(jid)
        if rec is None:
            rec = ChildRecord(jid=jid, agent_id=req.agent_id, role=req.role, description=req.description,
                              joined_at=now, last_heartbeat=now, capabilities=list(req.capabilities),
                              last_seen_monotonic=mono)
            self._children[jid] = rec
            self.agent.log.info("child joined: %s (%s, %s)", req.agent_id, req.role.value, jid)
            self._notify(self._joined, rec)
        else:
            rec.agent_id, rec.role, rec.description = req.agent_id, req.role, req.description
            rec.capabilities = list(req.capabilities)
            restarted, rec.session_ended = rec.alive and rec.session_ended, False
            self._heard(rec, now, mono)
            if restarted:   # its session ended and a new one registers: a restarted child, state to re-learn
                self.agent.log.info("child re-registered after its session ended: %s", rec.agent_id)
                self._notify(self._recovered, rec)
        self.agent.subscribe_presence(jid)
        interval = self.heartbeat_interval_now()
        rec.interval = rec.told = interval   # a registering child starts with what it is told here
        settings = self.settings if interval == self.settings.heartbeat_interval else \
            self.settings.model_copy(update={"heartbeat_interval": interval})
        return RegisterReply(accepted=True, settings=settings, extra=extra).model_dump(mode="json")

    async def _on_heartbeat(self, env: Envelope) -> dict[str, Any]:
        hb = env.payload
        assert isinstance(hb, Heartbeat)
        rec = self._children.get(bare(env.sender))
        if rec is None:
            raise HandlerError(UNKNOWN_CHILD)
        rec.seq, rec.digest = hb.seq, hb.digest
        interval = self.heartbeat_interval_now()
        self._follow(rec, interval, time.monotonic() - rec.last_seen_monotonic)
        # A heartbeat sent before the child's session closed can arrive after its "unavailable": only a new
        # session (presence) or a registration clears that suspicion.
        self._heard(rec, time.time(), time.monotonic(), keep_presence_suspicion=True)
        for listener in self._heartbeat_listeners:   # sync and cheap (node trust): no task per heartbeat
            try:
                listener(rec, rec.last_seen_monotonic, self.lag_credited)
            except Exception:
                self.agent.log.exception("heartbeat listener %r failed", listener)
        return HeartbeatAck(seq=hb.seq, interval=interval).model_dump()

    def _heard(self, rec: ChildRecord, now: float, mono: float, *, keep_presence_suspicion: bool = False) -> None:
        rec.last_heartbeat, rec.last_seen_monotonic = now, mono
        if rec.suspect_reason == REASON_PRESENCE and keep_presence_suspicion:
            return
        rec.suspected_at = rec.suspect_reason = None
        if not rec.alive:
            self._mark_recovered(rec)

    def _on_presence(self, jid: str, available: bool) -> None:
        rec = self._children.get(jid)
        if rec is None or not rec.alive:
            return
        if available:
            if rec.suspect_reason == REASON_PRESENCE:   # back under a new session before we confirmed
                rec.suspected_at = rec.suspect_reason = None
            now = time.monotonic()
            if now < self._outage_until:
                # Back online after the outage (maybe after us): a full liveness period to register and
                # heartbeat from now, whatever its reconnect backoff was.
                rec.last_seen_monotonic = max(rec.last_seen_monotonic, now)
            return
        if not self.agent.connected or time.monotonic() < self._outage_until:
            # Our own connection is going down or just came back: the server's view of who is online says
            # nothing about the children now (bus outage); heartbeats decide.
            self.presences_ignored += 1
            self.agent.log.info("presence of %s unavailable during a bus outage: not counted", rec.agent_id)
            return
        rec.session_ended = True
        self._suspect(rec, REASON_PRESENCE, time.monotonic())

    def _on_disconnected(self) -> None:
        # A graceful server stop sends "unavailable" for everybody just before it closes our stream: those
        # suspicions were the outage, not the children.
        self.outages += 1
        for rec in self._children.values():
            rec.session_ended = False
            if rec.suspect_reason == REASON_PRESENCE:
                rec.suspected_at = rec.suspect_reason = None

    def _on_reconnected(self) -> None:
        # The children lost the server too and must reconnect before they can heartbeat again: each gets a
        # full liveness period from now (like Kubernetes' node controller after a full disruption), not what
        # was left of its period when the outage began.
        now = time.monotonic()
        self._outage_until = now + self.reconnect_allowance
        for jid, rec in self._children.items():
            rec.last_seen_monotonic = max(rec.last_seen_monotonic, self._outage_until)
            rec.suspected_at = rec.suspect_reason = None
            self.agent.subscribe_presence(jid)   # the roster survives, but be explicit after a server restart

    async def _watch(self) -> None:
        tick = max(self.settings.heartbeat_interval / 4, 0.02)
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            elapsed, last = now - last, now
            if not self.agent.connected:
                # Cut off from the XMPP server we hear nobody: that says nothing about the children, which go
                # on running their work (Kubernetes likewise stops evicting when it loses every node at once).
                self._extend_deadlines(elapsed)
                continue
            if elapsed - tick > LAG_EPSILON:
                self._credit_stall(elapsed - tick, tick)
            self._check(now)

    def _check(self, now: float) -> None:
        misses = self.settings.liveness_misses
        base = self.settings.heartbeat_interval
        for rec in self._children.values():
            if rec.alive and rec.suspected_at is None and \
                    rec.last_seen_monotonic < now - misses * max(rec.interval, base):
                self._suspect(rec, f"missed {misses} heartbeats", now)
        due = [rec for rec in self._children.values() if rec.alive and rec.suspected_at is not None
               and now - rec.suspected_at >= self._confirm_delay(rec)]
        if due:
            self._declare(due, now)
        self._check_disruption(now)

    def _confirm_delay(self, rec: ChildRecord) -> float:
        """How long a suspicion waits before the child is declared lost: for presence, time for our own
        disconnect to show (a server going down); for heartbeats, two intervals, so children that fell silent
        together (heartbeating in different phases of the interval) are judged together (full disruption)."""
        if rec.suspect_reason == REASON_PRESENCE:
            return self.presence_grace
        return 2 * max(rec.interval, self.settings.heartbeat_interval)

    def _credit_stall(self, stalled: float, tick: float) -> None:
        """This agent's own loop was late (a GC pause, a blocking call, a starved or suspended process) and
        could not hear any heartbeat meanwhile: that time does not count against the children. Without this,
        one long pause of the parent declares every child lost at once and relocates everything they run."""
        self.lag_credited += stalled
        self._extend_deadlines(stalled)
        if stalled > tick:
            self.stalls += 1
        if stalled > self.settings.heartbeat_interval:
            self.agent.log.warning("event loop stalled for %.2fs; children's liveness deadlines moved by as much",
                                   stalled)

    def _extend_deadlines(self, seconds: float) -> None:
        for rec in self._children.values():
            rec.last_seen_monotonic += seconds
            if rec.suspected_at is not None:
                rec.suspected_at += seconds
        if self.disruption_since is not None:
            self.disruption_since += seconds

    # -- state changes -----------------------------------------------------------------------------
    def _suspect(self, rec: ChildRecord, reason: str, now: float) -> None:
        if rec.suspected_at is None:
            rec.suspected_at, rec.suspect_reason = now, reason
            self.agent.log.info("child suspected: %s (%s)", rec.agent_id, reason)

    def _disrupted(self) -> tuple[int, int]:
        """(lost, total) when the lost and suspected children are a full disruption, else (0, total)."""
        total = len(self._children)
        lost = sum(1 for c in self._children.values() if not c.alive or c.suspected_at is not None)
        if total >= self.disruption_min_children and lost >= self.disruption_fraction * total:
            return lost, total
        return 0, total

    def _declare(self, recs: list[ChildRecord], now: float) -> None:
        for rec in recs:
            rec.alive, rec.lost_reason = False, rec.suspect_reason or "lost"
            rec.suspected_at = rec.suspect_reason = None
        lost, total = self._disrupted()
        if lost and self.disruption_since is None and not self._disruption_expired:
            self.disruption_since = now
            self.disruptions += 1
            self._event(f"full disruption: {lost} of {total} children lost at once; suspecting this agent's own "
                        f"connectivity, relocating nothing until they are back or for "
                        f"{self.disruption_limit:g}s", outcome="error",
                        inputs={"lost": sorted(c.agent_id for c in self._children.values() if not c.alive),
                                "children": total, "fraction": self.disruption_fraction})
        for rec in recs:
            if self.disruption_since is not None:
                rec.held = True
                self.agent.log.warning("child unreachable during a full disruption: %s (%s); not declared lost",
                                       rec.agent_id, rec.lost_reason)
            else:
                self._mark_lost(rec, rec.lost_reason or "lost")

    def _check_disruption(self, now: float) -> None:
        if self.disruption_since is None:
            if self._disruption_expired and not self._disrupted()[0]:
                self._disruption_expired = False
            return
        held = [c for c in self._children.values() if c.held]
        lost, total = self._disrupted()
        if not lost:
            for rec in held:   # the others are back: these get a full liveness period from now
                rec.held, rec.alive, rec.lost_reason = False, True, None
                rec.last_seen_monotonic = now
            self._event(f"full disruption over after {now - self.disruption_since:.1f}s: children back; "
                        f"{len(held)} still silent get a full liveness period", inputs={
                            "silent": sorted(c.agent_id for c in held), "children": total})
            self.disruption_since = None
        elif now - self.disruption_since >= self.disruption_limit:
            self._event(f"full disruption lasted {self.disruption_limit:g}s: declaring {len(held)} children lost",
                        outcome="error", inputs={"lost": sorted(c.agent_id for c in held), "children": total})
            self.disruption_since = None
            self._disruption_expired = True
            for rec in held:
                rec.held = False
                self._mark_lost(rec, f"{rec.lost_reason} (full disruption past {self.disruption_limit:g}s)")

    def _event(self, reason: str, **kw: Any) -> None:
        self.agent.log.warning("%s", reason)
        record = getattr(self.agent, "record_event", None)
        if callable(record):
            try:
                record(reason, **kw)
            except Exception:
                self.agent.log.exception("could not record a membership event")

    def _mark_lost(self, rec: ChildRecord, reason: str) -> None:
        rec.alive, rec.lost_reason = False, reason
        self.agent.log.warning("child lost: %s (%s)", rec.agent_id, reason)
        self._notify(self._lost, rec, reason)

    def _mark_recovered(self, rec: ChildRecord) -> None:
        held, rec.held = rec.held, False
        rec.alive, rec.lost_reason = True, None
        if held:   # never declared lost: nothing to undo
            self.agent.log.info("child back after a full disruption: %s", rec.agent_id)
            return
        self.agent.log.info("child recovered: %s", rec.agent_id)
        self._notify(self._recovered, rec)

    def _notify(self, listeners: list[ChildListener], *args: Any) -> None:
        for listener in list(listeners):
            self.agent.spawn(self._call(listener, *args), name=f"membership-{listener.__name__}")

    async def _call(self, listener: ChildListener, *args: Any) -> None:
        try:
            await _maybe_await(listener(*args))
        except Exception:
            self.agent.log.exception("membership listener %r failed", listener)


class ChildMembership:
    """Child side: register (retrying with backoff until accepted), then heartbeat at the interval the
    parent sent. Re-registers on ``unknown child``, after a reconnect and when the parent comes back."""

    def __init__(
        self,
        agent: MLSysOpsAgent,
        parent_jid: str,
        *,
        role: Role | str,
        description: dict[str, Any] | Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None,
        digest: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None,
        capabilities: list[str] | None = None,
        register_timeout: float = 2.0,
        backoff: float = 0.2,
        backoff_max: float = 5.0,
    ) -> None:
        self.agent = agent
        self.parent_jid = bare(parent_jid)
        self.role = Role(role)
        self._description = description or {}
        self._digest = digest
        self.capabilities = list(capabilities or [])
        self.register_timeout = register_timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.settings: MembershipSettings | None = None
        self.registrations = 0
        self._connected = False
        self._paused = False
        self._seq = 0
        self._misses = 0
        self._reregister = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._parent_seen_unavailable = False
        self._parent_subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._registered_listeners: list[Callable[[RegisterReply], Awaitable[None] | None]] = []
        agent.on_presence(self._on_presence)
        agent.on_reconnected(self._on_reconnected)

    # -- public API --------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Registered and the parent answered recently."""
        return self._connected

    def on_registered(self, listener: Callable[[RegisterReply], Awaitable[None] | None]) -> None:
        self._registered_listeners.append(listener)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.agent.spawn(self._run(), name="membership-child")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._set_connected(False)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._connected_event.wait(), timeout)

    def request_reregister(self, why: str = "requested") -> None:
        self.agent.log.info("re-registering with %s: %s", self.parent_jid, why)
        self._set_connected(False)
        self._reregister.set()

    def pause(self) -> None:
        """Stop heartbeating while staying connected (simulates a hung agent; diagnostics/tests)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    # -- loop --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._register_until_accepted()
            await self._heartbeat_until_reregister()

    async def _register_until_accepted(self) -> None:
        delay = self.backoff
        while True:
            self._reregister.clear()
            try:
                await self._subscribe_to_parent()
                body = RegisterRequest(role=self.role, agent_id=self.agent.agent_id,
                                       description=await self._value(self._description) or {},
                                       capabilities=self.capabilities)
                reply = await self._request_unless_reregistered(body)
                if reply is None:        # the parent came back meanwhile: register again at once
                    delay = self.backoff
                    continue
                result = reply.payload
                assert isinstance(result, RegisterReply)
                if result.accepted and result.settings is not None:
                    self.settings = result.settings
                    self.registrations += 1
                    self._misses = 0
                    self._set_connected(True)
                    self.agent.log.info("registered with %s (heartbeat %.2fs)", self.parent_jid,
                                        result.settings.heartbeat_interval)
                    for listener in list(self._registered_listeners):
                        self.agent.spawn(_maybe_await(listener(result)), name="membership-registered")
                    return
                self.agent.log.warning("registration refused by %s: %s", self.parent_jid, result.reason)
            except RequestError as exc:
                self.agent.log.info("registration with %s failed: %s", self.parent_jid, exc)
            except Exception:
                self.agent.log.exception("registration with %s crashed", self.parent_jid)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _request_unless_reregistered(self, body: RegisterRequest) -> Envelope | None:
        """The register request, abandoned (None) when a re-register is asked for while it waits: a
        request sent while the parent was offline (both reconnecting after a server outage) gets no answer,
        and waiting out its timeout once the parent is back would cost the child its liveness there."""
        request = asyncio.ensure_future(self.agent.request(self.parent_jid, Kind.REGISTER, body,
                                                           timeout=self.register_timeout, retries=0))
        # when this wait is cancelled (the agent stops), the request still ends, failing: its exception is
        # taken here so it is not reported as "never retrieved" (the normal path reads it with result())
        request.add_done_callback(lambda f: f.cancelled() or f.exception())
        again = asyncio.ensure_future(self._reregister.wait())
        try:
            await asyncio.wait({request, again}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            again.cancel()
        if request.done():
            return request.result()
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        return None

    async def _subscribe_to_parent(self) -> None:
        """Subscribe to the parent's presence *before* registering: the parent subscribes to ours when
        it accepts us, and pyjabber corrupts both roster entries when two subscriptions cross."""
        if self._parent_subscribed:
            return
        self.agent.subscribe_presence(self.parent_jid)
        try:
            await self.agent.wait_subscribed(self.parent_jid, timeout=self.register_timeout)
            self._parent_subscribed = True
        except TimeoutError:
            self.agent.log.info("parent %s has not approved presence yet", self.parent_jid)

    async def _heartbeat_until_reregister(self) -> None:
        assert self.settings is not None
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._reregister.is_set():
            interval = self.settings.heartbeat_interval   # the parent may change it in an ack
            if not self._paused:
                self._seq += 1
                self.agent.spawn(self._heartbeat(self._seq, interval), name="membership-heartbeat")
            next_at += interval
            next_at = max(next_at, loop.time())  # never burst to catch up
            try:
                await asyncio.wait_for(self._reregister.wait(), timeout=next_at - loop.time())
            except TimeoutError:
                pass

    async def _heartbeat(self, seq: int, interval: float) -> None:
        assert self.settings is not None
        try:
            digest = await self._value(self._digest) if self._digest else {}
            reply = await self.agent.request(self.parent_jid, Kind.HEARTBEAT,
                                             Heartbeat(seq=seq, digest=digest or {}),
                                             timeout=interval * self.settings.liveness_misses, retries=0)
            self._misses = 0
            ack = reply.payload
            if isinstance(ack, HeartbeatAck) and ack.interval and ack.interval != self.settings.heartbeat_interval:
                self.agent.log.info("heartbeat interval %.2fs -> %.2fs (told by %s)",
                                    self.settings.heartbeat_interval, ack.interval, self.parent_jid)
                self.settings = self.settings.model_copy(update={"heartbeat_interval": ack.interval})
        except RequestFailed as exc:
            if exc.reason.startswith("unknown child"):
                self.request_reregister(exc.reason)
            else:
                self.agent.log.warning("heartbeat %d refused: %s", seq, exc.reason)
        except RequestError:
            if not self.agent.connected:
                return   # our own outage, not the parent's silence (we re-register after reconnecting)
            self._misses += 1
            if self._misses >= self.settings.liveness_misses and self._connected:
                self.request_reregister(f"parent silent for {self._misses} heartbeats")

    # -- signals -----------------------------------------------------------------------------------
    def _on_presence(self, jid: str, available: bool) -> None:
        if jid != self.parent_jid:
            return
        if not available:
            self._parent_seen_unavailable = True
        elif self._parent_seen_unavailable:
            self._parent_seen_unavailable = False
            if self._task is not None:
                self.request_reregister("parent is back")

    def _on_reconnected(self) -> None:
        # The parent may still be offline (both reconnecting after an outage): its next available presence
        # means "registering now will be heard", so re-register then too instead of waiting out a timeout.
        self._parent_seen_unavailable = True
        if self._task is not None:
            self.request_reregister("reconnected")

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        if value:
            self._connected_event.set()
        else:
            self._connected_event.clear()

    @staticmethod
    async def _value(source: Any) -> Any:
        return await _maybe_await(source()) if callable(source) else source
