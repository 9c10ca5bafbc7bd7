"""Policy: QoS-aware CPU frequency scaling at the node (the original `CPUFrequencyConfigurator`, done right).

Global scope, node layer. Every analysis it predicts, for each CPU step the node offers, the response time
of each running component with a target and the node's utilisation at that step, and picks the **lowest**
step at which every target holds with a safety `margin` (so it raises *before* a violation, not after one)
and the CPU stays below `max_utilization`. The prediction treats the work as CPU-bound: CPU time grows by
f_now/f, so utilisation u(f) = u_now x f_now / f, and the response time scales as
rt(f) = rt_now x (f_now / f) x (1 - u_now) / (1 - u(f)) (the compute part at the new speed, with the
queueing factor of a single-server queue). That overestimates a component whose time is partly network,
which errs on the side of QoS. Lowering waits for `lower_after` consecutive analyses that agree (noise
must not make the clock flap); raising acts at once. It analyses every 0.25 s (`ANALYZE_INTERVAL_S`): an
unforeseen load spike is served at the lowered clock until the next analysis sees it.

`spike_reserve` (a fraction of the CPU, default 0) trades energy for those first moments of a spike: the
prediction assumes that much more of the CPU busy, so the chosen step absorbs a spike of that size before
anyone has seen it (on the benchmark's 4-core node, 0.25 = one core: the violations of `performance` at
about a quarter of the saving).

A component that is starting, or running but not measured yet, has an unknown demand: the node goes to
its top step until it has been measured (and then comes down step by step as above), so an arrival is
not served at a clock chosen for the components that were there before it.

A node that cannot meet a target even at its top step says so upward: it proposes relocating the
component furthest over its target (`relocation_proposal`; the cluster decides), with a cooldown.

Targets come from the policy settings (slice config `policies.node.settings.frequency_scaling`):
``targets: {"app/component": ms, "component": ms}``, ``default_target_ms`` for the rest (none: only
utilisation counts). Every plan explains itself: the prediction per step (`alternatives`), the inputs and
the reason for the chosen step.
"""

from __future__ import annotations

from typing import Any

KNOB = "cpu_frequency"
# A load spike is seen one analysis late and served at the clock chosen before it: a short interval keeps
# that window small (benchmarks/energy.py: analysing every 1 s instead, 1.3x the violation time and less energy saved).
ANALYZE_INTERVAL_S = 0.25
RELOCATE = "relocation_proposal"


def initialize() -> dict[str, Any]:
    return {"name": "frequency_scaling", "scope": "global", "priority": 0,
            "configuration": {"analyze_interval": ANALYZE_INTERVAL_S}, "mechanisms": [KNOB, RELOCATE],
            "telemetry": {"metrics": ["system.cpu.utilization", "system.cpu.frequency", "response_time_ms",
                                      "hw.power"], "system_scrape_interval": ANALYZE_INTERVAL_S},
            "targets": {}, "default_target_ms": None, "margin": 0.05, "max_utilization": 0.85,
            "spike_reserve": 0.0, "lower_after": 2, "cooldown_s": 30.0,
            "lower_votes": 0, "last_proposal": -1e18}


def _target(context: dict[str, Any], inst: dict[str, Any]) -> float | None:
    targets = context.get("targets") or {}
    value = targets.get(f"{inst['app']}/{inst['component']}", targets.get(inst["component"]))
    value = context.get("default_target_ms") if value is None else value
    return float(value) if value is not None else None


def _steps(mechanisms: dict[str, Any]) -> list[float]:
    options = (mechanisms.get(KNOB) or {}).get("options") or {}
    steps: set[float] = set()
    for pol in (options.get("policies") or {}).values():
        steps.update(pol.get("frequencies_hz") or [f for f in pol.get("range_hz") or [] if f])
    return sorted(steps)


def predict(rt_ms: float, util: float, f_now: float, f: float, reserve: float = 0.0) -> tuple[float, float]:
    """(response time, utilisation) at frequency `f` from what was measured at `f_now` (module docstring);
    the response time with `reserve` more of the CPU busy (a load spike the node should absorb)."""
    u = util * f_now / f
    if u + reserve >= 0.99:
        return float("inf"), u
    return rt_ms * (f_now / f) * (1.0 - min(util, 0.99)) / (1.0 - u - reserve), u


