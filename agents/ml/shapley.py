"""Shapley attributions of a black-box model against a baseline (interventional: absent features take the
baseline's value). Exact over every coalition for up to `EXACT_MAX_FEATURES` features (one batched call of
the model, 2^d rows), permutation sampling beyond. Either way the attributions sum to f(x) - f(baseline):
exactly for the enumeration, and by construction for each sampled permutation (a telescoping sum).
"""

from __future__ import annotations

from collections.abc import Callable
from math import factorial

import numpy as np

EXACT_MAX_FEATURES = 10
SAMPLED_PERMUTATIONS = 64

Predict = Callable[[np.ndarray], np.ndarray]


def shapley(predict: Predict, x: np.ndarray, baseline: np.ndarray, *, seed: int = 0,
            permutations: int = SAMPLED_PERMUTATIONS) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(baseline, dtype=np.float64).reshape(-1)
    if x.shape != b.shape:
        raise ValueError(f"x has {x.size} features, the baseline {b.size}")
    d = x.size
    if d <= EXACT_MAX_FEATURES:
        return _exact(predict, x, b)
    return _sampled(predict, x, b, seed, permutations)


def _exact(predict: Predict, x: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = x.size
    masks = (np.arange(1 << d)[:, None] >> np.arange(d)[None, :]) & 1   # row m: which features come from x
    values = np.asarray(predict(np.where(masks == 1, x, b)), dtype=np.float64).reshape(-1)
    sizes = masks.sum(axis=1)
    weights = np.array([factorial(s) * factorial(d - s - 1) / factorial(d) if s < d else 0.0 for s in range(d + 1)])
    phi = np.zeros(d)
    idx = np.arange(1 << d)
    for i in range(d):
        without = idx[masks[:, i] == 0]
        phi[i] = float(np.sum(weights[sizes[without]] * (values[without | (1 << i)] - values[without])))
    return phi


def _sampled(predict: Predict, x: np.ndarray, b: np.ndarray, seed: int, permutations: int) -> np.ndarray:
    d = x.size
    rng = np.random.default_rng(seed)
    rows = []
    orders = [rng.permutation(d) for _ in range(permutations)]
    for order in orders:     # row k of a permutation: its first k features from x, the rest from the baseline
        cur = b.copy()
        rows.append(cur.copy())
        for j in order:
            cur[j] = x[j]
            rows.append(cur.copy())
    values = np.asarray(predict(np.array(rows)), dtype=np.float64).reshape(-1)
    phi = np.zeros(d)
    for p, order in enumerate(orders):
        v = values[p * (d + 1):(p + 1) * (d + 1)]
        phi[order] += np.diff(v)
    return phi / permutations
