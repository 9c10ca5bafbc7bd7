"""Errors raised by the simulated continuum.

Every rejection is synchronous and explicit so a mechanism plugin can turn it into a `failed` plan outcome
with the reason; nothing is silently half-done.
"""

from __future__ import annotations


class SimError(Exception):
    """Base class of every error the sim raises on purpose."""


class UnknownNodeError(SimError):
    """A node name (or link selector) that the sim does not know."""


class UnknownInstanceError(SimError):
    """An instance id that the sim does not know (never deployed, or pruned from history)."""


class NodeDownError(SimError):
    """The target node is crashed; nothing can be deployed or moved onto it."""


class InsufficientCapacityError(SimError):
    """The requests of the new instance plus those already on the node exceed the node's capacity."""


class DuplicateInstanceError(SimError):
    """An active instance with this id exists with a different spec."""


class InstanceNotActiveError(SimError):
    """The operation needs a starting/running instance, but this one is failed or stopped."""
