"""The original MLSysOps plugin contract, in front of our engine (one adapter, not a second engine).

* `original_policy.OriginalPolicy`: an original policy module (`policy-NAME.py`) as a policy of our
  `PolicyRegistry`/`MAPEEngine`: it converts our arguments into the shapes the original framework passed
  (per layer, `shapes`), keeps the policy's own context, and maps the plan's original mechanism names onto
  ours (`names`).
* `original_mechanism.OriginalMechanism`: an original mechanism module (`initialize(inbound_queue,
  outbound_queue, agent_state)`) as a mechanism of our `MechanismRegistry`, with the original return
  semantics (truthy = done, falsy = pending until the mechanism reports the plan's status).

The helper modules original plugins import live beside the package: `mlsysops.logger_util`,
`mlsysops.utilities`, `mlsysops.events` and the top-level `mlstelemetry`.
"""

from mlsysops.agents.compat.original_mechanism import (
    OriginalAgentState,
    OriginalMechanism,
    is_original_mechanism,
)
from mlsysops.agents.compat.original_policy import (
    ORIGINAL_POLICY_GROUP,
    OriginalPolicy,
    original_policy_name,
    wanted_packages,
)

__all__ = [
    "ORIGINAL_POLICY_GROUP",
    "OriginalAgentState",
    "OriginalMechanism",
    "OriginalPolicy",
    "is_original_mechanism",
    "original_policy_name",
    "wanted_packages",
]
