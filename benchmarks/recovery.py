"""Recovery benchmark: submit-to-running and node-crash recovery times of a whole slice over real XMPP.

Run: ``.venv/bin/python benchmarks/recovery.py [--nodes N] [--crashes K] [--heartbeat S] [--submissions M]``

Setup: a throw-away prosody server and a ``SliceRuntime`` (continuum, cluster and node agents in this
process, simulated continuum, ``force_xmpp=True``). Default slice: ``examples/slices/demo.yaml`` (the app is
confined to cluster ``edge-1``); with ``--nodes N`` a slice of N simulated nodes split over two clusters is
generated into a temporary directory (the app may use either cluster).

Measured (status as seen at the continuum, ``continuum.app_status``, polled every 20 ms):
- ``submit_to_running``: ``apply_file`` of a fresh 10-component app until every component is ``running``
  (repeated ``--submissions`` times, each with a new app);
- ``recovery``: ``fail_node`` of a node hosting components of the first app until every component that
  was on it is ``running`` on another node; also ``detect``: until the continuum first sees one of them
  leave ``running``. After each crash the node is recovered and the benchmark waits until it has rejoined
  its cluster (``hierarchy()``) and the continuum sees it alive before the next crash.
Note: ``SliceRuntime`` stops a crashed node's agent, whose XMPP stream then closes, so the cluster learns of
the loss from presence within milliseconds; ``--heartbeat`` x ``--liveness-misses`` only bounds detection
when no presence arrives (a hung host or a partition), which this benchmark does not simulate.
The last printed line is ``key=value`` pairs for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlsysops.agents.slice_config import load_slice  # noqa: E402
from mlsysops.agents.xmpp_prosody import ProsodyServer  # noqa: E402
from mlsysops.cli.slice_runtime import SliceRuntime  # noqa: E402

DEMO = ROOT / "examples" / "slices" / "demo.yaml"
POLL = 0.02
LAYERS = ["cloud", "edge", "edge_infrastructure", "far_edge"]
COMPONENTS = 10


# -- generated inputs -----------------------------------------------------------------------------
def write_app(path: Path, name: str, clusters: list[str] | None) -> Path:
    comps = [{"metadata": {"name": f"c{i:02d}"},
              "node_placement": {"continuum_layer": list(LAYERS)},
              "containers": [{"image": f"registry.example.org/bench/c{i:02d}:1.0",
                              "platform_requirements": {"cpu": {"requests": "100m", "limits": "200m"},
                                                        "memory": {"requests": "64Mi", "limits": "128Mi"}}}]}
             for i in range(COMPONENTS)]
    app: dict[str, Any] = {"name": name, "components": comps}
    if clusters:
        app["cluster_placement"] = {"cluster_id": clusters}
    path.write_text(yaml.safe_dump({"MLSysOpsApp": app}, sort_keys=False))
    return path


def write_slice(workdir: Path, n: int, heartbeat: float, misses: int) -> Path:
    """N nodes over clusters c1 (first half) and c2, modelled on examples/slices/demo."""
    names = [f"node-{i:03d}" for i in range(n)]
    half = math.ceil(n / 2)
    groups = {"c1": names[:half], "c2": names[half:]}
    (workdir / "nodes").mkdir(parents=True, exist_ok=True)
    (workdir / "continuum.yaml").write_text(yaml.safe_dump(
        {"MLSysOpsContinuum": {"continuum_id": "bench", "clusters": list(groups)}}))
    (workdir / "clusters.yaml").write_text(yaml.safe_dump_all(
        [{"MLSysOpsCluster": {"cluster_id": cid, "nodes": nodes}} for cid, nodes in groups.items()]))
    for i, name in enumerate(names):
        cid = "c1" if i < half else "c2"
        layer = LAYERS[i % 3]   # cloud / edge / edge_infrastructure
        node = {"name": name, "continuum_layer": layer, "cluster_id": cid, "labels": [f"tier:{layer}"],
                "availability": "stable", "location": [22.95 + i * 1e-3, 39.36],
                "environment": {"node_type": "native", "os": "ubuntu", "container_runtime": ["containerd"]},
                "hardware": {"cpu": {"architecture": "amd64", "cores": 8, "frequency": ["1.2GHz", "2.4GHz"],
                                     "performance_indicator": 2000},
                             "memory": "16Gi", "disk": "100Gi"},
                "network_resources": {"basic_interface": {"name": "ethernet", "interface_name": "eth0"}},
                "permitted_actions": ["*"]}
        (workdir / "nodes" / f"{name}.yaml").write_text(yaml.safe_dump({"MLSysOpsNode": node}, sort_keys=False))
    slice_path = workdir / "bench.yaml"
    slice_path.write_text(yaml.safe_dump({
        "slice": "bench", "xmpp": {"server": "embedded"}, "substrate": {"type": "sim", "seed": 42},
        "continuum": "continuum.yaml", "clusters": ["clusters.yaml"], "nodes": ["nodes/*.yaml"],
        "intervals": {"heartbeat": f"{heartbeat}s", "liveness_misses": misses, "analyze": "1s"}},
        sort_keys=False))
    return slice_path


# -- helpers --------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


async def wait_for(cond: Any, timeout: float) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if cond():
            return time.perf_counter() - t0
        await asyncio.sleep(POLL)
    return None


def all_running(rt: SliceRuntime, app: str) -> bool:
    st = rt.continuum.app_status(app)
    return len(st) == COMPONENTS and all(s["status"] == "running" for s in st.values())


def hierarchy_ok(rt: SliceRuntime, expected: int) -> bool:
    h = rt.hierarchy()
    alive = sum(1 for v in h.values() if v["registered"] for ok in v["nodes"].values() if ok)
    return alive == expected and all(v["registered"] for v in h.values())


def continuum_sees_all(rt: SliceRuntime, expected: int) -> bool:
    """The continuum's own view (node liveness arrives with the clusters' heartbeat digests)."""
    clusters = rt.continuum.system_description()["clusters"].values()
    return sum(1 for c in clusters if c["alive"] for n in c["nodes"].values() if n["alive"]) == expected


def node_rejoined(rt: SliceRuntime, node: str) -> bool:
    return any(v["nodes"].get(node) for v in rt.hierarchy().values())


def hosts(rt: SliceRuntime, app: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for comp, s in rt.continuum.app_status(app).items():
        for n in s["nodes"]:
            out.setdefault(n, []).append(comp)
    return out


def pick_victim(rt: SliceRuntime, app: str, history: list[str]) -> str | None:
    """A node hosting components, not the last live node of its cluster; least recently crashed first."""
    alive = {n for v in rt.hierarchy().values() for n, ok in v["nodes"].items() if ok}
    cands = []
    for node, comps in hosts(rt, app).items():
        cid = rt.spec.nodes[node].cluster_id
        peers = [n.name for n in rt.spec.cluster_nodes(cid) if n.name != node and n.name in alive]
        if peers:
            last = max((i for i, h in enumerate(history) if h == node), default=-1)
            cands.append((last, -len(comps), node))
    return min(cands)[2] if cands else None


def diagnose(rt: SliceRuntime, app: str, victim: str, moved: list[str]) -> str:
    """Read-only evidence for a failed recovery: the cluster's instance table and the simulator's view."""
    cid = rt.spec.nodes[victim].cluster_id
    cl = rt.clusters.get(cid)
    rows = [] if cl is None else sorted(
        (r["component"], r["instance_id"].rsplit(".", 1)[-1], r["status"], r["reason"])
        for r in cl.instances.values() if r["app"] == app and r["component"] in moved)
    sim = sorted((i.component, i.instance_id.rsplit(".", 1)[-1], str(i.state))
                 for i in rt.sim.instances(app=app) if i.component in moved)
    return f"cluster {cid} rows {rows}; sim {sim}"


# -- the benchmark --------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mlsysops-bench-recovery-"))
    if args.nodes:
        spec = load_slice(write_slice(tmp / "slice", args.nodes, args.heartbeat, args.liveness_misses))
        clusters = None
    else:
        spec = load_slice(DEMO)
        clusters = ["edge-1"]
    n_nodes = len(spec.nodes)
    srv = ProsodyServer(workdir=tmp / "prosody")
    await srv.start()
    overrides = {"all": {"heartbeat": args.heartbeat, "liveness_misses": args.liveness_misses, "analyze": 1.0,
                         "monitor": 0.2, "status_report": 0.5},
                 "continuum": {"eviction_timeout": 30}}
    rt = SliceRuntime(spec, xmpp_port=srv.port, force_xmpp=True, overrides=overrides)
    rows: list[tuple[str, ...]] = []
    submit: list[float] = []
    recovery: list[float] = []
    detect: list[float] = []
    failures: list[str] = []
    t_start = time.perf_counter()
    try:
        await rt.start()
        joined = await wait_for(lambda: hierarchy_ok(rt, n_nodes), 30)
        if joined is None:
            print(f"hierarchy did not form: {rt.hierarchy()}", file=sys.stderr)
            return 1
        t_reg = time.perf_counter() - t_start
        # Submitting before the continuum has seen the nodes alive would time the first heartbeat, not placement.
        seen = await wait_for(lambda: continuum_sees_all(rt, n_nodes), 30)
        if seen is None:
            print(f"continuum never saw all nodes alive: {rt.continuum.system_description()['clusters']}",
                  file=sys.stderr)
            return 1
        print(f"slice {spec.config.slice}: {len(spec.clusters)} clusters, {n_nodes} nodes; started and "
              f"registered in {t_reg:.2f}s, all nodes alive at the continuum {seen:.2f}s later "
              f"(prosody on port {srv.port})")

        # -- submit to running --
        apps = []
        for i in range(args.submissions):
            name = f"bench-app-{i + 1}"
            path = write_app(tmp / f"{name}.yaml", name, clusters)
            t0 = time.perf_counter()
            rt.apply_file(path)
            took = await wait_for(lambda: all_running(rt, name), 30)
            if took is None:
                st = {c: s["status"] for c, s in rt.continuum.app_status(name).items()}
                failures.append(f"{name} not running after 30s: {st}")
                continue
            took = time.perf_counter() - t0
            submit.append(took)
            apps.append(name)
            placed = ", ".join(f"{n}:{len(c)}" for n, c in sorted(hosts(rt, name).items()))
            rows.append(("submit", name, "-", f"{took:.3f}", "-", placed))
        if not apps:
            raise RuntimeError("; ".join(failures))
        app = apps[0]

        # -- crashes --
        history: list[str] = []
        for k in range(args.crashes):
            victim = pick_victim(rt, app, history)
            if victim is None:
                failures.append(f"crash {k + 1}: no node can be crashed safely")
                break
            history.append(victim)
            moved = sorted(hosts(rt, app)[victim])
            t0 = time.perf_counter()
            t_detect: float | None = None
            rt.fail_node(victim)

            def recovered() -> bool:
                nonlocal t_detect
                st = rt.continuum.app_status(app)
                ok = all(st[c]["status"] == "running" and victim not in st[c]["nodes"] and st[c]["nodes"]
                         for c in moved)
                if t_detect is None and any(st[c]["status"] != "running" or victim not in st[c]["nodes"]
                                            for c in moved):
                    t_detect = time.perf_counter() - t0
                return ok

            took = await wait_for(recovered, 30)
            if took is None:
                st = {c: (s["status"], s["nodes"]) for c, s in rt.continuum.app_status(app).items() if c in moved}
                failures.append(f"crash {k + 1} of {victim}: not recovered after 30s: continuum {st}; "
                                f"{diagnose(rt, app, victim, moved)}")
                rows.append((f"crash {k + 1}", victim, str(len(moved)), "TIMEOUT", "-", ""))
            else:
                recovery.append(took)
                if t_detect is not None:
                    detect.append(t_detect)
                new = sorted({n for c in moved for n in rt.continuum.app_status(app)[c]["nodes"]})
                rows.append((f"crash {k + 1}", victim, str(len(moved)), f"{took:.3f}",
                             f"{t_detect:.3f}" if t_detect is not None else "-", "-> " + ",".join(new)))
            rt.recover_node(victim)
            back = await wait_for(lambda: node_rejoined(rt, victim) and hierarchy_ok(rt, n_nodes)
                                  and continuum_sees_all(rt, n_nodes), 30)
            if back is None:
                failures.append(f"{victim} did not rejoin within 30s: {rt.hierarchy()}")
                break
            await asyncio.sleep(0.3)   # let the rejoined node's first full report settle
    finally:
        await rt.stop()
        await srv.stop()

    # -- report --
    head = ("event", "app / node", "moved", "seconds", "detect_s", "placement")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format(*head))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*r))
    print()
    summary = [("submit_to_running", submit), ("recovery", recovery), ("detect", detect)]
    print(f"{'metric':<18} {'n':>3} {'p50_s':>7} {'p95_s':>7} {'max_s':>7} {'mean_s':>7}")
    for name, vals in summary:
        if vals:
            print(f"{name:<18} {len(vals):>3} {statistics.median(vals):>7.3f} {pct(vals, 95):>7.3f} "
                  f"{max(vals):>7.3f} {statistics.fmean(vals):>7.3f}")
    print(f"heartbeat={args.heartbeat}s liveness_misses={args.liveness_misses} total_wall="
          f"{time.perf_counter() - t_start:.1f}s")
    for f in failures:
        print(f"FAILED: {f}")
    kv = {
        "recovery_p50_s": f"{statistics.median(recovery):.3f}" if recovery else "nan",
        "recovery_p95_s": f"{pct(recovery, 95):.3f}" if recovery else "nan",
        "recovery_max_s": f"{max(recovery):.3f}" if recovery else "nan",
        "submit_to_running_s": f"{statistics.median(submit):.3f}" if submit else "nan",
        "submit_to_running_p95_s": f"{pct(submit, 95):.3f}" if submit else "nan",
        "crashes": str(len(recovery)),
        "failures": str(len(failures)),
        "nodes": str(n_nodes),
    }
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=None, help="generate a slice of N nodes over 2 clusters")
    ap.add_argument("--crashes", type=int, default=5)
    ap.add_argument("--heartbeat", type=float, default=1.0)
    ap.add_argument("--liveness-misses", type=int, default=3)
    ap.add_argument("--submissions", type=int, default=3)
    ap.add_argument("-v", "--verbose", action="store_true", help="agent warnings on stderr")
    args = ap.parse_args()
    if args.nodes is not None and args.nodes < 4:
        ap.error("--nodes must be at least 4 (two per cluster, so a crashed node's components can move)")
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL,
                        format="%(relativeCreated)d %(name)s %(levelname)s %(message)s")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
