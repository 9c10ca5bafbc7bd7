"""Names and labels shared by the rendered manifests."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

PART_OF = "mlsysops"


def dns_label(text: str, max_len: int = 63) -> str:
    """A DNS-1123 label from arbitrary text (lowercase alnum and '-'); long names keep a hash suffix."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if len(label) <= max_len:
        return label
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{label[: max_len - 9].rstrip('-')}-{digest}"


def labels(slice_name: str, component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mlsysops",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/instance": dns_label(slice_name),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "mlsysops-deploy",
        **extra,
    }


def selector(slice_name: str, component: str, **extra: str) -> dict[str, str]:
    """The immutable subset of labels used in selectors (never add version-like labels here)."""
    return {
        "app.kubernetes.io/instance": dns_label(slice_name),
        "app.kubernetes.io/component": component,
        **extra,
    }


def meta(name: str, namespace: str | None, slice_name: str, component: str, **extra: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "labels": labels(slice_name, component, **extra)}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def content_hash(data: Any) -> str:
    """Stable hash of config data: a pod-template annotation, so a config change rolls the pods."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
