"""An app description on its way CLI -> REST API -> continuum -> cluster is parsed once per layer and
converted to its Kubernetes form once per layer (the wire carries a dict, parsed once where it lands).
Counted on the loader itself, in the demo slice with every message over the XMPP server."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from mlsysops.agents.descriptions import MLSysOpsApp, loader
from mlsysops.cli.main import app as cli
from mlsysops.cluster.agent import ClusterAgent
from mlsysops.continuum.api_auth import Role
from tests.support import app_components, demo_slice, formed, until

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]
FAST = {"all": {"heartbeat": 1.0, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
ADMIN = "admin-" + uuid.uuid4().hex
APP = "path-probe"


def description() -> dict[str, Any]:
    return {"MLSysOpsApp": {
        "name": APP,
        "cluster_placement": {"cluster_id": ["edge-1"]},
        "components": [{
            "metadata": {"name": "worker"},
            "node_placement": {"continuum_layer": ["edge", "edge_infrastructure"]},
            "containers": [{"image": "registry.example.org/worker:1",
                            "platform_requirements": {"cpu": {"requests": "100m"},
                                                      "memory": {"requests": "32Mi"}}}],
        }],
    }}


class LoaderCounts:
    """Parses of the probe app (by `source`, which names the layer) and its conversions to the Kubernetes
    form, counted inside the loader so that every caller, however it imported the loader, is seen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parses: Counter[str] = Counter()
        self.conversions = 0
        self.deploys: Counter[str] = Counter()
        parse, convert = loader._load_obj, loader.to_dict
        on_deploy = ClusterAgent._on_app_deploy

        def counted_parse(obj: Any, source: str, index: int, inventory: Any) -> Any:
            doc = parse(obj, source, index, inventory)
            if isinstance(doc.spec, MLSysOpsApp) and doc.spec.name == APP:
                self.parses[source.split(" from ")[0]] += 1
            return doc

        def counted_convert(model: Any) -> dict[str, Any]:
            if isinstance(model, MLSysOpsApp) and model.name == APP:
                self.conversions += 1
            return convert(model)

        async def counted_deploy(agent: ClusterAgent, env: Any) -> Any:
            if env.payload.app == APP:
                self.deploys[agent.cluster_id] += 1
            return await on_deploy(agent, env)

        monkeypatch.setattr(loader, "_load_obj", counted_parse)
        monkeypatch.setattr(loader, "to_dict", counted_convert)
        monkeypatch.setattr(ClusterAgent, "_on_app_deploy", counted_deploy)   # handlers bind at __init__


async def test_parsed_and_converted_once_per_layer(prosody: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    counts = LoaderCounts(monkeypatch)
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(description()))
    async with demo_slice(prosody.port, FAST, {ADMIN: Role.admin}) as (rt, url):
        await until(lambda: formed(rt), 15, "hierarchy did not form")
        # the CLI is a separate, synchronous program: run it off the loop that serves the API
        result = await asyncio.to_thread(CliRunner().invoke, cli,
                                         ["apply", "-f", str(path), "--api", url, "--token", ADMIN])
        assert result.exit_code == 0, result.output
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            async def running() -> bool:
                return (await app_components(http, APP)).get("worker", {}).get("status") == "running"

            await until(running, 30, "the app did not run")
            # an identical re-submission: parsed and converted once more by the CLI and the API, nothing sent
            again = await asyncio.to_thread(CliRunner().invoke, cli,
                                            ["apply", "-f", str(path), "--api", url, "--token", ADMIN])
            assert again.exit_code == 0 and "unchanged" in again.output, again.output
        deploys = sum(counts.deploys.values())
        assert deploys >= 1 and set(counts.deploys) == {"edge-1"}
        # CLI: the file; API: the request body (the continuum takes the API's Document as it is);
        # cluster: each app.deploy it received
        assert counts.parses == Counter({str(path): 2, "<request body>": 2, "app.deploy": deploys})
        # CLI: the request body; continuum: one form stored, dispatched, mirrored and compared with on
        # re-submission; cluster: each deploy
        assert counts.conversions == 2 * (1 + 1) + deploys
