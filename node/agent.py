"""Node agent: watches its node and the component instances on it, reports up, proposes relocations.

Monitor (every monitor interval): node metrics and component QoS metrics into knowledge; instance state
changes go up at once as a `status.report` delta, and every `status_report` interval a full report plus a
`telemetry.report`. The node never places components (ARCHITECTURE §2): its policies (default
`node_overload`) plan for the `relocation_proposal` mechanism, which asks the cluster.
"""

from __future__ import annotations

import time
from typing import Any

from agents.descriptions import MLSysOpsNode, to_k8s
from agents.managed_agent import AgentSettings, ManagedAgent
from agents.membership import ChildMembership
from agents.payloads import ComponentTelemetry, InstanceReport, StatusReport, TelemetryReport
from agents.protocol import Kind, Role
from mechanisms.relocation_proposal import RelocationProposalMechanism

DEFAULT_POLICIES = ["policies.node_overload"]
_STATE_MAP = {"starting": "starting", "running": "running", "failed": "failed", "stopped": "stopped"}


class NodeAgent(ManagedAgent):
    role = "node"

    def __init__(self, jid: str, password: str, *, description: MLSysOpsNode, substrate: Any,
                 parent: str, settings: AgentSettings | None = None, **kwargs: Any) -> None:
        settings = settings or AgentSettings()
        if not settings.policies:
            settings.policies = list(DEFAULT_POLICIES)
        super().__init__(jid, password, parent=parent, settings=settings,
                         agent_id=kwargs.pop("agent_id", description.name), **kwargs)
        self.description = description
        self.node = description.name
        self.substrate = substrate
        self._last_states: dict[str, str] = {}
        self._last_full = 0.0
        self._instances: list[dict[str, Any]] = []
        self.substrate_up = True
        self.membership = ChildMembership(self, parent, role=Role.NODE,
                                          description=lambda: to_k8s(self.description),
                                          digest=self._digest)
        self.membership.on_registered(self._on_registered)
        self.mechanisms.register("relocation_proposal", RelocationProposalMechanism(self))

    async def setup(self) -> None:
        await self.membership.start()
        self.load_policies()
        self.start_engine()

    # -- MAPE hooks ---------------------------------------------------------------------------------
    def system_description(self) -> dict[str, Any]:
        window = self.knowledge.window("system.cpu.utilization", {"node": self.node})
        return {"node": self.node, "now": time.time(),
                "cpu_utilization": [v for _, v in window][-60:],
                "instances": [{"instance_id": i["instance_id"], "app": i["app"], "component": i["component"],
                               "state": i["state"],
                               "cpu_usage_cores": i["metrics"].get("cpu_usage_cores", 0.0)}
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
        metrics = snap["metrics"]
        for name, value in metrics.items():
            self.knowledge.record(name, float(value), {"node": self.node}, ts=now)
        self._instances = snap["instances"]
        for inst in self._instances:
            labels = {"node": self.node, "app": inst["app"], "component": inst["component"],
                      "instance": inst["instance_id"]}
            for name, value in inst["metrics"].items():
                self.knowledge.record(name, float(value), labels, ts=now)
        await self._report_changes(now)
        if now - self._last_full >= self.settings.status_report:
            self._last_full = now
            await self._report_full()
            await self._report_telemetry(metrics)

    # -- reports ------------------------------------------------------------------------------------
    def _instance_report(self, inst: dict[str, Any]) -> InstanceReport:
        return InstanceReport(instance_id=inst["instance_id"], app=inst["app"], component=inst["component"],
                              node=self.node, status=_STATE_MAP.get(inst["state"], "unknown"),
                              since=inst["since"], reason=inst["reason"])

    async def _report_changes(self, now: float) -> None:
        changed = [i for i in self._instances if self._last_states.get(i["instance_id"]) != i["state"]]
        self._last_states = {i["instance_id"]: i["state"] for i in self._instances}
        if changed and self.membership.connected:
            await self.inform(self.parent, Kind.STATUS_REPORT,
                              StatusReport(source=self.agent_id, instances=[self._instance_report(i)
                                                                            for i in changed]))

    async def _report_full(self) -> None:
        if not self.membership.connected:
            return
        active = [i for i in self._instances if i["state"] in ("starting", "running")]
        await self.inform(self.parent, Kind.STATUS_REPORT,
                          StatusReport(source=self.agent_id, full=True,
                                       instances=[self._instance_report(i) for i in active]))

    async def _report_telemetry(self, metrics: dict[str, float]) -> None:
        if not self.membership.connected:
            return
        comps = [ComponentTelemetry(instance_id=i["instance_id"], app=i["app"], component=i["component"],
                                    metrics={k: float(v) for k, v in i["metrics"].items()})
                 for i in self._instances if i["metrics"]]
        await self.inform(self.parent, Kind.TELEMETRY_REPORT,
                          TelemetryReport(source=self.agent_id, node=self.node,
                                          metrics={k: float(v) for k, v in metrics.items()}, components=comps))

    async def _on_registered(self, _reply: Any) -> None:
        # A (re)started parent learns what runs here at once, instead of after the next full report.
        self._last_full = 0.0

    def _digest(self) -> dict[str, Any]:
        latest = self.knowledge.latest("system.cpu.utilization", node=self.node)
        mem = self.knowledge.latest("system.memory.utilization", node=self.node)
        running = sum(1 for i in self._instances if i["state"] == "running")
        return {"cpu": _value(latest), "mem": _value(mem), "running": running}


def _value(latest: float | None) -> float | None:
    return None if latest is None else round(float(latest), 4)
