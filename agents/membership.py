"""Membership between a parent agent and its children: registration, heartbeats, liveness.

Liveness combines two signals:

* XMPP presence: a child that stops or whose connection drops is reported unavailable by the server, and
  the parent marks it lost at once (reason ``"presence: unavailable"``);
* heartbeats: a child that is connected but hung (or partitioned above XMPP) stops heartbeating and is
  marked lost after ``liveness_misses`` intervals (reason ``"missed N heartbeats"``). Time during which the
  parent could not have heard a heartbeat is not counted: its own event loop was frozen, or it was
  disconnected from the XMPP server (an outage of the server is not the loss of every node); after the
  parent reconnects, every child has a full liveness period to reconnect and heartbeat again.

Recovery is level-triggered: a lost child that heartbeats or registers again is *recovered*; a heartbeat
from a child the parent does not know is answered FAILURE ``"unknown child: re-register"``, which is how a
restarted parent re-learns its children. The child re-registers on that failure, after its own reconnect
and when the parent's presence comes back.
"""

from __future__ import annotations

import asyncio
import inspect
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
REASON_PRESENCE = "presence: unavailable"

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
    ) -> None:
        self.agent = agent
        self.settings = MembershipSettings(heartbeat_interval=heartbeat_interval,
                                           liveness_misses=liveness_misses, **(extra_settings or {}))
        self._accept = accept
        self._children: dict[str, ChildRecord] = {}
        self._joined: list[ChildListener] = []
        self._lost: list[ChildListener] = []
        self._recovered: list[ChildListener] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._heartbeat_listeners: list[Callable[[ChildRecord, float, float], None]] = []
        self.stalls = 0   # times the watchdog found its own loop frozen (see _credit_stall)
        self.stalled_seconds = 0.0   # ... and for how long in all
        agent.on(Kind.REGISTER, self._on_register)
        agent.on(Kind.HEARTBEAT, self._on_heartbeat)
        agent.registered_child = lambda jid: norm_jid(jid) in self._children   # the `from_children` rule
        agent.on_presence(self._on_presence)
        agent.on_reconnected(self._on_reconnected)

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

    @property
    def liveness_period(self) -> float:
        return self.settings.heartbeat_interval * self.settings.liveness_misses

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
            rec.last_heartbeat, rec.last_seen_monotonic = now, mono
            if not rec.alive:
                self._mark_recovered(rec)
        self.agent.subscribe_presence(jid)
        return RegisterReply(accepted=True, settings=self.settings, extra=extra).model_dump(mode="json")

    async def _on_heartbeat(self, env: Envelope) -> dict[str, Any]:
        hb = env.payload
        assert isinstance(hb, Heartbeat)
        rec = self._children.get(bare(env.sender))
        if rec is None:
            raise HandlerError(UNKNOWN_CHILD)
        rec.seq, rec.digest = hb.seq, hb.digest
        rec.last_heartbeat, rec.last_seen_monotonic = time.time(), time.monotonic()
        if not rec.alive:
            self._mark_recovered(rec)
        for listener in self._heartbeat_listeners:   # sync and cheap (node trust): no task per heartbeat
            try:
                listener(rec, rec.last_seen_monotonic, self.stalled_seconds)
            except Exception:
                self.agent.log.exception("heartbeat listener %r failed", listener)
        return HeartbeatAck(seq=hb.seq).model_dump()

    def _on_presence(self, jid: str, available: bool) -> None:
        rec = self._children.get(jid)
        if rec is not None and not available and rec.alive:
            self._mark_lost(rec, REASON_PRESENCE)

    def _on_reconnected(self) -> None:
        # The children lost the server too and must reconnect before they can heartbeat again: each gets a
        # full liveness period from now (like Kubernetes' node controller after a full disruption), not what
        # was left of its period when the outage began.
        now = time.monotonic()
        for jid, rec in self._children.items():
            rec.last_seen_monotonic = max(rec.last_seen_monotonic, now)
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
            elif elapsed - tick > tick:
                self._credit_stall(elapsed - tick)
            deadline = now - self.liveness_period
            for rec in list(self._children.values()):
                if rec.alive and rec.last_seen_monotonic < deadline:
                    self._mark_lost(rec, f"missed {self.settings.liveness_misses} heartbeats")

    def _credit_stall(self, stalled: float) -> None:
        """This agent's own loop was frozen (a GC pause, a blocking call, a suspended VM) and could not hear
        any heartbeat meanwhile: that time does not count against the children. Without this, one long
        pause of the parent declares every child lost at once and relocates everything they run."""
        self.stalls += 1
        self.stalled_seconds += stalled
        self._extend_deadlines(stalled)
        if stalled > self.settings.heartbeat_interval:
            self.agent.log.warning("event loop stalled for %.2fs; children's liveness deadlines moved by as much",
                                   stalled)

    def _extend_deadlines(self, seconds: float) -> None:
        for rec in self._children.values():
            rec.last_seen_monotonic += seconds

    # -- state changes -----------------------------------------------------------------------------
    def _mark_lost(self, rec: ChildRecord, reason: str) -> None:
        rec.alive, rec.lost_reason = False, reason
        self.agent.log.warning("child lost: %s (%s)", rec.agent_id, reason)
        self._notify(self._lost, rec, reason)

    def _mark_recovered(self, rec: ChildRecord) -> None:
        rec.alive, rec.lost_reason = True, None
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
        interval = self.settings.heartbeat_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._reregister.is_set():
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
            await self.agent.request(self.parent_jid, Kind.HEARTBEAT,
                                     Heartbeat(seq=seq, digest=digest or {}),
                                     timeout=interval * self.settings.liveness_misses, retries=0)
            self._misses = 0
        except RequestFailed as exc:
            if exc.reason.startswith("unknown child"):
                self.request_reregister(exc.reason)
            else:
                self.agent.log.warning("heartbeat %d refused: %s", seq, exc.reason)
        except RequestError:
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
