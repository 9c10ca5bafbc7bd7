"""The storage mechanism against real SeaweedFS stores (one `weed server -s3` per site, started once for
this module on free loopback ports): placement, make-before-break moves with checksums, constraint
refusals naming the field, and store outages that lose nothing."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from mlsysops.agents.descriptions import load_obj
from mlsysops.agents.descriptions.errors import DescriptionError
from mlsysops.agents.descriptions.semantic import Inventory
from mlsysops.agents.descriptions.storage_intents import StorageSite
from mlsysops.mechanisms.replica_copy import MARKER_KEY
from mlsysops.mechanisms.storage_service import StorageMechanism
from mlsysops.substrates.s3.client import S3Site, StoreError
from mlsysops.substrates.s3.seaweed import SeaweedStore

SITES = [StorageSite("eu-1", region="eu", gdpr=True, layer="cloud", node="n-eu1"),
         StorageSite("eu-2", region="eu", gdpr=True, layer="edge", node="n-eu2"),
         StorageSite("eu-3", region="eu", gdpr=True, layer="edge", node="n-eu3"),   # the one we kill
         StorageSite("us-1", region="us", gdpr=False, layer="cloud", node="n-us1")]
RTT = {"eu-1": 40.0, "eu-2": 5.0, "eu-3": 8.0, "us-1": 120.0}   # from node "cam" (edge, in the EU)


def app(name: str, buckets: list[dict]) -> object:
    return load_obj({"MLSysOpsApp": {"name": name, "components": [
        {"metadata": {"name": "cam"}, "containers": [{"image": "i"}], "storage": {"buckets": buckets}},
        {"metadata": {"name": "web"}, "containers": [{"image": "i"}]}]}}).spec


@pytest.fixture(scope="module")
def stores():
    started = []
    try:
        for s in SITES:
            store = SeaweedStore(s.name, volume_max=16, volume_size_mb=8)
            started.append(store)
        for store in started:
            store.start()
        yield {s.name: s for s in started}
    finally:
        for store in started:
            store.close()


@pytest.fixture
def mech(stores):
    apps: dict[str, object] = {}
    sites = {n: S3Site(n, s.endpoint, s.access_key, s.secret_key, timeout=3) for n, s in stores.items()}
    m = StorageMechanism(sites, SITES, app_models=apps, latency_ms=lambda node, site: RTT[site])
    return m


async def fill(m: StorageMechanism, app_name: str, bucket: str, n: int, size: int = 32 * 1024) -> dict[str, str]:
    sums = {}
    for i in range(n):
        data = hashlib.sha256(f"{app_name}{bucket}{i}".encode()).digest() * (size // 32)
        await m.write(app_name, bucket, f"obj-{i:03d}", data, component="cam", from_node="cam")
        sums[f"obj-{i:03d}"] = hashlib.sha256(data).hexdigest()
    return sums


async def checksums(m: StorageMechanism, site: str, app_name: str, bucket: str) -> dict[str, str]:
    store, name = m.sites[site], f"{app_name}-{bucket}"
    objs = await asyncio.to_thread(store.objects, name)
    out = {}
    for o in objs:
        if o.key != MARKER_KEY:
            out[o.key] = hashlib.sha256(await asyncio.to_thread(store.get, name, o.key)).hexdigest()
    return out


@pytest.mark.asyncio
async def test_place_creates_replicas_read_back_from_the_stores(mech):
    mech.app_models["shop"] = app("shop", [{"bucket_id": "images", "replicas": 2}])
    res = await mech.apply({"command": "place", "app": "shop", "bucket": "images", "sites": ["eu-1", "eu-2"]})
    assert res["ok"], res
    sums = await fill(mech, "shop", "images", 5)
    state = await mech.get_state()
    assert state["buckets"]["shop-images"]["replicas"] == {"eu-1": "complete", "eu-2": "complete"}
    for site in ("eu-1", "eu-2"):
        assert await checksums(mech, site, "shop", "images") == sums
    # the read goes to the nearest replica (eu-2, 5 ms) and is recorded as telemetry
    await mech.read("shop", "images", "obj-000", component="web", from_node="cam")
    rows = {r["component"]: r for r in state["access"]["shop/images"]} | {
        r["component"]: r for r in mech.access.summary()["shop/images"]}
    assert rows["web"]["reads_per_s"] > 0 and rows["cam"]["writes_per_s"] > 0
    assert [a.served_by for a in mech.access.recent() if a.op == "read"] == ["eu-2"]
    # a fresh mechanism on the same stores adopts the replicas (no state of its own)
    again = StorageMechanism(mech.sites, SITES, app_models=mech.app_models)
    assert (await again.get_state())["buckets"]["shop-images"]["replicas"] == {"eu-1": "complete",
                                                                                 "eu-2": "complete"}
    assert (await mech.apply({"command": "delete", "app": "shop", "bucket": "images"}))["ok"]
    assert "shop-images" not in (await mech.get_state())["buckets"] or \
        not (await mech.get_state())["buckets"]["shop-images"]["replicas"]


@pytest.mark.asyncio
async def test_move_is_make_before_break_and_readable_throughout(mech):
    mech.app_models["mv"] = app("mv", [{"bucket_id": "data", "location_restrictions": {"gdpr": True}}])
    assert (await mech.apply({"command": "place", "app": "mv", "bucket": "data", "sites": ["eu-1"]}))["ok"]
    sums = await fill(mech, "mv", "data", 30)
    reads, stop = [], asyncio.Event()

    async def reader() -> None:
        i = 0
        while not stop.is_set():
            key = f"obj-{i % 30:03d}"
            data = await mech.read("mv", "data", key, component="web", from_node="cam")
            reads.append(hashlib.sha256(data).hexdigest() == sums[key])
            i += 1

    task = asyncio.create_task(reader())
    res = await mech.apply({"command": "move", "app": "mv", "bucket": "data", "from": "eu-1", "to": "eu-2"})
    stop.set()
    await task
    assert res["ok"], res
    assert reads and all(reads), f"{reads.count(False)} of {len(reads)} reads returned wrong data"
    assert await checksums(mech, "eu-2", "mv", "data") == sums
    assert "mv-data" not in await asyncio.to_thread(mech.sites["eu-1"].buckets)   # broken after make
    # a write after the move lands on the new replica
    await mech.write("mv", "data", "late", b"x", component="cam", from_node="cam")
    assert "late" in await checksums(mech, "eu-2", "mv", "data")


@pytest.mark.asyncio
async def test_a_site_the_constraints_forbid_is_refused_naming_the_field(mech):
    mech.app_models["gd"] = app("gd", [{"bucket_id": "faces", "location_restrictions": {"gdpr": True}}])
    res = await mech.apply({"command": "place", "app": "gd", "bucket": "faces", "sites": ["us-1"]})
    assert not res["ok"]
    assert "components[0].storage.buckets[0].location_restrictions.gdpr" in res["detail"]
    assert "us-1" in res["detail"]
    assert "gd-faces" not in await asyncio.to_thread(mech.sites["us-1"].buckets)
    bad = await mech.apply({"command": "place", "app": "gd", "bucket": "nope", "sites": ["eu-1"]})
    assert not bad["ok"] and bad["detail"].startswith("bucket:")


def test_admission_refuses_a_bucket_no_site_can_hold():
    inv = Inventory(storage_sites=tuple(SITES))
    body = {"MLSysOpsApp": {"name": "x", "components": [{"metadata": {"name": "c"}, "containers": [{"image": "i"}],
            "storage": {"buckets": [{"bucket_id": "b", "location_restrictions": {"regions": ["asia"]}}]}}]}}
    with pytest.raises(DescriptionError) as err:
        load_obj(body, inventory=inv)
    text = str(err.value)
    assert "components[0].storage.buckets[0]" in text and "regions" in text and "asia" in text
    body["MLSysOpsApp"]["components"][0]["storage"]["buckets"][0] = {
        "bucket_id": "b", "replicas": 4, "location_restrictions": {"gdpr": True}}
    with pytest.raises(DescriptionError, match=r"replicas asks for 4 replicas but only 3"):
        load_obj(body, inventory=inv)


@pytest.mark.asyncio
async def test_store_killed_midway_through_a_copy_keeps_the_old_replica(mech, stores):
    mech.app_models["out"] = app("out", [{"bucket_id": "logs", "location_restrictions": {"regions": ["eu"]}}])
    assert (await mech.apply({"command": "place", "app": "out", "bucket": "logs", "sites": ["eu-1"]}))["ok"]
    sums = await fill(mech, "out", "logs", 12)

    def kill_after_four(progress) -> None:
        if progress.copied == 4:
            stores["eu-3"].kill()

    mech.on_copy_object = kill_after_four
    res = await mech.apply({"command": "move", "app": "out", "bucket": "logs", "from": "eu-1", "to": "eu-3"})
    mech.on_copy_object = None
    assert not res["ok"]
    assert "eu-3" in res["detail"] and "the replica on eu-1 is kept" in res["detail"]
    assert await checksums(mech, "eu-1", "out", "logs") == sums          # nothing lost
    state = await mech.get_state()
    assert state["buckets"]["out-logs"]["replicas"] == {"eu-1": "complete"}
    assert not state["sites"]["eu-3"]["reachable"] and "unreachable" in state["sites"]["eu-3"]["error"]
    # reads still served; a new placement on the dead site fails clearly, keeping what exists
    assert len(await mech.read("out", "logs", "obj-000", component="web", from_node="cam")) == 32 * 1024
    again = await mech.apply({"command": "place", "app": "out", "bucket": "logs", "sites": ["eu-3"]})
    assert not again["ok"] and "store eu-3" in again["detail"]
    assert await checksums(mech, "eu-1", "out", "logs") == sums
    # the store comes back with the partial copy still marked `copying`: it never counted as a replica;
    # the move is retried from scratch and completes with every object intact
    await asyncio.to_thread(stores["eu-3"].start)
    state = await mech.get_state()
    assert state["buckets"]["out-logs"]["replicas"] == {"eu-1": "complete", "eu-3": "copying"}
    res = await mech.apply({"command": "move", "app": "out", "bucket": "logs", "from": "eu-1", "to": "eu-3"})
    assert res["ok"], res
    assert await checksums(mech, "eu-3", "out", "logs") == sums
    assert (await mech.get_state())["buckets"]["out-logs"]["replicas"] == {"eu-3": "complete"}


@pytest.mark.asyncio
async def test_reads_fail_over_when_the_nearest_store_is_down(mech, stores):
    """eu-3 is down (killed above, or here): a replica there is skipped, the read is served elsewhere."""
    stores["eu-3"].kill()
    with pytest.raises(StoreError, match="unreachable"):
        await asyncio.to_thread(mech.sites["eu-3"].buckets)
    mech.app_models["fo"] = app("fo", [{"bucket_id": "b", "replicas": 2}])
    assert (await mech.apply({"command": "place", "app": "fo", "bucket": "b", "sites": ["eu-1", "eu-2"]}))["ok"]
    await fill(mech, "fo", "b", 2)
    stores["eu-2"].kill()    # the nearest replica now (the last test of the module: it stays down)
    data = await mech.read("fo", "b", "obj-001", component="web", from_node="cam")
    assert len(data) == 32 * 1024
    assert mech.access.recent()[-1].served_by == "eu-1"
    written = await mech.write("fo", "b", "new", b"y", component="cam", from_node="cam")
    assert written == ["eu-1"]
