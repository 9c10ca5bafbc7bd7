"""ML policy: QoS-predictive placement and relocation (cluster layer, application scope).

A model (`qos-response-time`, trained from the outcomes this policy reports) predicts a component's
response time on each candidate node from what the cluster sees (`mlsysops.agents.ml.qos_features`:
node kind, load, co-located components, latency to peers). Placement runs the usual placement framework
(every filter, every rejection reason) with one ML scorer, `predicted_qos`: the probability of meeting
the component's target on that node. Relocation acts *before* a violation: an instance moves when its
predicted response time on its node is above `act_fraction` x target and another feasible node is
predicted at least `min_gain` better (cooldown per component, like the heuristic).

Management mode (`application_description["management_mode"]`, set by the agent per slice or app):
`ml` acts with the model; `auto` acts with it until a drift detector fires (`agents/ml/drift.py`),
then decides with the heuristic policies' code (`relocation`, `filter_score_placement`), requests
retraining, and comes back once a retrained version validates on outcomes it has not been trained on;
`shadow` lets the heuristics act and records what the model would have done; `heuristic` delegates.
Every decision's explanation carries `management` (mode, who acted, why) and, for ML choices, the model,
version, prediction, 90 % interval, attributions (chosen and best rejected) and a counterfactual.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlsysops.agents.ml.drift import DriftMonitor
from mlsysops.agents.ml.explain import Option, explain_options, violation_probability
from mlsysops.agents.ml.local_connector import LocalMLConnector
from mlsysops.agents.ml.modes import AutoController, check_mode
from mlsysops.agents.ml.qos_features import candidate_features
from mlsysops.agents.ml.trainers import vectorize
from mlsysops.agents.placement.cluster_view import ClusterState, assigned_requests, instance_id
from mlsysops.agents.placement.framework import Status
from mlsysops.agents.placement.types import ComponentRequest, NodeView
from mlsysops.policies import filter_score_placement, relocation
from mlsysops.policies.placement_engine import PlacementConfig, place_app, schedule
from mlsysops.policies.placement_filters import FilterPlugin
from mlsysops.policies.placement_plugins import NODE_PLUGINS, placement_config
from mlsysops.policies.placement_scorers import ScorerPlugin

MODEL = "qos-response-time"
MECHANISM = "component_placement"
METRIC = "response_time_ms"
SCORER = "predicted_qos"
QUARANTINE = "ml_quarantine"
CONTINUOUS = ("queue", "net_ms")

_LOCAL = LocalMLConnector()
"""The process-local stand-in used when the agent gives no `ml_connector` (same method names)."""


def initialize() -> dict[str, Any]:
    return {"name": "ml_qos_placement", "scope": "application", "priority": 10, "mode": "ml",
            "configuration": {"analyze_interval": 1.0},
            "mechanisms": [MECHANISM],
            "telemetry": {"metrics": [METRIC, "system.cpu.utilization"], "system_scrape_interval": 1.0},
            "act_fraction": 0.9, "min_gain": 0.25, "cooldown_s": 30.0, "min_confidence": 0.0,
            "retrain_min_rows": 60, "validate_min_rows": 20, "bootstrap_rows": 300, "evidence_min_rows": 10,
            "seed": 0,
            "drift": {"ph_delta": 1.0, "ph_threshold": 20.0, "ks_window": 60, "ks_alpha": 0.001},
            "last_moved": {},
            "heuristic": {"relocation": relocation.initialize(), "placement": filter_score_placement.initialize()}}


# -- per-app state kept in the context ------------------------------------------------------------------
@dataclass
class _State:
    auto: AutoController = field(default_factory=AutoController)
    drift: DriftMonitor | None = None
    reference: dict[str, list[float]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    unseen: deque[tuple[dict[str, float], float]] = field(default_factory=lambda: deque(maxlen=400))
    shadow: dict[str, int] = field(default_factory=lambda: {"decisions": 0, "agreed": 0})
    last_alarm: dict[str, Any] | None = None
    drifted_model: Any = None
    candidate: int | None = None            # the retrained version being validated
    rejected: set[int] = field(default_factory=set)
    reported: int = 0                       # outcomes reported (for the first training)
    bootstrap_at: int = 0
    quarantine: dict[str, str] = field(default_factory=dict)
    """Nodes the model may not choose (node -> why): an alarm's node the retrained version has too few
    outcomes from to be trusted on; cleared once it explains enough of them."""
    evidence: deque[tuple[dict[str, float], float]] = field(default_factory=lambda: deque(maxlen=200))
    """Outcomes on the alarm's node since the alarm: a retrained version must explain them too."""


