"""A mechanism plugin: the only code that acts on a substrate; it decides nothing.

`apply(command)` executes one command of a plan (the plan scheduler calls it, one at a time per
mechanism, under a timeout). Its return value: None or True = completed; False = failed; a dict = completed
unless `"ok": False` (its `"detail"` is recorded). `get_state()` / `get_options()` return dicts that
Monitor hands to policies as `mechanisms[name]`. Optional: `initialize(**dependencies)` (called with the
keywords its signature accepts, e.g. `app_models` from a cluster agent) and `capabilities` (see
`capabilities.py`).
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict


class MechanismView(TypedDict):
    """What a policy sees of one mechanism (refreshed every Monitor step and after each execution)."""

    state: dict[str, Any]
    options: dict[str, Any]


ApplyResult = bool | None | dict[str, Any]


class MechanismPlugin(Protocol):
    async def apply(self, command: Any) -> ApplyResult: ...

    def get_state(self) -> Any: ...      # a dict, or an awaitable of one

    def get_options(self) -> Any: ...    # a dict, or an awaitable of one
