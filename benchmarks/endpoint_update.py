"""Endpoint-update benchmark: how fast callers' endpoints follow a component moved across clusters, on
real control planes.

Run: ``.venv/bin/python benchmarks/endpoint_update.py [--moves N] [--seed S]`` (needs the kube binaries of
scripts/build_kube.sh, etcd and prosody).

Setup: two kube-apiservers (+ controller-manager, scheduler) started here, cloud-1 on the first and edge-1
on the second; the demo slice on them (`substrate.clusters`), nodes as simulated kubelets, every agent
message over a throw-away prosody. One app: `api` (port 8080) called by `reader` (edge-1) and `board`
(cloud-1). Each move re-pins `api` to a node of the other cluster (a description update: the continuum
re-places it, make-before-break).

Measured per move, from the instant the continuum sees `api` running in its new cluster (its status
report; polled every 5 ms):
- ``endpoint_update``: until the *other* cluster's API server holds our EndpointSlice pointing at the new
  cluster's node (polled every 10 ms): continuum decision, `app.routes` to both clusters, export Service,
  EndpointSlice write;
- baseline ``in_cluster``: until Kubernetes' own EndpointSlice controller in the serving cluster lists the
  new pod as ready (how fast a caller *inside* that cluster is updated, same reference instant);
- ``move_total``: from the re-submission to the callers' endpoints updated (placement, pod start included).
The last line: ``endpoint_update_p95_s=... in_cluster_p95_s=... move_total_p95_s=... moves=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "examples" / "slices" / "demo.yaml"
FAST = {"all": {"heartbeat": 0.5, "analyze": 0.5, "monitor": 0.2, "status_report": 0.5}}
SERVING = {"cloud-1": ["cloud-vm-1", "cloud-vm-2"], "edge-1": ["edge-server-1", "edge-jetson-1"]}
APP = """
MLSysOpsApp:
  name: {name}
  components:
    - metadata: {{name: api}}
      node_placement: {{node: {node}}}
      containers:
        - image: registry.example.org/api:1
          platform_requirements: {{cpu: {{requests: 100m}}}}
          ports: [{{container_port: 8080, name: http}}]
    - metadata: {{name: reader}}
      node_placement: {{node: edge-rpi-1}}
      containers:
        - image: registry.example.org/reader:1
          platform_requirements: {{cpu: {{requests: 50m}}}}
    - metadata: {{name: board}}
      node_placement: {{node: cloud-vm-2}}
      containers:
        - image: registry.example.org/board:1
          platform_requirements: {{cpu: {{requests: 50m}}}}
  component_interactions:
    - {{component_name1: reader, type: egress, component_name2: api}}
    - {{component_name1: board, type: egress, component_name2: api}}
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def _first(probe: Any, timeout: float, interval: float) -> float | None:
    """monotonic time at which `probe()` (async) first held, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return time.monotonic()
        await asyncio.sleep(interval)
    return None


async def _slices(api: Any, ns: str, selector: str) -> list[dict[str, Any]]:
    from kubernetes.aio import client as k

    out = await k.CustomObjectsApi(api).list_namespaced_custom_object(
        "discovery.k8s.io", "v1beta1", ns, "endpointslices", label_selector=selector)
    return out["items"]


async def run(seed: int = 1, moves: int = 20) -> dict[str, Any]:
    from kubernetes.aio import config as kcfg

    from mlsysops.agents.descriptions import load_obj
    from mlsysops.agents.slice_config import ClusterAPIServer, SubstrateConfig, load_slice
    from mlsysops.agents.xmpp_prosody import ProsodyServer
    from mlsysops.cli.slice_runtime import SliceRuntime
    from mlsysops.sim.kubelet import node_address
    from mlsysops.substrates.kubernetes import manifests as mf
    from mlsysops.substrates.kubernetes import traffic as tr
    from tests.kube.harness import KubeStack

    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="mlsysops-bench-endpoints-"))
    srv = ProsodyServer(workdir=work / "prosody")
    await srv.start()
    stacks = {"cloud-1": KubeStack.start(work / "cloud-1"), "edge-1": KubeStack.start(work / "edge-1")}
    ns = "bench-" + uuid.uuid4().hex[:6]
    spec = load_slice(DEMO)
    spec.config = spec.config.model_copy(update={"substrate": SubstrateConfig(
        type="kubernetes", kubeconfig=stacks["cloud-1"].kubeconfig, namespace=ns, simulate_nodes=True,
        clusters={"edge-1": ClusterAPIServer(kubeconfig=stacks["edge-1"].kubeconfig)})})
    rt = SliceRuntime(spec, xmpp_port=srv.port, force_xmpp=True, overrides={k: dict(v) for k, v in FAST.items()})
    apis = {c: await kcfg.new_client_from_config(config_file=str(s.kubeconfig)) for c, s in stacks.items()}
    name = "bench-api"
    rows: list[dict[str, Any]] = []
    failures: list[str] = []

    def doc(node: str) -> Any:
        return load_obj(yaml.safe_load(textwrap.dedent(APP.format(name=name, node=node))))

    def running_in(cluster: str) -> Any:
        async def probe() -> bool:
            st = rt.continuum.app_status(name).get("api") or {}
            return st.get("status") == "running" and st.get("cluster") == cluster
        return probe

    def routed(caller: str, serving: str, node: str) -> Any:
        sel = f"{mf.LABEL_APP}={mf.label_value(name)},{tr.LABEL_ROLE}=route"

        async def probe() -> bool:
            for s in await _slices(apis[caller], ns, sel):
                if (s["metadata"].get("annotations") or {}).get(tr.ANN_SERVING_CLUSTER) == serving and \
                        node_address(node) in [a for e in s.get("endpoints") or [] for a in e.get("addresses") or []]:
                    return True
            return False
        return probe

    def controller_ready(serving: str, node: str) -> Any:
        sel = "kubernetes.io/service-name=api,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"

        async def probe() -> bool:
            return any(e.get("conditions", {}).get("ready") and e.get("nodeName", e.get("topology", {}).get(
                "kubernetes.io/hostname")) == node for s in await _slices(apis[serving], ns, sel)
                for e in s.get("endpoints") or [])
        return probe

    try:
        await rt.start()
        t0 = time.monotonic()
        while not all(c["registered"] for c in rt.hierarchy().values()) and time.monotonic() - t0 < 60:
            await asyncio.sleep(0.1)
        here = "cloud-1"
        rt.continuum.submit_app(doc(SERVING[here][0]))
        if await _first(routed("edge-1", "cloud-1", SERVING[here][0]), 90, 0.05) is None:
            raise RuntimeError("the first route never appeared")
        for i in range(moves):
            there = "edge-1" if here == "cloud-1" else "cloud-1"
            node = rng.choice(SERVING[there])
            t_submit = time.monotonic()
            rt.continuum.submit_app(doc(node))
            t_run = await _first(running_in(there), 90, 0.005)
            if t_run is None:
                failures.append(f"move {i}: api never ran on {there}")
                break
            t_routed, t_ctrl = await asyncio.gather(_first(routed(here, there, node), 30, 0.01),
                                                    _first(controller_ready(there, node), 30, 0.01))
            if t_routed is None or t_ctrl is None:
                failures.append(f"move {i} to {node}: routed={t_routed is not None} controller={t_ctrl is not None}")
                break
            rows.append({"move": i, "to": node, "endpoint_update_s": max(0.0, t_routed - t_run),
                         "in_cluster_s": max(0.0, t_ctrl - t_run), "move_total_s": t_routed - t_submit})
            here = there
    finally:
        for kubelet in [rt.kubelet, *rt.member_kubelets.values()]:
            if kubelet is not None:
                await kubelet.stop(deregister=True)
        await rt.stop()
        for api in apis.values():
            await api.close()
        for stack in stacks.values():
            stack.stop()
        await srv.stop()
    col = {key: [r[key] for r in rows] for key in ("endpoint_update_s", "in_cluster_s", "move_total_s")}
    return {"rows": rows, "failures": failures, "moves": len(rows),
            **{f"{k[:-2]}_{q}_s": pct(v, n) for k, v in col.items() for q, n in (("p50", 50), ("p95", 95), ("p99", 99))},
            "endpoint_update_median_s": statistics.median(col["endpoint_update_s"]) if rows else float("nan")}


def print_table(out: dict[str, Any]) -> None:
    print(f"{'measure':<18} {'p50 s':>8} {'p95 s':>8} {'p99 s':>8}   (n={out['moves']} cross-cluster moves)")
    for key, label in (("endpoint_update", "endpoint_update"), ("in_cluster", "in_cluster (k8s)"),
                       ("move_total", "move_total")):
        print(f"{label:<18} {out[f'{key}_p50_s']:>8.3f} {out[f'{key}_p95_s']:>8.3f} {out[f'{key}_p99_s']:>8.3f}")
    for f in out["failures"]:
        print(f"FAILED: {f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    out = asyncio.run(run(args.seed, args.moves))
    print_table(out)
    ratio = out["endpoint_update_p95_s"] / out["in_cluster_p95_s"] if out["in_cluster_p95_s"] else float("nan")
    print(f"endpoint_update_p95_s={out['endpoint_update_p95_s']:.3f} in_cluster_p95_s={out['in_cluster_p95_s']:.3f} "
          f"ratio_vs_in_cluster={ratio:.2f} move_total_p95_s={out['move_total_p95_s']:.3f} moves={out['moves']} "
          f"failures={len(out['failures'])}")
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
