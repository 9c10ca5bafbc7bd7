"""The explanation of a decision: one form, whichever way the policy gave it.

A policy explains an analyze or plan result in one of two ways, both used by the original framework's
plugins: a third element of the returned tuple, or `context["explanation"]`. Both normalise to one
`Explanation`: a mapping with string keys and JSON-able values, the policy's own keys kept as they are (the
API, CLI and dashboard show them). The returned one wins when both are given. The decision log stores
exactly this form on the analyze and plan records, and the plan carries it.
"""

from __future__ import annotations

from typing import Any, TypedDict

from mlsysops.agents.contracts.errors import PluginContractError

Explanation = dict[str, Any]


class ExplanationFields(TypedDict, total=False):
    """Keys with a meaning to the framework; any other key is the policy's own."""

    summary: str        # one line for people
    alternatives: Any   # options weighed and rejected: shown as the plan record's `alternatives`
    reason: str


def _is_explanation(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def normalize_explanation(returned: Any, context: dict[str, Any]) -> Explanation | None:
    """The explanation of one result: the returned one when given, else the context's, else None.

    A returned explanation that is not a mapping with string keys breaks the contract (PluginContractError);
    a malformed `context["explanation"]` is ignored: the context is the policy's own state. The result is a
    copy, so a policy that later mutates its context does not rewrite a recorded decision.
    """
    if returned is not None:
        if not _is_explanation(returned):
            raise PluginContractError(
                f"explanation (3rd element) must be a dict with string keys, got {type(returned).__name__}")
        return dict(returned)
    in_context = context.get("explanation")
    return dict(in_context) if _is_explanation(in_context) else None
