"""An agent whose parent does not answer: no model -> None at once after the first miss (no round trip per
decision), and after a restart the model cached on disk serves (sha256-checked) while the parent is away."""

from __future__ import annotations

import hashlib
import time

import pytest

from mlsysops.agents.managed_agent import AgentSettings, ManagedAgent
from mlsysops.agents.ml.client import Cached, MLConnectorClient
from mlsysops.agents.ml.registry import ModelRegistry
from tests.ml_support import card, onnx_linear

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60), pytest.mark.xmpp]


def _events(agent, words):
    return [r["reason"] for r in agent.decisions(limit=100) if r["stage"] == "event" and words in r["reason"]]


async def test_unreachable_parent_no_model_and_a_cached_one_after_restart(make_agent, xmpp_server, tmp_path):
    parent = f"nobody-{time.time_ns()}@{xmpp_server.domain}"
    reg = ModelRegistry(tmp_path / "continuum")
    info, data = reg.artifact("lin", reg.add_version("lin", "onnx", onnx_linear([1.0, 2.0], 0.0), card(),
                                                     stage="production").version)
    cache = tmp_path / "cluster" / "model-cache" / "edge-x"

    class _Writer:            # what an earlier run of this agent left in its cache
        agent_id = "earlier"

    writer = MLConnectorClient.__new__(MLConnectorClient)
    writer.agent, writer.cache_dir = _Writer(), cache
    writer._save_disk(Cached("lin", 1, "onnx", hashlib.sha256(data).hexdigest(), info.card, data, None, 0.0, True))
    (cache / "bad-v1.json").write_text('{"name": "bad", "version": 1, "format": "onnx", "sha256": "00", "card": {}}')
    (cache / "bad-v1.bin").write_bytes(b"rotten")

    agent = await make_agent(ManagedAgent, "offline", parent=parent, agent_id="edge-x",
                             settings=AgentSettings(state_dir=tmp_path / "cluster"))
    client = agent.ml_connector
    client.fetch_timeout = 0.5
    assert [c["name"] for c in client.describe()["cached"]] == ["lin"]       # the rotten entry was skipped

    model = await client.get_model("lin")              # the parent is away: the cached version serves
    assert model is not None and model.version == 1 and model.predict([[1.0, 1.0]])[0] == pytest.approx(3.0)
    assert _events(agent, "parent unreachable") and "serving cached v1" in _events(agent, "parent unreachable")[0]

    assert await client.get_model("other") is None     # never seen: None, said once
    said = _events(agent, "no model other")
    assert len(said) == 1 and "deciding with heuristics" in said[0] and "parent unreachable" in said[0]
    fetches = client.stats["fetches"]
    assert await client.get_model("other") is None     # asked again at once: no new round trip
    assert client.stats["fetches"] == fetches and len(_events(agent, "no model other")) == 1
    reg.close()


async def test_a_transfer_that_does_not_match_its_announced_sha256_or_card_is_refused(make_agent, tmp_path):
    import base64

    from mlsysops.agents.ml import wire
    from mlsysops.agents.ml.errors import ModelError

    agent = await make_agent(ManagedAgent, "transfer", agent_id="edge-y", settings=AgentSettings(state_dir=tmp_path))
    data = onnx_linear([1.0, 2.0], 0.0)
    good = hashlib.sha256(data).hexdigest()
    crd = {**card(), "name": "lin", "version": 4, "format": "onnx"}

    def chunk(**kw):
        base = {"name": "lin", "version": 4, "format": "onnx", "size": len(data), "sha256": good, "offset": 0,
                "data": base64.b64encode(data).decode(), "card": crd}
        return wire.ModelChunk(**{**base, **kw})

    with pytest.raises(ModelError, match="model lin version 4: artifact: transfer check failed"):
        await agent.ml_connector._accept(chunk(sha256="0" * 64), data, True)
    with pytest.raises(ModelError, match="model lin version 4: artifact: transfer check failed"):
        await agent.ml_connector._accept(chunk(), data[:-1], True)
    with pytest.raises(ModelError, match="card: the card is for lin v3"):
        await agent.ml_connector._accept(chunk(card={**crd, "version": 3}), data, True)
    assert agent.ml_connector.cached("lin") is None              # nothing refused was kept
    ok = await agent.ml_connector._accept(chunk(), data, True)
    assert ok.version == 4 and (tmp_path / "model-cache" / "edge-y" / "lin-v4.bin").read_bytes() == data
