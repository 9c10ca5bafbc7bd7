"""The sim placement mechanism: every action, both command formats, failures reported not raised."""

from __future__ import annotations

import pytest

from mlsysops.mechanisms.sim_placement import ComponentDeploySpec, SimPlacementMechanism
from mlsysops.sim import InstanceState, SimClock, SimContinuum, SimNodeSpec

pytestmark = pytest.mark.asyncio(loop_scope="session")


def make(startup: float = 0.05) -> tuple[SimContinuum, SimPlacementMechanism]:
    sim = SimContinuum.from_specs([SimNodeSpec("n1", "c1", startup_s=startup), SimNodeSpec("n2", "c1", startup_s=startup),
                                   SimNodeSpec("x1", "other", startup_s=startup)], seed=1, clock=SimClock.realtime())
    specs = {"web": ComponentDeploySpec(0.5, 64 << 20, calls=["db"]), "db": ComponentDeploySpec(0.5, 64 << 20)}

    def resolve(app, component, spec):
        if spec is not None:
            return ComponentDeploySpec(float(spec["cpu"]), 32 << 20)
        return specs[component]

    return sim, SimPlacementMechanism(sim, "c1", resolve, move_timeout=2.0)


def active(sim, app="shop"):
    return {i.instance_id: i for i in sim.instances(app=app) if not i.state.terminal}


async def test_deploy_is_idempotent_and_limited_to_the_cluster():
    sim, mech = make()
    cmd = {"app": "shop", "actions": [{"action": "deploy", "component": "web", "node": "n1", "instance_id": "w0"}]}
    assert (await mech.apply(cmd))["ok"]
    assert (await mech.apply(cmd))["ok"]                      # a retried plan changes nothing
    assert list(active(sim)) == ["w0"]
    assert ("web", "db") in sim.interactions("shop")
    other = await mech.apply({"app": "shop", "actions": [{"action": "deploy", "component": "db", "node": "x1"}]})
    assert not other["ok"] and "not in cluster c1" in other["detail"][0]["error"]
    state = await mech.get_state()
    assert [i["instance_id"] for i in state["instances"]] == ["w0"] and "n2" in state["latency_ms"]["n1"]


async def test_move_is_make_before_break():
    sim, mech = make(startup=0.2)
    await mech.apply({"app": "shop", "actions": [{"action": "deploy", "component": "web", "node": "n1",
                                                  "instance_id": "w0"}]})
    sim.advance(0.3)
    seen_both = []
    unsubscribe = sim.subscribe(lambda ev: seen_both.append(len(active(sim))))
    res = await mech.apply({"app": "shop", "actions": [{"action": "move", "component": "web", "from": "n1",
                                                        "to": "n2", "instance_id": "w0",
                                                        "new_instance_id": "w1"}]})
    unsubscribe()
    assert res["ok"] and res["detail"][0]["replaced"] == "w0" and res["detail"][0]["waited_for_running"]
    now = active(sim)
    assert list(now) == ["w1"] and now["w1"].node == "n2" and now["w1"].state is InstanceState.RUNNING
    assert 2 in seen_both                                      # old and new ran side by side


async def test_move_off_a_crashed_node_does_not_wait_and_remove_is_idempotent():
    sim, mech = make()
    await mech.apply({"app": "shop", "actions": [{"action": "deploy", "component": "db", "node": "n1",
                                                  "instance_id": "d0"}]})
    sim.crash_node("n1")
    res = await mech.apply({"app": "shop", "actions": [{"action": "move", "component": "db", "from": "n1",
                                                        "to": "n2", "instance_id": "d0", "new_instance_id": "d1"}]})
    assert res["ok"] and not res["detail"][0]["waited_for_running"]
    rm = {"app": "shop", "actions": [{"action": "remove", "component": "db", "instance_id": "d1"}]}
    assert (await mech.apply(rm))["ok"] and (await mech.apply(rm))["ok"]
    assert active(sim) == {}


async def test_change_spec_replaces_the_instance_with_the_new_resources():
    sim, mech = make()
    await mech.apply({"name": "shop", "deployment_plan": {"web": [{"action": "deploy", "host": "n1"}],
                                                          "initial_plan": True}})      # Fluidity format
    (old,) = active(sim).values()
    res = await mech.apply({"name": "shop", "deployment_plan": {
        "web": [{"action": "change_spec", "host": "n1", "new_spec": {"cpu": 0.25}}]}})
    assert res["ok"], res
    (new,) = active(sim).values()
    assert new.instance_id != old.instance_id and new.node == "n1" and new.cpu_request_cores == 0.25


async def test_bad_commands_and_capacity_errors_are_failures_not_exceptions():
    sim, mech = make()
    assert not (await mech.apply({"nonsense": 1}))["ok"]
    big = {"app": "shop", "actions": [{"action": "deploy", "component": "web", "node": "n1", "instance_id": f"w{i}"}
                                      for i in range(20)]}
    res = await mech.apply(big)                                # 4 cores / 0.5 each: later ones do not fit
    assert not res["ok"]
    failed = [r for r in res["detail"] if not r["ok"]]
    assert len(failed) == 12 and "cpu requests 4.5 > 4 cores" in failed[0]["error"]
    assert len(active(sim)) == 8                               # what fitted stays; nothing half-done
