"""The command formats of the built-in mechanisms: what a policy's plan puts under each mechanism name.

Commands travel as plain dicts (JSON-able: they are recorded in the decision log); these TypedDicts
document them. Malformed commands make `apply` fail with a reason naming the field, never raise.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# -- cluster: `component_placement` (also registered as `fluidity`) ---------------------------------------


# One action. deploy/change_spec need `node`; move needs `to` and `from` or `instance_id`; remove needs
# `node` or `instance_id`; change_spec needs `spec` (the new component description). The functional
# form because `from` is a Python keyword.
PlacementActionSpec = TypedDict("PlacementActionSpec", {
    "action": Literal["deploy", "move", "remove", "change_spec"],
    "component": str,
    "node": NotRequired[str],
    "instance_id": NotRequired[str],
    "from": NotRequired[str],
    "to": NotRequired[str],
    "new_instance_id": NotRequired[str],   # move: the replacement's id
    "spec": NotRequired[dict[str, Any]],
})


class PlacementCommand(TypedDict):
    """`{"app": "shop", "actions": [...]}`: the built-in policies' format."""

    app: str
    actions: list[PlacementActionSpec]


class FluidityAction(TypedDict, total=False):
    action: Literal["deploy", "move", "remove", "change_spec"]
    host: str           # deploy, remove, change_spec
    src_host: str       # move
    target_host: str    # move
    new_spec: dict[str, Any]   # change_spec


class FluidityPlacementCommand(TypedDict):
    """The original framework's plan, accepted as it is: `deployment_plan` maps each component to a list of
    `FluidityAction`s, plus the `initial_plan` flag (also tolerated beside `deployment_plan`)."""

    name: str
    deployment_plan: dict[str, Any]


# -- continuum: `cluster_dispatch` (cluster agents over XMPP, or Karmada) ----------------------------------


class ClusterDispatchCommand(TypedDict):
    """Place components on clusters: `{"app", "assign": {component: cluster}, "previous": {component:
    cluster}}`. Each affected cluster gets the full list of the app's components it must run. Karmada also
    takes `remove: [component]`."""

    app: str
    assign: dict[str, str]
    previous: NotRequired[dict[str, str]]
    remove: NotRequired[list[str]]


class AppRemovalArgs(TypedDict):
    """The command of the `remove_app` operation (keyword arguments of `remove_app`)."""

    app: str
    assign: dict[str, str]   # where its components run now


class ResyncArgs(TypedDict):
    """The command of the `resync` operation: the cluster that (re)joined."""

    cluster: str


# -- node: `relocation_proposal` -------------------------------------------------------------------------


class RelocationProposalCommand(TypedDict):
    """Ask the cluster agent to relocate one instance (it decides; the node only proposes)."""

    app: str
    component: str
    instance_id: str
    node: str
    reason: str
