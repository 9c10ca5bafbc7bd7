"""Parent/child membership over the real embedded XMPP server (0.2 s heartbeats)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mlsysops.agents.agent_base import HandlerError, RequestFailed
from mlsysops.agents.membership import (
    REASON_PRESENCE,
    UNKNOWN_CHILD,
    ChildMembership,
    ChildRecord,
    ParentMembership,
)
from mlsysops.agents.protocol import Envelope, Kind, Role
from tests.support import until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.xmpp, pytest.mark.timeout(60)]

HB = 0.2


class Events:
    """Collects membership notifications as (event, agent_id, reason) tuples."""

    def __init__(self, parent: ParentMembership) -> None:
        self.queue: asyncio.Queue[tuple[str, str, str | None]] = asyncio.Queue()
        parent.on_joined(self._joined)
        parent.on_lost(self._lost)
        parent.on_recovered(self._recovered)

    async def _joined(self, child: ChildRecord) -> None:
        self.queue.put_nowait(("joined", child.agent_id, None))

    async def _lost(self, child: ChildRecord, reason: str) -> None:
        self.queue.put_nowait(("lost", child.agent_id, reason))

    async def _recovered(self, child: ChildRecord) -> None:
        self.queue.put_nowait(("recovered", child.agent_id, None))

    async def next(self, timeout: float = 15.0) -> tuple[str, str, str | None]:
        # generous: the parent rightly credits its own stalls (GC, a loaded machine) to the children
        return await asyncio.wait_for(self.queue.get(), timeout)


async def make_parent(make_agent: Any, *, misses: int = 3, jid: str | None = None,
                      **kw: Any) -> tuple[Any, ParentMembership, Events]:
    agent = await make_agent(prefix="cluster", jid=jid)
    membership = ParentMembership(agent, heartbeat_interval=HB, liveness_misses=misses, **kw)
    events = Events(membership)
    await membership.start()
    return agent, membership, events


async def make_child(make_agent: Any, parent_jid: str, **kw: Any) -> tuple[Any, ChildMembership]:
    agent = await make_agent(prefix="node", reconnect_backoff=0.1)
    kw.setdefault("digest", lambda: {"load": 0.5})
    membership = ChildMembership(agent, parent_jid, role=Role.NODE, description={"cpu": 4}, backoff=0.1,
                                 backoff_max=0.5, register_timeout=1.0, **kw)
    await membership.start()
    return agent, membership


async def test_child_registers_and_heartbeats(make_agent: Any) -> None:
    parent, pm, events = await make_parent(make_agent)
    child, cm = await make_child(make_agent, str(parent.jid), capabilities=["gpu"])
    assert await events.next() == ("joined", child.agent_id, None)
    await cm.wait_connected(timeout=3)
    assert cm.settings is not None and cm.settings.heartbeat_interval == HB
    (rec,) = pm.children()
    assert rec.jid == str(child.jid) and rec.role is Role.NODE and rec.description == {"cpu": 4}
    assert rec.capabilities == ["gpu"] and rec.alive
    await until(lambda: rec.seq >= 3, timeout=3)
    assert rec.digest == {"load": 0.5}
    assert time.time() - rec.last_heartbeat < 1.0
    assert cm.registrations == 1


async def test_stopped_child_is_lost_via_presence_fast(make_agent: Any) -> None:
    parent, pm, events = await make_parent(make_agent, misses=25)  # heartbeat liveness: 5 s
    child, cm = await make_child(make_agent, str(parent.jid))
    assert (await events.next())[0] == "joined"
    await parent.wait_subscribed(str(child.jid), timeout=3)
    started, credited = time.monotonic(), pm.lag_credited
    await child.stop()
    assert await events.next() == ("lost", child.agent_id, REASON_PRESENCE)
    # below the 5 s heartbeat liveness period, not counting the parent's own stalls (credited to the child)
    assert time.monotonic() - started - (pm.lag_credited - credited) < 5.0
    assert pm.children(alive_only=True) == []


async def test_hung_child_is_lost_after_missed_heartbeats_then_recovers(make_agent: Any) -> None:
    parent, pm, events = await make_parent(make_agent, misses=3)
    child, cm = await make_child(make_agent, str(parent.jid))
    assert (await events.next())[0] == "joined"
    await cm.wait_connected(timeout=3)
    cm.pause()  # connected (presence stays available) but silent
    paused_at = time.monotonic()
    assert await events.next() == ("lost", child.agent_id, "missed 3 heartbeats")
    assert time.monotonic() - paused_at >= 3 * HB - 0.25
    cm.resume()
    assert await events.next() == ("recovered", child.agent_id, None)
    assert pm.child(str(child.jid)).alive  # type: ignore[union-attr]


async def test_a_frozen_parent_loop_loses_no_child(make_agent: Any) -> None:
    """A pause of the whole process (GC, a blocking call, a suspended VM) longer than the liveness period:
    nobody could heartbeat or listen, so no child is lost."""
    parent, pm, events = await make_parent(make_agent, misses=3)
    child, cm = await make_child(make_agent, str(parent.jid))
    assert (await events.next())[0] == "joined"
    await cm.wait_connected(timeout=3)
    seq = pm.child(str(child.jid)).seq   # type: ignore[union-attr]
    time.sleep(3 * 3 * HB)               # the loop is frozen for three liveness periods
    await until(lambda: pm.child(str(child.jid)).seq > seq + 3, timeout=3)   # type: ignore[union-attr]
    assert pm.stalls >= 1 and events.queue.empty()    # no "lost" event, nothing to recover
    assert pm.child(str(child.jid)).alive             # type: ignore[union-attr]


async def test_an_xmpp_server_outage_loses_no_child(make_agent: Any, tmp_path: Any) -> None:
    """The server goes away for several liveness periods and comes back: the parent heard nobody, which says
    nothing about its children (they keep their work), so none is lost."""
    from mlsysops.agents.xmpp_prosody import ProsodyServer

    server = ProsodyServer(tmp_path / "prosody")   # its own: restarted on the same port, accounts kept
    await server.start()
    try:
        agent = await make_agent(prefix="cluster", server=server, reconnect_backoff=0.1, reconnect_backoff_max=0.3)
        pm = ParentMembership(agent, heartbeat_interval=HB, liveness_misses=3)
        events = Events(pm)
        await pm.start()
        child = await make_agent(prefix="node", server=server, reconnect_backoff=0.1, reconnect_backoff_max=0.3)
        cm = ChildMembership(child, str(agent.jid), role=Role.NODE, backoff=0.1, backoff_max=0.3,
                             register_timeout=1.0)
        await cm.start()
        assert (await events.next())[0] == "joined"
        await cm.wait_connected(timeout=3)
        await server.stop()
        await until(lambda: not agent.connected, timeout=10)
        await asyncio.sleep(4 * 3 * HB)            # four liveness periods without a server
        await server.start()
        await until(lambda: agent.connected and child.connected, timeout=10)
        seq = pm.child(str(child.jid)).seq        # type: ignore[union-attr]
        await until(lambda: pm.child(str(child.jid)).seq > seq + 2, timeout=10)   # type: ignore[union-attr]
        assert events.queue.empty(), events.queue._queue    # type: ignore[attr-defined]
        await cm.stop()
        await pm.stop()
    finally:
        await server.stop()


async def test_restarted_parent_relearns_children(make_agent: Any) -> None:
    parent, pm, events = await make_parent(make_agent)
    child, cm = await make_child(make_agent, str(parent.jid))
    assert (await events.next())[0] == "joined"
    await cm.wait_connected(timeout=3)
    parent_jid = str(parent.jid)
    await pm.stop()
    await parent.stop()

    parent2, pm2, events2 = await make_parent(make_agent, jid=parent_jid)  # same JID, empty memory
    assert await events2.next() == ("joined", child.agent_id, None)
    await until(lambda: cm.connected and cm.registrations >= 2, timeout=5)
    assert [c.jid for c in pm2.children()] == [str(child.jid)]


async def test_unknown_child_heartbeat_is_told_to_reregister(make_agent: Any) -> None:
    parent, pm, _ = await make_parent(make_agent)
    stranger = await make_agent(prefix="stranger")
    with pytest.raises(RequestFailed) as err:
        await stranger.request(str(parent.jid), Kind.HEARTBEAT, {"seq": 1}, timeout=3)
    assert err.value.reason == UNKNOWN_CHILD


async def test_accept_callback_and_faulty_listeners(make_agent: Any) -> None:
    async def accept(env: Envelope) -> dict[str, Any]:
        if env.body["description"].get("cpu", 0) < 2:
            return {"accepted": False, "reason": "too small"}
        return {"zone": "edge-1"}

    parent, pm, events = await make_parent(make_agent, accept=accept)

    async def broken(child: ChildRecord) -> None:
        raise RuntimeError("listener bug")

    pm.on_joined(broken)  # must not break membership nor the other listeners
    extras: list[dict[str, Any]] = []
    child, cm = await make_child(make_agent, str(parent.jid))
    cm.on_registered(lambda reply: extras.append(reply.extra))
    assert await events.next() == ("joined", child.agent_id, None)
    await cm.wait_connected(timeout=3)
    assert extras == [{"zone": "edge-1"}]

    small = await make_agent(prefix="tiny")
    reply = await small.request(str(parent.jid), Kind.REGISTER,
                                {"role": "node", "agent_id": "tiny", "description": {"cpu": 1}}, timeout=3)
    assert reply.body["accepted"] is False and reply.body["reason"] == "too small"
    assert [c.agent_id for c in pm.children()] == [child.agent_id]


async def test_accept_may_raise_handler_error(make_agent: Any) -> None:
    def accept(env: Envelope) -> dict[str, Any]:
        raise HandlerError("slice is full")

    parent, pm, _ = await make_parent(make_agent, accept=accept)
    prober = await make_agent(prefix="prb")
    with pytest.raises(RequestFailed, match="slice is full"):
        await prober.request(str(parent.jid), Kind.REGISTER, {"role": "node", "agent_id": "x"}, timeout=3)
    assert pm.children() == []


# -- a busy machine and a bus outage do not fool liveness ---------------------------------------------------
async def _outage_family(make_agent: Any, server: Any, n: int, *, misses: int = 3, child_backoff: float = 0.1,
                         **pm_kw: Any) -> tuple[Any, ParentMembership, Events, list[tuple[Any, ChildMembership]]]:
    agent = await make_agent(prefix="cluster", server=server, reconnect_backoff=0.05, reconnect_backoff_max=0.1)
    pm = ParentMembership(agent, heartbeat_interval=HB, liveness_misses=misses, **pm_kw)
    events = Events(pm)
    await pm.start()
    kids = []
    for _ in range(n):
        child = await make_agent(prefix="node", server=server, reconnect_backoff=child_backoff,
                                 reconnect_backoff_max=child_backoff)
        cm = ChildMembership(child, str(agent.jid), role=Role.NODE, backoff=0.1, backoff_max=0.3,
                             register_timeout=1.0)
        await cm.start()
        kids.append((child, cm))
    for _ in range(n):
        assert (await events.next())[0] == "joined"
    for child, cm in kids:
        await cm.wait_connected(timeout=5)
        await agent.wait_subscribed(str(child.jid), timeout=5)
    return agent, pm, events, kids


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
async def test_a_server_outage_stopped_or_killed_loses_none_of_three_children(make_agent: Any, tmp_path: Any,
                                                                               how: str) -> None:
    """A graceful stop sends every child's "unavailable" presence before the parent sees its own
    disconnect; kill -9 sends nothing. Either way the bus went away, not the children: none is lost."""
    from mlsysops.agents.xmpp_prosody import ProsodyServer

    server = ProsodyServer(tmp_path / "prosody")
    await server.start()
    try:
        agent, pm, events, kids = await _outage_family(make_agent, server, 3)
        if how == "graceful":
            await server.stop()
        else:
            await asyncio.to_thread(server.kill_sync)
        await until(lambda: not agent.connected, timeout=10)
        await asyncio.sleep(3 * 3 * HB)
        await server.start()
        await until(lambda: agent.connected and all(c.connected for c, _ in kids), timeout=15)
        seqs = {str(c.jid): pm.child(str(c.jid)).seq for c, _ in kids}   # type: ignore[union-attr]
        await until(lambda: all(pm.child(j).seq > s + 2 for j, s in seqs.items()), timeout=15)  # type: ignore[union-attr]
        assert events.queue.empty(), events.queue._queue    # type: ignore[attr-defined]
        assert pm.outages >= 1 and not pm.in_disruption
        for _, cm in kids:
            await cm.stop()
        await pm.stop()
    finally:
        await server.stop()


async def test_a_parent_back_before_its_child_gives_it_a_full_liveness_period(make_agent: Any, tmp_path: Any) -> None:
    """The parent reconnects at once, the child up to 1 s later (its reconnect backoff), past the 0.6 s
    liveness period: the child's period counts from when its backoff could end (the parent's
    reconnect allowance) and from when it is back online, and presences the server sends meanwhile are part
    of the outage, so it is not lost."""
    from mlsysops.agents.xmpp_prosody import ProsodyServer

    server = ProsodyServer(tmp_path / "prosody")
    await server.start()
    try:
        agent, pm, events, kids = await _outage_family(make_agent, server, 1, child_backoff=1.0,
                                                       reconnect_allowance=1.0)
        (child, cm), = kids
        await server.stop()
        await until(lambda: not agent.connected and not child.connected, timeout=10)
        await asyncio.sleep(3 * 3 * HB)
        await server.start()
        await until(lambda: child.connected and cm.connected and agent.connected, timeout=15)
        seq = pm.child(str(child.jid)).seq   # type: ignore[union-attr]
        await until(lambda: pm.child(str(child.jid)).seq > seq + 2, timeout=10)   # type: ignore[union-attr]
        assert events.queue.empty(), events.queue._queue    # type: ignore[attr-defined]
        await cm.stop()
        await pm.stop()
    finally:
        await server.stop()


async def test_losing_most_children_at_once_is_a_full_disruption_that_relocates_nothing(make_agent: Any,
                                                                                         prosody: Any) -> None:
    """All three children fall silent at once (the parent is cut off from them): it suspects itself, says
    so in its decision log, and tells no listener; when they are back nothing was lost."""
    agent, pm, events, kids = await _outage_family(make_agent, prosody, 3)
    recorded: list[tuple[str, dict[str, Any]]] = []
    agent.record_event = lambda reason, **kw: recorded.append((reason, kw))   # ManagedAgent's hook
    for _, cm in kids:
        cm.pause()
    await until(lambda: pm.in_disruption, timeout=10)
    await until(lambda: all(not c.alive for c in pm.children()), timeout=10)   # no new work for them meanwhile
    await asyncio.sleep(3 * 3 * HB)
    assert events.queue.empty(), events.queue._queue        # type: ignore[attr-defined]
    for _, cm in kids:
        cm.resume()
    await until(lambda: not pm.in_disruption and all(c.alive for c in pm.children()), timeout=10)
    assert events.queue.empty(), events.queue._queue        # type: ignore[attr-defined]
    assert recorded[0][0].startswith("full disruption: 3 of 3 children lost at once")
    assert recorded[0][1]["inputs"]["children"] == 3
    assert any(r.startswith("full disruption over") for r, _ in recorded)


async def test_a_full_disruption_past_its_limit_declares_the_children_lost(make_agent: Any, prosody: Any) -> None:
    agent, pm, events, kids = await _outage_family(make_agent, prosody, 2, disruption_limit=1.0)
    for _, cm in kids:
        cm.pause()
    lost = {await events.next(), await events.next()}
    assert {e[0] for e in lost} == {"lost"}
    assert all("full disruption past 1s" in (e[2] or "") for e in lost)
    for _, cm in kids:
        cm.resume()
    assert {(await events.next())[0] for _ in kids} == {"recovered"}


async def test_one_silent_child_of_three_is_lost_as_usual(make_agent: Any, prosody: Any) -> None:
    agent, pm, events, kids = await _outage_family(make_agent, prosody, 3)
    (child, cm), *_ = kids
    cm.pause()
    assert await events.next() == ("lost", child.agent_id, "missed 3 heartbeats")
    assert not pm.in_disruption


async def test_heartbeats_are_not_queued_behind_busy_handlers(make_agent: Any) -> None:
    """Every handler slot of the parent is taken by slow requests: heartbeats (urgent) are still heard and
    the child is not lost."""
    from mlsysops.agents.authorization import FROM_ANYONE

    parent = await make_agent(prefix="cluster", max_concurrent_handlers=2)
    pm = ParentMembership(parent, heartbeat_interval=HB, liveness_misses=3)
    events = Events(pm)
    await pm.start()
    release = asyncio.Event()

    async def slow(env: Envelope) -> dict[str, Any]:
        await release.wait()
        return {"sent_at": 0.0, "received_at": 0.0}

    parent.on(Kind.PING, slow, allowed=FROM_ANYONE)   # pings stand for any slow work of the agent
    child, cm = await make_child(make_agent, str(parent.jid))
    assert (await events.next())[0] == "joined"
    await cm.wait_connected(timeout=3)
    busy = await make_agent(prefix="busy")
    calls = [asyncio.ensure_future(busy.request(str(parent.jid), Kind.PING, {"sent_at": 0.0}, timeout=30,
                                                       retries=0))
             for _ in range(6)]
    await until(lambda: parent._handler_slots.locked(), timeout=5)
    seq = pm.child(str(child.jid)).seq   # type: ignore[union-attr]
    await until(lambda: pm.child(str(child.jid)).seq > seq + 3 * 3, timeout=10)   # type: ignore[union-attr]
    assert events.queue.empty() and pm.child(str(child.jid)).alive   # type: ignore[union-attr]
    release.set()
    await asyncio.gather(*calls)


async def test_sparse_heartbeats_past_the_rate_cap_still_catch_a_hung_child(make_agent: Any, prosody: Any) -> None:
    """Past ``max_heartbeat_rate`` the parent stretches the interval (whole multiples of it) and tells the
    children in its acks; it judges each by what it told it, so the stretch loses nobody, a hung child is
    still caught, and the interval shrinks again when children leave."""
    agent, pm, events, kids = await _outage_family(make_agent, prosody, 3, max_heartbeat_rate=5.0)
    stretched = pytest.approx(3 * HB)   # 3 children at 5/s with a 0.2 s base: 0.6 s
    assert pm.heartbeat_interval_now() == stretched
    await until(lambda: all(cm.settings.heartbeat_interval == stretched for _, cm in kids), timeout=10,
                message="every child follows the stretched interval")
    seqs = {str(c.jid): pm.child(str(c.jid)).seq for c, _ in kids}   # type: ignore[union-attr]
    started = time.monotonic()
    await until(lambda: all(pm.child(j).seq >= s + 4 for j, s in seqs.items()), timeout=20,  # type: ignore[union-attr]
                message="four heartbeats each")
    elapsed = time.monotonic() - started
    sent = max(pm.child(j).seq - s for j, s in seqs.items())   # type: ignore[union-attr]
    assert sent <= elapsed / (3 * HB) + 2, f"{sent} heartbeats in {elapsed:.2f}s: not following 0.6 s"
    assert events.queue.empty(), events.queue._queue    # type: ignore[attr-defined]
    hung_agent, hung = kids[0]
    hung.pause()   # connected, silent
    kind, _, reason = await events.next(timeout=30)
    assert (kind, reason) == ("lost", "missed 3 heartbeats")
    pm.forget(str(hung_agent.jid))
    assert pm.heartbeat_interval_now() == pytest.approx(2 * HB)
    await until(lambda: all(cm.settings.heartbeat_interval == pytest.approx(2 * HB) for _, cm in kids[1:]),
                timeout=10, message="the interval shrinks when children leave")
    seqs = {str(c.jid): pm.child(str(c.jid)).seq for c, _ in kids[1:]}   # type: ignore[union-attr]
    await until(lambda: all(pm.child(j).seq >= s + 6 for j, s in seqs.items()), timeout=20,  # type: ignore[union-attr]
                message="heartbeats at the shorter interval")
    assert events.queue.empty(), events.queue._queue    # type: ignore[attr-defined]
    assert all(pm.child(str(c.jid)).alive for c, _ in kids[1:])   # type: ignore[union-attr]
