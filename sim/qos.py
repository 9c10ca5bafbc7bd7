"""QoS model: response time of a component instance.

response_time_ms = base_response_ms / speed x 1 / (1 - min(util, max_queue_utilization))
                   x max(1, demand / capacity) x (1 + response_noise x n(t)) + network_ms
where speed already folds in the node's relative speed, CPU frequency and slowdown faults, the
overload factor keeps response time growing after the CPU saturates (so "more load => slower" holds
everywhere), and network_ms is the sum, over the components this one calls, of the RTT to the nearest
running instance of that component (or a penalty when none runs).
"""

from __future__ import annotations

from .config import SimConfig


def response_time_ms(
    *,
    base_ms: float,
    speed: float,
    utilization: float,
    demand_ratio: float,
    network_ms: float,
    noise: float,
    cfg: SimConfig,
) -> float:
    queue = 1.0 / (1.0 - min(utilization, cfg.max_queue_utilization))
    overload = max(1.0, demand_ratio)
    compute = base_ms / speed * queue * overload * (1.0 + cfg.response_noise * noise)
    return compute + network_ms
