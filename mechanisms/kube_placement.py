"""Component placement on a Kubernetes cluster (the cluster agent's mechanism when the substrate is Kubernetes).

Same contract as `sim_placement`: `apply(command)` for deploy / move / remove / change_spec in either plan
format `placement_commands.parse_command` accepts, `get_state()`, `get_options()`.

Mapping: one Deployment per placed instance (replicas 1, required node affinity on the chosen node's
`kubernetes.io/hostname`), named from the instance id, which is kept in an annotation; one Service per
component that receives traffic (named after the component), shared by its instances. Everything is
server-side applied with field manager `mlsysops` and labelled (`mlsysops.substrates.kubernetes.manifests`), so:

* a retried or repeated command re-applies the same objects: nothing is deployed twice;
* `get_state()` lists by label (level-triggered): a restarted agent adopts what runs, pods untouched;
* `remove` deletes the instance's Deployment (its ReplicaSets and pods go with it) and, with the last
  instance of a component, the component's Services and anything else labelled for it: no orphans;
* `move` is make-before-break: the new Deployment on the target must become Available before the old
  one is deleted (unless the source node is already down); on failure the new one is removed;
* `change_spec` re-applies the Deployment: its rolling update (maxSurge 1, maxUnavailable 0) starts the
  new pod before stopping the old; the action waits for the rollout.

`resolve(app_name)` returns the app's MLSysOpsApp (the cluster agent reads it from its descriptions).
API errors never escape: the action reports them, `get_state()` carries the last error per component and,
when the server is unreachable, the last state it saw (marked `stale`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes.aio import client as k
from kubernetes.utils import parse_quantity

from mlsysops.agents.descriptions.app import MLSysOpsApp
from mlsysops.mechanisms.placement_commands import CommandError, PlacementAction, parse_command
from mlsysops.plugins import Capability
from mlsysops.substrates.kubernetes import manifests as mf
from mlsysops.substrates.kubernetes.client import KubeError, RetryPolicy, apply, call, delete
from mlsysops.substrates.kubernetes.watch import ResourceWatch

log = logging.getLogger(__name__)

AppResolver = Callable[[str], MLSysOpsApp | None]


def app_resolver_for(apps: dict[str, MLSysOpsApp]) -> AppResolver:
    return apps.get


def _no_apps(_app: str) -> None:
    """Until a cluster agent registers the mechanism it knows no app (each command names one it lacks)."""
    return None


def default_instance_id(app: str, component: str, node: str) -> str:
    """Fluidity plans carry no instance ids: derive one per node, so retries stay idempotent."""
    return f"{app}.{component}.0@{node}"


def moved_instance_id(instance_id: str, source: str | None, target: str) -> str:
    if source and instance_id.endswith(f"@{source}"):
        return f"{instance_id[: -len(source)]}{target}"
    return f"{instance_id}@{target}"


def _node_ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _rolled_out(dep: dict[str, Any]) -> bool:
    """The Deployment's current spec runs, Available, with no old pods left."""
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    want = spec.get("replicas", 1)
    return (status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) == want and status.get("availableReplicas", 0) == want
            and status.get("replicas", 0) == want)


