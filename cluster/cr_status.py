"""What a cluster agent writes into its MLSysOpsCluster's and its MLSysOpsNodes' `.status` on Kubernetes.

A node is Ready when its node agent is connected, Kubernetes (if it runs the node) says Ready, and it is not
being drained; the conditions say which of these fails and why, like `kubectl describe node` does. Counts,
not timestamps, so an unchanged cluster writes nothing.
"""

from __future__ import annotations

from typing import Any

from mlsysops.agents.placement.cluster_view import ACTIVE

NODE_KIND = "MLSysOpsNode"
CLUSTER_KIND = "MLSysOpsCluster"


def node_status(agent: Any, name: str) -> dict[str, Any]:
    jid = agent.node_jids.get(name)
    child = agent.children.child(jid) if jid else None
    connected = child is not None and child.alive
    agent_reason = "connected" if connected else (child.lost_reason if child else "never registered")
    view = agent.inventory.merged().get(name) if agent.inventory is not None else None
    kube_ready = None if view is None else view.ready
    schedulable = name not in agent.cordoned and not (view is not None and view.unschedulable)
    ready = connected and kube_ready is not False and name not in agent.not_ready
    rows = [r for r in agent.instances.values() if r["node"] == name and r["status"] in ACTIVE]
    status: dict[str, Any] = {
        "phase": "Ready" if ready else "NotReady",
        "cluster": agent.cluster_id,
        "schedulable": schedulable,
        "agent": {"connected": connected, "reason": agent_reason},
        # app/component -> its instance's status here (an object: the CRDs' status.components is one)
        "components": {f"{r['app']}/{r['component']}": r["status"] for r in sorted(rows, key=lambda r: r["since"])},
        "instances": {"running": sum(r["status"] == "running" for r in rows),
                      "deploying": sum(r["status"] == "deploying" for r in rows)},
    }
    conditions = [
        {"type": "Ready", "status": ready, "reason": "NodeReady" if ready else "NodeNotReady",
         "message": _why_not_ready(connected, agent_reason, kube_ready, name in agent.not_ready)},
        {"type": "AgentConnected", "status": connected, "reason": "Registered" if connected else "AgentLost",
         "message": agent_reason},
        {"type": "Schedulable", "status": schedulable, "reason": "Schedulable" if schedulable else "Cordoned",
         "message": "" if schedulable else "no new work; running instances are being moved away"},
    ]
    if view is not None:
        status["kubernetes"] = {"ready": kube_ready, "inKubernetes": view.in_kubernetes,
                                "allocatable": view.allocatable.as_dict() if view.allocatable else None,
                                "warnings": list(view.warnings)}
        conditions.append({"type": "KubernetesReady", "status": kube_ready is True,
                           "reason": "KubeletReady" if kube_ready else "KubeletNotReady",
                           "message": _kube_message(view)})
    status["conditions"] = conditions
    return status


def cluster_status(agent: Any, nodes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """`nodes`: the node statuses when the caller has them already (name -> node_status())."""
    if nodes is None:
        nodes = {name: node_status(agent, name) for name in sorted(agent.nodes)}
    ready = [n for n, s in nodes.items() if s["phase"] == "Ready"]
    reports = [agent.component_status(app, c) for app, comps in agent.assigned.items() for c in comps]
    running = sum(r.status == "running" for r in reports)
    upstream = agent.upstream is None or agent.upstream.connected
    substrate_ok = agent.substrate_error is None
    if nodes and len(ready) == len(nodes):
        phase = "Ready"
    elif ready:
        phase = "Degraded"
    else:
        phase = "NotReady"
    not_ready = ", ".join(n for n in nodes if n not in ready)
    return {
        "phase": phase,
        "nodes": len(nodes), "readyNodes": len(ready),
        "apps": len(agent.assigned), "assignedComponents": len(reports), "runningComponents": running,
        "conditions": [
            {"type": "Ready", "status": phase == "Ready", "reason": phase,
             "message": f"{len(ready)}/{len(nodes)} nodes ready" + (f" (not ready: {not_ready})" if not_ready else "")},
            {"type": "ContinuumConnected", "status": upstream, "reason": "Registered" if upstream else "NotRegistered",
             "message": "" if upstream else "not registered with the continuum agent"},
            {"type": "SubstrateReachable", "status": substrate_ok,
             "reason": "Reachable" if substrate_ok else "Unreachable", "message": agent.substrate_error or ""},
        ],
    }


def _why_not_ready(connected: bool, agent_reason: str, kube_ready: bool | None, not_ready: bool) -> str:
    why = []
    if not connected:
        why.append(f"node agent: {agent_reason}")
    if kube_ready is False or not_ready:
        why.append("Kubernetes reports the node not ready")
    return "; ".join(why)


def _kube_message(view: Any) -> str:
    if not view.in_kubernetes:
        return "no Kubernetes Node of this name"
    cond = view.conditions.get("Ready") or {}
    return cond.get("message") or cond.get("reason") or ""
