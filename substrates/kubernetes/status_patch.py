"""What our status writers share: timestamps as Kubernetes writes them and the merge patch between two
statuses (so only what changed is sent)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch turning `old` into `new` (None removes a key; lists are replaced whole)."""
    patch: dict[str, Any] = dict.fromkeys(set(old) - set(new))
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_diff(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = copy.deepcopy(value)
    return patch
