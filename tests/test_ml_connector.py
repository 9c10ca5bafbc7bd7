"""The ML connector in a running slice (the demo slice, every message over a real prosody server): models
reach cluster and node agents over XMPP in chunks, checked by sha256; an agent without a usable model says
it decides with heuristics; reports and training requests travel up; REST and CLI drive the registry."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_asyncio

from mlsysops.agents.authorization import norm_jid
from mlsysops.agents.ml import wire
from mlsysops.agents.ml.errors import ModelError
from mlsysops.continuum.api_auth import Role
from tests.ml_support import FEATURES, card, observations, onnx_linear, original_card
from tests.support import demo_slice, formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(180)]
FAST = {"all": {"heartbeat": 1.0, "analyze": 1.0, "monitor": 0.5, "status_report": 1.0}}
ADMIN, READER = "admin-" + uuid.uuid4().hex, "reader-" + uuid.uuid4().hex
V1 = "/api/v1"
QOS_FEATURES = ["cpu", "load", "peers", "distance_ms"]


def forest_onnx(seed: int = 0, scale: float = 1.0) -> tuple[bytes, object]:
    """A random forest (about 95 KB of ONNX: three chunks) and the sklearn model it came from."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (400, 4)).astype(np.float32)
    m = RandomForestRegressor(n_estimators=12, max_depth=7, random_state=seed).fit(X, scale * X @ [1, 2, 3, 4])
    return to_onnx(m, X[:1], target_opset=17).SerializeToString(), m


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def served(prosody):
    async with demo_slice(prosody.port, FAST, {ADMIN: Role.admin, READER: Role.read}) as (rt, url):
        await until(lambda: formed(rt), 20, "hierarchy did not form")
        for agent in [*rt.clusters.values(), *rt.nodes.values()]:
            if hasattr(agent, "ml_connector"):     # (the far-edge agent has none: it runs no policies)
                agent.ml_connector.refresh_interval = 0.2
        yield rt, url


