"""Our CRDs (`mlsysops.eu/v1`, generated under agents/generated/crds) on a cluster, and CR status updates.

`install_crds()` server-side-applies every CRD and waits until the API server serves it (Established).
`update_status()` writes `.status` through the status subresource with a merge patch, so the spec the
user owns is never touched and the status is never lost to a spec update.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import yaml
from kubernetes.aio import client as k

from mlsysops.agents.descriptions.crd_gen import GENERATED_DIR
from mlsysops.substrates.kubernetes.client import FIELD_MANAGER, MERGE, KubeError, RetryPolicy, apply, call

CRD_DIR = GENERATED_DIR / "crds"
GROUP = "mlsysops.eu"
VERSION = "v1"


def load_crds(directory: Path = CRD_DIR) -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(directory.glob("*.yaml"))]


@functools.cache
def _plurals() -> dict[str, str]:
    return {crd["spec"]["names"]["kind"]: crd["spec"]["names"]["plural"] for crd in load_crds()}


def plural_of(kind: str) -> str:
    try:
        return _plurals()[kind]
    except KeyError:
        raise KeyError(f"no CRD for kind {kind!r}") from None


def _established(crd: Any) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


async def install_crds(api: k.ApiClient, *, timeout: float = 30.0, policy: RetryPolicy | None = None
                       ) -> list[str]:
    """Apply all our CRDs (idempotent) and wait until each is Established; returns their names."""
    ext = k.ApiextensionsV1Api(api)
    names = []
    for crd in load_crds():
        name = crd["metadata"]["name"]
        await apply(ext.patch_custom_resource_definition, name, body=crd, policy=policy)
        names.append(name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for name in names:
        while not _established(await call(ext.read_custom_resource_definition, name, policy=policy)):
            if loop.time() > deadline:
                raise KubeError(f"CRD {name} not established after {timeout}s")
            await asyncio.sleep(0.05)
    return names


def description_objects(models: list[Any], namespace: str, labels: dict[str, str] | None = None
                        ) -> list[dict[str, Any]]:
    """The descriptions (MLSysOpsContinuum/Cluster/Datacenter/Node models) as custom resources in `namespace`:
    the objects whose `.status` the agents write."""
    from mlsysops.agents.descriptions.loader import to_k8s

    out = []
    for model in models:
        obj = to_k8s(model)
        obj["metadata"] = {**obj["metadata"], "namespace": namespace, **({"labels": labels} if labels else {})}
        out.append(obj)
    return out


async def apply_descriptions(api: k.ApiClient, namespace: str, models: list[Any], *,
                             labels: dict[str, str] | None = None, policy: RetryPolicy | None = None) -> int:
    """Server-side apply of the description CRs (our CRDs must be installed); returns how many."""
    objs = k.CustomObjectsApi(api)
    bodies = description_objects(models, namespace, labels)
    for body in bodies:
        await apply(objs.patch_namespaced_custom_object, GROUP, VERSION, namespace, plural_of(body["kind"]),
                    body["metadata"]["name"], body=body, policy=policy)
    return len(bodies)


async def update_status(api: k.ApiClient, kind: str, namespace: str, name: str, status: dict[str, Any],
                        *, policy: RetryPolicy | None = None) -> dict[str, Any]:
    """Merge `status` into the object's `.status` via the status subresource."""
    objs = k.CustomObjectsApi(api)
    return await call(objs.patch_namespaced_custom_object_status, GROUP, VERSION, namespace,
                      plural_of(kind), name, {"status": status}, _content_type=MERGE,
                      field_manager=FIELD_MANAGER, policy=policy)


async def read(api: k.ApiClient, kind: str, namespace: str, name: str,
               *, policy: RetryPolicy | None = None) -> dict[str, Any]:
    objs = k.CustomObjectsApi(api)
    return await call(objs.get_namespaced_custom_object, GROUP, VERSION, namespace, plural_of(kind), name,
                      policy=policy)
