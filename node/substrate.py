"""What a node agent observes and acts on: here, one node of the simulated continuum.

A host substrate (psutil/sysfs) will implement the same three methods for real machines.
"""

from __future__ import annotations

from typing import Any

from sim import SimContinuum


class SimNodeSubstrate:
    def __init__(self, sim: SimContinuum, node: str) -> None:
        self.sim = sim
        self.node = node

    def is_up(self) -> bool:
        return self.sim.is_up(self.node)

    def node_metrics(self) -> dict[str, float]:
        return self.sim.node_metrics(self.node)

    def instances(self) -> list[dict[str, Any]]:
        """Instances on this node that are not terminal, plus recently failed ones (so failures get reported)."""
        out = []
        horizon = self.sim.clock.now() - 60.0
        for inst in self.sim.instances(node=self.node):
            if inst.state.terminal and inst.state_since < horizon:
                continue
            metrics = self.sim.component_metrics(inst.instance_id) if not inst.state.terminal else {}
            out.append({"instance_id": inst.instance_id, "app": inst.app, "component": inst.component,
                        "state": str(inst.state), "since": inst.state_since, "reason": inst.reason,
                        "metrics": metrics})
        return out
