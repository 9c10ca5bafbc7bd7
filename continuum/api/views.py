"""Infrastructure views built from what the continuum agent knows: cluster registrations, the node
descriptions they carried, heartbeat digests and the components the continuum believes run where. Both
run modes have exactly this, so both show the same thing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mlsysops.agents.descriptions import to_k8s
from mlsysops.continuum.api.models import ClusterDetail, HostedComponent, NodeDetail, NodeSummary

Hosted = dict[tuple[str, str], list[HostedComponent]]


def child_record(cont: Any, cid: str) -> Any:
    return cont.children.child(cont.cluster_jids[cid])


def hosted(cont: Any) -> Hosted:
    """(cluster, node) -> the components the continuum believes run there."""
    out: Hosted = {}
    for app in sorted(cont.apps):
        for comp, st in cont.app_status(app).items():
            for node in st.get("nodes") or []:
                out.setdefault((st.get("cluster") or "", node), []).append(
                    HostedComponent(app=app, component=comp, status=st["status"]))
    return out


def nodes_of(cont: Any, cid: str, where: Hosted) -> Iterator[NodeDetail]:
    rec = child_record(cont, cid)
    alive_of, cpu_of = cont.node_state(cid)
    seen_of, trust_of = cont.node_extras(cid)
    for name, model in sorted(cont.cluster_nodes.get(cid, {}).items()):
        alive = alive_of.get(name) if rec is not None and rec.alive else None
        score, reason = trust_of.get(name) or ((1.0, None) if alive is not None else (None, None))
        energy = _energy(cont, name, cid)
        yield NodeDetail(name=name, cluster=cid, layer=str(model.continuum_layer), alive=alive, cpu_utilization=cpu_of.get(name),
                         power_watts=energy[0], energy_joules=energy[1],
                         last_heartbeat=seen_of.get(name), trust=score, trust_reason=reason,
                         components=where.get((cid, name), []), description=to_k8s(model))


def _energy(cont: Any, node: str, cid: str) -> tuple[float | None, float | None]:
    """(watts, joules) the node's telemetry last carried (None where its substrate measures no power)."""
    k = getattr(cont, "slice_telemetry", None)
    if k is None:
        return None, None
    return k.latest("hw.power", node=node, cluster=cid), k.latest("hw.energy", node=node, cluster=cid)


def all_nodes(cont: Any) -> dict[str, NodeDetail]:
    where = hosted(cont)
    return {n.name: n for cid in sorted(cont.cluster_jids) for n in nodes_of(cont, cid, where)}


def cluster_detail(cont: Any, cid: str, where: Hosted) -> ClusterDetail:
    rec = child_record(cont, cid)
    nodes = list(nodes_of(cont, cid, where))
    desc = (rec.description or {}).get("cluster") if rec is not None else None
    return ClusterDetail(id=cid, jid=cont.cluster_jids[cid], registered=rec is not None,
                         alive=bool(rec and rec.alive), joined_at=rec.joined_at if rec else None,
                         last_heartbeat=rec.last_heartbeat if rec else None,
                         lost_reason=rec.lost_reason if rec else None, nodes=len(nodes),
                         nodes_alive=sum(1 for n in nodes if n.alive), description=desc,
                         node_status=[NodeSummary(**n.model_dump(exclude={"description"})) for n in nodes])
