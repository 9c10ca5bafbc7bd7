"""MLSysOpsAgent: the SPADE agent every layer builds on.

What it adds to ``spade.agent.Agent`` (SPADE 4.1.4):

* typed request/reply over :mod:`mlsysops.agents.protocol` with ids, retries with the *same* id and an
  idempotency cache on the receiving side (a retried request never runs its handler twice);
* handler registration per kind (``on``), one SPADE behaviour per kind with a ``Template`` on
  ``ontology``+``kind``; invalid messages are answered with FAILURE and never crash anything;
* sender authorization (:mod:`mlsysops.agents.authorization`): every handler has a rule (its kind's, or
  the one given to ``on``), checked before it runs; a refused message is answered with FAILURE ("not
  authorized: ..."), logged once per (sender, kind) and passed to ``on_refused``; a reply counts only
  from the JID the request went to;
* sending from any coroutine; ``force_xmpp=True`` bypasses SPADE's in-process Container shortcut;
* reconnection (SPADE has none): capped exponential backoff, presence re-sent with priority 0
  (pyjabber routing bug), a bounded outbox flushed after reconnect, ``on_reconnected`` hooks;
* presence: subscriptions from the same XMPP domain (the slice) are approved automatically, and
  ``on_presence(jid, available)`` hooks fire on every presence change of a peer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from mlsysops.agents import xmpp_escape
from mlsysops.agents.authorization import Relation, Rule, forged_claim, norm_jid, refusal, rule_for
from mlsysops.agents.protocol import (
    META_KIND,
    META_ONTOLOGY,
    ONTOLOGY,
    Envelope,
    Kind,
    Performative,
    Pong,
    ProtocolError,
    decode,
    encode,
)
from mlsysops.agents.slixmpp_lite import JID
from mlsysops.agents.spade_lite import (
    Agent,
    BaseTemplate,
    CyclicBehaviour,
    DisconnectedException,
    Message,
    Template,
)
from mlsysops.agents.xmpp_tls import TlsVerification

logger = logging.getLogger(__name__)


class _HarmlessSlixmppNoise(logging.Filter):
    """slixmpp warns on the root logger for every roster push that carries RFC 6121's `ask` attribute
    (`Unknown stanza interface: ask`), once per stanza: a pending subscription, nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.getMessage() == "Unknown stanza interface: ask")


logging.getLogger().addFilter(_HarmlessSlixmppNoise())
xmpp_escape.install()   # slixmpp's per-character escape was the largest cost of a large message

REPLY_PERFORMATIVES = frozenset(
    {Performative.INFORM, Performative.FAILURE, Performative.REFUSE, Performative.AGREE}
)

Handler = Callable[[Envelope], Awaitable[dict[str, Any] | BaseModel | None]]
PresenceHook = Callable[[str, bool], Awaitable[None] | None]
ReconnectHook = Callable[[], Awaitable[None] | None]


