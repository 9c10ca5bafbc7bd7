"""The wire between an agent and a policy worker process (both sides import this; keep it small).

Frames are a 4-byte big-endian length and a pickle. The agent trusts nothing the worker sends: frames from
the worker are size-limited and unpickled by `safe_loads`, which rebuilds plain data only (builtins,
datetime, Decimal, collections, numpy arrays/scalars): a crafted pickle cannot name a callable, so it
cannot run code in the agent. The worker unpickles the agent's frames with plain pickle (it trusts the agent).
"""

from __future__ import annotations

import io
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024      # what the agent accepts from a worker (a result, a callback request)

# (module, name) a worker's frame may reference; everything else is refused by `safe_loads`
_SAFE_GLOBALS = {
    ("builtins", n) for n in ("set", "frozenset", "complex", "bytearray", "range", "slice", "bytes", "list",
                              "dict", "tuple", "int", "float", "str", "bool")
} | {
    ("datetime", n) for n in ("datetime", "date", "time", "timedelta", "timezone")
} | {
    ("decimal", "Decimal"), ("collections", "OrderedDict"), ("collections", "deque"),
} | {
    (mod, n) for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")} | {
    ("mlsysops.agents.mape.sandbox_wire", n) for n in ("ProxyRef",)
}


class UnsafeFrame(ValueError):
    """A worker's frame referenced something that is not plain data, or was too large."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or (module == "numpy" and name.startswith(("float", "int", "uint",
                                                                                      "bool", "complex"))):
            return super().find_class(module, name)
        raise UnsafeFrame(f"the worker's reply references {module}.{name}; only plain data is accepted "
                          "(dict, list, tuple, str, numbers, bool, None, datetime, numpy)")


def safe_loads(data: bytes) -> Any:
    if len(data) > MAX_FRAME:
        raise UnsafeFrame(f"the worker's reply is {len(data)} bytes; at most {MAX_FRAME} are accepted")
    return _SafeUnpickler(io.BytesIO(data)).load()


def encode(message: Any) -> bytes:
    blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(blob)) + blob


@dataclass(frozen=True, slots=True)
class ProxyRef:
    """An object that stays in the agent (e.g. the telemetry view): the worker gets a stand-in whose calls
    travel back over the wire. `methods` maps each callable name to whether it is a coroutine function;
    `mapping` says the object also behaves as a read-only mapping (the original contract's telemetry dict);
    `attrs` are copies of its public plain-data attributes (e.g. an endpoint), read without a round trip."""

    handle: int
    type_name: str
    methods: dict[str, bool] = field(default_factory=dict)
    mapping: bool = False
    is_async: bool = False          # for a callable handle: calling it returns an awaitable
    attrs: dict[str, Any] = field(default_factory=dict)   # its public plain-data attributes, as of the call
