"""Workload model: CPU, memory and network use of instances and their aggregation per node.

Running instance CPU = request x clamp(activity x (1 + cpu_noise x n(t)), 0, cpu_limit_factor) x fmax/f
(a lower CPU frequency makes the same work take more CPU time). Starting instances use a fixed fraction of
their request. Node demand = background + instances + load spikes; utilisation = min(1, demand / cores).
Network traffic follows work: rx = net_rx_bytes_per_core_s x instance cores, tx = rx x net_tx_ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import SimConfig
from .model import InstanceState
from .noise import smooth_noise
from .power import node_power_watts
from .records import InstanceRecord, NodeRecord

_MEMORY_SALT = 0x5BD1E995


@dataclass(frozen=True, slots=True)
class NodeLoad:
    demand_cores: float
    used_cores: float
    utilization: float
    memory_used_bytes: float
    rx_bytes_s: float
    tx_bytes_s: float
    running: int
    starting: int
    slowdown: float
    speed: float
    """Effective relative speed: spec speed x frequency ratio / slowdown."""
    power_watts: float


def instance_cpu_cores(rec: InstanceRecord, now: float, cfg: SimConfig, freq_ratio: float = 1.0) -> float:
    if rec.state is InstanceState.RUNNING:
        a = rec.activity * (1.0 + cfg.cpu_noise * smooth_noise(rec.noise_key, now, cfg.noise_period_s))
        a = min(max(a, 0.0), cfg.cpu_limit_factor)
        return rec.cpu_request * a / freq_ratio
    if rec.state is InstanceState.STARTING:
        return rec.cpu_request * cfg.startup_cpu_fraction
    return 0.0


def instance_memory_bytes(rec: InstanceRecord, now: float, cfg: SimConfig) -> float:
    if rec.state is InstanceState.RUNNING:
        wobble = 1.0 + 0.03 * smooth_noise(rec.noise_key ^ _MEMORY_SALT, now, cfg.noise_period_s)
        return min(rec.memory_request * rec.memory_fraction * wobble, float(rec.memory_request))
    if rec.state is InstanceState.STARTING:
        return rec.memory_request * cfg.startup_memory_fraction
    return 0.0


def node_load(
    node: NodeRecord, now: float, cfg: SimConfig, *, spike_cores: float, slowdown: float
) -> NodeLoad:
    spec = node.spec
    fr = node.freq_ratio
    wobble = 1.0 + cfg.background_noise * smooth_noise(node.noise_key, now, cfg.noise_period_s)
    bg = node.background_fraction * wobble
    inst_cores = 0.0
    mem = spec.memory_bytes * cfg.background_memory_fraction
    running = starting = 0
    for rec in node.active.values():
        inst_cores += instance_cpu_cores(rec, now, cfg, fr)
        mem += instance_memory_bytes(rec, now, cfg)
        if rec.state is InstanceState.RUNNING:
            running += 1
        else:
            starting += 1
    demand = bg * spec.cpu_cores + inst_cores + spike_cores
    used = min(demand, spec.cpu_cores)
    util = used / spec.cpu_cores
    rx = cfg.background_net_bytes_s + cfg.net_rx_bytes_per_core_s * inst_cores
    tx = cfg.background_net_bytes_s + cfg.net_rx_bytes_per_core_s * cfg.net_tx_ratio * inst_cores
    power = node_power_watts(spec.cpu_cores, util, fr, cfg)
    return NodeLoad(
        demand_cores=demand,
        used_cores=used,
        utilization=util,
        memory_used_bytes=min(mem, float(spec.memory_bytes)),
        rx_bytes_s=rx,
        tx_bytes_s=tx,
        running=running,
        starting=starting,
        slowdown=slowdown,
        speed=spec.speed * fr / slowdown,
        power_watts=power,
    )
