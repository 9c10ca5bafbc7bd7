"""Server-side apply of rendered manifests (`mlsysops deploy apply`), one object at a time.

CRDs go first and are awaited until Established, so the custom resources after them are served. Every
object gets its own result line; a failure does not stop the others. Typed objects go through the
client's generated API for their group (`patch_[namespaced_]<kind>`), custom resources through
CustomObjectsApi with the plural taken from the CRD in the same batch (or from the server).

`--dry-run` sends every request with dryRun=All. Objects that could only be checked once an earlier
object of the batch exists for real (a namespace, a CRD) are reported as skipped, not as failures.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.aio import client as k

from mlsysops.substrates.kubernetes.client import KubeError, apply, call

CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Node",
                  "PersistentVolume", "StorageClass", "PriorityClass"}


class _Skip(Exception):
    """Dry run: this object can only be checked after an earlier one of the batch exists."""


@dataclass(slots=True)
class ApplyResult:
    kind: str
    name: str
    namespace: str | None
    outcome: str            # applied | valid | skipped | failed
    detail: str = ""

    @property
    def ref(self) -> str:
        where = f" -n {self.namespace}" if self.namespace else ""
        return f"{self.kind}/{self.name}{where}"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def typed_api_class(api_version: str) -> type | None:
    """`apps/v1` -> AppsV1Api, `v1` -> CoreV1Api, `rbac.authorization.k8s.io/v1` -> RbacAuthorizationV1Api."""
    group, _, version = api_version.rpartition("/")
    if not group:
        group = "core"
    if not group.endswith(".k8s.io") and "." in group:
        return None                           # a custom resource group
    stem = "".join(p.capitalize() for p in group.removesuffix(".k8s.io").split("."))
    return getattr(k, f"{stem}{version.capitalize()}Api", None)


class Applier:
    def __init__(self, api: k.ApiClient, *, dry_run: bool = False, crd_timeout_s: float = 30.0,
                 on_result: Callable[[ApplyResult], None] | None = None) -> None:
        self.api = api
        self.on_result = on_result   # told of each object as it is done (the CLI's progress)
        self.dry_run = dry_run
        self.crd_timeout_s = crd_timeout_s
        self.plurals: dict[tuple[str, str], str] = {}      # (group, kind) -> plural
        self.pending_crds: set[tuple[str, str]] = set()    # dry run: CRDs not on the server yet
        self.pending_namespaces: set[str] = set()

    async def apply_all(self, objects: list[dict[str, Any]]) -> list[ApplyResult]:
        for obj in objects:
            if obj["kind"] == "CustomResourceDefinition":
                names = obj["spec"]["names"]
                self.plurals[(obj["spec"]["group"], names["kind"])] = names["plural"]
        crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
        namespaces = [o for o in objects if o["kind"] == "Namespace"]
        rest = [o for o in objects if o["kind"] not in ("CustomResourceDefinition", "Namespace")]
        results = [await self._told(o) for o in namespaces + crds]
        if not self.dry_run:
            results += await self._await_established([o["metadata"]["name"] for o in crds])
        results += [await self._told(o) for o in rest]
        return results

    async def _told(self, obj: dict[str, Any]) -> ApplyResult:
        res = await self.apply_one(obj)
        if self.on_result is not None:
            self.on_result(res)
        return res

    async def apply_one(self, obj: dict[str, Any]) -> ApplyResult:
        kind, meta = obj["kind"], obj["metadata"]
        ns = None if kind in CLUSTER_SCOPED else meta.get("namespace") or "default"
        res = ApplyResult(kind, meta["name"], ns, "failed")
        if self.dry_run and ns in self.pending_namespaces:
            res.outcome, res.detail = "skipped", f"namespace {ns} is created by this apply"
            return res
        try:
            await self._patch(obj, ns)
        except _Skip as exc:
            res.outcome, res.detail = "skipped", str(exc)
            return res
        except KubeError as exc:
            res.detail = str(exc)
            return res
        except (KeyError, ValueError, TypeError) as exc:   # client-side: unknown kind, bad body
            res.detail = f"{type(exc).__name__}: {exc}"
            return res
        res.outcome = "valid" if self.dry_run else "applied"
        if self.dry_run and kind in ("Namespace", "CustomResourceDefinition"):
            await self._note_pending(obj)
        return res

    async def _note_pending(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        try:
            if obj["kind"] == "Namespace":
                await call(k.CoreV1Api(self.api).read_namespace, name)
            else:
                await call(k.ApiextensionsV1Api(self.api).read_custom_resource_definition, name)
        except KubeError as exc:
            if not exc.not_found:
                raise
            if obj["kind"] == "Namespace":
                self.pending_namespaces.add(name)
            else:
                self.pending_crds.add((obj["spec"]["group"], obj["spec"]["names"]["kind"]))

    async def _patch(self, obj: dict[str, Any], ns: str | None) -> Any:
        kind, name = obj["kind"], obj["metadata"]["name"]
        extra = {"dry_run": "All"} if self.dry_run else {}
        cls = typed_api_class(obj["apiVersion"])
        if cls is not None:
            method = f"patch_{'namespaced_' if ns else ''}{_snake(kind)}"
            fn = getattr(cls(self.api), method, None)
            if fn is None:
                raise KeyError(f"no {cls.__name__}.{method} for kind {kind}")
            args = (name, ns) if ns else (name,)
            return await apply(fn, *args, body=obj, **extra)
        group, version = obj["apiVersion"].split("/", 1)
        if self.dry_run and (group, kind) in self.pending_crds:
            raise _Skip("its CRD is created by this apply")
        plural = self.plurals.get((group, kind)) or await self._server_plural(group, version, kind)
        custom = k.CustomObjectsApi(self.api)
        if ns:
            return await apply(custom.patch_namespaced_custom_object, group, version, ns, plural, name,
                               body=obj, **extra)
        return await apply(custom.patch_cluster_custom_object, group, version, plural, name, body=obj, **extra)

    async def _server_plural(self, group: str, version: str, kind: str) -> str:
        resources = await call(k.CustomObjectsApi(self.api).get_api_resources, group, version)
        for r in resources.resources:
            if r.kind == kind and "/" not in r.name:
                self.plurals[(group, kind)] = r.name
                return r.name
        raise KeyError(f"the server does not serve kind {kind} in {group}/{version}")

    async def _await_established(self, names: list[str]) -> list[ApplyResult]:
        ext = k.ApiextensionsV1Api(self.api)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.crd_timeout_s
        waiting = set(names)
        while waiting and loop.time() < deadline:
            for name in sorted(waiting):
                crd = await call(ext.read_custom_resource_definition, name)
                conds = (crd.status.conditions if crd.status else None) or []
                if any(c.type == "Established" and c.status == "True" for c in conds):
                    waiting.discard(name)
            if waiting:
                await asyncio.sleep(0.1)
        return [ApplyResult("CustomResourceDefinition", n, None, "failed",
                            f"not Established after {self.crd_timeout_s}s") for n in sorted(waiting)]


async def apply_manifests(api: k.ApiClient, objects: list[dict[str, Any]], *, dry_run: bool = False,
                          crd_timeout_s: float = 30.0,
                          on_result: Callable[[ApplyResult], None] | None = None) -> list[ApplyResult]:
    """Apply (or dry-run) `objects` in order with field manager `mlsysops`; one result per object
    (`on_result` is called with each as soon as it is known)."""
    return await Applier(api, dry_run=dry_run, crd_timeout_s=crd_timeout_s, on_result=on_result).apply_all(objects)


async def existing_secrets(api: k.ApiClient, namespace: str) -> dict[str, Any]:
    """Secrets a previous apply generated (passwords, API token, TLS key), so re-applying keeps them:
    rotating a password in the Secret without restarting ejabberd and the agent would lock it out."""
    import base64

    try:
        listed = await call(k.CoreV1Api(api).list_namespaced_secret, namespace,
                            label_selector="app.kubernetes.io/managed-by=mlsysops-deploy")
    except KubeError as exc:
        if exc.not_found:
            return {}
        raise

    def text(value: str) -> str:
        return base64.b64decode(value).decode()

    out: dict[str, Any] = {"passwords": {}}
    for secret in listed.items:
        data = {key: text(v) for key, v in (secret.data or {}).items()}
        name = secret.metadata.name
        if name == "mlsysops-api-tokens" and data.get("tokens"):
            out["api_token"] = data["tokens"].split()[0]
        elif name.endswith("-tls") and "xmpp.pem" in data:
            out["tls_pem"] = data["xmpp.pem"]
            if data.get("ca.crt"):
                out["tls_ca"] = data["ca.crt"]
        elif "jid-localpart" in data and "password" in data:
            out["passwords"][data["jid-localpart"]] = data["password"]
        elif name == "mlsysops-xmpp-nodes":   # rendered before node agents had a Secret each
            out["passwords"].update(data)
    return out