@pytest_asyncio.fixture(loop_scope="session")
async def client(served):
    async with httpx.AsyncClient(base_url=served[1], headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
        yield c


async def upload(client, name, artifact, crd, promote=True, fmt="onnx"):
    r = await client.post(f"{V1}/models/{name}/versions", json={
        "format": fmt, "card": crd, "promote": promote, "artifact": base64.b64encode(artifact).decode()})
    return r


def a_cluster_and_its_node(rt):
    cluster = rt.clusters["edge-1"] if "edge-1" in rt.clusters else next(iter(rt.clusters.values()))
    node = next(n for n in rt.nodes.values()
                if hasattr(n, "ml_connector") and n.parent and norm_jid(n.parent) == norm_jid(cluster.jid))
    return cluster, node


def events(agent, words):
    return [r for r in agent.decisions(limit=500) if r["stage"] == "event" and words in r["reason"]]


async def test_model_reaches_cluster_and_node_agents_in_checked_chunks(served, client):
    rt, _ = served
    artifact, sk = forest_onnx()
    assert len(artifact) > 2 * wire.CHUNK_BYTES
    r = await upload(client, "qos", artifact, card(QOS_FEATURES, output="variable"))
    assert r.status_code == 201 and r.json()["stage"] == "production", r.text
    cluster, node = a_cluster_and_its_node(rt)
    X = np.random.default_rng(5).uniform(0, 1, (16, 4))

    model = await cluster.ml_connector.get_model("qos", features=QOS_FEATURES)
    assert model is not None and model.version == 1
    assert cluster.ml_connector.stats["chunks"] >= 3 and cluster.ml_connector.cached("qos") is model
    assert np.allclose(model.predict(X), sk.predict(X.astype(np.float32)), atol=1e-4)
    on_node = await node.ml_connector.get_model("qos")          # via the cluster (its cache), over XMPP
    assert on_node is not None and np.allclose(on_node.predict(X), model.predict(X))
    assert events(node, "model qos v1 in use")
    cached = node.ml_connector.describe()["cached"]
    assert [(c["name"], c["version"]) for c in cached] == [("qos", 1)]
    # a policy whose features differ refuses the model and says it decides with heuristics
    assert await cluster.ml_connector.get_model("qos", features=["cpu", "load"]) is None
    assert events(cluster, "card.inputs") and events(cluster, "deciding with heuristics")


async def test_an_agent_without_the_model_decides_with_heuristics_and_says_so(served):
    rt, _ = served
    cluster, node = a_cluster_and_its_node(rt)
    assert await cluster.ml_connector.get_model("absent") is None
    said = events(cluster, "no model absent")
    assert said and "deciding with heuristics" in said[0]["reason"] and "unknown model" in said[0]["reason"]
    assert await node.ml_connector.get_model("absent") is None
    assert events(node, "no model absent")
    await cluster.ml_connector.get_model("absent")
    assert len(events(cluster, "no model absent")) == 1          # said once per change, not per decision


async def test_new_production_reaches_agents_and_a_corrupt_one_does_not(served, client):
    rt, _ = served
    cluster, node = a_cluster_and_its_node(rt)
    assert (await upload(client, "lin", onnx_linear([1.0, 1.0], 0.0), card())).status_code == 201
    assert (await cluster.ml_connector.get_model("lin")).version == 1
    assert (await upload(client, "lin", onnx_linear([2.0, 2.0], 0.0), card())).status_code == 201
    # the hot path (`cached`, no await) sees the promotion too: it refreshes in the background
    await until(lambda: getattr(cluster.ml_connector.cached("lin"), "version", None) == 2, 10,
                "cached() never moved to v2")
    await until_model(node, "lin", 2)
    r = await upload(client, "lin", onnx_linear([3.0, 3.0], 0.0), card())
    assert r.status_code == 201
    with open(r.json()["path"], "r+b") as f:      # v3's artifact rots on the continuum's disk
        f.seek(20)
        f.write(b"\xde\xad")
    await asyncio.sleep(0.3)
    model = await cluster.ml_connector.get_model("lin")
    assert model.version == 2 and np.allclose(model.predict(np.ones((1, 2))), [4.0])   # v2 keeps serving
    said = events(cluster, "the parent refused the transfer")
    assert said and "model lin version 3: artifact:" in said[-1]["reason"] and "corrupt" in said[-1]["reason"]
    r = await client.post(f"{V1}/models/lin/rollback", json={"reason": "v3 is corrupt"})
    assert r.status_code == 200 and r.json()["version"] == 2


async def until_model(agent, name, version):
    async def check():
        m = await agent.ml_connector.get_model(name)
        return m is not None and m.version == version

    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{agent.agent_id} never got {name} v{version}")


async def test_reports_and_training_requests_travel_up_to_the_continuum(served, client):
    rt, url = served
    cluster, node = a_cluster_and_its_node(rt)
    reg = rt.continuum.ml_service.registry
    wide = {f"kind=node-{i:03d}": 1.0 for i in range(200)}   # 30 rows of 5 KB: batches are cut by size too
    for row in observations(30, name="rt", t0=0.0):
        await cluster.ml_connector.report("rt", None, {**row["features"], **wide}, None, row["observed"])
    with pytest.raises(ModelError, match="features: 2 values without names"):
        await node.ml_connector.report("rt", None, [0.1, 0.2], 1.0, 3.0)     # no model here to name them
    for row in observations(10, name="rt", seed=3):
        await node.ml_connector.report("rt", None, row["features"], 1.0, row["observed"])
    await until(lambda: len(reg.observations("rt")) == 40, 20, "reports did not reach the continuum")
    assert {o["agent"] for o in reg.observations("rt")} == {cluster.agent_id}   # the node's came through it
    # a remote caller may not name a module to import; the model's own trainer is fine
    refused = await cluster.ml_connector.submit_training("rt", trainer="tests.ml_support:TINY")
    assert refused["status"] == "refused" and "trainer: unknown trainer 'tests.ml_support:TINY'" in refused["error"]
    assert events(cluster, "training of rt not started")
    first = await rt.continuum.ml_connector.submit_training("rt", trainer="tests.ml_support:TINY")
    ran = await rt.continuum.ml_service.training.wait(first["id"])
    assert ran["status"] == "succeeded", ran["detail"]
    job = await node.ml_connector.submit_training("rt", seed=1)                # node -> cluster -> continuum
    assert job["trainer"] == "tests.ml_support:TINY"
    done = await rt.continuum.ml_service.training.wait(job["id"])
    assert done["status"] == "succeeded", done
    # the same through the CLI (the model's own trainer) and the job through the API
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "train", "rt", "--seed", "2", "--every", "1h")
    assert out.exit_code == 0 and "for rt queued (trainer tests.ml_support:TINY, seed 2); retrained every 1h" \
        in out.output, out.output
    job_id = out.output.split()[2]
    await rt.continuum.ml_service.training.wait(job_id)
    r = await client.get(f"{V1}/models/rt/jobs/{job_id}")
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and r.json()["detail"]["train_rows"] == 30
    described = (await client.get(f"{V1}/models/rt")).json()
    assert described["schedule"]["every"] == 3600 and described["jobs"][0]["id"] == job_id
    assert (await client.delete(f"{V1}/models/rt/schedule")).status_code == 200
    assert (await client.get(f"{V1}/models/rt")).json()["schedule"] is None
    # --wait follows the job to its end; without a terminal, progress is plain lines (one per change)
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "train", "rt", "--seed", "3", "--wait")
    assert out.exit_code == 0, out.output
    assert "succeeded: rt v" in out.stdout and ("promoted to production" in out.stdout
                                                 or "kept as a candidate" in out.stdout), out.stdout
    progress = [line for line in out.stderr.splitlines() if "training rt (job " in line]
    assert progress and progress[-1].endswith(": 2/2 (succeeded)"), out.stderr
    assert len(progress) == len(set(line.split("] ", 1)[1] for line in progress)), "a line per poll"
    assert "\x1b[" not in out.stderr                                     # no bar's control characters


