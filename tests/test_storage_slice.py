"""The storage service in a running slice (`examples/slices/storage.yaml`): real SeaweedFS stores started
and stopped by the slice runtime, every agent message over prosody, the REST API over real HTTP. An app
with a GDPR bucket is placed, its simulated components read and write it, and the storage policy puts the
replica next to its users, explaining why; `/api/v1/buckets` and `mlsysops get buckets` show it."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from mlsysops.agents.descriptions import DescriptionError
from mlsysops.agents.slice_config import load_slice
from mlsysops.cli.client_cmd import bucket_row
from mlsysops.cli.slice_runtime import SliceRuntime
from mlsysops.continuum.api import ApiBackend, ApiServer, create_app
from mlsysops.continuum.api_auth import Role
from tests.support import formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[1]
FAST = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.3, "status_report": 0.5}}
TOKEN = "admin-" + uuid.uuid4().hex


async def test_bucket_follows_its_users_and_is_shown_by_the_api(prosody):
    spec = load_slice(ROOT / "examples/slices/storage.yaml")
    spec.config.storage.volume_max = 8
    spec.config.storage.volume_size_mb = 8
    rt = SliceRuntime(spec, xmpp_port=prosody.port, force_xmpp=True, jid_suffix="-" + uuid.uuid4().hex[:6],
                      overrides={k: dict(v) for k, v in FAST.items()})
    stores = []
    try:
        await rt.start()
        stores = list(rt.storage.stores.values())
        assert len(stores) == 2 and all(s.alive for s in stores)
        server = ApiServer(create_app(ApiBackend(runtime=rt), {TOKEN: Role.admin}), port=0)
        url = await server.start()
        try:
            await until(lambda: formed(rt), 20, "hierarchy did not form")
            rt.apply_file(ROOT / "examples/storage/camera-archive.yaml")
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                                         timeout=15) as http:
                async def on_edge() -> dict | None:
                    body = (await http.get("/api/v1/buckets")).json()
                    rows = [b for b in body["buckets"] if b["bucket"] == "clips"]
                    done = rows and rows[0]["replicas"] == {"edge-1": "complete"} and rows[0]["access"]
                    return body if done else None

                body = await until(on_edge, 60, "the bucket did not end on the edge site next to its users")
                row = bucket_row(next(b for b in body["buckets"] if b["bucket"] == "clips"), body["sites"])
                assert row["key"] == "camera-archive/clips" and row["sites"] == "edge-1"
                assert {s["name"] for s in body["sites"]} == {"cloud-1", "edge-1"}
                detail = (await http.get("/api/v1/buckets/camera-archive/clips")).json()
                assert detail["objects"]["edge-1"], detail
                missing = await http.get("/api/v1/buckets/camera-archive/nope")
                assert missing.status_code == 404 and "camera-archive/clips" in missing.json()["detail"]
                dash = (await http.get("/api/v1/dashboard/state")).json()
                assert [b["replicas"] for b in dash["buckets"] if b["name"] == "camera-archive/clips"] == [
                    {"edge-1": "complete"}]
                decisions = (await http.get("/api/v1/decisions", params={"policy": "storage_placement",
                                                                         "limit": 200})).json()
                text = yaml.safe_dump(decisions)
                assert "storage_placement" in text and "alternatives" in text and "edge-1" in text
            assert rt.storage.driver.done > 0
            # admission: a bucket no site of this slice satisfies is refused, naming the field
            bad = yaml.safe_load((ROOT / "examples/storage/camera-archive.yaml").read_text())
            bad["MLSysOpsApp"]["name"] = "far-away"
            bad["MLSysOpsApp"]["components"][0]["storage"]["buckets"][0]["location_restrictions"] = {
                "regions": ["us"]}
            with pytest.raises(DescriptionError, match=r"components\[0\]\.storage\.buckets\[0\]"):
                rt.continuum.submit_app(bad)
        finally:
            await server.stop()
    finally:
        await rt.stop()
    assert stores and not any(s.alive for s in stores)
    assert not any(s.workdir.exists() for s in stores)


async def test_an_external_site_without_credentials_is_refused_naming_the_field():
    from mlsysops.agents.slice_config import StorageConfig
    from mlsysops.cli.slice_assembly import SubstrateError
    from mlsysops.cli.storage_runtime import StorageRuntime

    config = StorageConfig.model_validate({"sites": {"ext": {"endpoint": "http://127.0.0.1:9",
                                                             "access_key_env": "MLSYSOPS_TEST_UNSET_KEY",
                                                             "secret_key_env": "MLSYSOPS_TEST_UNSET_SECRET"}}})
    runtime = StorageRuntime(config)
    with pytest.raises(SubstrateError, match=r"storage\.sites\.ext: environment variable MLSYSOPS_TEST_UNSET_KEY"):
        await runtime.start()
    assert runtime.stores == {} and runtime.mechanism is None


async def test_an_unreachable_external_store_is_reported_not_fatal(monkeypatch):
    from mlsysops.agents.slice_config import StorageConfig
    from mlsysops.cli.storage_runtime import StorageRuntime

    monkeypatch.setenv("MLSYSOPS_TEST_KEY", "k")
    monkeypatch.setenv("MLSYSOPS_TEST_SECRET", "s")
    config = StorageConfig.model_validate({"timeout": 1, "sites": {"ext": {
        "endpoint": "http://127.0.0.1:9", "access_key_env": "MLSYSOPS_TEST_KEY",
        "secret_key_env": "MLSYSOPS_TEST_SECRET"}}})
    runtime = StorageRuntime(config)
    await runtime.start()
    try:
        state = await runtime.mechanism.get_state()
        assert not state["sites"]["ext"]["reachable"]
        assert "store ext: list buckets failed: unreachable at http://127.0.0.1:9" in state["sites"]["ext"]["error"]
    finally:
        await runtime.stop()