class HandlerError(Exception):
    """Raise from a handler to answer FAILURE with ``reason`` (an expected, explained failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestError(Exception):
    """Base of request outcomes that are not a successful INFORM."""


class RequestTimeout(RequestError):
    """No reply after all attempts."""


class RequestFailed(RequestError):
    """The peer answered FAILURE (or REFUSE, see :class:`RequestRefused`)."""

    def __init__(self, reason: str, envelope: Envelope | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.envelope = envelope


class RequestRefused(RequestFailed):
    """The peer answered REFUSE."""


class AgentStartError(RuntimeError):
    """The agent could not connect/authenticate in time."""


class _AgentLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Puts the agent id in every record (``record.agent_id``) and in the message text."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("agent_id", self.extra["agent_id"] if self.extra else "?")
        kwargs["extra"] = extra
        return f"[{extra['agent_id']}] {msg}", kwargs


@dataclass
class _HandlerEntry:
    handler: Handler
    performatives: frozenset[Performative]
    allowed: Rule
    urgent: bool = False    # never waits for a handler slot (liveness: a heartbeat must not queue behind work)


@dataclass
class _Pending:
    future: asyncio.Future[Envelope]
    peer: str           # norm_jid of the addressee: the only sender whose reply counts
    agreed: bool = False


MAX_REFUSALS_TRACKED = 1024   # distinct (sender, kind) pairs logged; beyond that refusals are only counted


@dataclass
class _ReplyCache:
    """Replies by (sender bare JID, request id); ``None`` marks a request still being handled."""

    max_size: int = 2048
    ttl: float = 120.0
    _items: OrderedDict[tuple[str, str], tuple[float, Envelope | None]] = field(default_factory=OrderedDict)

    def get(self, key: tuple[str, str]) -> tuple[bool, Envelope | None]:
        self._expire()
        item = self._items.get(key)
        return (False, None) if item is None else (True, item[1])

    def put(self, key: tuple[str, str], reply: Envelope | None) -> None:
        self._items[key] = (time.monotonic() + self.ttl, reply)
        self._items.move_to_end(key)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def discard(self, key: tuple[str, str]) -> None:
        self._items.pop(key, None)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items:
            key, (expires, _) = next(iter(self._items.items()))
            if expires > now:
                break
            self._items.popitem(last=False)


class _KindBehaviour(CyclicBehaviour):
    """Receives every message of one kind (all performatives) and hands it to the agent.

    It sleeps on its mailbox until a message or ``kill()`` arrives: SPADE's ``receive(timeout)`` polls
    (a timer per behaviour every timeout), which at a few hundred agents in one process (a far-edge
    gateway, the scale benchmark's node processes) was most of their CPU; and a message goes into the
    mailbox directly (``MLSysOpsAgent.dispatch``), not through SPADE's two tasks per message (the mailbox is
    unbounded, so a put never waits)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def enqueue(self, message: Message) -> None:   # SPADE's signature; dispatch() bypasses it
        self.queue.put_nowait(message)

    def kill(self, exit_code: Any = None) -> None:
        super().kill(exit_code)
        if self.queue is not None:
            self.queue.put_nowait(None)   # wakes run(), whose loop then sees it was killed

    async def run(self) -> None:
        msg = await self.queue.get()
        if msg is None:
            return
        try:
            self.agent._on_message(msg)
        except Exception:  # never let SPADE kill the behaviour
            self.agent.log.exception("error while dispatching a %s message", self.kind)

    def __str__(self) -> str:
        return f"_KindBehaviour({self.kind})"


class _UnclaimedTemplate(BaseTemplate):
    """Matches mlsysops messages whose kind no behaviour of the agent claims (unknown kinds)."""

    def __init__(self, agent: MLSysOpsAgent) -> None:
        self._agent = agent

    def match(self, message: Message) -> bool:
        return (message.get_metadata(META_ONTOLOGY) == ONTOLOGY
                and message.get_metadata(META_KIND) not in self._agent._kind_behaviours)


def bare(jid: str | JID) -> str:
    return JID(str(jid)).bare