def cli(url: str, token: str, *args: str):
    from typer.testing import CliRunner

    from mlsysops.cli.main import app

    return CliRunner().invoke(app, [*args, "--api", url, "--token", token])


async def test_rest_and_cli(served, client, tmp_path: Path):
    _, url = served
    onnx_file, card_file = tmp_path / "model.onnx", tmp_path / "card.json"
    onnx_file.write_bytes(onnx_linear([2.0, 3.0], 1.0, output="response_ms"))
    card_file.write_text(json.dumps(original_card(FEATURES, "response_ms")))
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "upload", "web-rt", str(onnx_file), "--card",
                                  str(card_file), "--promote")
    assert out.exit_code == 0 and "model web-rt v1 uploaded (production" in out.output, out.output
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "upload", "web-rt", str(onnx_file), "--card",
                                  str(card_file))
    assert out.exit_code == 0 and "v2 uploaded (candidate" in out.output
    out = await asyncio.to_thread(cli, url, READER, "model", "list", "-o", "json")
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["web-rt"]["production"] == 1 and rows["web-rt"]["latest"] == 2
    assert rows["web-rt"]["inputs"] == FEATURES and rows["web-rt"]["output"] == "response_ms"
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "promote", "web-rt", "2")
    assert out.exit_code == 0 and "v2 is in production" in out.output
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "rollback", "web-rt")
    assert out.exit_code == 0 and "rolled back to v1" in out.output
    out = await asyncio.to_thread(cli, url, READER, "model", "describe", "web-rt")
    assert out.exit_code == 0 and "history" in out.output and "rollback" in out.output
    out = await asyncio.to_thread(cli, url, READER, "model", "metrics", "web-rt", "-o", "json")
    assert [m["stage"] for m in json.loads(out.output)] == ["production", "archived"]

    # refused input: the error names model, version and field; nothing is stored
    card_file.write_text(json.dumps(original_card(["cpu", "load", "extra"], "response_ms")))
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "upload", "web-rt", str(onnx_file), "--card", str(card_file))
    assert out.exit_code == 1 and "error: 422 model web-rt version 3\n  card.inputs: " in out.output, out.output
    out = await asyncio.to_thread(cli, url, ADMIN, "model", "train", "web-rt")
    assert out.exit_code == 1 and "model web-rt\n  trainer: no version of this model names its trainer" in out.output
    out = await asyncio.to_thread(cli, url, READER, "model", "promote", "web-rt", "2")
    assert out.exit_code == 1 and "403" in out.output                        # mutations need an admin token

    r = await client.get(f"{V1}/models/web-rt")
    assert r.status_code == 200 and [v["version"] for v in r.json()["version_list"]] == [1, 2]
    for method, path, body, code in [
        ("GET", f"{V1}/models/nope", None, 404), ("GET", f"{V1}/models/web-rt/versions/9", None, 404),
        ("POST", f"{V1}/models/web-rt/promote", {"version": 9}, 422),
        ("POST", f"{V1}/models/web-rt/versions", {"card": {}, "artifact": "!!"}, 422),
        ("POST", f"{V1}/models/web-rt/train", {"every": 0.01}, 422),
        ("POST", f"{V1}/models/bad%20name/train", {}, 422),
    ]:
        r = await client.request(method, path, json=body)
        assert r.status_code == code, (path, r.status_code, r.text)
    r = await client.post(f"{V1}/models/web-rt/promote", json={"version": 9})
    assert r.json()["detail"]["field"] == "version" and r.json()["detail"]["version"] == 9