def _state(context: dict[str, Any]) -> _State:
    st = context.get("_ml_state")
    if not isinstance(st, _State):
        st = context["_ml_state"] = _State()
    return st


def _connector(ml_connector: Any) -> Any:
    return ml_connector if ml_connector is not None else _LOCAL


def _mode(application_description: Any, context: dict[str, Any]) -> str:
    mode = (application_description or {}).get("management_mode") or context.get("management_mode") or "ml"
    return check_mode(mode, "management_mode")


def _now(system: dict[str, Any]) -> float:
    return float(system.get("now", time.time()))


# -- features of the cluster as it is ------------------------------------------------------------------
@dataclass
class _View:
    state: ClusterState
    requests: dict[str, ComponentRequest]
    nodes: dict[str, NodeView]
    peer_nodes: dict[str, list[str]]

    @classmethod
    def of(cls, system: dict[str, Any], app: str) -> _View:
        state = ClusterState.from_system(system)
        requests = {r.name: r for r in assigned_requests(system, app)}
        peers: dict[str, list[str]] = {}
        for inst in state.instances:
            if inst["app"] == app and inst["status"] == "running" and inst["node"] in state.alive:
                peers.setdefault(inst["component"], []).append(inst["node"])
        return cls(state, requests, {v.name: v for v in state.nodes}, peers)

    def colocated(self, node: str, exclude: str | None) -> dict[str, int]:
        out: dict[str, int] = {}
        for inst in self.state.instances:
            if inst["node"] == node and inst["status"] in ("running", "deploying", "starting") \
                    and inst["instance_id"] != exclude:
                key = f"{inst['app']}/{inst['component']}"
                out[key] = out.get(key, 0) + 1
        return out

    def features(self, req: ComponentRequest, view: NodeView, *, hosting_instance: str | None) -> dict[str, float]:
        return candidate_features(req, view, hosting=hosting_instance is not None, peer_nodes=self.peer_nodes,
                                  nodes=self.nodes, colocated=self.colocated(view.name, hosting_instance))


def _predict(model: Any, feats: dict[str, float]) -> tuple[float, float, np.ndarray]:
    x = vectorize(feats, model.feature_names)
    mean, std = model.predict_with_uncertainty(x.reshape(1, -1))
    return float(mean[0]), float(std[0]), x


# -- observe: outcomes for retraining and the detectors ----------------------------------------------
async def _observe(context: dict[str, Any], st: _State, app: str, view: _View, telemetry: Any, connector: Any,
                   model: Any, now: float) -> dict[str, Any] | None:
    """Report every new outcome; feed the detectors; return the first alarm (as a dict) if one fired."""
    alarm = None
    for inst in view.state.instances:
        if inst["app"] != app or inst["status"] != "running" or inst["node"] not in view.state.alive:
            continue
        req = view.requests.get(inst["component"])
        node = view.nodes.get(inst["node"])
        if req is None or node is None or telemetry is None:
            continue
        labels = {"node": inst["node"], "app": app, "component": inst["component"], "instance": inst["instance_id"]}
        samples = telemetry.window(METRIC, labels)
        last = st.seen.get(inst["instance_id"], float(inst.get("since") or 0.0))
        fresh = [v for ts, v in samples if ts > last]
        if not fresh:
            continue
        st.seen[inst["instance_id"]] = samples[-1][0]
        observed = float(fresh[-1])
        feats = view.features(req, node, hosting_instance=inst["instance_id"])
        prediction = None
        if model is not None:
            prediction, std, _ = _predict(model, feats)
            if st.drift is not None:
                fired = st.drift.observe_error(observed, prediction, std) or st.drift.observe_inputs(feats)
                if fired is not None and alarm is None:
                    alarm = {**fired.as_dict(), "summary": str(fired), "node": inst["node"],
                             "component": inst["component"], "version": model.version}
        st.unseen.append((feats, observed))
        if inst["node"] in st.quarantine and model is not None and st.auto.state == "ml":
            st.evidence.append((feats, observed))
            if len(st.evidence) >= int(context.get("evidence_min_rows", 10)) and \
                    _validate(model, list(st.evidence))["z"] < 2.5:
                del st.quarantine[inst["node"]]
        if st.auto.state == "fallback" and (st.auto.alarm or {}).get("node") == inst["node"]:
            st.evidence.append((feats, observed))
        await connector.report(MODEL, getattr(model, "version", None), feats, prediction, observed)
        st.reported += 1
    return alarm


