"""The node's own knobs: which mechanisms a node agent gets, behind its `permitted_actions`, and the
`node.knob` handler through which its cluster drives them.

A simulated node in this process gets the simulator's CPU frequency; a host gets Linux cpufreq sysfs and
NVML, which say "not supported on this host" where the driver or GPU is absent. A node observing a remote
simulator (`mlsysops sim serve`) has no knob yet: its substrate offers no write path. Every knob is
wrapped by `PermittedKnob`, so a policy's plan and a cluster's command meet the same refusal.
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.agent_base import HandlerError
from mlsysops.agents.payloads import KnobCommand, KnobResult
from mlsysops.agents.protocol import Envelope, Kind
from mlsysops.mechanisms.knob_gate import PermittedKnob

KNOB_ACTIONS = {"cpu_frequency": "cpu_frequency", "gpu_frequency": "gpu_frequency"}


def knob_mechanisms(substrate: Any, node: str, cpufreq_root: str | None = None) -> dict[str, Any]:
    sim = getattr(substrate, "sim", None)
    if sim is not None:
        from mlsysops.mechanisms.sim_cpufreq import SimCpuFrequencyMechanism

        return {"cpu_frequency": SimCpuFrequencyMechanism(sim, node)}
    if type(substrate).__name__ == "HostNodeSubstrate":
        from mlsysops.mechanisms.cpufreq import DEFAULT_ROOT, CpuFrequencyMechanism
        from mlsysops.mechanisms.gpu_nvml import GpuNvmlMechanism

        return {"cpu_frequency": CpuFrequencyMechanism(cpufreq_root or DEFAULT_ROOT),
                "gpu_frequency": GpuNvmlMechanism()}
    return {}


def register_knobs(agent: Any, substrate: Any, permitted: list[str] | None) -> dict[str, PermittedKnob]:
    knobs = {name: PermittedKnob(mech, KNOB_ACTIONS[name], permitted, agent.node)
             for name, mech in knob_mechanisms(substrate, agent.node).items()}
    for name, knob in knobs.items():
        agent.mechanisms.register(name, knob)

    async def handle(env: Envelope) -> dict[str, Any]:
        cmd = env.payload
        assert isinstance(cmd, KnobCommand)
        knob = knobs.get(cmd.knob)
        if knob is None:
            raise HandlerError(f"knob: {cmd.knob!r} is not a knob of node {agent.node} (knobs: {sorted(knobs)})")
        # through the plan scheduler: recorded (plan, schedule, execute) and serialised with the policies' plans
        result = await agent.execute(cmd.knob, cmd.command, reason=f"node.knob from {env.sender}")
        done = result.commands.get(cmd.knob)
        detail = done.detail if done is not None else result.reason
        if result.status != "completed":
            raise HandlerError(f"{cmd.knob}: {detail or result.status}")
        return KnobResult(ok=True, detail=detail, state=await knob.get_state()).model_dump(mode="json")

    agent.on(Kind.NODE_KNOB, handle)
    return knobs
