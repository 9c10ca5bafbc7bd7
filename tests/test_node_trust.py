"""Node trust (`mlsysops.agents.trust`): each signal lowers the score by its weight, events fade with the
half-life, reasons say why, and the placement filter/scorer use it."""

from __future__ import annotations

import math
import random

import pytest

from mlsysops.agents.trust import DETECTOR_WINDOW, NodeTrust, TrustWeights


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_unknown_or_well_behaved_node_is_fully_trusted():
    trust = NodeTrust(clock=Clock())
    assert trust.score("never-seen") == 1.0
    for i in range(30):
        trust.heartbeat("n1", i * 1.0)
    rep = trust.report("n1")
    assert rep.score == 1.0 and rep.reasons == [] and rep.signals["heartbeat_jitter"] == pytest.approx(0.0)


def test_each_loss_costs_its_weight_and_fades_with_the_half_life():
    clock = Clock()
    trust = NodeTrust(TrustWeights(flapping=0.35, half_life_s=600), clock=clock)
    trust.node_lost("n1", "missed 3 heartbeats")
    trust.node_lost("n1", "missed 3 heartbeats")
    rep = trust.report("n1")
    assert rep.score == pytest.approx(math.exp(-0.7))
    assert rep.reasons == ["lost 2.0x recently (last: missed 3 heartbeats)"]
    clock.t += 600
    assert trust.report("n1").signals["flapping"] == pytest.approx(1.0)
    clock.t += 6000
    assert trust.score("n1") > 0.99


def test_weights_are_the_operators_and_bad_ones_name_the_field():
    w = TrustWeights.from_mapping({"failed_deployments": 1.0, "half_life_s": 60}, "trust.weights")
    assert w.failed_deployments == 1.0 and w.half_life_s == 60 and w.flapping == TrustWeights().flapping
    with pytest.raises(ValueError, match=r"trust.weights.flaping: unknown; known: .*flapping"):
        TrustWeights.from_mapping({"flaping": 1}, "trust.weights")
    with pytest.raises(ValueError, match=r"trust.weights.flapping: expected a non-negative number, got -1"):
        TrustWeights.from_mapping({"flapping": -1}, "trust.weights")
    with pytest.raises(ValueError, match="half_life_s: must be > 0"):
        TrustWeights.from_mapping({"half_life_s": 0})
    zero = NodeTrust(TrustWeights.from_mapping({"flapping": 0}), clock=Clock())
    zero.node_lost("n1")
    assert zero.score("n1") == 1.0                       # a zero weight ignores the signal


def test_irregular_heartbeats_count_but_the_receivers_own_stall_does_not():
    rng = random.Random(3)
    steady, erratic, stalled = NodeTrust(clock=Clock()), NodeTrust(clock=Clock()), NodeTrust(clock=Clock())
    t = 0.0
    for _ in range(25):
        t += 1.0
        steady.heartbeat("n", t)
    t = 0.0
    for _ in range(25):
        t += rng.choice([0.2, 0.3, 2.5, 3.0])
        erratic.heartbeat("n", t)
    t, stalled_total = 0.0, 0.0
    for i in range(25):
        stall = 4.0 if i % 5 == 0 else 0.0               # the parent froze 4 s now and then
        t, stalled_total = t + 1.0 + stall, stalled_total + stall
        stalled.heartbeat("n", t, receiver_stalled=stalled_total)
    assert steady.score("n") == 1.0 and stalled.score("n") == 1.0
    rep = erratic.report("n")
    assert rep.score < 0.9 and rep.reasons[0].startswith("heartbeat jitter")


def test_the_anomaly_detector_flags_a_node_whose_metrics_leave_their_normal_range():
    rng = random.Random(5)
    trust = NodeTrust(clock=Clock(), seed=11)
    for _ in range(DETECTOR_WINDOW * 3):
        trust.metrics("n", {"cpu": 0.3 + rng.gauss(0, 0.02), "memory": 0.5 + rng.gauss(0, 0.02)})
    normal = trust.report("n")
    assert normal.signals["anomalies"] < 0.1 and normal.score == 1.0
    for _ in range(30):   # pegged cpu with memory collapsing: not what this node does
        trust.metrics("n", {"cpu": 0.99, "memory": 0.02 + rng.random() * 0.02})
    rep = trust.report("n")
    assert rep.signals["anomalies"] > 0.3 and rep.score < 0.5
    assert any("anomalous" in r for r in rep.reasons)


