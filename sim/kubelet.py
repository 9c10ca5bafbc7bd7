"""The simulated continuum as kubelets (KWOK-style): sim nodes become Kubernetes Nodes, and pods bound to
them run as sim instances, so agent -> API server -> scheduler/controllers -> "kubelet" -> watch runs for real.

* Each sim node is registered as a Node (labels `kubernetes.io/hostname`, `mlsysops.eu/cluster`,
  `mlsysops.eu/node`, arch, layer; capacity/allocatable from the spec; a Ready condition) and keeps a
  Lease in `kube-node-lease` renewed, so the node lifecycle controller sees a live kubelet.
* A pod bound to one of those nodes (`spec.nodeName`) starts a sim instance with the pod's resource
  requests; when the sim says the instance runs, the pod becomes Running/Ready.
* A sim node crash marks the Node NotReady (with the not-ready NoSchedule taint, so nothing new lands
  there) and deletes its controller-owned pods, so their controllers recreate them elsewhere; bare pods
  are marked Failed. Recovery makes the Node Ready again.
* A pod with a deletionTimestamp has its instance stopped and is deleted with grace 0, as a kubelet does.

It runs on the asyncio loop with `kubernetes.aio`. The sim must be ticked (`sim.run()`) by its owner, or
pass `tick_interval` to let the kubelet drive it. Node names are the sim node names.

Unlike the sim core (a leaf package), this adapter imports `mlsysops.substrates.kubernetes` (client retries, resumable watch; no agent code);
nothing in `sim/__init__` imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import re
from typing import Any

from kubernetes.aio import client as k
from kubernetes.utils import parse_quantity

from mlsysops.sim import EventKind, SimContinuum, SimError, SimEvent
from mlsysops.substrates.kubernetes.client import MERGE, KubeError, RetryPolicy, apply, call, delete
from mlsysops.substrates.kubernetes.watch import ResourceWatch

log = logging.getLogger(__name__)

LABEL_CLUSTER = "mlsysops.eu/cluster"
LABEL_NODE = "mlsysops.eu/node"
LABEL_LAYER = "mlsysops.eu/layer"
LABEL_APP = "mlsysops.eu/app"
LABEL_COMPONENT = "mlsysops.eu/component"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
LEASE_NS = "kube-node-lease"
_LABEL_OK = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def node_address(name: str) -> str:
    """A loopback address of its own per sim node (127.a.b.c, stable across runs), so endpoints that point at
    nodes tell them apart; the whole 127/8 block routes to loopback on Linux."""
    digest = hashlib.sha1(name.encode()).digest()
    return f"127.{digest[0] % 254 + 1}.{digest[1]}.{digest[2] % 254 + 1}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cpu(cores: float) -> str:
    return f"{max(1, round(cores * 1000))}m"


class SimKubelet:
    def __init__(self, sim: SimContinuum, api: k.ApiClient, *, nodes: list[str] | None = None,
                 lease_interval: float = 10.0, tick_interval: float | None = None,
                 policy: RetryPolicy | None = None) -> None:
        self.sim = sim
        self.api = api
        self.nodes = list(nodes) if nodes is not None else [n.name for n in sim.nodes()]
        self.lease_interval = lease_interval
        self.tick_interval = tick_interval
        self.policy = policy or RetryPolicy()
        self.core = k.CoreV1Api(api)
        self.leases = k.CoordinationV1Api(api)
        self.pods: dict[str, dict[str, Any]] = {}     # instance id ("ns/name") -> pod (last seen)
        self._stopping: set[str] = set()               # instances we stop ourselves (no pod reaction)
        self._ips: dict[str, str] = {}
        self._published: dict[str, bool] = {}          # node -> last up/down state written to its Node
        self._queue: asyncio.Queue[SimEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._unsubscribe: Any = None
        self.errors: list[str] = []
        self.watch: ResourceWatch | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        for name in self.nodes:
            await self.register_node(name)
        self._unsubscribe = self.sim.subscribe(self._queue.put_nowait)
        self.watch = ResourceWatch(self.api, self.core.list_pod_for_all_namespaces,
                                   on_sync=self._on_sync, on_event=self._on_event,
                                   field_selector="spec.nodeName!=", timeout_seconds=60, policy=self.policy)
        self._tasks = [asyncio.create_task(self.watch.run(), name="sim-kubelet-watch"),
                       asyncio.create_task(self._sim_events(), name="sim-kubelet-events"),
                       asyncio.create_task(self._renew_leases(), name="sim-kubelet-leases")]
        if self.tick_interval:
            self._tasks.append(asyncio.create_task(self.sim.run(self.tick_interval), name="sim-tick"))
        await self.watch.synced.wait()

    async def stop(self, *, deregister: bool = False) -> None:
        """Stop watching and heartbeating; `deregister` also deletes the Node objects (test clean-up)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if deregister:
            for name in self.nodes:
                with contextlib.suppress(KubeError):
                    await delete(self.core.delete_node, name, policy=self.policy)

    async def __aenter__(self) -> SimKubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- nodes --------------------------------------------------------------------------------------
    def node_manifest(self, name: str) -> dict[str, Any]:
        spec = self.sim.node(name)
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": spec.architecture, LABEL_CLUSTER: spec.cluster, LABEL_NODE: name,
                  LABEL_LAYER: spec.layer, "type": "sim"}
        for raw in spec.labels:
            key, _, value = raw.partition(":")
            if _LABEL_OK.match(key) and (not value or _LABEL_OK.match(value)):
                labels[f"mlsysops.eu/{key}"] = value
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {k_: v for k_, v in labels.items() if _LABEL_OK.match(v)}}}

    def node_status(self, name: str) -> dict[str, Any]:
        spec = self.sim.node(name)
        capacity = {"cpu": _cpu(spec.cpu_cores), "memory": str(spec.memory_bytes), "pods": "110"}
        if spec.gpu:
            capacity["nvidia.com/gpu"] = "1"
        up = self.sim.is_up(name)
        now = _now()
        ready = {"type": "Ready", "status": "True" if up else "False",
                 "reason": "KubeletReady" if up else "SimNodeDown",
                 "message": "sim node is up" if up else "sim node crashed",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
        return {"status": {"capacity": capacity, "allocatable": capacity, "conditions": [ready],
                           "nodeInfo": {"architecture": spec.architecture, "operatingSystem": "linux",
                                        "kubeletVersion": "v1.20.2-sim", "kubeProxyVersion": "v1.20.2-sim",
                                        "containerRuntimeVersion": "sim://1", "osImage": "mlsysops sim",
                                        "kernelVersion": "sim", "bootID": "", "machineID": "", "systemUUID": ""},
                           "addresses": [{"type": "InternalIP", "address": node_address(name)},
                                         {"type": "Hostname", "address": name}]}}

    async def register_node(self, name: str) -> None:
        await apply(self.core.patch_node, name, body=self.node_manifest(name), policy=self.policy)
        await self.update_node(name)
        self._published[name] = self.sim.is_up(name)

    async def update_node(self, name: str) -> None:
        await call(self.core.patch_node_status, name, self.node_status(name), _content_type=MERGE,
                   policy=self.policy)
        up = self.sim.is_up(name)
        node = self.api.sanitize_for_serialization(await call(self.core.read_node, name, policy=self.policy))
        taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != NOT_READY_TAINT
                  or t.get("effect") != "NoSchedule"]
        if not up:   # what the node lifecycle controller would add; done here so nothing new lands first
            taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
        if taints != ((node.get("spec") or {}).get("taints") or []):
            await call(self.core.patch_node, name, {"spec": {"taints": taints or None}}, _content_type=MERGE,
                       policy=self.policy)
        await self._renew_lease(name)

    async def _renew_lease(self, name: str) -> None:
        if not self.sim.is_up(name):
            return   # a dead kubelet renews nothing
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NS},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _now_micro()}}
        await apply(self.leases.patch_namespaced_lease, name, LEASE_NS, body=body, policy=self.policy)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_interval)
            for name in self.nodes:
                try:
                    await self._renew_lease(name)
                    await call(self.core.patch_node_status, name, self.node_status(name),
                               _content_type=MERGE, policy=self.policy)
                except KubeError as exc:
                    self._error(f"heartbeat {name}: {exc}")

    # -- pods ---------------------------------------------------------------------------------------
    @staticmethod
    def instance_id(pod: dict[str, Any]) -> str:
        return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"

    def _error(self, msg: str) -> None:
        log.warning("sim kubelet: %s", msg)
        self.errors.append(msg)

    async def _on_sync(self, pods: list[dict[str, Any]]) -> None:
        seen = set()
        for pod in pods:
            if pod["spec"].get("nodeName") in self.nodes:
                seen.add(self.instance_id(pod))
                await self._on_pod(pod)
        for iid in set(self.pods) - seen:   # deleted while we were not watching
            await self._on_deleted(iid)

    async def _on_event(self, kind: str, pod: dict[str, Any]) -> None:
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        if kind == "DELETED":
            await self._on_deleted(self.instance_id(pod))
        else:
            await self._on_pod(pod)

    async def _on_deleted(self, iid: str) -> None:
        self.pods.pop(iid, None)
        self._stop_instance(iid)

    def _stop_instance(self, iid: str) -> None:
        self._stopping.add(iid)
        try:
            self.sim.remove(iid)
        except SimError:
            pass
        finally:
            self._stopping.discard(iid)

    async def _on_pod(self, pod: dict[str, Any]) -> None:
        iid = self.instance_id(pod)
        meta = pod["metadata"]
        old = self.pods.get(iid)
        if old is not None and old["metadata"]["uid"] != meta["uid"]:
            self._stop_instance(iid)   # same name, new pod (StatefulSet-like): start afresh
        self.pods[iid] = pod
        try:
            if meta.get("deletionTimestamp"):
                self.pods.pop(iid, None)
                self._stop_instance(iid)
                await self._delete_pod(pod)
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return
            if self._active(iid):
                return
            await self._start(pod)
        except KubeError as exc:
            if exc.status not in (404, 409):
                self._error(f"pod {iid}: {exc}")

    def _active(self, iid: str) -> bool:
        try:
            return not self.sim.instance(iid).state.terminal
        except SimError:
            return False

    async def _start(self, pod: dict[str, Any]) -> None:
        iid = self.instance_id(pod)
        node = pod["spec"]["nodeName"]
        if not self.sim.is_up(node):
            return   # a dead kubelet starts nothing; the pod stays Pending
        cpu = mem = 0.0
        for c in pod["spec"]["containers"]:
            req = (c.get("resources") or {}).get("requests") or {}
            cpu += float(parse_quantity(req["cpu"])) if "cpu" in req else 0.0
            mem += float(parse_quantity(req["memory"])) if "memory" in req else 0.0
        labels = pod["metadata"].get("labels") or {}
        try:
            self.sim.deploy(iid, labels.get(LABEL_APP, pod["metadata"]["namespace"]),
                            labels.get(LABEL_COMPONENT, pod["metadata"]["name"]), node, cpu, int(mem))
        except SimError as exc:   # e.g. the sim is out of capacity: the kubelet rejects the pod
            await self._set_failed(pod, "SimRejected", str(exc))
            return
        if (pod.get("status") or {}).get("phase") != "Running":
            await self._patch_status(pod, running=False)

    # -- sim -> pod status --------------------------------------------------------------------------
    async def _sim_events(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._on_sim_event(event)
            except KubeError as exc:
                if exc.status not in (404, 409):
                    self._error(f"sim event {event.kind} {event.instance or event.node}: {exc}")
            except Exception:   # keep the kubelet alive
                log.exception("sim kubelet: handling %s failed", event)

    async def _on_sim_event(self, event: SimEvent) -> None:
        if event.kind in (EventKind.NODE_DOWN, EventKind.NODE_UP):
            if event.node in self.nodes:
                await self._publish_node(event.node)
                if event.kind is EventKind.NODE_UP:   # a kubelet back up runs the pods still bound to it
                    for pod in [p for p in self.pods.values() if p["spec"].get("nodeName") == event.node]:
                        if not self._active(self.instance_id(pod)):
                            await self._start(pod)
            return
        iid = event.instance
        pod = self.pods.get(iid or "")
        if pod is None or iid in self._stopping:
            return
        if not self.sim.is_up(event.node):
            # a crash fails the instances before the node.down event: mark the node first, so the
            # replacements the controllers create are not scheduled onto it
            await self._publish_node(event.node)
        if event.kind is EventKind.INSTANCE_RUNNING:
            await self._patch_status(pod, running=True)
        elif event.kind in (EventKind.INSTANCE_FAILED, EventKind.INSTANCE_STOPPED):
            reason = str(event.detail.get("reason") or event.kind)
            owned = any(o.get("controller") for o in pod["metadata"].get("ownerReferences") or [])
            if owned:   # its controller recreates it (elsewhere, if the node is tainted)
                self.pods.pop(iid, None)
                await self._delete_pod(pod)
            else:
                await self._set_failed(pod, "NodeLost" if "crash" in reason else "Error", reason)

    async def _publish_node(self, name: str) -> None:
        up = self.sim.is_up(name)
        if self._published.get(name) != up:
            await self.update_node(name)
            self._published[name] = up

    async def _delete_pod(self, pod: dict[str, Any]) -> None:
        """Grace 0, as a kubelet confirms a deletion. Options go in the body: with a body, the API
        server ignores the query parameters."""
        meta = pod["metadata"]
        await delete(self.core.delete_namespaced_pod, meta["name"], meta["namespace"],
                     body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}, policy=self.policy)

    def _pod_ip(self, iid: str, node: str) -> str:
        if iid not in self._ips:
            index = self.nodes.index(node) if node in self.nodes else 0
            self._ips[iid] = f"10.{(index // 250) + 100}.{index % 250}.{(len(self._ips) % 250) + 2}"
        return self._ips[iid]

    async def _patch_status(self, pod: dict[str, Any], *, running: bool) -> None:
        now = _now()
        meta = pod["metadata"]
        ready = "True" if running else "False"
        cond = [{"type": t, "status": s, "lastTransitionTime": now}
                for t, s in (("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", ready),
                             ("Ready", ready))]
        containers = [{"name": c["name"], "image": c["image"], "imageID": f"sim://{c['image']}",
                       "ready": running, "restartCount": 0, "started": running,
                       "state": ({"running": {"startedAt": now}} if running
                                 else {"waiting": {"reason": "ContainerCreating"}})}
                      for c in pod["spec"]["containers"]]
        status = {"phase": "Running" if running else "Pending", "conditions": cond,
                  "containerStatuses": containers, "hostIP": "127.0.0.1", "startTime": now}
        if running:
            ip = self._pod_ip(self.instance_id(pod), pod["spec"]["nodeName"])
            status.update(podIP=ip, podIPs=[{"ip": ip}])
        await call(self.core.patch_namespaced_pod_status, meta["name"], meta["namespace"],
                   {"metadata": {"uid": meta["uid"]}, "status": status}, _content_type=MERGE, policy=self.policy)

    async def _set_failed(self, pod: dict[str, Any], reason: str, message: str) -> None:
        meta = pod["metadata"]
        status = {"phase": "Failed", "reason": reason, "message": message,
                  "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": _now()}]}
        await call(self.core.patch_namespaced_pod_status, meta["name"], meta["namespace"],
                   {"metadata": {"uid": meta["uid"]}, "status": status}, _content_type=MERGE, policy=self.policy)
