"""Optional mechanism capabilities, declared once and checked once, at registration.

A mechanism says what it can do beyond `apply`/`get_state`/`get_options` with a class (or module)
attribute `capabilities`, a collection of `Capability` names. `MechanismRegistry` rejects a mechanism
that declares a name it does not know or a capability whose method it lacks; layers then ask the
registered `Mechanism` (`supports(...)`) instead of probing the object.

- `reports_status`: `get_state()` is authoritative for component/instance status (Kubernetes, Karmada);
  the layer reads status from it instead of from its children's reports.
- `watch`: `async watch(on_state)` streams state changes (`await on_state(state)`); runs until cancelled.
- `adopt`: `async adopt() -> state`: after a restart, take the placements the substrate holds as ours.
- `resync`: `async resync(cluster)`: re-send a rejoined child everything it must run (idempotent).
- `remove_app`: `async remove_app(app, assign)`: remove every component of an app from the substrate.

`OPERATIONS` act on the substrate: layers submit them through the plan scheduler as a plan whose command
holds the keyword arguments (`Plan(..., operation="remove_app")`), so they are serialised with every other
execution of that mechanism and recorded like them. The other capabilities are reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class Capability(StrEnum):
    REPORTS_STATUS = "reports_status"
    WATCH = "watch"
    ADOPT = "adopt"
    RESYNC = "resync"
    REMOVE_APP = "remove_app"


CAPABILITY_METHODS: dict[Capability, str] = {
    Capability.REPORTS_STATUS: "get_state",
    Capability.WATCH: "watch",
    Capability.ADOPT: "adopt",
    Capability.RESYNC: "resync",
    Capability.REMOVE_APP: "remove_app",
}
OPERATIONS = frozenset({Capability.RESYNC, Capability.REMOVE_APP})


@runtime_checkable
class Watches(Protocol):
    async def watch(self, on_state: Callable[[dict[str, Any]], Awaitable[None]]) -> None: ...


@runtime_checkable
class Adopts(Protocol):
    async def adopt(self) -> dict[str, Any]: ...


@runtime_checkable
class Resyncs(Protocol):
    async def resync(self, cluster: str) -> None: ...


@runtime_checkable
class RemovesApps(Protocol):
    async def remove_app(self, app: str, assign: dict[str, str]) -> dict[str, Any] | None: ...


def declared_capabilities(name: str, target: Any) -> frozenset[Capability]:
    """The capabilities `target` declares, each verified to be implemented; TypeError says what is wrong."""
    raw = getattr(target, "capabilities", ())
    if isinstance(raw, str) or not hasattr(raw, "__iter__"):
        raise TypeError(f"mechanism {name!r}: capabilities must be a collection of names, got {raw!r}")
    known = {c.value for c in Capability}
    declared: set[Capability] = set()
    for item in raw:
        if item not in known:
            raise TypeError(f"mechanism {name!r} declares unknown capability {item!r}; known: {sorted(known)}")
        cap = Capability(item)
        method = CAPABILITY_METHODS[cap]
        if not callable(getattr(target, method, None)):
            raise TypeError(f"mechanism {name!r} declares capability {cap.value!r} but has no callable "
                            f"{method}()")
        declared.add(cap)
    return frozenset(declared)
