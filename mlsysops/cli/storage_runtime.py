"""The storage service of a slice run by `mlsysops up` (slice config `storage`).

Starts one SeaweedFS store per site that names no `endpoint` (like the embedded XMPP server: started,
awaited ready, stopped with the runtime, no orphan), connects a boto3 client to every site, and gives the
continuum agent the `storage` mechanism and the `storage_placement` policy. Access latency is modelled on
the simulated continuum: the RTT from a component's node to the node of the site (`sites.<name>.node`).

With the simulated continuum, `SimAccessDriver` makes the running components that use a bucket read and
write it through the mechanism (real objects on the real stores) with seeded Poisson arrivals drawn live
(the pattern `sim.object_access.generate_accesses` draws ahead for the benchmark), so the policy has
telemetry to act on. The latency recorded per access is the modelled RTT plus the store's measured time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

from mlsysops.agents.descriptions.storage_intents import bucket_intents
from mlsysops.agents.slice_config import StorageConfig
from mlsysops.cli.slice_assembly import SubstrateError
from mlsysops.mechanisms.storage_service import StorageMechanism
from mlsysops.substrates.s3.client import S3Site, StoreError
from mlsysops.substrates.s3.seaweed import SeaweedStore, StoreStartError

log = logging.getLogger(__name__)

POLICY = "mlsysops.policies.storage_placement"


class StorageRuntime:
    def __init__(self, config: StorageConfig, *, sim: Any = None, seed: int = 0) -> None:
        self.config = config
        self.sim = sim
        self.seed = seed
        self.stores: dict[str, SeaweedStore] = {}
        self.mechanism: StorageMechanism | None = None
        self.driver: SimAccessDriver | None = None

    async def start(self) -> None:
        """Every embedded store at once (each waits for its own gateway); on any failure, stop them all."""
        for name, site in self.config.sites.items():
            if site.endpoint is None:
                self.stores[name] = SeaweedStore(name, volume_max=self.config.volume_max,
                                                 volume_size_mb=self.config.volume_size_mb)
        # every start runs to its end before any cleanup: a store still starting must not escape the stop
        results = await asyncio.gather(*(asyncio.to_thread(s.start) for s in self.stores.values()),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop()
            if isinstance(failed[0], StoreStartError | OSError):
                raise SubstrateError(f"storage: {failed[0]}") from failed[0]
            raise failed[0]
        try:
            self.build_mechanism({})
        except SubstrateError:
            await self.stop()
            raise

    def _clients(self) -> dict[str, S3Site]:
        sites = {}
        for name, site in self.config.sites.items():
            if site.endpoint is None:
                store = self.stores[name]
                sites[name] = S3Site(name, store.endpoint, store.access_key, store.secret_key,
                                     timeout=self.config.timeout)
            else:
                where = f"storage.sites.{name}"
                sites[name] = S3Site(name, site.endpoint, _env(site.access_key_env, where),
                                     _env(site.secret_key_env, where), timeout=self.config.timeout)
        return sites

    def build_mechanism(self, app_models: Any) -> StorageMechanism:
        self.mechanism = StorageMechanism(self._clients(), self.config.site_models(), app_models=app_models,
                                          latency_ms=self._latency, rtt_nodes=self._app_nodes)
        return self.mechanism

    def _latency(self, node: str, site: str) -> float:
        target = self.config.sites[site].node
        if self.sim is None or target is None:
            return 0.0
        try:
            return self.sim.latency_ms(node, target)
        except Exception:   # noqa: BLE001 - an unknown node (not simulated): no modelled network
            return 0.0

    def _app_nodes(self) -> list[str]:
        if self.sim is None:
            return []
        return sorted({i.node for i in self.sim.instances()})

    def attach(self, continuum: Any) -> None:
        """Give a (new or restarted) continuum agent the mechanism, bound to its apps, and the policy."""
        mech = self.mechanism or self.build_mechanism(continuum.apps)   # built by start() in `up`
        mech.initialize(app_models=continuum.apps)
        continuum.mechanisms.register(mech.name, mech)
        if POLICY not in continuum.policies.modules:   # loaded with the others when the agent starts
            continuum.policies.modules.append(POLICY)
        a = self.config.access
        if self.driver is None and self.sim is not None and a.reads_per_s + a.writes_per_s > 0:
            self.driver = SimAccessDriver(mech, self.sim, self.config, self.seed)
            self.driver.start()

    async def stop(self) -> None:
        if self.driver is not None:
            await self.driver.stop()
            self.driver = None
        stores, self.stores = list(self.stores.values()), {}
        await asyncio.gather(*(asyncio.to_thread(s.close) for s in stores), return_exceptions=True)


def _env(var: str | None, where: str) -> str:
    if not var:
        raise SubstrateError(f"{where}: an `endpoint` needs access_key_env and secret_key_env")
    value = os.environ.get(var)
    if value is None:
        raise SubstrateError(f"{where}: environment variable {var} is not set")
    return value


class SimAccessDriver:
    """Components of the simulated continuum reading and writing their buckets (seeded Poisson arrivals).

    Every running instance of a bucket's owner and of each component in its `access_latency` list
    accesses the bucket from its node; the owner writes and reads, the others read. Objects are
    `access.object_bytes` long, keys cycle over `access.keys` per bucket, so a bucket stays small."""

    def __init__(self, mech: StorageMechanism, sim: Any, config: StorageConfig, seed: int) -> None:
        self.mech = mech
        self.sim = sim
        self.access = config.access
        self.rng = random.Random(seed)
        self.errors = 0
        self.done = 0
        self.written: dict[str, list[str]] = {}   # bucket key -> keys written (what readers may read)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="storage-access")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _users(self) -> list[tuple[Any, str, str, bool]]:
        """(intent, component, node, writes?) for every running instance that uses a bucket."""
        nodes: dict[tuple[str, str], set[str]] = {}
        for inst in self.sim.instances(state="running"):
            nodes.setdefault((inst.app, inst.component), set()).add(inst.node)
        out = []
        for model in list(self.mech.app_models.values()):
            for intent in bucket_intents(model):
                for comp in dict.fromkeys([intent.owner, *intent.targets_ms]):
                    for node in sorted(nodes.get((intent.app, comp), ())):
                        out.append((intent, comp, node, comp == intent.owner))
        return out

    async def _run(self) -> None:
        a = self.access
        total = a.reads_per_s + a.writes_per_s
        while True:
            users = self._users()
            if not users:
                await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(self.rng.expovariate(total * len(users)))
            intent, comp, node, writer = self.rng.choice(users)
            written = self.written.setdefault(intent.key, [])
            write = writer and (not written or self.rng.random() < a.writes_per_s / total)
            if not write and not written:
                continue    # nothing to read yet: a reader waits for the owner's first write
            try:
                if write:
                    key = f"sim/{self.rng.randrange(a.keys):04d}"
                    await self.mech.write(intent.app, intent.bucket_id, key, self.rng.randbytes(a.object_bytes),
                                          component=comp, from_node=node)
                    if key not in written:
                        written.append(key)
                else:
                    await self.mech.read(intent.app, intent.bucket_id, self.rng.choice(written), component=comp,
                                         from_node=node)
                self.done += 1
            except (StoreError, ValueError) as exc:   # no replica yet, a store down: the policy sees it
                self.errors += 1
                log.debug("simulated access to %s failed: %s", intent.key, exc)
