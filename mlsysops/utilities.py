"""`mlsysops.utilities`, the helpers original MLSysOps policies import.

`evaluate_condition(a, b, operator)` compares `a` to `b` with one of the `relation` values of an app's
`qos_metrics` (`lower_or_equal`, `greater_or_equal`, `equal`, `lower_than`, `greater_than`):
`evaluate_condition(1, 2, "lower_than")` is `1 < 2`. An unknown operator raises ValueError naming the
valid ones.
"""

from __future__ import annotations

import operator as _op
from typing import Any

OPERATORS = {
    "lower_or_equal": _op.le,
    "greater_or_equal": _op.ge,
    "equal": _op.eq,
    "lower_than": _op.lt,
    "greater_than": _op.gt,
}


def evaluate_condition(a: Any, b: Any, operator: str) -> bool:
    try:
        compare = OPERATORS[operator]
    except (KeyError, TypeError):
        raise ValueError(f"invalid operator {operator!r}; expected one of {sorted(OPERATORS)}") from None
    return bool(compare(a, b))


__all__ = ["OPERATORS", "evaluate_condition"]
