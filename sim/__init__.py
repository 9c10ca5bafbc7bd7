"""mlsysops simulated continuum: an embedded stand-in for the infrastructure.

A leaf package (imports nothing else from the project). Build it from plain `SimNodeSpec`s, drive it with
a `SimClock` (manual for deterministic tests, real-time for live runs), deploy component instances, read
node/component metrics, inject faults, and subscribe to state-transition events::

    sim = SimContinuum.from_specs([SimNodeSpec("n1", "c1", "edge")], seed=1, clock=SimClock.manual())
    sim.deploy("web-0", "shop", "web", "n1", cpu_request_cores=0.5, memory_request_bytes=256 << 20)
    sim.advance(1.0)                      # -> [SimEvent(kind=instance.running, ...)]
    sim.component_metrics("web-0")["response_time_ms"]
"""

from .clock import SimClock
from .config import SimConfig
from .continuum import COMPONENT_METRICS, NODE_METRICS, SimContinuum
from .errors import (
    DuplicateInstanceError,
    InstanceNotActiveError,
    InsufficientCapacityError,
    NodeDownError,
    SimError,
    UnknownInstanceError,
    UnknownNodeError,
)
from .model import (
    DEFAULT_STARTUP_S,
    LAYERS,
    EventKind,
    FaultRecord,
    InstanceState,
    SimEvent,
    SimInstance,
    SimNodeSpec,
)
from .qos_profile import NodeDrift, QosProfile

__all__ = [
    "COMPONENT_METRICS",
    "DEFAULT_STARTUP_S",
    "LAYERS",
    "NODE_METRICS",
    "DuplicateInstanceError",
    "EventKind",
    "FaultRecord",
    "InstanceNotActiveError",
    "InstanceState",
    "InsufficientCapacityError",
    "NodeDownError",
    "NodeDrift",
    "QosProfile",
    "SimClock",
    "SimConfig",
    "SimContinuum",
    "SimError",
    "SimEvent",
    "SimInstance",
    "SimNodeSpec",
    "UnknownInstanceError",
    "UnknownNodeError",
]
