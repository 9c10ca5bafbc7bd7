"""The storage policy's choice of replica sites, its plugin contract, and the simulator's object access."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlsysops.agents.descriptions import load_obj
from mlsysops.agents.descriptions.storage_intents import BucketIntent, StorageSite
from mlsysops.policies import storage_placement
from mlsysops.policies.storage_replica_choice import Accessor, choose_replica_sites, current_accessors
from mlsysops.sim import SimClock, SimContinuum, SimNodeSpec
from mlsysops.sim.object_access import AccessStream, ObjectAccessModel, generate_accesses

SITES = [StorageSite("cloud", region="eu", gdpr=True, layer="cloud", node="s-cloud"),
         StorageSite("us", region="us", gdpr=False, layer="cloud", node="s-us"),
         StorageSite("ath", region="eu", gdpr=True, layer="edge", node="s-ath"),
         StorageSite("mad", region="eu", gdpr=True, layer="edge", node="s-mad")]
RTT = {"n-ath": {"cloud": 30.0, "us": 110.0, "ath": 1.0, "mad": 25.0},
       "n-mad": {"cloud": 20.0, "us": 90.0, "ath": 25.0, "mad": 1.0},
       "n-us": {"cloud": 70.0, "us": 1.0, "ath": 110.0, "mad": 90.0}}


def intent(**kw) -> BucketIntent:
    return BucketIntent("app", "b", "cam", "components[0].storage.buckets[0]", **kw)


def test_reads_pull_a_replica_to_their_users_within_the_constraints():
    readers = [Accessor("web", "n-mad", 20.0, 0.0)]
    c = choose_replica_sites(intent(gdpr=True), SITES, ["cloud"], readers, RTT)
    assert c.changes and c.sites == ["mad"]
    assert c.filtered["us"].startswith("components[0].storage.buckets[0].location_restrictions.gdpr")
    assert "mean access 20.0 ms -> 1.0 ms" in c.reason
    assert [a["sites"] for a in c.alternatives][:2] == [["mad"], ["cloud"]]
    # two replicas for users on two continents: one near each (us allowed without gdpr)
    both = readers + [Accessor("web-us", "n-us", 20.0, 0.0)]
    assert choose_replica_sites(intent(replicas=2), SITES, [], both, RTT).sites == ["mad", "us"]


def test_writes_count_the_farthest_replica_and_targets_come_first():
    writer = [Accessor("cam", "n-ath", 0.0, 10.0)]
    assert choose_replica_sites(intent(replicas=2, gdpr=True), SITES, [], writer, RTT).sites == ["ath", "mad"]
    # a target the nearest set misses beats the mean: the reader in Madrid must see <= 5 ms
    mixed = [Accessor("cam", "n-ath", 0.0, 10.0), Accessor("web", "n-mad", 1.0, 0.0)]
    c = choose_replica_sites(intent(gdpr=True, targets_ms={"web": 5.0}), SITES, [], mixed, RTT)
    assert c.sites == ["mad"] and "still missing" not in c.reason


def test_hysteresis_keeps_a_placement_that_is_nearly_as_good():
    readers = [Accessor("web", "n-mad", 10.0, 0.0), Accessor("web2", "n-ath", 9.0, 0.0)]
    c = choose_replica_sites(intent(gdpr=True), SITES, ["ath"], readers, RTT)
    assert not c.changes and "hysteresis" in c.reason
    assert choose_replica_sites(intent(gdpr=True), SITES, ["ath"], readers, RTT, hysteresis=0.0).changes


def test_unreachable_or_forbidden_sites_hold_with_the_reason():
    c = choose_replica_sites(intent(regions=("eu",), layers=("cloud",)), SITES, [], [], RTT, unreachable={"cloud"})
    assert c.held and not c.changes
    assert "store unreachable" in c.held and "location_restrictions.regions" in c.held
    lost = choose_replica_sites(intent(gdpr=True), SITES, ["ath"], [], RTT, unreachable={"ath"})
    assert lost.changes and "no longer allowed or reachable" in lost.reason


def test_a_relocated_component_counts_from_its_new_node_only():
    rows = [{"component": "web", "from_node": "n-ath", "reads_per_s": 5.0, "writes_per_s": 0.0,
             "first_at": 0.0, "last_at": 50.0},
            {"component": "web", "from_node": "n-mad", "reads_per_s": 2.0, "writes_per_s": 0.0,
             "first_at": 55.0, "last_at": 60.0}]
    assert [a.from_node for a in current_accessors(rows)] == ["n-mad"]


@pytest.mark.asyncio
async def test_plugin_plans_one_place_command_with_an_explanation():
    app = load_obj({"MLSysOpsApp": {"name": "shop", "components": [
        {"metadata": {"name": "cam"}, "containers": [{"image": "i"}],
         "storage": {"buckets": [{"bucket_id": "b", "location_restrictions": {"gdpr": True}}]}}]}}).spec
    state = {"sites": {s.name: {"region": s.region, "gdpr": s.gdpr, "layer": s.layer, "node": s.node,
                                "reachable": True} for s in SITES},
             "buckets": {"shop-b": {"replicas": {"cloud": "complete"}}},
             "access": {"shop/b": [{"component": "cam", "from_node": "n-ath", "reads_per_s": 3.0,
                                    "writes_per_s": 1.0, "first_at": 0.0, "last_at": 9.0}]},
             "rtt_ms": RTT}
    ctx = storage_placement.initialize()
    system = {"now": 100.0, "app_models": {"shop": app}, "clusters": {}}
    mechs = {"storage": {"state": state}}
    needed, ctx = await storage_placement.analyze(ctx, {"name": "shop"}, system, mechs, {}, None)
    assert needed
    plan, ctx = await storage_placement.plan(ctx, {"name": "shop"}, system, mechs, {}, None)
    assert plan == {"storage": {"command": "place", "app": "shop", "bucket": "b", "sites": ["ath"],
                                "reason": ctx["explanation"]["reason"]}}
    exp = ctx["explanation"]
    assert exp["current"] == ["cloud"] and exp["chosen"] == ["ath"] and exp["alternatives"]
    assert "us" in exp["filtered"] and exp["users"][0]["component"] == "cam"
    # a bucket whose only replica sits on an unreachable store is held, never re-created empty elsewhere
    down = {**state, "buckets": {"shop-b": {"replicas": {"cloud": "unreachable"}}}}
    needed, held_ctx = await storage_placement.analyze(storage_placement.initialize(), {"name": "shop"}, system,
                                                       {"storage": {"state": down}}, {}, None)
    assert not needed and "no complete replica reachable" in held_ctx["explanation"]["held"][0]
    # cooldown: the same move is not planned again right after
    needed, ctx = await storage_placement.analyze(ctx, {"name": "shop"}, system, mechs, {}, None)
    assert not needed


def test_sim_access_latency_follows_the_replica_and_streams_are_seeded():
    sim = SimContinuum.from_specs([SimNodeSpec("a", "c1", "edge", location=(23.7, 38.0)),
                                   SimNodeSpec("sa", "c1", "edge", location=(23.7, 38.0)),
                                   SimNodeSpec("sb", "c2", "cloud", location=(8.7, 50.1))],
                                  seed=1, clock=SimClock.manual())
    model = ObjectAccessModel(sim, jitter=0.0)
    near, site = model.access_ms("a", {"A": "sa", "B": "sb"}, "read", 1000)
    far, wsite = model.access_ms("a", {"A": "sa", "B": "sb"}, "write", 1000)
    assert site == "A" and wsite == "B" and far > near + 10
    with pytest.raises(ValueError, match="op"):
        model.access_ms("a", {"A": "sa"}, "scan", 1)
    s = [AccessStream("x/b", "r", "a", 10.0, 2.0)]
    one, two = generate_accesses(s, 0.0, 10.0, seed=3), generate_accesses(s, 0.0, 10.0, seed=3)
    assert one == two and 70 < len(one) < 170 and all(0 <= a.at < 10 for a in one)


def test_benchmark_runs_and_reports_its_keys():
    from benchmarks.storage_access import run

    res = run(1)
    assert {"rows", "access_p95_ratio", "bytes_moved"} <= set(res)
    assert res["access_p95_ratio"] < 1.0 and res["bytes_moved"] > 0


def test_slice_config_names_an_unknown_storage_node_with_the_field(tmp_path):
    from mlsysops.agents.descriptions import DescriptionError
    from mlsysops.agents.slice_config import load_slice

    src = (Path(__file__).resolve().parents[1] / "examples/slices/storage.yaml").read_text()
    bad = tmp_path / "examples/slices/bad.yaml"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples/slices/demo", tmp_path / "examples/slices/demo")
    bad.write_text(src.replace("node: edge-server-1", "node: edge-srv-1"))
    with pytest.raises(DescriptionError, match=r"storage\.sites\.edge-1\.node") as err:
        load_slice(bad)
    assert "edge-server-1" in str(err.value)   # the suggestion
    assert load_slice(Path(__file__).resolve().parents[1] / "examples/slices/storage.yaml").config.storage.sites