async def test_qos_model_trained_at_the_continuum_from_what_a_cluster_reported(served):
    """The chain an ML policy uses, over the wire: outcomes reported by a cluster agent, a training request
    from a node (relayed by its cluster), the built-in QoS trainer at the continuum, and the promoted
    version reaching the cluster's hot path (`cached`)."""
    rt, _ = served
    cluster, node = a_cluster_and_its_node(rt)
    rng = np.random.default_rng(11)
    for i in range(80):
        kind = "jetson" if i % 2 else "server"
        util = float(rng.uniform(0.1, 0.8))
        queue = 1.0 / (1.0 - util)
        observed = (40.0 if kind == "jetson" else 15.0) * queue + float(rng.normal(0, 0.5))
        feats = {"comp=probe/web": 1.0, f"kind={kind}": 1.0, f"node=n{i % 4}": 1.0, "queue": queue, "net_ms": 2.0}
        await cluster.ml_connector.report("qos-response-time", None, feats, None, observed)
    reg = rt.continuum.ml_service.registry
    await until(lambda: len(reg.observations("qos-response-time")) == 80, 20, "reports did not arrive")
    job = await node.ml_connector.submit_training("qos-response-time")
    assert job["trainer"] == "qos-response-time", job           # TRAINERS[name], found by the model's name
    done = await rt.continuum.ml_service.training.wait(job["id"])
    assert done["status"] == "succeeded" and done["promoted"], done["detail"]
    model = await cluster.ml_connector.get_model("qos-response-time")
    assert model is not None and model.format == "mlsysops-linear" and model.version == done["version"]
    x = {"comp=probe/web": 1.0, "kind=jetson": 1.0, "node=n1": 1.0, "queue": 2.0, "net_ms": 2.0}
    pred = model.predict(np.array([[x.get(f, 0.0) for f in model.feature_names]]))[0]
    assert pred == pytest.approx(80.0, rel=0.15)                # 40 ms x queue 2, learnt from the reports