def _new_monitor(context: dict[str, Any], model: Any) -> DriftMonitor:
    cfg = context.get("drift", {})
    return DriftMonitor.for_training_data(model.name, model.version, model.output_name, {},
                                          window=int(cfg.get("ks_window", 60)),
                                          alpha=float(cfg.get("ks_alpha", 0.001)),
                                          ph_delta=float(cfg.get("ph_delta", 0.5)),
                                          ph_threshold=float(cfg.get("ph_threshold", 20.0)))


def _validate(model: Any, rows: list[tuple[dict[str, float], float]]) -> dict[str, Any]:
    X = np.array([vectorize(f, model.feature_names) for f, _ in rows])
    y = np.array([o for _, o in rows])
    mean, std = model.predict_with_uncertainty(X)
    err = np.abs(mean - y)
    return {"mae": float(err.mean()), "z": float(np.mean(err / np.maximum(std, 1e-9))), "rows": len(rows),
            "version": model.version}


async def _manage(context: dict[str, Any], st: _State, mode: str, model: Any, connector: Any,
                  alarm: dict[str, Any] | None, now: float) -> Any:
    """The auto state machine; returns the model to decide with (None = heuristics)."""
    if model is not None and (st.drift is None or st.drift.version != model.version) and st.auto.state == "ml":
        st.drift = _new_monitor(context, model)
    if alarm is not None:
        st.last_alarm = alarm
    if model is None and mode != "heuristic" and st.reported - st.bootstrap_at >= int(context.get("bootstrap_rows", 300)):
        # no model yet: the heuristics act and their outcomes are the training data; ask for a first one
        st.bootstrap_at = st.reported
        await connector.submit_training(MODEL, seed=int(context.get("seed", 0)))
    if mode != "auto":
        return model
    auto = st.auto
    if auto.state == "ml" and alarm is not None:
        auto.fall_back(alarm, model.version if model is not None else None, now)
        st.drifted_model = model
        st.unseen.clear()
        st.evidence.clear()
    if auto.state != "fallback":
        return model
    retrain_rows = int(context.get("retrain_min_rows", 60))
    latest = connector.cached(MODEL)
    if latest is not None and latest.version != auto.drifted_version and latest.version not in st.rejected:
        if st.candidate != latest.version:
            st.candidate = latest.version    # judged only on outcomes from now on: unseen by its training
            st.unseen.clear()
            return None
        if len(st.unseen) < int(context.get("validate_min_rows", 20)):
            return None
        rows = list(st.unseen)
        check = _validate(latest, rows)
        if st.drifted_model is not None:
            check["drifted_version_mae"] = _validate(st.drifted_model, rows)["mae"]
        explains = True
        if st.evidence:   # it must have learnt what raised the alarm, not just be right elsewhere
            ev = _validate(latest, list(st.evidence))
            check["alarm_node"] = {"node": auto.alarm.get("node") if auto.alarm else None, **ev}
            explains = ev["z"] < 2.5
        auto.validation = check
        if explains and check["z"] < 2.5 and check["mae"] <= check.get("drifted_version_mae", float("inf")):
            node = (auto.alarm or {}).get("node")
            if node and len(st.evidence) < int(context.get("evidence_min_rows", 10)):
                st.quarantine[node] = (f"drift alarm of version {auto.drifted_version} on {node}; version "
                                       f"{latest.version} validated on {len(st.evidence)} outcomes there")
            auto.restore(latest.version, check, now)
            st.drift = _new_monitor(context, latest)
            st.drifted_model = None
            return latest
        st.rejected.add(latest.version)      # not this one: train again on more outcomes
        st.unseen.clear()
        return None
    if len(st.unseen) >= retrain_rows:
        # enough outcomes since the drift (or since the last rejected version): ask for a version
        auto.training_requested_at = now
        st.unseen.clear()
        await connector.submit_training(MODEL, seed=int(context.get("seed", 0)))
    return None


