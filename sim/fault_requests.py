"""Fault requests: one JSON-shaped fault (as an operator sends it) applied to a `SimContinuum`.

Both front doors of the simulator take the same body: the continuum API of `mlsysops up`
(`POST /api/v1/sim/faults`) and the simulator host of one-agent-per-process slices (`mlsysops sim serve`).
Keeping the interpretation here, next to the simulator, means the two cannot drift apart and neither
front door needs the other's code.
"""

from __future__ import annotations

from typing import Any

from .continuum import SimContinuum

FAULTS = ("crash", "recover", "slow", "spike", "degrade_link", "clear")
NODELESS = frozenset({"clear", "degrade_link"})


def apply_fault(sim: SimContinuum, nodes: set[str], body: dict[str, Any]) -> str:
    """Inject the fault `body` describes (`kind`, `node`, and per kind `factor`, `duration_s`,
    `cpu_cores`, `a`/`b`/`extra_ms`); `nodes` are the names a fault may target. Returns what was
    injected (`"crash edge-1"`). Raises ValueError (bad kind or node), KeyError (a missing field)."""
    kind = body.get("kind")
    node = body.get("node")
    if kind not in FAULTS:
        raise ValueError(f"kind: expected one of {list(FAULTS)}, got {kind!r}")
    if kind not in NODELESS and node not in nodes:
        raise ValueError(f"node: unknown node {node!r}; known: {sorted(nodes)}")
    if kind == "crash":
        sim.crash_node(node)
    elif kind == "recover":
        sim.recover_node(node)
    elif kind == "slow":
        sim.slow_node(node, float(body.get("factor", 5.0)), body.get("duration_s"))
    elif kind == "spike":
        sim.load_spike(node, float(body.get("cpu_cores", sim.node(node).cpu_cores)),
                       float(body.get("duration_s", 30.0)))
    elif kind == "degrade_link":
        sim.degrade_link(body["a"], body["b"], float(body.get("extra_ms", 50.0)), body.get("duration_s"))
    else:
        sim.clear_faults()
    return f"{kind} {node or ''}".strip()