class MLSysOpsAgent(Agent):
    """SPADE agent with the mlsysops protocol, reconnection, presence hooks and idempotent requests."""

    def __init__(
        self,
        jid: str,
        password: str,
        *,
        port: int = 5222,
        agent_id: str | None = None,
        parent: str | None = None,
        force_xmpp: bool = False,
        request_timeout: float = 5.0,
        request_retries: int = 2,
        retry_backoff: float = 0.2,
        retry_backoff_max: float = 2.0,
        reconnect_backoff: float = 0.2,
        reconnect_backoff_max: float = 5.0,
        connect_attempt_timeout: float = 10.0,
        outbox_limit: int = 1000,
        reply_cache_size: int = 2048,
        reply_cache_ttl: float = 120.0,
        max_concurrent_handlers: int = 64,
        tls: TlsVerification | None = None,
    ) -> None:
        super().__init__(jid, password, port=port, verify_security=False)
        # SPADE only knows "verify against the system store" or "verify nothing"; we configure the
        # context ourselves (a CA bundle of the slice, hostname checked) before every connection.
        self.tls = tls or TlsVerification()
        self.agent_id = agent_id or JID(jid).user
        self.parent = parent
        self.force_xmpp = force_xmpp
        self.request_timeout = request_timeout
        self.request_retries = request_retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self.connect_attempt_timeout = connect_attempt_timeout
        self.log = _AgentLog(logger, {"agent_id": self.agent_id})

        self._handlers: dict[str, _HandlerEntry] = {}
        self._kind_behaviours: dict[str, _KindBehaviour] = {}
        self._pending: dict[str, _Pending] = {}
        self._replies = _ReplyCache(max_size=reply_cache_size, ttl=reply_cache_ttl)
        self._outbox: deque[Message] = deque()
        self._outbox_limit = outbox_limit
        self.outbox_dropped = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handler_slots = asyncio.Semaphore(max_concurrent_handlers)
        self._presence_hooks: list[PresenceHook] = []
        self._peer_sessions: dict[str, set[str]] = {}   # bare JID -> resources seen available
        self._reconnect_hooks: list[ReconnectHook] = []
        self._disconnect_hooks: list[ReconnectHook] = []
        self._connected = False
        self._stopping = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._conn_event = asyncio.Event()
        self._subscribed: dict[str, asyncio.Event] = {}
        self._conn_outcome = ""
        self.reconnects = 0
        self.refusals: dict[tuple[str, str], int] = {}   # (sender bare JID, kind) -> messages refused
        self.refusals_untracked = 0
        self.registered_child: Callable[[str], bool] = lambda _jid: False   # set by ParentMembership

        self.add_behaviour(_KindBehaviour("*unclaimed*"), _UnclaimedTemplate(self))
        self.on(Kind.PING, self._handle_ping)

    # ---------------------------------------------------------------------------------------------
    # lifecycle
    # ---------------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the XMPP session is up (SPADE's ``is_alive`` stays True while disconnected)."""
        return self._connected

    async def start_agent(self, timeout: float = 10.0) -> None:
        """``start(auto_register=True)`` bounded by ``timeout`` (SPADE's start never times out)."""
        try:
            await asyncio.wait_for(self.start(auto_register=True), timeout=timeout)
        except TimeoutError:
            self._stopping = True
            if self.client is not None:
                self.client.cancel_connection_attempt()
                self.client.abort()
            tls = f" ({self.tls.describe()})" if self.tls.verify else ""
            raise AgentStartError(
                f"agent {self.jid} could not connect to {self.jid.host}:{self.xmpp_port} within {timeout}s{tls}"
            ) from None
        except DisconnectedException:
            # the server closed the stream before login: with verification on, typically an untrusted
            # certificate (slixmpp aborts the TLS handshake), so say what was checked
            tls = f"; {self.tls.describe()}" if self.tls.verify else ""
            raise AgentStartError(f"agent {self.jid}: {self.jid.host}:{self.xmpp_port} closed the connection "
                                  f"before login{tls}") from None

    async def _hook_plugin_before_connection(self) -> None:
        self._stopping = False

    async def _async_connect(self) -> None:
        if self.client is not None:
            self.client.ssl_context = self.tls.context(self.client.ssl_context)
        await super()._async_connect()

    async def _hook_plugin_after_connection(self) -> None:
        """Runs once per start, right after SPADE's first session is up."""
        client = self.client
        assert client is not None
        client.auto_authorize = None  # we decide (same-domain only), not slixmpp's accept-all default
        client.auto_subscribe = False
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("failed_all_auth", self._on_connection_failed)
        client.add_event_handler("presence_subscribe", self._on_presence_subscribe)
        client.add_event_handler("presence_subscribed", self._on_presence_subscribed)
        client.add_event_handler("roster_update", self._on_roster_update)
        client.add_event_handler("presence_available", self._on_presence_available)
        client.add_event_handler("presence_unavailable", self._on_presence_unavailable)
        client.send_presence(ppriority=0)  # pyjabber: else the stale priority-0 resource wins routing
        self._connected = True
        self.log.info("connected to %s:%d", self.jid.host, self.xmpp_port)

    async def stop(self) -> None:
        """Stop behaviours, handler tasks and reconnection; fail pending requests; disconnect."""
        self._stopping = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self.client is not None:
            self.client.cancel_connection_attempt()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(RequestFailed("agent stopping"))
        for task in list(self._tasks):
            task.cancel()
        try:
            await asyncio.wait_for(super().stop(), timeout=5.0)
        except TimeoutError:
            self.log.warning("disconnect timed out; aborting the stream")
            if self.client is not None:
                self.client.abort()
            self._alive.clear()
        self._connected = False
        if self.container.has_agent(str(self.jid)) and self.container.get_agent(str(self.jid)) is self:
            self.container.unregister(str(self.jid))
        self.log.info("stopped")

    def spawn(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a task owned by the agent: cancelled on stop, exceptions logged."""
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task %s failed: %r", task.get_name(), task.exception(),
                           exc_info=task.exception())

    # ---------------------------------------------------------------------------------------------
    # hooks
    # ---------------------------------------------------------------------------------------------
    def on(self, kind: str | Kind, handler: Handler,
           performatives: Iterable[Performative | str] = (Performative.REQUEST,), *,
           allowed: Rule | None = None, urgent: bool = False) -> None:
        """Handle ``kind`` messages with these performatives, from the senders ``allowed`` lets through
        (default: the kind's rule in ``authorization.RULES``; a kind without one needs ``allowed``). For
        REQUEST the return value is the INFORM reply body; ``HandlerError`` becomes FAILURE with its reason.
        ``urgent``: the handler skips the bounded handler slots (it must be short and never block), so that
        busy handlers of other kinds cannot delay it (heartbeats)."""
        kind = str(kind)
        rule = allowed or rule_for(kind)
        if rule is None:
            raise ValueError(f"no authorization rule for kind {kind!r}: register_rule() it or pass allowed=")
        if kind in self._handlers:
            self.log.warning("replacing handler for kind %s", kind)
        self._handlers[kind] = _HandlerEntry(handler, frozenset(Performative(p) for p in performatives), rule,
                                             urgent)
        self._ensure_kind_behaviour(kind)

    # -- who is who (layers override the slice's view) ------------------------------------------------
    def slice_children(self) -> frozenset[str] | None:
        """The bare JIDs (``norm_jid``) the slice names as this agent's children; ``None``: this agent was
        given no such list (a bare protocol agent of tests and tools), so any sender of its own XMPP domain
        counts. Every layer agent returns a list."""
        return None

    def identity_of(self, sender: str) -> str | None:
        """The name (node, cluster) the slice gives ``sender``, which its bodies must claim; None: unknown."""
        return None

    def relations_of(self, sender: str) -> set[Relation]:
        jid = norm_jid(sender)
        out: set[Relation] = set()
        if self.parent and norm_jid(self.parent) == jid:
            out.add(Relation.PARENT)
        if self.registered_child(jid):
            out.add(Relation.CHILD)
        named = self.slice_children()
        if (jid in named) if named is not None else JID(jid).domain == self.jid.domain.lower():
            out.add(Relation.SLICE_CHILD)
        return out

    def authorize(self, env: Envelope, rule: Rule) -> str | None:
        """None if ``env``'s sender may send it under ``rule``, else the refusal reason."""
        if not rule.allows(self.relations_of(env.sender)):
            return refusal(env.sender, env.kind)
        identity = self.identity_of(env.sender)
        if identity is not None:
            claimed = forged_claim(env.kind, env.body, identity)
            if claimed is not None:
                return refusal(env.sender, env.kind, claimed)
        return None

    def on_refused(self, sender: str, kind: str, reason: str) -> None:
        """Called once per (sender, kind) refused (layers record it where an operator looks)."""

    def on_presence(self, hook: PresenceHook) -> None:
        """``hook(bare_jid, available)`` on every available/unavailable presence of a peer."""
        self._presence_hooks.append(hook)

    def on_reconnected(self, hook: ReconnectHook) -> None:
        """``hook()`` after the session is re-established (not after the first start)."""
        self._reconnect_hooks.append(hook)

    def on_disconnected(self, hook: ReconnectHook) -> None:
        """``hook()`` when the session to the XMPP server drops (not on stop())."""
        self._disconnect_hooks.append(hook)

    def subscribe_presence(self, jid: str) -> None:
        """Ask for ``jid``'s presence (auto-approved by mlsysops agents of the same domain).

        Completion is asynchronous on the server (pyjabber updates its roster in the background and may
        route later messages first); :meth:`wait_subscribed` awaits the approval."""
        if self.client is not None:
            self.client.send_presence(pto=bare(jid), ptype="subscribe")

    async def wait_subscribed(self, jid: str, timeout: float = 5.0) -> None:
        """Wait until ``jid`` approved our presence subscription (TimeoutError otherwise). A subscription
        approved in an earlier session counts: the server's roster says so, or ``jid``'s presence reaches
        us (it only does with a subscription); a server need not answer a repeated request at all."""
        event = self._subscribed.setdefault(bare(jid), asyncio.Event())
        roster = getattr(self.client, "client_roster", None)
        if roster is not None and roster.has_jid(bare(jid)) and roster[bare(jid)]["to"]:
            event.set()
        await asyncio.wait_for(event.wait(), timeout)

    def _ensure_kind_behaviour(self, kind: str) -> None:
        if kind not in self._kind_behaviours:
            behaviour = _KindBehaviour(kind)
            self._kind_behaviours[kind] = behaviour
            self.add_behaviour(behaviour, Template(metadata={META_ONTOLOGY: ONTOLOGY, META_KIND: kind}))

    def _fire(self, hooks: Iterable[Callable[..., Any]], *args: Any) -> None:
        for hook in list(hooks):
            try:
                result = hook(*args)
            except Exception:
                self.log.exception("hook %r failed", hook)
                continue
            if inspect.isawaitable(result):
                self.spawn(result, name=f"hook-{getattr(hook, '__name__', 'hook')}")

    # ---------------------------------------------------------------------------------------------
    # sending
    # ---------------------------------------------------------------------------------------------
    async def send_envelope(self, to: str, env: Envelope) -> None:
        """Encode and send; raises ProtocolError for an invalid or oversized outgoing body."""
        self._deliver(encode(env, to=str(to), sender=str(self.jid)))

    async def inform(self, to: str, kind: str | Kind, body: dict[str, Any] | BaseModel | None = None) -> None:
        """Fire-and-forget INFORM."""
        await self.send_envelope(to, Envelope(kind=str(kind), performative=Performative.INFORM,
                                              body=_as_dict(body)))

    async def request(self, to: str, kind: str | Kind, body: dict[str, Any] | BaseModel | None = None, *,
                      timeout: float | None = None, retries: int | None = None) -> Envelope:
        """Send a REQUEST and wait for its INFORM. ``timeout`` is per attempt; retries re-send the
        same id (idempotent on the receiver). AGREE stops re-sending and keeps waiting."""
        timeout = self.request_timeout if timeout is None else timeout
        retries = self.request_retries if retries is None else retries
        env = Envelope(kind=str(kind), performative=Performative.REQUEST, body=_as_dict(body))
        self._ensure_kind_behaviour(env.kind)
        pending = _Pending(asyncio.get_running_loop().create_future(), norm_jid(to))
        pending.future.add_done_callback(_consume_exception)  # the requester may be cancelled first
        self._pending[env.id] = pending
        try:
            reply = await self._await_reply(to, env, pending, timeout, retries)
        finally:
            self._pending.pop(env.id, None)
        if reply.performative is Performative.FAILURE:
            raise RequestFailed(str(reply.body.get("reason", "")), reply)
        if reply.performative is Performative.REFUSE:
            raise RequestRefused(str(reply.body.get("reason", "")), reply)
        return reply

    async def _await_reply(self, to: str, env: Envelope, pending: _Pending, timeout: float,
                           retries: int) -> Envelope:
        attempt = 0
        while True:
            if attempt == 0 or not pending.agreed:
                await self.send_envelope(to, env)
            done, _ = await asyncio.wait({pending.future}, timeout=timeout)
            if done:
                return pending.future.result()
            if attempt >= retries:
                raise RequestTimeout(
                    f"no reply to {env.kind} request {env.id} from {to} after {attempt + 1} attempt(s) "
                    f"of {timeout}s"
                )
            attempt += 1
            backoff = min(self.retry_backoff * 2 ** (attempt - 1), self.retry_backoff_max)
            done, _ = await asyncio.wait({pending.future}, timeout=backoff)  # a late reply still counts
            if done:
                return pending.future.result()
            self.log.debug("retrying %s request %s to %s (attempt %d)", env.kind, env.id, to, attempt + 1)

    def dispatch(self, msg: Message) -> list[asyncio.Task[Any]]:
        """Hand a received message to the behaviours whose templates match: ours straight into their
        mailbox (SPADE creates two tasks per message and keeps a trace for its web view, which mlsysops
        agents do not serve); any other behaviour the SPADE way."""
        tasks: list[asyncio.Task[Any]] = []
        matched = False
        for behaviour in [b for b in self.behaviours if b.match(msg)]:
            matched = True
            if isinstance(behaviour, _KindBehaviour):
                behaviour.queue.put_nowait(msg)
            else:
                tasks.append(self.submit(behaviour.enqueue(msg)))
        if not matched:
            self.log.debug("no behaviour matched a message from %s", msg.sender)
        return tasks

    def _deliver(self, msg: Message) -> None:
        to = bare(msg.to)
        if not self.force_xmpp and self.container.has_agent(to):
            target = self.container.get_agent(to)
            if target.is_alive():
                target.dispatch(msg)
                return
        if self._connected and self.client is not None:
            msg.prepare(self.client).send()
            return
        if len(self._outbox) >= self._outbox_limit:
            self._outbox.popleft()
            self.outbox_dropped += 1
            self.log.warning("outbox full (%d): dropped the oldest message", self._outbox_limit)
        self._outbox.append(msg)

    def _flush_outbox(self) -> None:
        if self._outbox:
            self.log.info("flushing %d queued message(s)", len(self._outbox))
        while self._outbox and self._connected and self.client is not None:
            self._outbox.popleft().prepare(self.client).send()

    # ---------------------------------------------------------------------------------------------
    # receiving
    # ---------------------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        try:
            env = decode(msg)
        except ProtocolError as exc:
            self._on_invalid(exc)
            return
        if env.performative in REPLY_PERFORMATIVES and env.reply_to is not None:
            self._on_reply(env)
            return
        if env.performative is Performative.FAILURE and Performative.FAILURE not in self._performatives(env):
            self.log.warning("%s reports a failure not tied to a request: %s",
                             env.sender, env.body.get("reason"))
            return
        entry = self._handlers.get(env.kind)
        key = (bare(env.sender), env.id)
        if env.performative is Performative.REQUEST:
            seen, cached = self._replies.get(key)
            if seen:
                if cached is not None:
                    self.log.debug("duplicate %s request %s: resending cached reply", env.kind, env.id)
                    self._send_reply(env.sender, cached)
                return
        if entry is None or env.performative not in entry.performatives:
            if env.performative is Performative.REQUEST:
                reply = env.failure(f"no handler for {env.kind}/{env.performative.value}")
                self._replies.put(key, reply)
                self._send_reply(env.sender, reply)
            else:
                self.log.debug("dropping unhandled %s/%s from %s",
                               env.kind, env.performative.value, env.sender)
            return
        denied = self.authorize(env, entry.allowed)
        if denied is not None:
            self._refuse(env, denied)
            return
        if env.performative is Performative.REQUEST:
            self._replies.put(key, None)
        self.spawn(self._run_handler(entry, env, key), name=f"handle-{env.kind}-{env.id[:8]}")

    def _refuse(self, env: Envelope, reason: str) -> None:
        """FAILURE to the sender (a report too: it learns why nobody listens); logged and handed to
        ``on_refused`` once per (sender, kind), so a flood costs one line."""
        if env.performative in (Performative.REQUEST, Performative.INFORM, Performative.SUBSCRIBE,
                                Performative.CANCEL):
            self._send_reply(env.sender, env.failure(reason))
        pair = (norm_jid(env.sender), env.kind)
        if pair in self.refusals:
            self.refusals[pair] += 1
            return
        if len(self.refusals) >= MAX_REFUSALS_TRACKED:
            self.refusals_untracked += 1
            return
        self.refusals[pair] = 1
        self.log.warning("refused %s/%s from %s: %s (logged once per sender and kind)",
                         env.kind, env.performative.value, pair[0], reason)
        try:
            self.on_refused(pair[0], env.kind, reason)
        except Exception:
            self.log.exception("on_refused hook failed")

    def _performatives(self, env: Envelope) -> frozenset[Performative]:
        entry = self._handlers.get(env.kind)
        return entry.performatives if entry is not None else frozenset()

    def _on_reply(self, env: Envelope) -> None:
        assert env.reply_to is not None
        pending = self._pending.get(env.reply_to)
        if pending is None or pending.future.done():
            self.log.debug("late or unknown reply %s to %s", env.performative.value, env.reply_to)
            return
        if norm_jid(env.sender) != pending.peer:
            self.log.warning("ignoring a %s reply to %s from %s: the request went to %s",
                             env.performative.value, env.reply_to, norm_jid(env.sender), pending.peer)
            return
        if env.performative is Performative.AGREE:
            pending.agreed = True
            return
        pending.future.set_result(env)

    def _on_invalid(self, exc: ProtocolError) -> None:
        self.log.warning("invalid message from %s (kind=%s): %s", exc.sender, exc.kind, exc.reason)
        if exc.reply_to is not None and exc.reply_to in self._pending:
            pending = self._pending[exc.reply_to]
            if exc.sender and norm_jid(exc.sender) != pending.peer:
                return   # only the addressee can spoil its own reply
            if not pending.future.done():
                pending.future.set_exception(RequestFailed(f"invalid reply: {exc.reason}"))
            return
        if not exc.sender:
            return
        if exc.performative in {p.value for p in REPLY_PERFORMATIVES}:
            return  # never answer a reply: two agents must not ping-pong failures
        # Without a recoverable id the FAILURE cannot reference the request, but still tells why.
        reply = Envelope(kind=exc.kind or "", performative=Performative.FAILURE, reply_to=exc.msg_id,
                         body={"reason": exc.reason})
        self._send_reply(exc.sender, reply)

    async def _run_handler(self, entry: _HandlerEntry, env: Envelope, key: tuple[str, str]) -> None:
        is_request = env.performative is Performative.REQUEST
        reply: Envelope | None = None
        try:
            if entry.urgent:
                result = await entry.handler(env)
            else:
                async with self._handler_slots:
                    result = await entry.handler(env)
            if is_request:
                reply = env.reply(Performative.INFORM, _as_dict(result))
        except HandlerError as exc:
            reply = env.failure(exc.reason) if is_request else None
            self.log.info("%s handler refused %s: %s", env.kind, env.id, exc.reason)
        except asyncio.CancelledError:
            self._replies.discard(key)
            raise
        except Exception as exc:
            self.log.exception("%s handler crashed on %s", env.kind, env.id)
            reply = env.failure(f"internal error: {type(exc).__name__}: {exc}") if is_request else None
        if reply is None:
            return
        try:
            self._send_reply(env.sender, reply, raise_errors=True)
        except ProtocolError as exc:
            self.log.error("%s handler returned an invalid reply: %s", env.kind, exc.reason)
            reply = env.failure(f"internal error: invalid reply: {exc.reason}")
            self._send_reply(env.sender, reply)
        self._replies.put(key, reply)

    def _send_reply(self, to: str, reply: Envelope, *, raise_errors: bool = False) -> None:
        try:
            self._deliver(encode(reply, to=bare(to), sender=str(self.jid)))
        except ProtocolError:
            if raise_errors:
                raise
            self.log.exception("could not send %s reply to %s", reply.performative.value, to)

    async def _handle_ping(self, env: Envelope) -> dict[str, Any]:
        return Pong(sent_at=float(env.body["sent_at"]), received_at=time.time()).model_dump()

    # ---------------------------------------------------------------------------------------------
    # connection management
    # ---------------------------------------------------------------------------------------------
    def _signal(self, outcome: str) -> None:
        self._conn_outcome = outcome
        self._conn_event.set()

    def _on_session_start(self, _event: Any) -> None:
        self._connected = True
        self._signal("session_start")
        assert self.client is not None
        self.client.send_presence(ppriority=0)
        self.reconnects += 1
        self.log.info("reconnected (#%d)", self.reconnects)
        self._flush_outbox()
        self._fire(self._reconnect_hooks)

    def _on_connection_failed(self, _event: Any) -> None:
        self._signal("failed")

    def _on_disconnected(self, reason: Any) -> None:
        was_connected = self._connected
        self._connected = False
        self._signal("disconnected")
        self._peer_sessions.clear()   # the server sends every peer's current presence after we reconnect
        if self._stopping or not self.is_alive():
            return
        if was_connected:
            self.log.warning("disconnected from the XMPP server (%s); reconnecting", reason)
            self._fire(self._disconnect_hooks)
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        """One connection attempt at a time, capped exponential backoff (with jitter) before each.

        slixmpp would retry on its own, but with waits up to 300 s; we cancel its schedule and drive
        the attempts ourselves. Waiting before the first attempt too spreads a herd of agents that all
        lost the same server."""
        delay = self.reconnect_backoff
        client = self.client
        assert client is not None
        while not self._stopping and not self._connected:
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.reconnect_backoff_max)
            if self._stopping or self._connected:
                return
            self._conn_event.clear()
            self._conn_outcome = ""
            client.connect(host=self.jid.host, port=self.xmpp_port)
            try:
                await asyncio.wait_for(self._conn_event.wait(), timeout=self.connect_attempt_timeout)
            except TimeoutError:
                self.log.warning("connection attempt timed out")
                client.abort()
            if self._connected or self._stopping:
                return
            client.cancel_connection_attempt()
            self.log.debug("reconnect attempt failed (%s); next in ~%.2fs", self._conn_outcome, delay)

    # ---------------------------------------------------------------------------------------------
    # presence
    # ---------------------------------------------------------------------------------------------
    def _on_presence_subscribe(self, presence: Any) -> None:
        peer = presence["from"]
        assert self.client is not None
        if peer.domain == self.jid.domain:
            self.client.send_presence(pto=peer.bare, ptype="subscribed")
            self.log.debug("approved presence subscription from %s", peer.bare)
        else:
            self.client.send_presence(pto=peer.bare, ptype="unsubscribed")
            self.log.warning("refused presence subscription from foreign domain %s", peer.bare)

    def _on_presence_subscribed(self, presence: Any) -> None:
        self._subscribed.setdefault(presence["from"].bare, asyncio.Event()).set()

    def _on_roster_update(self, iq: Any) -> None:
        for item in iq["roster"]:
            if item["subscription"] in ("to", "both"):
                self._subscribed.setdefault(item.get_jid().bare, asyncio.Event()).set()

    def _on_presence_available(self, presence: Any) -> None:
        if presence["from"].bare != bare(str(self.jid)):   # a contact's presence reaches us only if we subscribed
            self._subscribed.setdefault(presence["from"].bare, asyncio.Event()).set()
        self._on_presence(presence, True)

    def _on_presence_unavailable(self, presence: Any) -> None:
        self._on_presence(presence, False)

    def _on_presence(self, presence: Any, available: bool) -> None:
        peer, resource = presence["from"].bare, presence["from"].resource
        if not peer or peer == self.jid.bare:
            return
        sessions = self._peer_sessions.setdefault(peer, set())
        if available:
            sessions.add(resource)
        elif not resource:
            # prosody answers a new subscription with an unavailable from the bare JID before the peer's
            # real presence: that says nothing about a session ending (heartbeats cover a dead peer).
            self.log.debug("presence %s: ignoring unavailable from the bare JID", peer)
            return
        else:
            sessions.discard(resource)
            if sessions:   # a session that closed after the peer reconnected under a new resource
                self.log.debug("presence %s: session %s left, %d still online", peer, resource, len(sessions))
                return
        self.log.debug("presence %s: %s", peer, "available" if available else "unavailable")
        self._fire(self._presence_hooks, peer, available)


def _as_dict(body: dict[str, Any] | BaseModel | None) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json")
    return dict(body)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