# -- the ML decision ----------------------------------------------------------------------------------
def _score(pred: float, std: float, target: float | None) -> float:
    """The ML scorer's 0..100: mostly the probability of meeting the target, then a lower prediction."""
    p_ok = 1.0 - violation_probability(pred, std, target) if target else 0.0
    return 90.0 * p_ok + 10.0 / (1.0 + max(pred, 0.0) / 100.0)


def _ml_registry(model: Any, view: _View, record: dict[str, Any]) -> Any:
    registry = NODE_PLUGINS.copy()

    def factory(args: Any) -> ScorerPlugin:
        def score(request: ComponentRequest, candidates: Any, ctx: Any) -> list[float]:
            out = []
            target = request.qos_target_ms
            opts = record.setdefault(request.name, {})
            for cand in candidates:     # a new instance there: its load is added to the node's
                feats = view.features(request, cand, hosting_instance=None)
                pred, std, x = _predict(model, feats)
                opts[cand.name] = Option(cand.name, x, pred, std)
                out.append(_score(pred, std, target))
            return out
        return ScorerPlugin(SCORER, score)

    registry.register_scorer(SCORER, factory, weight=1.0)

    def quarantine(args: Any) -> FilterPlugin:
        banned = dict(args.get("nodes") or {})
        return FilterPlugin(QUARANTINE, lambda request: (lambda node: Status.unresolvable(
            QUARANTINE, f"quarantined by the ML policy: {banned[node.name]}") if node.name in banned else None)
            if banned else None)

    registry.register_filter(QUARANTINE, quarantine)
    return registry


def _ml_config(context: dict[str, Any], model: Any, view: _View, record: dict[str, Any]) -> PlacementConfig:
    spec = dict(context.get("placement") or {})
    spec["scorers"] = {"disable": ["*"], "enable": [SCORER]}
    filters = dict(spec.get("filters") or {})
    filters[QUARANTINE] = {"args": {"nodes": dict(_state(context).quarantine)}}
    spec["filters"] = filters
    return placement_config({"placement": spec}, _ml_registry(model, view, record))


def _explain(model: Any, record: dict[str, Any], component: str, chosen: str, target: float | None) -> dict[str, Any]:
    options = list(record.get(component, {}).values())
    if not any(o.name == chosen for o in options):
        return {}
    return explain_options(model, options, chosen, target=target,
                           score=lambda pred, std: _score(pred, std, target))