def _evaluate(context: dict[str, Any], system: dict[str, Any], mechanisms: dict[str, Any]) -> dict[str, Any]:
    knob = mechanisms.get(KNOB) or {}
    state = knob.get("state") or {}
    steps = _steps(mechanisms)
    f_now = system.get("cpu_frequency_hz")
    util = (system.get("cpu_utilization") or [None])[-1]
    if not state.get("supported", False) or state.get("permitted") is False or not steps:
        return {"act": False, "why": state.get("refusal") or state.get("reason") or "no cpu frequency knob"}
    if not f_now or util is None:
        return {"act": False, "why": "no frequency or utilisation measured yet"}
    margin, umax = float(context.get("margin", 0.15)), float(context.get("max_utilization", 0.85))
    watched = [(i, _target(context, i)) for i in system.get("instances", [])
               if i.get("state") == "running" and i.get("response_time_ms") is not None]
    watched = [(i, t) for i, t in watched if t is not None]
    unmeasured = [f"{i['app']}/{i['component']}" for i in system.get("instances", [])
                  if (i.get("state") == "starting" or (i.get("state") == "running" and i.get("response_time_ms") is None))
                  and _target(context, i) is not None]
    reserve = context.get("spike_reserve", 0.0)
    if not isinstance(reserve, (int, float)) or isinstance(reserve, bool) or not 0.0 <= reserve < 0.9:
        return {"act": False, "why": f"setting spike_reserve must be a fraction of the CPU in [0, 0.9), got {reserve!r}"}
    table = []
    for f in steps:
        worst, u_f = 0.0, util * f_now / f
        for inst, target in watched:
            rt_f, u_f = predict(float(inst["response_time_ms"]), util, f_now, f, reserve)
            worst = max(worst, rt_f / target)
        ok = u_f <= umax and worst <= 1.0 - margin
        table.append({"hz": f, "utilization": round(u_f, 3), "worst_rt_over_target": round(worst, 3), "ok": ok})
    chosen = next((row for row in table if row["ok"]), None)
    if unmeasured and chosen is not None:
        chosen = dict(table[-1], ok=True, unmeasured=unmeasured)   # unknown demand: top step until measured
    over = sorted(((float(i["response_time_ms"]) / t, i) for i, t in watched), key=lambda p: -p[0])
    return {"act": True, "f_now": f_now, "util": util, "table": table, "chosen": chosen, "over": over,
            "top": steps[-1]}


async def analyze(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    ev = _evaluate(context, system_description, mechanisms)
    if not ev["act"]:
        context["explanation"] = {"summary": f"frequency unchanged: {ev['why']}"}
        return False, context
    chosen, f_now = ev["chosen"], ev["f_now"]
    if chosen is None:   # no step keeps the targets: top frequency, and ask the cluster for help
        cooling = system_description.get("now", 0.0) - context.get("last_proposal", -1e18) < context["cooldown_s"]
        needed = f_now < ev["top"] or (bool(ev["over"]) and ev["over"][0][0] > 1.0 and not cooling)
        context["lower_votes"] = 0
        return needed, context
    if chosen["hz"] > f_now:
        context["lower_votes"] = 0
        return True, context
    if chosen["hz"] < f_now:
        context["lower_votes"] = int(context.get("lower_votes", 0)) + 1
        return context["lower_votes"] >= int(context.get("lower_after", 2)), context
    context["lower_votes"] = 0
    return False, context


async def plan(context, application_description, system_description, mechanisms, telemetry, ml_connector):
    ev = _evaluate(context, system_description, mechanisms)
    if not ev["act"]:
        return {}, context
    chosen, f_now, table = ev["chosen"], ev["f_now"], ev["table"]
    inputs = {"frequency_hz": f_now, "cpu_utilization": round(ev["util"], 3),
              "spike_reserve": context.get("spike_reserve", 0.0), "margin": context.get("margin"),
              "components": [{"component": f"{i['app']}/{i['component']}",
                              "response_time_ms": round(float(i["response_time_ms"]), 2),
                              "target_ms": _target(context, i)} for _, i in ev["over"]]}
    alternatives = [f"{row['hz'] / 1e9:.2f} GHz: util {row['utilization']:.0%}, worst rt/target "
                    f"{row['worst_rt_over_target']:.2f}{' ok' if row['ok'] else ''}" for row in table]
    commands: dict[str, Any] = {}
    if chosen is None:
        top = ev["top"]
        reason = (f"no CPU step keeps every target with a {context['margin']:.0%} margin "
                  f"(best at {top / 1e9:.2f} GHz: worst rt/target {table[-1]['worst_rt_over_target']:.2f})")
        if f_now < top:
            commands[KNOB] = {"command": "set_speed", "hz": top, "governor": "userspace"}
        worst_ratio, worst = ev["over"][0] if ev["over"] else (0.0, None)
        cooling = system_description.get("now", 0.0) - context.get("last_proposal", -1e18) < context["cooldown_s"]
        if worst is not None and worst_ratio > 1.0 and f_now >= top and not cooling:
            context["last_proposal"] = system_description.get("now", 0.0)
            commands[RELOCATE] = {"app": worst["app"], "component": worst["component"],
                                  "instance_id": worst["instance_id"], "node": system_description["node"],
                                  "reason": f"{reason}; {worst['app']}/{worst['component']} at "
                                            f"{worst_ratio:.2f}x its target at the top frequency"}
        summary = reason + ("; raising to the top step" if KNOB in commands else "") + \
            ("; proposing a relocation" if RELOCATE in commands else "")
    else:
        direction = "raise" if chosen["hz"] > f_now else "lower"
        if chosen.get("unmeasured"):
            summary = (f"{direction} CPU {f_now / 1e9:.2f} -> {chosen['hz'] / 1e9:.2f} GHz (top step): "
                       f"{', '.join(chosen['unmeasured'])} not measured yet, its demand is unknown")
        else:
            summary = (f"{direction} CPU {f_now / 1e9:.2f} -> {chosen['hz'] / 1e9:.2f} GHz: the lowest step with "
                       f"every target met with a {context['margin']:.0%} margin (predicted worst rt/target "
                       f"{chosen['worst_rt_over_target']:.2f}, utilisation {chosen['utilization']:.0%})")
        commands[KNOB] = {"command": "set_speed", "hz": chosen["hz"], "governor": "userspace"}
    context["lower_votes"] = 0
    return commands, context, {"summary": summary, "inputs": inputs, "alternatives": alternatives,
                               "model": "rt(f) = rt x f_now/f x (1-u)/(1-u x f_now/f)"}
