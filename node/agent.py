"""Node agent: watches its node and the component instances on it, reports up, proposes relocations.

Monitor (every monitor interval): node metrics and component QoS metrics into knowledge; instance state
changes go up at once as a `status.report` delta, and every `status_report` interval a full report plus a
`telemetry.report`. The node never places components (ARCHITECTURE §2): its policies (default
`node_overload`) plan for the `relocation_proposal` mechanism, which asks the cluster.

`report_instances=False`: the cluster agent learns instance state from elsewhere (Kubernetes: the API
server is authoritative, and the local instance ids are pod names, not the cluster's instance ids), so no
status reports go up; metrics and telemetry still do.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlsysops.agents.descriptions import MLSysOpsNode, to_dict, to_k8s
from mlsysops.agents.managed_agent import AgentSettings, ManagedAgent
from mlsysops.agents.membership import ChildMembership
from mlsysops.agents.payloads import InstanceReport, StatusReport
from mlsysops.agents.protocol import Kind, Role
from mlsysops.agents.telemetry import COMPONENT_DEFAULTS, NODE_DEFAULTS
from mlsysops.agents.telemetry import digest as digests
from mlsysops.agents.telemetry.io_counters import IoCounters
from mlsysops.mechanisms.relocation_proposal import RelocationProposalMechanism
from mlsysops.node.knobs import register_knobs

if TYPE_CHECKING:
    from mlsysops.node.gateway_link import GatewayLink

DEFAULT_POLICIES = ["mlsysops.policies.node_overload"]
_STATE_MAP = {"starting": "starting", "running": "running", "failed": "failed", "stopped": "stopped"}


class NodeAgent(ManagedAgent):
    role = "node"
    collection_defaults = NODE_DEFAULTS | COMPONENT_DEFAULTS

    def __init__(self, jid: str, password: str, *, description: MLSysOpsNode, substrate: Any,
                 parent: str, settings: AgentSettings | None = None, report_instances: bool = True,
                 device_gateway: Any = None, **kwargs: Any) -> None:
        settings = settings or AgentSettings()
        if not settings.policies:
            settings.policies = list(DEFAULT_POLICIES)
        super().__init__(jid, password, parent=parent, settings=settings,
                         agent_id=kwargs.pop("agent_id", description.name), **kwargs)
        self.description = description
        self.node = description.name
        self.substrate = substrate
        self.report_instances = report_instances
        self._last_states: dict[str, str] = {}
        self._last_full = 0.0
        self.pushed_metrics: Any = None     # a ComponentMetricsInbox when the push endpoint runs
        self.io_counters = IoCounters()     # substrate I/O rates -> semantic-convention byte counters
        self._instances: list[dict[str, Any]] = []
        self.substrate_up = True
        self.membership = ChildMembership(self, parent, role=Role.NODE,
                                          description=lambda: to_k8s(self.description),
                                          digest=self._digest)
        self.membership.on_registered(self._on_registered)
        self.mechanisms.register("relocation_proposal", RelocationProposalMechanism(self))
        permitted = [str(a) for a in description.permitted_actions or []]
        self.knobs = register_knobs(self, substrate, permitted)   # cpu/gpu frequency behind permitted_actions
        # a gateway for devices that cannot run an agent (node/gateway_link.py, MQTT)
        self.gateway: GatewayLink | None = None
        if device_gateway is not None:   # imported here: MQTT (aiomqtt, paho) only in a gateway's process
            from mlsysops.node.gateway_link import GatewayLink
            self.gateway = GatewayLink(self, device_gateway)

    async def setup(self) -> None:
        if self.gateway is not None:
            # subscribed before registering: a device that announces (once) when its node is listed is heard
            await self.gateway.start()
        await self.membership.start()
        self.load_policies()
        self.start_engine()

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        await super().stop()

    # -- MAPE hooks ---------------------------------------------------------------------------------
    def assets(self) -> dict[str, dict[str, Any]]:
        """The apps with instances on this node, for application-scope policies in the original MLSysOps
        contract only (which ran one clone per app on the node): our own node policies are node-wide, and
        an asset's `policies` keeps them off it. The node holds no app descriptions: a component is known
        by its name and the instance running here."""
        names = [p.name for p in self.policies.enabled()
                 if p.scope == "application" and getattr(p.target, "contract", None) == "original"]
        if not names:
            return {}
        apps: dict[str, dict[str, Any]] = {}
        for inst in self._instances:
            if inst["state"] not in ("starting", "running"):
                continue
            app = apps.setdefault(inst["app"], {"name": inst["app"], "components": [], "instances": [],
                                                "policies": names})
            if all(c["metadata"]["name"] != inst["component"] for c in app["components"]):
                app["components"].append({"metadata": {"name": inst["component"]}})
            app["instances"].append({"instance_id": inst["instance_id"], "component": inst["component"],
                                     "state": inst["state"], "node": self.node})
        return apps

    def system_description(self) -> dict[str, Any]:
        window = self.knowledge.window("system.cpu.utilization", {"node": self.node})
        return {"node": self.node, "now": time.time(), "description": to_dict(self.description),
                "cpu_utilization": [v for _, v in window][-60:],
                "cpu_frequency_hz": self.knowledge.latest("system.cpu.frequency", node=self.node),
                "power_watts": self.knowledge.latest("hw.power", node=self.node),
                "instances": [{"instance_id": i["instance_id"], "app": i["app"], "component": i["component"],
                               "state": i["state"],
                               "cpu_usage_cores": i["metrics"].get("cpu_usage_cores", 0.0),
                               "response_time_ms": i["metrics"].get("response_time_ms")}
                              for i in self._instances]}

    async def monitor(self) -> None:
        try:
            snap = await self.substrate.observe()
        except Exception as exc:   # noqa: BLE001 - an unreachable substrate is an event, not a crash
            self.log.warning("substrate unavailable: %s", exc)
            return
        self.substrate_up = bool(snap.get("up"))
        if not self.substrate_up:
            return
        now = time.time()
        self._instances = snap["instances"]
        self.record_samples(self._samples(snap["metrics"], self._instances, now), now)
        await self._report_changes(now)
        if now - self._last_full >= self.settings.status_report:
            self._last_full = now
            await self._report_full()
            await self._report_telemetry(now)

    # -- reports ------------------------------------------------------------------------------------
    def _instance_report(self, inst: dict[str, Any]) -> InstanceReport:
        return InstanceReport(instance_id=inst["instance_id"], app=inst["app"], component=inst["component"],
                              node=self.node, status=_STATE_MAP.get(inst["state"], "unknown"),
                              since=inst["since"], reason=inst["reason"])

    async def _report_changes(self, now: float) -> None:
        changed = [i for i in self._instances if self._last_states.get(i["instance_id"]) != i["state"]]
        self._last_states = {i["instance_id"]: i["state"] for i in self._instances}
        if changed and self.membership.connected and self.report_instances:
            await self.inform(self.parent, Kind.STATUS_REPORT,
                              StatusReport(source=self.agent_id, instances=[self._instance_report(i)
                                                                            for i in changed]))

    async def _report_full(self) -> None:
        if not self.membership.connected or not self.report_instances:
            return
        active = [i for i in self._instances if i["state"] in ("starting", "running")]
        await self.inform(self.parent, Kind.STATUS_REPORT,
                          StatusReport(source=self.agent_id, full=True,
                                       instances=[self._instance_report(i) for i in active]))

    def _samples(self, metrics: dict[str, float], instances: list[dict[str, Any]], now: float
                 ) -> list[tuple[str, dict[str, str], float]]:
        """This tick's observations that the collection plan wants (node, then component metrics)."""
        wants = self.collection.wants
        metrics, io = self.io_counters.fold(metrics, now)   # every tick, wanted or not: totals stay exact
        out = [(name, {"node": self.node}, float(v)) for name, v in metrics.items() if wants(name)]
        out.extend((name, {"node": self.node, **attrs}, v) for name, attrs, v in io if wants(name))
        for inst in instances:
            labels = {"node": self.node, "app": inst["app"], "component": inst["component"],
                      "instance": inst["instance_id"]}
            out.extend((name, labels, float(v)) for name, v in inst["metrics"].items() if wants(name))
        if self.pushed_metrics is not None:
            out.extend((name, {"node": self.node, **labels}, v)
                       for name, labels, v in self.pushed_metrics.current() if wants(name))
        return out

    def record_samples(self, samples: list[tuple[str, dict[str, str], float]], now: float) -> None:
        """Through the OTel SDK and back: what Monitor windows hold is what the SDK recorded (and exports)."""
        self.telemetry.publish(samples)
        for name, labels, value in self.telemetry.collect({name for name, _, _ in samples}):
            self.knowledge.record(name, value, labels, ts=now)

    async def _report_telemetry(self, now: float) -> None:
        if not self.membership.connected:
            return
        # 1.5x: overlapping windows, so no sample falls between two reports (a timer is never exact)
        window = 1.5 * max(self.settings.status_report, self.collection.interval)
        await self.send_digest(digests.summarise(self.knowledge, window, now=now), window, now, node=self.node)

    async def _on_registered(self, _reply: Any) -> None:
        # A (re)started parent learns what runs here at once, instead of after the next full report.
        self._last_full = 0.0

    def _digest(self) -> dict[str, Any]:
        latest = self.knowledge.latest("system.cpu.utilization", node=self.node)
        mem = self.knowledge.latest("system.memory.utilization", node=self.node)
        running = sum(1 for i in self._instances if i["state"] == "running")
        out = {"cpu": _value(latest), "mem": _value(mem), "running": running,
               "lag_ms": round(self.loop_lag.recent_max_s * 1000, 1)}
        if self.gateway is not None:   # what keeps its devices alive at the cluster
            out["devices"] = self.gateway.gateway.alive()
        return out


def _value(latest: float | None) -> float | None:
    return None if latest is None else round(float(latest), 4)