def _ml_decide(context: dict[str, Any], app: str, view: _View, model: Any, now: float, *, commit: bool,
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(actions, per-component explanations) the model would take."""
    actions: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    state = view.state
    placed: dict[str, list[str]] = {}
    for inst in state.instances:
        if inst["app"] == app and inst["status"] in ("deploying", "starting", "running", "lost"):
            placed.setdefault(inst["component"], []).append(inst["node"])
    running = {c for c, nodes in view.peer_nodes.items() if nodes}
    # 1. missing instances (dependencies running), through the framework with the ML scorer
    ready = []
    for req in view.requests.values():
        if len(placed.get(req.name, [])) < req.instances and all(
                d in running for d in req.depends_on if d in view.requests):
            req.depends_on = [d for d in req.depends_on if d in view.requests]
            ready.append(req)
    if ready:
        record: dict[str, Any] = {}
        result = place_app(ready, state.nodes, placed=placed, config=_ml_config(context, model, view, record))
        for component, nodes in result.placements.items():
            taken = {i["instance_id"] for i in state.active(app, component)}
            slot = 0
            for node in nodes:
                while any(t.startswith(f"{app}.{component}.{slot}@") for t in taken):
                    slot += 1
                iid = instance_id(app, component, slot, node)
                taken.add(iid)
                actions.append({"action": "deploy", "component": component, "node": node, "instance_id": iid})
                notes.append({"component": component, "action": "deploy", "node": node,
                              "ml": _explain(model, record, component, node, view.requests[component].qos_target_ms),
                              "framework": result.decisions[component][-1].explain()})
    # 2. relocation before a violation (and off lost nodes)
    last_moved = context.setdefault("last_moved", {}) if commit else dict(context.get("last_moved", {}))
    nodes = list(state.nodes)
    for inst in sorted(state.instances, key=lambda i: i["instance_id"]):
        req = view.requests.get(inst["component"])
        if inst["app"] != app or req is None or inst["status"] not in ("running", "lost"):
            continue
        lost = inst["status"] == "lost" or inst["node"] not in state.alive
        key = f"{app}/{inst['component']}"
        if not lost and (req.qos_target_ms is None or now - last_moved.get(key, -1e18) < float(context["cooldown_s"])):
            continue
        here = view.nodes.get(inst["node"])
        current = None
        if not lost and here is not None:
            current = _predict(model, view.features(req, here, hosting_instance=inst["instance_id"]))
            if current[0] <= float(context["act_fraction"]) * req.qos_target_ms:
                continue
        trial = [n.with_placed(req, -1) if n.name == inst["node"] and n.hosted.get(req.key) else n for n in nodes]
        record = {}
        decision = schedule(req, trial, exclude=[inst["node"]], config=_ml_config(context, model, view, record))
        if decision.node is None:
            continue
        best = record[req.name][decision.node]
        if current is not None and best.prediction > (1.0 - float(context["min_gain"])) * current[0]:
            continue
        if current is not None:
            record[req.name][inst["node"]] = Option(inst["node"], current[2], current[0], current[1])
        slot = state.free_slot(app, inst["component"])
        actions.append({"action": "move", "component": inst["component"], "from": inst["node"],
                        "to": decision.node, "instance_id": inst["instance_id"],
                        "new_instance_id": instance_id(app, inst["component"], slot, decision.node)})
        why = (f"node {inst['node']} lost" if lost else
               f"predicted {current[0]:.1f} ms on {inst['node']} > {context['act_fraction']:g} x target "
               f"{req.qos_target_ms:g} ms; {decision.node} predicted {best.prediction:.1f} ms")
        notes.append({"component": inst["component"], "action": "move", "from": inst["node"], "node": decision.node,
                      "reason": why, "ml": _explain(model, record, req.name, decision.node, req.qos_target_ms),
                      "framework": decision.explain()})
        if commit:
            last_moved[key] = now
        i = next(k for k, n in enumerate(nodes) if n.name == decision.node)
        nodes[i] = nodes[i].with_placed(req)
    return actions, notes


# -- the heuristic decision (the built-in heuristic policies' own code) ---------------------------------
async def _heuristic(context: dict[str, Any], app_desc: Any, system: dict[str, Any], mechanisms: Any,
                     telemetry: Any, planning: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    subs = context.setdefault("heuristic", {})
    actions: list[dict[str, Any]] = []
    explanation: dict[str, Any] = {}
    for name, module in (("relocation", relocation), ("placement", filter_score_placement)):
        sub = subs.setdefault(name, module.initialize())
        needed, sub = await module.analyze(sub, app_desc, system, mechanisms, telemetry, None)
        if needed and planning:
            commands, sub = await module.plan(sub, app_desc, system, mechanisms, telemetry, None)
            actions.extend(commands.get(MECHANISM, {}).get("actions", []))
        explanation[name] = sub.pop("explanation", None)
        subs[name] = sub
        if actions and name == "relocation":
            break     # as between the two policies: relocation wins a cycle's conflict
    return actions, explanation


def _summary(mode: str, notes: list[dict[str, Any]], management: dict[str, Any]) -> str:
    """One line per decision: the choice, the model's prediction and interval, the counterfactual."""
    if not notes:
        return f"{mode}: the model keeps things as they are ({management.get('why')})"
    parts = []
    for n in notes:
        ml = n.get("ml") or {}
        chosen = ml.get("chosen") or {}
        lo, hi = chosen.get("interval_90", [None, None])
        text = f"{n['component']} -> {n['node']}"
        if chosen:
            text += (f" ({ml['model']} v{ml['version']}: predicted {chosen['prediction']:.1f} ms, 90% "
                     f"[{lo:.1f}, {hi:.1f}], p(violation) {chosen.get('p_violation', 0):.2f})")
        if ml.get("counterfactual"):
            text += f"; {ml['counterfactual']}"
        parts.append(text)
    return f"{mode}: " + "; ".join(parts)


def _targets(actions: list[dict[str, Any]]) -> dict[str, str]:
    return {a["component"]: a.get("to") or a.get("node") for a in actions}


# -- the policy contract ------------------------------------------------------------------------------
async def _cycle(context, application_description, system_description, mechanisms, telemetry, ml_connector,
                 *, planning: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    app = application_description["name"]
    mode = _mode(application_description, context)
    now = _now(system_description)
    st = _state(context)
    connector = _connector(ml_connector)
    model = connector.cached(MODEL)
    if model is None:
        model = await connector.get_model(MODEL)
    view = _View.of(system_description, app)
    management: dict[str, Any] = {"mode": mode}
    if not planning:   # outcomes and detectors once per cycle (analyze), not again in plan
        alarm = await _observe(context, st, app, view, telemetry, connector, model, now)
        context["_decide_with"] = await _manage(context, st, mode, model, connector, alarm, now)
    decide_with = context.get("_decide_with")
    if mode == "auto":
        management["auto"] = st.auto.describe()
    if st.drift is not None:
        management["detectors"] = {k: round(v, 4) for k, v in st.drift.last_statistics.items()}
    if st.last_alarm is not None:
        management["last_alarm"] = st.last_alarm
    if st.quarantine:
        management["quarantine"] = dict(st.quarantine)
    ml_actions: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    if decide_with is not None and mode != "heuristic":
        ml_actions, notes = _ml_decide(context, app, view, decide_with, now, commit=planning and (
            mode in ("ml", "auto")))
    ml_acts = decide_with is not None and mode in ("ml", "auto")
    min_conf = float(context.get("min_confidence", 0.0))
    low = [n for n in notes if n.get("ml", {}).get("confidence", 1.0) < min_conf]
    if ml_acts and low:
        ml_acts = False
        management["low_confidence"] = [{"component": n["component"], "confidence": n["ml"]["confidence"]}
                                        for n in low]
    if ml_acts:
        management["acting"] = "ml"
        management["why"] = "model trusted" if mode == "ml" else st.auto.reason
        return ml_actions, {"management": management, "decisions": notes, "needed": bool(ml_actions),
                            "summary": _summary(mode, notes, management)}
    actions, heur = await _heuristic(context, application_description, system_description, mechanisms,
                                     telemetry, planning)
    management["acting"] = "heuristic"
    management["why"] = ("no model yet" if model is None and mode != "heuristic" else
                         "mode heuristic" if mode == "heuristic" else
                         "shadow: the model only records" if mode == "shadow" else
                         "low confidence" if management.get("low_confidence") else st.auto.reason)
    explanation: dict[str, Any] = {"management": management, "heuristic": heur,
                                   "summary": f"{mode}: the heuristics decide ({management['why']})",
                                   "needed": bool(actions) or _wants_plan(heur) or (mode == "shadow" and bool(ml_actions))}
    if mode == "shadow" and decide_with is not None and planning:
        ml_t, h_t = _targets(ml_actions), _targets(actions)
        agree = ml_t == h_t
        st.shadow["decisions"] += 1
        st.shadow["agreed"] += int(agree)
        compare = []
        for comp in sorted(set(ml_t) | set(h_t)):
            req = view.requests.get(comp)
            row: dict[str, Any] = {"component": comp, "ml": ml_t.get(comp), "heuristic": h_t.get(comp)}
            if req is not None and h_t.get(comp) in view.nodes:
                row["heuristic_predicted_ms"] = round(_predict(decide_with, view.features(
                    req, view.nodes[h_t[comp]], hosting_instance=None))[0], 2)
            note = next((n for n in notes if n["component"] == comp), None)
            if note and note.get("ml"):
                row["ml_predicted_ms"] = note["ml"]["chosen"]["prediction"]
            compare.append(row)
        explanation["shadow"] = {"would_do": ml_actions, "decisions": notes, "agrees": agree,
                                 "compare": compare, "agreement": dict(st.shadow)}
        if notes:
            explanation["summary"] = (f"shadow: the heuristics act; the model would {'agree' if agree else 'differ'}: "
                                      + _summary(mode, notes, management).removeprefix("shadow: "))
    return actions, explanation


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    actions, explanation = await _cycle(context, application_description, system_description, mechanisms,
                                        telemetry, ml_connector, planning=False)
    return bool(explanation.pop("needed", False)), context, explanation


def _wants_plan(heur: dict[str, Any]) -> bool:
    """A heuristic's analyze said a plan is needed (they plan only in plan)."""
    reloc = (heur.get("relocation") or {}).get("relocations") or []
    missing = (heur.get("placement") or {}).get("missing") or {}
    return bool(reloc) or bool(missing)


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    actions, explanation = await _cycle(context, application_description, system_description, mechanisms,
                                        telemetry, ml_connector, planning=True)
    explanation.pop("needed", None)
    if not actions:
        return {}, context, explanation
    return {MECHANISM: {"app": application_description["name"], "actions": actions}}, context, explanation