def test_impersonation_and_contradictions_weigh_most():
    trust = NodeTrust(clock=Clock())
    trust.impersonation("n", "telemetry.report as 'edge-rpi-2'")
    trust.contradiction("n", "claims edge-app.web.0@edge-rpi-2")
    rep = trust.report("n")
    assert rep.score == pytest.approx(math.exp(-(1.5 + 0.5)))
    assert rep.reasons[0].startswith("1.0 message(s) sent under another node's name")
    assert rep.to_dict()["penalties"] == {"contradictions": 0.5, "impersonation": 1.5}


# -- placement ------------------------------------------------------------------------------------------

def test_the_trust_filter_rejects_with_the_score_and_reason_and_the_scorer_prefers_trusted_nodes():
    from mlsysops.policies.placement_engine import schedule
    from mlsysops.policies.placement_plugins import placement_config
    from tests.support import component_request, node_view

    suspect = node_view("suspect", cpu_capacity=8, memory_capacity=8 << 30, trust=0.2,
                        trust_reasons=("1.0 message(s) sent under another node's name",))
    shaky = node_view("shaky", cpu_capacity=8, memory_capacity=8 << 30, trust=0.6)
    steady = node_view("steady", cpu_capacity=4, memory_capacity=4 << 30, cpu_allocated=1.0)
    d = schedule(component_request(cpu_cores=0.5), [suspect, shaky, steady], config=placement_config({}))
    assert d.node == "steady"                            # more room on shaky, but less trust
    assert "trust 0.20 < 0.30: 1.0 message(s) sent under another node's name" in str(d.rejected)
    off = placement_config({"placement": {"filters": {"trust": {"args": {"min_score": 0}}},
                                          "scorers": {"trust": {"enabled": False}}}})
    assert schedule(component_request(cpu_cores=0.5), [suspect, shaky, steady], config=off).node in {
        "suspect", "shaky"}
    with pytest.raises(Exception, match="min_score must be a number in"):
        placement_config({"placement": {"filters": {"trust": {"args": {"min_score": 2}}}}})


# -- over the wire --------------------------------------------------------------------------------------

@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.timeout(120)
async def test_a_node_that_speaks_for_another_loses_trust_and_new_work(prosody) -> None:
    import time

    import httpx

    from mlsysops.agents.payloads import TelemetryReport
    from mlsysops.agents.protocol import Envelope, Kind, Performative
    from mlsysops.continuum.api_auth import Role
    from tests.support import ROOT, demo_slice, formed, until

    fast = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
    async with demo_slice(prosody.port, fast, {"t0k": Role.admin}) as (rt, url):
        await until(lambda: formed(rt), 30, "hierarchy did not form")
        edge, liar = rt.clusters["edge-1"], rt.nodes["edge-rpi-1"]
        forged = TelemetryReport(source="edge-rpi-2", node="edge-rpi-2", t=time.time(), window=5.0,
                                 series=[("system.cpu.utilization", {}, 0.1, 0.1, 0.1, 0.1, 1)])
        await liar.send_envelope(str(edge.jid.bare), Envelope(kind=Kind.TELEMETRY_REPORT,
                                 performative=Performative.INFORM, body=forged.model_dump(mode="json")))
        await until(lambda: edge.trust.score("edge-rpi-1") < 0.3, 10, "impersonation did not count")
        assert edge.trust.score("edge-rpi-2") == 1.0     # the node it claimed to be is not blamed
        headers = {"Authorization": "Bearer t0k"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            async def node_row() -> dict:
                return (await http.get("/api/v1/nodes/edge-rpi-1")).json()
            row: dict = {}

            async def shown() -> bool:
                nonlocal row
                row = await node_row()
                return row.get("trust") is not None and row["trust"] < 0.3

            await until(shown, 15, "trust did not reach the API")
            assert "sent under another node's name" in row["trust_reason"]
            assert (await http.get("/api/v1/nodes/edge-rpi-2")).json()["trust"] == 1.0
        rt.apply_file(ROOT / "examples/apps/env-monitor.yaml")
        await until(lambda: all(s["status"] == "running" for s in rt.continuum.app_status("env-monitor").values())
                    and rt.continuum.app_status("env-monitor"), 30, "env-monitor did not run")
        placed = {i.node for i in rt.sim.instances(app="env-monitor")}
        assert "edge-rpi-1" not in placed
        reasons = " ".join(str(r.to_dict()) for r in edge.decision_log.query(limit=200))
        assert "trust 0." in reasons and "< 0.30" in reasons
