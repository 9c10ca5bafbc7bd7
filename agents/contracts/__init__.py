"""The plugin contracts: what a policy and a mechanism are, and what they exchange with an agent.

Descriptions, not base classes: an original MLSysOps plugin (a plain module with `initialize`, `analyze`,
`plan` or `apply`, `get_state`, `get_options`) satisfies them as it is. The public surface is re-exported
from `mlsysops.plugins`; the registries in `mlsysops.agents.mape.plugins` check them at load time.
"""

from mlsysops.agents.contracts.capabilities import (
    CAPABILITY_METHODS,
    OPERATIONS,
    Adopts,
    Capability,
    RemovesApps,
    Resyncs,
    Watches,
    declared_capabilities,
)
from mlsysops.agents.contracts.commands import (
    AppRemovalArgs,
    ClusterDispatchCommand,
    FluidityAction,
    FluidityPlacementCommand,
    PlacementActionSpec,
    PlacementCommand,
    RelocationProposalCommand,
    ResyncArgs,
)
from mlsysops.agents.contracts.errors import PluginContractError
from mlsysops.agents.contracts.explanation import Explanation, ExplanationFields, normalize_explanation
from mlsysops.agents.contracts.mechanism import ApplyResult, MechanismPlugin, MechanismView
from mlsysops.agents.contracts.policy import (
    AnalyzeResult,
    PlanResultTuple,
    PolicyConfiguration,
    PolicyContext,
    PolicyModule,
    PolicyTelemetry,
)
from mlsysops.agents.contracts.system_description import (
    ClusterEntry,
    ClusterNodeEntry,
    ClusterSystemDescription,
    ContinuumNodeEntry,
    ContinuumSystemDescription,
    InstanceRow,
    NodeInstance,
    NodeSystemDescription,
    RelocationRequest,
)

__all__ = [
    "CAPABILITY_METHODS",
    "OPERATIONS",
    "Adopts",
    "AnalyzeResult",
    "AppRemovalArgs",
    "ApplyResult",
    "Capability",
    "ClusterDispatchCommand",
    "ClusterEntry",
    "ClusterNodeEntry",
    "ClusterSystemDescription",
    "ContinuumNodeEntry",
    "ContinuumSystemDescription",
    "Explanation",
    "ExplanationFields",
    "FluidityAction",
    "FluidityPlacementCommand",
    "InstanceRow",
    "MechanismPlugin",
    "MechanismView",
    "NodeInstance",
    "NodeSystemDescription",
    "PlacementActionSpec",
    "PlacementCommand",
    "PlanResultTuple",
    "PluginContractError",
    "PolicyConfiguration",
    "PolicyContext",
    "PolicyModule",
    "PolicyTelemetry",
    "RelocationProposalCommand",
    "RelocationRequest",
    "RemovesApps",
    "Resyncs",
    "ResyncArgs",
    "Watches",
    "declared_capabilities",
    "normalize_explanation",
]
