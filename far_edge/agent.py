"""The far-edge agent: a node agent for boards, on slixmpp and the standard library only.

Toward its cluster it speaks what the node agent speaks (`agents/wire.py` frames, the same bodies): it
subscribes to the cluster's presence, registers (`register`, role ``far_edge``), heartbeats at the interval
the cluster sends back (with a status digest), reports its components' instance states
(`status.report`, a delta at once and a full one every report interval) and a telemetry digest
(`telemetry.report`, rows ``[metric, labels, last, min, max, mean, count]``), and answers `config.update`,
`node.knob` and `ping`. Requests are taken from its cluster only (the `from_parent` rule of
`agents/authorization.py`); anything else is answered FAILURE with the reason.

Edge autonomy: losing the cluster or the XMPP server changes nothing on the board. The agent reconnects
with capped, jittered exponential backoff, re-registers when the cluster is back, and meanwhile keeps its
components running under its local rules (`rules.py`) and keeps what it owes the cluster in bounded
buffers (`outbox.py`): when it is registered again it sends the instance states that changed, a full
report and the buffered digests, and the heartbeat digest says how much was dropped, if anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable
from typing import Any

from mlsysops.agents.slixmpp_lite import JID, ClientXMPP  # slixmpp without pygments (~3 MB)
from mlsysops.agents.wire import (
    MAX_DIGEST_BYTES,
    REPLY_PERFORMATIVES,
    Frame,
    Kind,
    Performative,
    ProtocolError,
    Role,
    decode_frame,
    digest_size,
    encode_text,
    metadata,
    new_id,
)
from mlsysops.far_edge import handlers
from mlsysops.far_edge.components import Component, Supervisor
from mlsysops.far_edge.handlers import RequestFailed, finite_number
from mlsysops.far_edge.hostmetrics import HostMetrics
from mlsysops.far_edge.outbox import Outbox
from mlsysops.far_edge.rules import LocalRules
from mlsysops.far_edge.stanza import metadata_form, read_metadata
from mlsysops.mechanisms.cpufreq import DEFAULT_ROOT, CpuFrequencyMechanism
from mlsysops.mechanisms.knob_gate import PermittedKnob

log = logging.getLogger("mlsysops.far_edge")

UNKNOWN_CHILD = "unknown child"
KNOWN_KINDS = frozenset(k.value for k in Kind)
DIGEST_ROWS_PER_PART = 200


def _bare(jid: Any) -> str:
    return JID(str(jid)).bare.lower()


class FarEdgeAgent(ClientXMPP):
    def __init__(self, jid: str, password: str, *, parent: str, node: str | None = None,
                 components: list[Component] | None = None, server: str | None = None, port: int = 5222,
                 description: dict[str, Any] | None = None, permitted_actions: list[str] | None = None,
                 monitor_interval: float = 1.0, report_interval: float = 5.0, register_timeout: float = 2.0,
                 backoff: float = 0.2, backoff_max: float = 5.0, telemetry_buffer: int = 120,
                 event_buffer: int = 200, cpufreq_root: str | None = None, proc: str = "/proc",
                 sys: str = "/sys", verify_tls: bool = True) -> None:
        super().__init__(jid, password)
        if not verify_tls:   # a slice's own server with a self-signed certificate (as SPADE agents accept)
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE
        self.parent = _bare(parent)
        self.node = node or JID(jid).user
        self.agent_id = self.node
        self.xmpp_host = server or JID(jid).host
        self.port = port
        self.description = description or {"name": self.node}
        self.permitted_actions = sorted(permitted_actions or [])
        self.monitor_interval, self.report_interval = monitor_interval, report_interval
        self.register_timeout, self.backoff, self.backoff_max = register_timeout, backoff, backoff_max
        self.heartbeat_interval, self.liveness_misses = 1.0, 3
        self.mode = "heuristic"
        self.wanted_metrics: list[str] = []
        self.host = HostMetrics(proc, sys)
        self.outbox = Outbox(telemetry_buffer, event_buffer)
        self.supervisor = Supervisor(components or [], self._on_component)
        cpufreq = CpuFrequencyMechanism(cpufreq_root or DEFAULT_ROOT)
        self.knobs: dict[str, Any] = {"cpu_frequency": cpufreq}
        self._gates = {name: PermittedKnob(m, name, self.permitted_actions, self.node) for name, m in self.knobs.items()}
        self.rules = LocalRules(self)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=500)
        # connection and membership state
        self.session_up = False
        self.registered = False
        self.registrations = 0
        self.reconnects = 0
        self.refused: dict[tuple[str, str], int] = {}
        self.invalid = 0
        self._stopping = False
        self._seq = 0
        self._misses = 0
        self._pending: dict[str, tuple[str, asyncio.Future[Frame]]] = {}
        self._replies: OrderedDict[tuple[str, str], tuple[str, Performative, dict[str, Any]]] = OrderedDict()
        self._session = asyncio.Event()
        self._reregister = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._conn_event = asyncio.Event()
        self._parent_seen_down = False
        self._offline_since: float | None = time.monotonic()
        self.offline_seconds = 0.0
        self._samples: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
        self._window_start = time.time()
        self._last_metrics: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self.auto_authorize = None      # we approve subscriptions ourselves (same domain only)
        self.auto_subscribe = False
        for event, handler in (("session_start", self._on_session_start), ("disconnected", self._on_disconnected),
                               ("connection_failed", self._on_connection_failed),
                               ("failed_all_auth", self._on_connection_failed), ("message", self._on_message),
                               ("presence_subscribe", self._on_subscribe),
                               ("presence_subscribed", self._on_subscribed),
                               ("presence_available", lambda p: self._on_presence(p, True)),
                               ("presence_unavailable", lambda p: self._on_presence(p, False))):
            self.add_event_handler(event, handler)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self, timeout: float | None = None) -> None:
        """Connect, start the components and the loops. With `timeout`, wait that long for the session."""
        self._stopping = False
        self.connect(host=self.xmpp_host, port=self.port)
        await self.supervisor.start_all()
        self._spawn(self._membership(), "membership")
        self._spawn(self._monitor(), "monitor")
        if timeout is not None:
            await asyncio.wait_for(self._session.wait(), timeout)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        await self.supervisor.stop_all()
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RequestFailed("agent stopping"))
        if self.session_up:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.disconnect(), 5.0)
        self.cancel_connection_attempt()
        self.abort()
        self.session_up = self.registered = False

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"far-edge-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("[%s] task %s failed: %r", self.node, task.get_name(), task.exception(),
                      exc_info=task.exception())

    # -- connection ----------------------------------------------------------------------------------
    def _on_session_start(self, _event: Any) -> None:
        self.session_up = True
        self.send_presence(ppriority=0)   # pyjabber routes to the stale priority-0 resource otherwise
        self._subscribed.clear()
        self._session.set()
        self._conn_event.set()
        self._reregister.set()            # a new session: register again (the cluster may not know us)
        log.info("[%s] connected to %s:%d", self.node, self.xmpp_host, self.port)

    def _on_connection_failed(self, _event: Any) -> None:
        self._conn_event.set()

    def _on_disconnected(self, reason: Any) -> None:
        was = self.session_up
        self.session_up = False
        self._session.clear()
        self._conn_event.set()
        self._set_registered(False)
        if self._stopping:
            return
        if was:
            log.warning("[%s] disconnected (%s); reconnecting", self.node, reason)
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = self.backoff
        while not self._stopping and not self.session_up:
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.backoff_max)
            if self._stopping or self.session_up:
                return
            self._conn_event.clear()
            self.connect(host=self.xmpp_host, port=self.port)
            try:
                await asyncio.wait_for(self._conn_event.wait(), timeout=10.0)
            except TimeoutError:
                self.abort()
            if self.session_up:
                self.reconnects += 1
                return
            self.cancel_connection_attempt()

    # -- presence ------------------------------------------------------------------------------------
    def _on_subscribe(self, presence: Any) -> None:
        peer = presence["from"]
        ok = peer.domain == self.boundjid.domain
        self.send_presence(pto=peer.bare, ptype="subscribed" if ok else "unsubscribed")

    def _on_subscribed(self, presence: Any) -> None:
        if _bare(presence["from"]) == self.parent:
            self._subscribed.set()

    def _on_presence(self, presence: Any, available: bool) -> None:
        if _bare(presence["from"]) != self.parent or (not available and not presence["from"].resource):
            return
        if available:   # its presence reaches us only through a subscription (prosody does not re-approve one)
            self._subscribed.set()
        if not available:
            self._parent_seen_down = True
            self._set_registered(False)
            log.info("[%s] cluster %s went offline", self.node, self.parent)
        elif self._parent_seen_down:
            self._parent_seen_down = False
            self._reregister.set()

    # -- membership ----------------------------------------------------------------------------------
    def _set_registered(self, value: bool) -> None:
        if value == self.registered:
            return
        self.registered = value
        now = time.monotonic()
        if value:
            if self._offline_since is not None:
                self.offline_seconds += now - self._offline_since
            self._offline_since = None
        else:
            self._offline_since = now

    async def _membership(self) -> None:
        while not self._stopping:
            await self._session.wait()
            self._reregister.clear()
            if not await self._register():
                continue
            await self._flush_outbox()
            await self._heartbeats()

    async def _register(self) -> bool:
        delay = self.backoff
        while self.session_up and not self._stopping:
            self._reregister.clear()
            try:
                if not self._subscribed.is_set():
                    self.send_presence(pto=self.parent, ptype="subscribe")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._subscribed.wait(), self.register_timeout)
                reply = await self.request(Kind.REGISTER, {"role": Role.FAR_EDGE.value, "agent_id": self.agent_id,
                                                           "description": self.description, "capabilities": []},
                                           timeout=self.register_timeout)
                body = reply.body
                settings = body.get("settings") or {}
                interval, misses = settings.get("heartbeat_interval"), settings.get("liveness_misses")
                interval = finite_number(interval)
                if body.get("accepted") is True and interval is not None and interval > 0 \
                        and isinstance(misses, int) and not isinstance(misses, bool) and misses >= 1:
                    self.heartbeat_interval, self.liveness_misses = interval, misses
                    report = finite_number((body.get("extra") or {}).get("status_report"))
                    if report is not None and report > 0:
                        self.report_interval = report
                    self.registrations += 1
                    self._misses = 0
                    self._set_registered(True)
                    log.info("[%s] registered with %s (heartbeat %.2fs)", self.node, self.parent, interval)
                    return True
                log.warning("[%s] registration refused or malformed: %s", self.node, body)
            except (RequestFailed, TimeoutError) as exc:
                log.info("[%s] registration with %s failed: %s", self.node, self.parent, exc or "no answer")
            try:   # the backoff ends early when the cluster's presence comes back (or a new session starts)
                await asyncio.wait_for(self._reregister.wait(), delay * random.uniform(0.8, 1.0))
                delay = self.backoff
            except TimeoutError:
                delay = min(delay * 2, self.backoff_max)
        return False

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.registered and not self._reregister.is_set():
            self._seq += 1
            self._spawn(self._heartbeat(self._seq), "heartbeat")
            next_at = max(next_at + self.heartbeat_interval, loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reregister.wait(), timeout=next_at - loop.time())
        self._set_registered(False)

    async def _heartbeat(self, seq: int) -> None:
        try:
            reply = await self.request(Kind.HEARTBEAT, {"seq": seq, "digest": self.digest()},
                                       timeout=self.heartbeat_interval * self.liveness_misses)
            self._misses = 0
            interval = finite_number((reply.body or {}).get("interval"))
            if interval is not None and interval > 0:   # sparse heartbeats: the cluster stretches the interval
                self.heartbeat_interval = interval
        except RequestFailed as exc:
            if exc.reason.startswith(UNKNOWN_CHILD):
                self._set_registered(False)
                self._reregister.set()
            else:
                log.warning("[%s] heartbeat %d refused: %s", self.node, seq, exc.reason)
        except TimeoutError:
            self._misses += 1
            if self._misses >= self.liveness_misses and self.registered:
                log.warning("[%s] cluster silent for %d heartbeats: re-registering", self.node, self._misses)
                self._set_registered(False)
                self._reregister.set()

    def digest(self) -> dict[str, Any]:
        """The status digest every heartbeat carries (kept below the protocol's digest limit)."""
        m = self._last_metrics
        comps = self.supervisor.components.values()
        out: dict[str, Any] = {
            "cpu": _round(m.get("system.cpu.utilization")), "mem": _round(m.get("system.memory.utilization")),
            "running": sum(1 for c in comps if c.state == "running"),
            "restarts": sum(c.restarts for c in comps), "far_edge": True,
            "offline_s": round(self.offline_seconds, 1), "pending": self.outbox.pending(),
        }
        if "hw.power" in m:
            out["power_w"] = _round(m["hw.power"])
        dropped = self.outbox.dropped()
        if dropped:
            out["dropped"] = dropped
        if self.decisions:
            out["last_decision"] = self.decisions[-1]["reason"][:300]
        if digest_size(out) > MAX_DIGEST_BYTES:
            out.pop("last_decision", None)
        return out

    # -- reports -------------------------------------------------------------------------------------
    def _instance(self, view: dict[str, Any]) -> dict[str, Any]:
        return {"instance_id": view["instance_id"], "app": view["app"], "component": view["component"],
                "node": self.node, "status": view["state"], "since": view["since"], "reason": view["reason"]}

    def _on_component(self, comp: Component) -> None:
        view = comp.view()
        if self.registered:
            self._spawn(self._send_status([view], full=False), "status")
        else:
            self.outbox.instance_changed(view)

    async def _send_status(self, views: list[dict[str, Any]], *, full: bool) -> None:
        body = {"source": self.agent_id, "full": full, "instances": [self._instance(v) for v in views],
                "components": []}
        self.send_frame(Kind.STATUS_REPORT, Performative.INFORM, body)

    async def _flush_outbox(self) -> None:
        """Registered again: what changed meanwhile, what runs now, then the digests it could not send."""
        changed = self.outbox.take_states()
        if changed:
            await self._send_status(changed, full=False)
        await self._send_status([c.view() for c in self.supervisor.components.values()
                                 if c.state in ("starting", "running")], full=True)
        backlog = self.outbox.telemetry.drain()
        for body in backlog:
            self.send_frame(Kind.TELEMETRY_REPORT, Performative.INFORM, body)
        events = self.outbox.events.drain()
        if changed or backlog or events:
            self.decide("reconnect", f"registered again: sent {len(changed)} state change(s), "
                        f"{len(backlog)} buffered digest(s); {len(events)} local decision(s) taken offline",
                        inputs={"dropped": self.outbox.dropped(), "offline_s": round(self.offline_seconds, 1)})

    def _record(self, metric: str, labels: dict[str, str], value: float) -> None:
        self._samples.setdefault((metric, tuple(sorted(labels.items()))), []).append(float(value))

    def _digest_bodies(self, now: float) -> list[dict[str, Any]]:
        rows = [[metric, dict(labels), _r(v[-1]), _r(min(v)), _r(max(v)), _r(sum(v) / len(v)), len(v)]
                for (metric, labels), v in self._samples.items() if v]
        self._samples.clear()
        window = max(now - self._window_start, self.monitor_interval, 1e-3) * 1.5
        self._window_start = now
        parts = [rows[i:i + DIGEST_ROWS_PER_PART] for i in range(0, len(rows), DIGEST_ROWS_PER_PART)] or [[]]
        return [{"v": 1, "source": self.agent_id, "node": self.node, "t": now, "window": window, "part": i,
                 "parts": len(parts), "series": part} for i, part in enumerate(parts)]

    async def _monitor(self) -> None:
        last_report = 0.0
        while True:
            try:
                now = time.time()
                self.supervisor.poll()
                metrics = self.host.sample()
                self._last_metrics = metrics
                for name, value in metrics.items():
                    self._record(name, {"node": self.node}, value)
                for comp in self.supervisor.components.values():
                    labels = {"node": self.node, "app": comp.app, "component": comp.name,
                              "instance": comp.instance_id}
                    self._record("running", labels, 1.0 if comp.state == "running" else 0.0)
                    cores = comp.cpu_cores()
                    if cores is not None:
                        self._record("cpu_usage_cores", labels, cores)
                await self.rules.run(metrics)
                if now - last_report >= self.report_interval:
                    last_report = now
                    await self._report(now)
            except asyncio.CancelledError:
                raise
            except Exception:   # one bad tick must not end monitoring
                log.exception("[%s] monitor tick failed", self.node)
            await asyncio.sleep(self.monitor_interval)

    async def _report(self, now: float) -> None:
        bodies = self._digest_bodies(now)
        if self.registered:
            await self._send_status([c.view() for c in self.supervisor.components.values()
                                     if c.state in ("starting", "running")], full=True)
            for body in bodies:
                self.send_frame(Kind.TELEMETRY_REPORT, Performative.INFORM, body)
            return
        for body in bodies:
            lost = self.outbox.telemetry.push(body)
            if lost is not None and self.outbox.telemetry.dropped in (1, 10, 100, 1000):
                self.decide("buffer", f"telemetry buffer full ({self.outbox.telemetry.limit} digests): dropped the "
                            f"oldest ({self.outbox.telemetry.dropped} so far)", outcome="error",
                            inputs=self.outbox.pending())

    # -- decisions -----------------------------------------------------------------------------------
    def decide(self, rule: str, reason: str, *, inputs: dict[str, Any] | None = None,
               action: dict[str, Any] | None = None, alternatives: list[str] | None = None,
               outcome: str = "info") -> dict[str, Any]:
        rec = {"ts": time.time(), "agent": self.agent_id, "policy": f"far_edge.{rule}", "reason": reason,
               "inputs": inputs or {}, "chosen": action or {}, "alternatives": alternatives or [],
               "outcome": outcome, "connected": self.registered}
        self.decisions.append(rec)
        if not self.registered:
            lost = self.outbox.events.push(rec)
            if lost is not None and self.outbox.events.dropped in (1, 10, 100, 1000):
                log.warning("[%s] event buffer full: %d dropped", self.node, self.outbox.events.dropped)
        (log.warning if outcome == "error" else log.info)("[%s] %s: %s", self.node, rule, reason)
        return rec

    def permitted(self, action: str) -> bool:
        return action in self.permitted_actions or "*" in self.permitted_actions

    # -- sending -------------------------------------------------------------------------------------
    def send_frame(self, kind: str, performative: Performative, body: dict[str, Any], *,
                   msg_id: str | None = None, reply_to: str | None = None, to: str | None = None) -> str:
        msg_id = msg_id or new_id()
        text = encode_text(msg_id, reply_to, body, kind=str(kind), performative=performative.value)
        if not self.session_up:
            raise RequestFailed("not connected")
        msg = self.make_message(mto=to or self.parent, mbody=text, mtype="chat", mfrom=self.boundjid.bare)   # pyjabber routes only this (SPADE) form
        msg.xml.append(metadata_form(metadata(str(kind), performative)))
        msg.send()
        return msg_id

    async def request(self, kind: str, body: dict[str, Any], *, timeout: float) -> Frame:
        msg_id = new_id()
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (self.parent, fut)
        try:
            self.send_frame(kind, Performative.REQUEST, body, msg_id=msg_id)
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg_id, None)
        if reply.performative in (Performative.FAILURE, Performative.REFUSE):
            raise RequestFailed(str(reply.body.get("reason", "")))
        return reply

    # -- receiving -----------------------------------------------------------------------------------
    def _on_message(self, msg: Any) -> None:
        meta = read_metadata(msg.xml)
        if not meta:
            return   # not an mlsysops message (a chat line, a server notice)
        sender = str(msg["from"])
        try:
            frame = decode_frame(meta, msg["body"], sender, KNOWN_KINDS.__contains__)
        except ProtocolError as exc:
            self.invalid += 1
            log.warning("[%s] invalid message from %s (kind=%s): %s", self.node, sender, exc.kind, exc.reason)
            pending = self._pending.get(exc.reply_to or "")
            if pending is not None and _bare(sender) == pending[0] and not pending[1].done():
                pending[1].set_exception(RequestFailed(f"invalid reply: {exc.reason}"))
            elif exc.performative not in {p.value for p in REPLY_PERFORMATIVES} and self.session_up:
                self._answer(sender, exc.kind or "", exc.msg_id, Performative.FAILURE, {"reason": exc.reason})
            return
        if frame.performative in REPLY_PERFORMATIVES and frame.reply_to is not None:
            pending = self._pending.get(frame.reply_to)
            if pending is not None and _bare(sender) == pending[0] and not pending[1].done() \
                    and frame.performative is not Performative.AGREE:
                pending[1].set_result(frame)
            return
        if frame.performative is not Performative.REQUEST:
            return
        if _bare(sender) != self.parent:   # the from_parent rule: only our cluster commands us
            key = (_bare(sender), frame.kind)
            self.refused[key] = self.refused.get(key, 0) + 1
            if self.refused[key] == 1:
                self.decide("authorization", f"refused {frame.kind} from {key[0]}: not our cluster",
                            inputs={"sender": key[0], "kind": frame.kind}, outcome="error")
            self._answer(sender, frame.kind, frame.id, Performative.FAILURE,
                         {"reason": f"not authorized: {key[0]} may not send {frame.kind}"})
            return
        cached = self._replies.get((_bare(sender), frame.id))
        if cached is not None:       # a retried request: same answer, handler not run twice
            self._answer(sender, cached[0], frame.id, cached[1], cached[2])
            return
        self._spawn(self._handle(sender, frame), f"handle-{frame.kind}")

    async def _handle(self, sender: str, frame: Frame) -> None:
        try:
            body = await self._dispatch(frame)
            perf = Performative.INFORM
        except RequestFailed as exc:
            body, perf = {"reason": exc.reason}, Performative.FAILURE
        except Exception as exc:     # noqa: BLE001 - answered, logged, never fatal
            log.exception("[%s] %s handler crashed", self.node, frame.kind)
            body, perf = {"reason": f"internal error: {type(exc).__name__}: {exc}"}, Performative.FAILURE
        self._replies[(_bare(sender), frame.id)] = (frame.kind, perf, body)
        while len(self._replies) > 256:
            self._replies.popitem(last=False)
        if self.session_up:
            self._answer(sender, frame.kind, frame.id, perf, body)

    def _answer(self, to: str, kind: str, reply_to: str | None, perf: Performative, body: dict[str, Any]) -> None:
        try:
            self.send_frame(kind, perf, body, reply_to=reply_to, to=JID(to).bare)
        except (RequestFailed, ProtocolError) as exc:
            log.warning("[%s] could not answer %s: %s", self.node, kind, exc)

    async def _dispatch(self, frame: Frame) -> dict[str, Any]:
        return await handlers.dispatch(self, frame)


def _r(value: float) -> float:
    return float(f"{value:.6g}")


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
