"""Fixtures for tests against a real local Kubernetes control plane (see tests/kube/harness.py).

* ``kube_stack``: etcd + kube-apiserver + kube-controller-manager + kube-scheduler, started once per
  session (``.kubeconfig``, ``.server``, ``.token``, ``.workdir`` with one log per process).
* ``kube_client``: a ``kubernetes.aio`` ApiClient for that kubeconfig (closed after the test).
* ``kube_ns``: a fresh namespace ``t-<random>`` per test (deleted afterwards, not awaited).

Every test under tests/kube is marked ``kapi`` unless it is ``live``/``karmada_live``. Without the binaries
those tests skip locally and the run fails with a UsageError when CI=true. ``live`` tests need ``--live``
and $KUBECONFIG; ``karmada_live`` tests need ``--live`` and $KARMADA_KUBECONFIG.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.kube.harness import KubeStack, missing_binaries

HERE = Path(__file__).parent
LIVE_MARKS = {"live": "KUBECONFIG", "karmada_live": "KARMADA_KUBECONFIG"}


def _under_here(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark before -m deselection runs, so `-m "not kapi"` works."""
    for item in items:
        if _under_here(item) and not any(m in item.keywords for m in LIVE_MARKS):
            item.add_marker(pytest.mark.kapi)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """After deselection: skip (or, in CI, refuse to run) what cannot run here."""
    config = session.config
    live = bool(config.getoption("--live", default=False))
    kapi_items = [it for it in session.items if "kapi" in it.keywords]
    missing = missing_binaries() if kapi_items else []
    if missing and os.environ.get("CI") == "true":
        raise pytest.UsageError(f"kapi tests selected but {', '.join(missing)} missing: "
                                "run scripts/build_kube.sh (CI must not skip them)")
    for item in session.items:
        for mark, env in LIVE_MARKS.items():
            if mark in item.keywords and not (live and os.environ.get(env)):
                item.add_marker(pytest.mark.skip(reason=f"opt-in: --live with ${env}"))
        if "kapi" in item.keywords and missing:
            item.add_marker(pytest.mark.skip(reason=f"missing {', '.join(missing)}: run scripts/build_kube.sh"))


@pytest.fixture(scope="package")   # stopped once tests/kube is done: no control plane idling under later tests
def kube_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStack]:
    stack = KubeStack.start(tmp_path_factory.mktemp("kube"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def kube_client(kube_stack: KubeStack) -> AsyncIterator[object]:
    from kubernetes.aio import config as kcfg

    api = await kcfg.new_client_from_config(config_file=str(kube_stack.kubeconfig))
    async with api:
        yield api


@pytest_asyncio.fixture(loop_scope="session")
async def kube_ns(kube_client: object) -> AsyncIterator[str]:
    from kubernetes.aio import client as k

    name = f"t-{uuid.uuid4().hex[:8]}"
    core = k.CoreV1Api(kube_client)
    await core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        await core.delete_namespace(name)
    except k.ApiException:   # teardown must not mask the test result
        pass


@pytest_asyncio.fixture(loop_scope="session")
async def sim_kubelets(kube_client: object) -> AsyncIterator[Any]:
    """Factory: `await sim_kubelets(specs)` -> (sim, kubelet) with the sim nodes registered as Nodes and
    the sim ticking in real time. Node names must be unique per test (Nodes are cluster-scoped)."""
    from mlsysops.sim import SimClock, SimContinuum
    from mlsysops.sim.kubelet import SimKubelet

    started: list[SimKubelet] = []

    async def _make(specs: list[Any], **kw: Any) -> tuple[Any, Any]:
        sim = SimContinuum.from_specs(specs, clock=SimClock.realtime())
        kubelet = SimKubelet(sim, kube_client, tick_interval=0.02, **kw)
        started.append(kubelet)
        await kubelet.start()
        return sim, kubelet

    yield _make
    for kubelet in started:
        await kubelet.stop(deregister=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