# Container waiting reasons that do not heal by waiting (kubectl shows them in STATUS): the instance has failed
# now, not when the Deployment's progress deadline (10 min by default) runs out.
FAILING_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                   "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def pod_problem(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """What keeps the newest pod from running, as (state, reason): ("failed", "ImagePullBackOff: ...") for
    a pod that failed or cannot start, ("starting", "Unschedulable: ...") for one the scheduler cannot place.
    None when it is on its way (or there is no pod yet)."""
    if not pods:
        return None
    pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return "failed", _why(status.get("reason") or "Failed", status.get("message"))
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FAILING_WAITING:
            return "failed", _why(waiting["reason"], waiting.get("message"))
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return "starting", _why(cond.get("reason") or "Unschedulable", cond.get("message"))
    return None


def _why(reason: str, message: str | None) -> str:
    return f"{reason}: {message}" if message else reason


class KubePlacementMechanism:
    """Mechanism plugin object: `apply(command)`, `get_state()`, `get_options()`."""

    name = "component_placement"
    # get_state() is authoritative for instance status (the cluster agent reads it); watch() streams changes
    capabilities = frozenset({Capability.REPORTS_STATUS, Capability.WATCH})

    def __init__(self, api: k.ApiClient, namespace: str, cluster_id: str, resolve: AppResolver | None = None,
                 *, move_timeout: float = 120.0, poll_interval: float = 0.1,
                 policy: RetryPolicy | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.cluster_id = cluster_id
        self.resolve: AppResolver = resolve or _no_apps
        self.move_timeout = move_timeout
        self.poll_interval = poll_interval
        self.policy = policy or RetryPolicy()
        self.apps = k.AppsV1Api(api)
        self.core = k.CoreV1Api(api)
        self.errors: dict[str, str] = {}          # "app/component" -> last error, cleared on success
        self._last_state: dict[str, Any] | None = None

    def initialize(self, *, app_models: Mapping[str, MLSysOpsApp]) -> None:
        """Bound by the cluster agent that registers this mechanism: its app models (a live table)."""
        self.resolve = app_models.get

    def _raw(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    # -- contract -----------------------------------------------------------------------------------
    async def get_options(self) -> dict[str, Any]:
        try:
            nodes = sorted(await self._nodes())
        except KubeError as exc:
            nodes = []
            log.warning("kube placement: cannot list nodes: %s", exc)
        return {"actions": ["deploy", "move", "remove", "change_spec"], "formats": ["mlsysops", "fluidity"],
                "nodes": nodes, "substrate": "kubernetes", "namespace": self.namespace}

    async def get_state(self) -> dict[str, Any]:
        try:
            nodes = await self._nodes()
            deps = await self._deployments(mf.component_selector_all(self.cluster_id))
            pods = await self._pods(mf.component_selector_all(self.cluster_id))
        except KubeError as exc:
            stale = dict(self._last_state or {"cluster": self.cluster_id, "instances": [], "nodes_up": {}})
            return {**stale, "stale": True, "error": str(exc), "errors": dict(self.errors)}
        by_instance: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            label = (pod["metadata"].get("labels") or {}).get(mf.LABEL_INSTANCE)
            if label:
                by_instance.setdefault(label, []).append(pod)
        up = {name: _node_ready(n) for name, n in nodes.items()}
        instances = [self._instance(d, by_instance, up) for d in deps]
        state = {"cluster": self.cluster_id, "namespace": self.namespace,
                 "instances": [i for i in instances if i is not None],
                 "nodes_up": up}
        self._last_state = state
        return {**state, "errors": dict(self.errors)}

    async def apply(self, command: Any) -> dict[str, Any]:
        try:
            actions = parse_command(command)
        except CommandError as exc:
            return {"ok": False, "detail": f"invalid command: {exc}"}
        results = []
        ok = True
        for act in actions:
            key = f"{act.app}/{act.component}"
            try:
                detail = await self._apply_one(act)
                self.errors.pop(key, None)
                results.append({**act.to_dict(), "ok": True, **detail})
            except (KubeError, CommandError, ValueError, TimeoutError) as exc:
                ok = False
                self.errors[key] = f"{act.action}: {exc}"
                results.append({**act.to_dict(), "ok": False, "error": str(exc)})
                log.warning("kube placement action %s failed: %s", act.to_dict(), exc)
            except Exception as exc:   # never crash the agent on the API server's behalf
                ok = False
                self.errors[key] = f"{act.action}: unexpected {type(exc).__name__}: {exc}"
                results.append({**act.to_dict(), "ok": False, "error": self.errors[key]})
                log.exception("kube placement action %s failed", act.to_dict())
        return {"ok": ok, "detail": results}

    async def watch(self, on_state: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Run forever: watch this cluster's Deployments and Pods (resourceVersion, 410 -> re-list) and
        call `on_state(get_state())` after each batch of changes: component status reports, level-triggered."""
        changed = asyncio.Event()

        async def mark(*_: Any) -> None:
            changed.set()

        selector = mf.component_selector_all(self.cluster_id)
        watches = [ResourceWatch(self.api, fn, self.namespace, on_sync=mark, on_event=mark,
                                 label_selector=selector, policy=self.policy)
                   for fn in (self.apps.list_namespaced_deployment, self.core.list_namespaced_pod)]
        tasks = [asyncio.create_task(w.run()) for w in watches]
        try:
            while True:
                await changed.wait()
                await asyncio.sleep(self.poll_interval)   # coalesce a burst of events into one report
                changed.clear()
                await on_state(await self.get_state())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- reading ------------------------------------------------------------------------------------
    async def _nodes(self) -> dict[str, dict[str, Any]]:
        """This cluster's Nodes: those labelled with our cluster id, or all when none is labelled."""
        labelled = self._raw(await call(self.core.list_node, label_selector=f"{mf.LABEL_CLUSTER}="
                                        f"{mf.label_value(self.cluster_id)}", policy=self.policy))["items"]
        if not labelled:
            labelled = self._raw(await call(self.core.list_node, policy=self.policy))["items"]
        return {n["metadata"]["name"]: n for n in labelled}

    async def _deployments(self, selector: str) -> list[dict[str, Any]]:
        res = await call(self.apps.list_namespaced_deployment, self.namespace, label_selector=selector,
                         policy=self.policy)
        return self._raw(res)["items"]

    async def _pods(self, selector: str) -> list[dict[str, Any]]:
        res = await call(self.core.list_namespaced_pod, self.namespace, label_selector=selector,
                         policy=self.policy)
        return self._raw(res)["items"]

    def _instance(self, dep: dict[str, Any], pods_by_instance: dict[str, list[dict[str, Any]]],
                  nodes_up: dict[str, bool]) -> dict[str, Any] | None:
        meta = dep["metadata"]
        labels, ann = meta.get("labels") or {}, meta.get("annotations") or {}
        iid = ann.get(mf.ANN_INSTANCE_ID)
        if iid is None:
            return None   # a whole-component Deployment (not placed by this mechanism)
        pods = [p for p in pods_by_instance.get(labels.get(mf.LABEL_INSTANCE, ""), [])
                if not p["metadata"].get("deletionTimestamp")]
        pod_nodes = sorted({p["spec"].get("nodeName") for p in pods if p["spec"].get("nodeName")})
        node = pod_nodes[0] if len(pod_nodes) == 1 else ann.get(mf.ANN_NODE, "")
        cpu = mem = 0.0
        for c in dep["spec"]["template"]["spec"]["containers"]:
            req = (c.get("resources") or {}).get("requests") or {}
            cpu += float(parse_quantity(req["cpu"])) if "cpu" in req else 0.0
            mem += float(parse_quantity(req["memory"])) if "memory" in req else 0.0
        conditions = {c["type"]: c for c in (dep.get("status") or {}).get("conditions") or []}
        progressing = conditions.get("Progressing", {})
        reason = None
        wanted = ann.get(mf.ANN_NODE, "")
        if wanted and not nodes_up.get(wanted, False) and "," not in wanted:
            state, reason = "failed", f"node {wanted} is not ready"   # its pods cannot run anywhere else
        elif _rolled_out(dep):
            state = "running"
        elif progressing.get("reason") == "ProgressDeadlineExceeded":
            state, reason = "failed", progressing.get("message")
        else:
            state, reason = pod_problem(pods) or ("starting", None)
        return {"instance_id": iid, "app": labels.get(mf.LABEL_APP), "component": labels.get(mf.LABEL_COMPONENT),
                "node": node, "state": state, "reason": reason, "deployment": meta["name"],
                "cpu_request_cores": cpu, "memory_request_bytes": int(mem),
                "pods": [{"name": p["metadata"]["name"], "uid": p["metadata"]["uid"],
                          "node": p["spec"].get("nodeName"), "phase": (p.get("status") or {}).get("phase")}
                         for p in pods]}

    async def _find(self, app: str, component: str, node: str | None, instance_id: str | None
                    ) -> dict[str, Any] | None:
        for dep in await self._deployments(mf.component_selector(app, component, self.cluster_id)):
            ann = dep["metadata"].get("annotations") or {}
            if ann.get(mf.ANN_INSTANCE_ID) is None:
                continue
            if instance_id is not None and ann.get(mf.ANN_INSTANCE_ID) != instance_id:
                continue
            if node is not None and ann.get(mf.ANN_NODE) != node:
                continue
            return dep
        return None

    # -- actions ------------------------------------------------------------------------------------
    def _app(self, app: str) -> MLSysOpsApp:
        model = self.resolve(app)
        if model is None:
            raise CommandError(f"unknown app {app!r}")
        return model

    async def _check_node(self, node: str | None) -> str:
        if node is None or node not in await self._nodes():
            raise CommandError(f"node {node!r} is not in cluster {self.cluster_id}")
        return node

    async def _apply_one(self, act: PlacementAction) -> dict[str, Any]:
        if act.action == "deploy":
            node = await self._check_node(act.node)
            iid = act.instance_id or default_instance_id(act.app, act.component, node)
            return await self._deploy(act.app, act.component, node, iid, act.spec)
        if act.action == "remove":
            return await self._remove(act)
        if act.action == "move":
            return await self._move(act)
        return await self._change_spec(act)

    async def _apply_services(self, model: MLSysOpsApp, component: str, spec: dict[str, Any] | None) -> None:
        for svc in mf.services(model, component, cluster=self.cluster_id, namespace=self.namespace, spec=spec):
            name = svc["metadata"]["name"]
            try:
                current = self._raw(await call(self.core.read_namespaced_service, name, self.namespace,
                                               policy=self.policy))
                labels = current["metadata"].get("labels") or {}
                if labels.get(mf.LABEL_APP) != mf.label_value(model.name):
                    raise CommandError(f"Service {self.namespace}/{name} exists and belongs to "
                                       f"{labels.get(mf.LABEL_APP) or 'someone else'}, not {model.name}")
            except KubeError as exc:
                if not exc.not_found:
                    raise
            await apply(self.core.patch_namespaced_service, name, self.namespace, body=svc, policy=self.policy)

    async def _deploy(self, app: str, component: str, node: str, instance_id: str,
                      spec: dict[str, Any] | None) -> dict[str, Any]:
        model = self._app(app)
        dep = mf.deployment(model, component, cluster=self.cluster_id, nodes=[node], instance_id=instance_id,
                            namespace=self.namespace, spec=spec)
        await self._apply_services(model, component, spec)
        await apply(self.apps.patch_namespaced_deployment, dep["metadata"]["name"], self.namespace, body=dep,
                    policy=self.policy)
        out: dict[str, Any] = {"instance_id": instance_id, "node": node, "deployment": dep["metadata"]["name"],
                               "state": "starting"}
        note = mf.restart_policy_note(mf.resolve_component(model, component, spec))
        if note:
            out["warning"] = note
        return out

    async def _delete_deployment(self, name: str) -> None:
        await delete(self.apps.delete_namespaced_deployment, name, self.namespace,
                     propagation_policy="Background", policy=self.policy)

    async def _remove_component_leftovers(self, app: str, component: str) -> list[str]:
        """With the component's last instance gone: its Services and anything else labelled for it."""
        selector = mf.component_selector(app, component, self.cluster_id)
        if await self._deployments(selector):
            return []
        removed = []
        kinds = ((self.core.list_namespaced_service, self.core.delete_namespaced_service, "Service"),
                 (self.core.list_namespaced_config_map, self.core.delete_namespaced_config_map, "ConfigMap"),
                 (self.core.list_namespaced_secret, self.core.delete_namespaced_secret, "Secret"))
        for list_fn, delete_fn, kind in kinds:
            items = self._raw(await call(list_fn, self.namespace, label_selector=selector, policy=self.policy))
            for item in items["items"]:
                if await delete(delete_fn, item["metadata"]["name"], self.namespace, policy=self.policy):
                    removed.append(f"{kind}/{item['metadata']['name']}")
        return removed

    async def _remove(self, act: PlacementAction) -> dict[str, Any]:
        dep = await self._find(act.app, act.component, act.node, act.instance_id)
        if dep is not None:
            await self._delete_deployment(dep["metadata"]["name"])
        leftovers = await self._remove_component_leftovers(act.app, act.component)
        if dep is None:
            return {"removed": None, "also_removed": leftovers}
        ann = dep["metadata"].get("annotations") or {}
        return {"removed": ann.get(mf.ANN_INSTANCE_ID), "node": ann.get(mf.ANN_NODE),
                "deployment": dep["metadata"]["name"], "also_removed": leftovers}

    async def _wait_rolled_out(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.move_timeout
        while True:
            dep = self._raw(await call(self.apps.read_namespaced_deployment, name, self.namespace,
                                       policy=self.policy))
            if _rolled_out(dep):
                return
            if loop.time() > deadline:
                raise TimeoutError(f"Deployment {name} not available after {self.move_timeout}s")
            await asyncio.sleep(self.poll_interval)

    async def _node_up(self, node: str | None) -> bool:
        if node is None:
            return False
        nodes = await self._nodes()
        return node in nodes and _node_ready(nodes[node])

    async def _move(self, act: PlacementAction) -> dict[str, Any]:
        """Make-before-break: the new Deployment must be Available before the old one is deleted."""
        target = await self._check_node(act.target)
        old = await self._find(act.app, act.component, act.source, act.instance_id)
        old_ann = (old["metadata"].get("annotations") or {}) if old else {}
        source = act.source or old_ann.get(mf.ANN_NODE)
        old_id = old_ann.get(mf.ANN_INSTANCE_ID) or act.instance_id or default_instance_id(
            act.app, act.component, source or target)
        new_id = act.extra.get("new_instance_id") or moved_instance_id(old_id, source, target)
        t0 = time.monotonic()
        placed = await self._deploy(act.app, act.component, target, new_id, act.spec)
        source_alive = old is not None and await self._node_up(source)
        if source_alive:
            try:
                await self._wait_rolled_out(placed["deployment"])
            except (KubeError, TimeoutError):
                await self._delete_deployment(placed["deployment"])   # break nothing: the old one serves
                raise
        if old is not None and old["metadata"]["name"] != placed["deployment"]:
            await self._delete_deployment(old["metadata"]["name"])
        return {**placed, "replaced": old_id, "waited_for_available": source_alive,
                "move_s": round(time.monotonic() - t0, 3)}

    async def _change_spec(self, act: PlacementAction) -> dict[str, Any]:
        """Re-apply with the new spec; the rolling update starts the new pod before the old one stops."""
        dep = await self._find(act.app, act.component, act.node, act.instance_id)
        if dep is None:
            raise CommandError(f"no instance of {act.app}/{act.component} on {act.node}")
        ann = dep["metadata"].get("annotations") or {}
        placed = await self._deploy(act.app, act.component, ann.get(mf.ANN_NODE) or act.node or "",
                                    ann[mf.ANN_INSTANCE_ID], act.spec)
        await self._wait_rolled_out(placed["deployment"])
        return {**placed, "state": "running"}
