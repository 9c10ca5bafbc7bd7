"""Node mechanism: forward a relocation proposal to the cluster agent (`plan.propose`).

The node decides nothing about placement; it only asks. `apply` succeeds when the cluster accepted the
proposal for consideration (its relocation policy may still decide not to move).
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.agent_base import MLSysOpsAgent, RequestError
from mlsysops.agents.payloads import PlanProposal
from mlsysops.agents.protocol import Kind


class RelocationProposalMechanism:
    name = "relocation_proposal"

    def __init__(self, agent: MLSysOpsAgent) -> None:
        self.agent = agent
        self.sent = 0

    async def get_state(self) -> dict[str, Any]:
        return {"parent": self.agent.parent, "sent": self.sent}

    async def get_options(self) -> dict[str, Any]:
        return {"fields": list(PlanProposal.model_fields)}

    async def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        if not self.agent.parent:
            return {"ok": False, "detail": "no parent cluster agent"}
        try:
            body = PlanProposal.model_validate(command)
            reply = await self.agent.request(self.agent.parent, Kind.PLAN_PROPOSE, body)
        except RequestError as exc:
            return {"ok": False, "detail": f"cluster did not accept: {exc}"}
        except ValueError as exc:
            return {"ok": False, "detail": f"invalid proposal: {exc}"}
        self.sent += 1
        return {"ok": True, "detail": reply.body}
