"""The explanation of one ML choice between options (nodes, clusters), as the decision record keeps it.

For the chosen option and the best rejected one: the model's prediction with its interval, and the
per-feature attributions against a baseline (the mean of the options weighed in this decision, so an
attribution reads "how this option differs from the average candidate"); they sum to
`prediction - baseline_prediction` (exactly for `mlsysops-linear`). The counterfactual names the one
continuous feature whose change would have flipped the choice, and the value it would have needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsysops.agents.ml.model import Model

TOP_ATTRIBUTIONS = 6
Z_90 = 1.645


@dataclass
class Option:
    name: str
    x: np.ndarray
    prediction: float
    std: float


def _readable(feature: str, value: float) -> tuple[str, str]:
    """A feature and value as an operator reads them (`queue` is shown as CPU utilisation)."""
    if feature == "queue":
        return "CPU utilisation", f"{max(0.0, 1.0 - 1.0 / max(value, 1e-9)):.0%}"
    if feature == "net_ms":
        return "network latency to its peers", f"{value:.1f} ms"
    if feature.startswith("coloc="):
        return f"co-located {feature[6:]} instances", f"{value:g}"
    return feature, f"{value:.3g}"


def attributions_dict(model: Model, x: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """The largest attributions by magnitude (non-zero only) plus `(other features)` for the rest, so the
    values shown still sum to prediction - baseline prediction."""
    phi = model.attributions(x, baseline)
    order = [int(i) for i in np.argsort(-np.abs(phi)) if abs(phi[i]) > 1e-9]
    shown = {model.feature_names[i]: round(float(phi[i]), 4) for i in order[:TOP_ATTRIBUTIONS]}
    rest = float(sum(phi[i] for i in order[TOP_ATTRIBUTIONS:]))
    if abs(rest) > 1e-9:
        shown["(other features)"] = round(rest, 4)
    return shown


def counterfactual(model: Model, chosen: Option, rejected: Option, *, lower_is_better: bool = True,
                   continuous: Sequence[str] = ("queue", "net_ms"),
                   score: Callable[[float, float], float] | None = None) -> str | None:
    """"<rejected> would have been chosen if its <feature> were below <value> (now <value>)", for the
    continuous feature with the largest attribution gap, found by bisection on the model itself.
    `score(prediction, std)` (higher wins) is the decision's own rule; by default the prediction."""
    if score is None:
        def score(pred: float, std: float) -> float:
            return -pred if lower_is_better else pred
    target_score = score(chosen.prediction, chosen.std)
    gaps = model.attributions(rejected.x, chosen.x)
    best = None
    for j, name in enumerate(model.feature_names):
        if name not in continuous and not name.startswith("coloc="):
            continue
        if (gaps[j] > 0) == lower_is_better and abs(gaps[j]) > 1e-9 and (best is None or abs(gaps[j]) > abs(gaps[best])):
            best = j
    if best is None:
        return None
    name = model.feature_names[best]
    current = float(rejected.x[best])
    floor = 1.0 if name == "queue" else 0.0
    trial = rejected.x.copy()

    def beats(value: float) -> bool:
        trial[best] = value
        mean, std = model.predict_with_uncertainty(trial.reshape(1, -1))
        return score(float(mean[0]), float(std[0])) > target_score

    if not beats(floor) or beats(current):
        return None
    lo, hi = floor, current     # beats(lo) is True, beats(hi) is False
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if beats(mid) else (lo, mid)
    label, needed = _readable(name, lo)
    _, now = _readable(name, current)
    return f"{rejected.name} would have been chosen if its {label} were below {needed} (now {now})"


def explain_options(model: Model, options: Sequence[Option], chosen: str, *, target: float | None = None,
                    lower_is_better: bool = True,
                    score: Callable[[float, float], float] | None = None) -> dict[str, Any]:
    """The `ml` part of a decision record for choosing `chosen` among `options` (`score(prediction,
    std)`, higher wins, is the rule the choice used: it ranks the rejected options too)."""
    by_name = {o.name: o for o in options}
    pick = by_name[chosen]
    rank = (lambda o: -score(o.prediction, o.std)) if score is not None else (
        lambda o: o.prediction if lower_is_better else -o.prediction)
    others = sorted((o for o in options if o.name != chosen), key=rank)
    floor = 0.0 if model.output_name.endswith(("_ms", "_s", "_bytes")) else -math.inf
    baseline = np.mean([o.x for o in options], axis=0)
    base_pred = float(model.predict(baseline)[0])

    def side(o: Option) -> dict[str, Any]:
        out: dict[str, Any] = {
            "option": o.name, "prediction": round(o.prediction, 3),
            "interval_90": [round(max(floor, o.prediction - Z_90 * o.std), 3), round(o.prediction + Z_90 * o.std, 3)],
            "attributions": attributions_dict(model, o.x, baseline),
        }
        if target is not None:
            out["p_violation"] = round(violation_probability(o.prediction, o.std, target, lower_is_better), 4)
        return out

    out: dict[str, Any] = {
        "model": model.name, "version": model.version, "format": model.format, "output": model.output_name,
        "baseline_prediction": round(base_pred, 3), "chosen": side(pick),
        "confidence": round(confidence(pick.prediction, pick.std), 4),
    }
    if others:
        out["best_rejected"] = side(others[0])
        cf = counterfactual(model, pick, others[0], lower_is_better=lower_is_better, score=score)
        if cf:
            out["counterfactual"] = cf
    return out


def violation_probability(prediction: float, std: float, target: float, lower_is_better: bool = True) -> float:
    """P(outcome breaks target) under a normal predictive distribution."""
    if std <= 0:
        return float(prediction > target) if lower_is_better else float(prediction < target)
    z = (prediction - target) / std if lower_is_better else (target - prediction) / std
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def confidence(prediction: float, std: float) -> float:
    """1 - relative spread, clipped to 0..1: 1 = the model is sure, 0 = its interval is as wide as the value."""
    return max(0.0, min(1.0, 1.0 - std / max(abs(prediction), 1e-9)))
