"""Tunables of the sim's workload, network and QoS models, in one place with sane defaults."""

from __future__ import annotations

from dataclasses import dataclass, field


def _default_access_ms() -> dict[str, float]:
    return {"cloud": 1.0, "edge_infrastructure": 2.0, "edge": 4.0, "far_edge": 8.0}


@dataclass(frozen=True)
class SimConfig:
    # -- time-varying noise
    noise_period_s: float = 1.0
    """Distance between noise knots; noise is interpolated in between (smooth, not white)."""

    # -- CPU / memory use of instances
    activity_range: tuple[float, float] = (0.4, 0.8)
    """Mean CPU use of a running instance as a fraction of its request, drawn per instance."""
    cpu_noise: float = 0.15
    """Relative amplitude of the time-varying CPU noise around the mean activity."""
    cpu_limit_factor: float = 1.5
    """An instance can burst up to this multiple of its CPU request (its limit)."""
    startup_cpu_fraction: float = 0.3
    startup_memory_fraction: float = 0.3
    memory_use_range: tuple[float, float] = (0.5, 0.9)
    """Memory use of a running instance as a fraction of its request, drawn per instance."""

    # -- node background
    background_load_range: tuple[float, float] = (0.02, 0.08)
    """OS/background CPU use as a fraction of the node's cores, drawn per node."""
    background_noise: float = 0.3
    background_memory_fraction: float = 0.05

    # -- network I/O model (bytes/s)
    net_rx_bytes_per_core_s: float = 2_000_000.0
    """Received bytes/s per core of instance CPU use (traffic follows work)."""
    net_tx_ratio: float = 0.6
    background_net_bytes_s: float = 5_000.0

    # -- latency model (round-trip ms)
    same_node_ms: float = 0.05
    intra_cluster_ms: float = 0.5
    layer_step_ms: float = 1.5
    """Extra RTT per layer rank between two nodes of the same cluster."""
    inter_cluster_ms: float = 8.0
    access_ms: dict[str, float] = field(default_factory=_default_access_ms)
    """Access RTT from each layer to the backbone, paid per endpoint across clusters."""
    ms_per_km: float = 0.01
    """Propagation RTT per km of great-circle distance (~fibre)."""

    cross_cluster_calls: str = "direct"
    """How a caller reaches a callee with no running instance in the caller's own cluster. "direct": the
    nearest running instance anywhere, unless a route (`SimContinuum.set_routes`) names the serving
    cluster; "routed": only through a route (no route: the callee is unreachable, as on Kubernetes)."""

    # -- QoS
    max_queue_utilization: float = 0.95
    response_noise: float = 0.05
    missing_peer_penalty_ms: float = 500.0
    """Added to response time per callee component without any running instance (timeouts)."""

    # -- power (W)
    idle_watts_per_core: float = 2.0
    dynamic_watts_per_core: float = 6.0

    # -- bookkeeping
    max_terminal_instances: int = 10_000
    """Failed/stopped instances kept for inspection; the oldest are forgotten beyond this."""
