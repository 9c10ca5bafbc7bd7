"""An original MLSysOps mechanism module as a mechanism of our registry (see the package docstring).

The original contract (ORIGINAL-INTERFACES.md, "Mechanism plugins"):

* `initialize(inbound_queue, outbound_queue, agent_state)`: sync, once. The agent reads what the
  mechanism says from `inbound` and writes to it through `outbound`.
* `async apply(command)`: the command is the plan's value plus the injected `plan_uid`. A truthy result
  means done; a falsy one (False, None, ...) means "accepted, in progress": the plan stays pending until
  the mechanism reports its status, by putting `{"event": "plan_executed", "payload": {"plan_uid": ...,
  "status": ...}}` on the inbound queue (what fluidity does) or by calling
  `agent_state.update_plan_status(plan_uid, mechanism, status)`.
* `get_state()`, `get_options()`; optional `async send_message(msg)`.

Here `apply` returns once the outcome is known: at once for a truthy result, else when the report
arrives. The plan scheduler's execute timeout bounds the wait, so a mechanism that never reports ends as
`timeout` (a failed execution), and a None result is never read as "completed". Reported statuses
`Completed`/`Success`/`Succeeded` (any case) complete the plan; anything else fails it with that status
as the reason. Messages on the inbound queue that are not reports of a plan in flight (late reports
included) are kept (`messages`, newest 100) and passed to `on_message` when the host gave one (agents
record them as events).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections import deque
from collections.abc import Callable
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

ORIGINAL_PARAMETERS = ("inbound_queue", "outbound_queue")
DONE = frozenset({"completed", "success", "succeeded", "done"})


def is_original_mechanism(target: Any) -> bool:
    """Whether `target.initialize` takes the original's queues (parameters named `inbound_queue` and
    `outbound_queue`, as every original mechanism names them)."""
    init = getattr(target, "initialize", None)
    if not callable(init) or getattr(target, "contract", None) == "original":
        return False
    try:
        params = list(inspect.signature(init).parameters.values())
    except (TypeError, ValueError):
        return False
    names = [p.name for p in params]
    return all(n in names for n in ORIGINAL_PARAMETERS)


class AttributeDict(dict):
    """A dict whose keys read as attributes too: the original's `agent_state.configuration.node`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"agent_state.configuration has no {name!r}; it has {sorted(self)}") from None


class OriginalAgentState:
    """What an original mechanism receives as `agent_state`: the agent's identity, its configuration
    (`configuration.node`, `.cluster`, `.system_description`, as attributes or keys) and the original
    `update_plan_status(plan_uid, mechanism, status)`. Bound to the adapters that use it."""

    def __init__(self, agent_id: str = "", *, configuration: dict[str, Any] | None = None, **extra: Any) -> None:
        self.agent_id = agent_id
        self.hostname = extra.pop("hostname", agent_id)
        self.configuration = AttributeDict(configuration or {})
        self.__dict__.update(extra)
        self._mechanisms: dict[str, OriginalMechanism] = {}

    def attach(self, mechanism: OriginalMechanism) -> None:
        self._mechanisms[mechanism.name] = mechanism

    def update_plan_status(self, plan_uid: str, mechanism: str, status: str) -> bool:
        target = self._mechanisms.get(mechanism)
        if target is None:
            return any(m.report(plan_uid, status) for m in self._mechanisms.values())
        return target.report(plan_uid, status)


class OriginalMechanism:
    """Our mechanism contract over an original mechanism module."""

    contract = "original"

    def __init__(self, module: ModuleType | Any, name: str, *, agent_state: OriginalAgentState | None = None,
                 on_message: Callable[[str, dict[str, Any]], Any] | None = None) -> None:
        for fn in ("initialize", "apply"):
            if not callable(getattr(module, fn, None)):
                raise TypeError(f"original mechanism {name!r} has no callable {fn}()")
        self.module = module
        self.name = name
        self.agent_state = agent_state or OriginalAgentState(name)
        self.agent_state.attach(self)
        self.on_message = on_message
        self.inbound: asyncio.Queue[Any] = asyncio.Queue()
        self.outbound: asyncio.Queue[Any] = asyncio.Queue()
        self.messages: deque[Any] = deque(maxlen=100)
        self._waiting: dict[str, asyncio.Future[str]] = {}   # registered before apply() runs: no report is early
        self._reader: asyncio.Task[None] | None = None
        self.pending_reported = 0
        if hasattr(module, "send_message"):
            self.send_message = self._send_message

    # -- the original's lifecycle --------------------------------------------------------------------------
    def initialize(self, **_settings: Any) -> None:
        self.module.initialize(self.inbound, self.outbound, self.agent_state)
        try:   # read what it says from the start, not only once a plan is applied
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ensure_reader()

    async def apply(self, command: Any) -> dict[str, Any]:
        if not isinstance(command, dict):
            return {"ok": False, "detail": f"{self.name}: the original contract takes a dict command"}
        uid = str(command.get("plan_uid") or uuid.uuid4())
        self._ensure_reader()
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[uid] = fut
        try:
            result = self.module.apply({**command, "plan_uid": uid})
            if inspect.isawaitable(result):
                result = await result
            if result:
                return {"ok": True, "detail": {"plan_uid": uid, "result": "done (apply returned a truthy value)"}}
            status = await fut         # bounded by the scheduler's execute timeout
        finally:
            self._waiting.pop(uid, None)
        self.pending_reported += 1
        ok = str(status).strip().lower() in DONE
        return {"ok": ok, "detail": {"plan_uid": uid, "reported": status,
                                     "result": "reported done" if ok else f"reported {status!r}"}}

    def report(self, plan_uid: str, status: str) -> bool:
        """A plan's status from the mechanism (inbound event or agent_state.update_plan_status)."""
        fut = self._waiting.get(str(plan_uid))
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(status)
        return True

    def get_state(self) -> dict[str, Any]:
        return self._as_dict(getattr(self.module, "get_state", None))

    def get_options(self) -> dict[str, Any]:
        return self._as_dict(getattr(self.module, "get_options", None))

    @staticmethod
    def _as_dict(fn: Any) -> dict[str, Any]:
        value = fn() if callable(fn) else None
        return value if isinstance(value, dict) else {"value": value}

    async def _send_message(self, msg: dict[str, Any]) -> Any:
        return await self.module.send_message(msg)

    # -- the inbound queue -------------------------------------------------------------------------------
    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_inbound(),
                                                                  name=f"mechanism-inbound:{self.name}")

    async def _read_inbound(self) -> None:
        while True:
            msg = await self.inbound.get()
            try:
                self._dispatch(msg)
            except Exception:   # noqa: BLE001 - one malformed message must not stop the reader
                log.exception("mechanism %s: inbound message not understood: %r", self.name, msg)

    def _dispatch(self, msg: Any) -> None:
        payload = msg.get("payload") if isinstance(msg, dict) else None
        if isinstance(msg, dict) and msg.get("event") == "plan_executed" and isinstance(payload, dict):
            uid = payload.get("plan_uid") or payload.get("name")   # fluidity's failed-validation report
            status = payload.get("status") or "Failed"
            if uid is not None and self.report(str(uid), status):
                return
            # a report for no plan in flight (e.g. after its timeout): the host hears of it like any message
        self.messages.append(msg)
        if self.on_message is not None:
            self.on_message(self.name, msg)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
