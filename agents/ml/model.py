"""The Model protocol every served model satisfies, and the built-in numpy model.

A model maps a feature vector (named features, fixed order) to one number (`output_name`, e.g. a
response time in ms). Besides `predict` it says how sure it is (`predict_with_uncertainty`: mean and a
standard deviation) and why (`attributions`: per-feature contributions that sum to
`predict(x) - predict(baseline)`; exact for additive models, sampling Shapley otherwise). Models travel
as bytes (`to_bytes` / `from_bytes(b, card)`) tagged with a `format`, so the registry and distribution
never need to know a model's class.

`PolynomialRidge` (format `mlsysops-linear`) is ridge regression over *terms*: each term is a product of
features (a single feature, or an interaction such as `comp=web x kind=jetson x queue`). It is additive
over terms, and a product term has an exact Shapley split between its features, so its attributions are
exact (no sampling) and cost microseconds. Its uncertainty is the ridge posterior predictive standard
deviation. Serialised as JSON (never pickle): loading a model file cannot run code.

`BUILTIN_FORMATS` maps each format implemented here to its loader, for the format registry.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

FORMAT_LINEAR = "mlsysops-linear"


class ModelFormatError(ValueError):
    """A model file or card is wrong; the message names the model, version and field."""


@runtime_checkable
class Model(Protocol):
    name: str
    version: int
    feature_names: list[str]
    output_name: str
    format: str

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def predict_with_uncertainty(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def attributions(self, x: np.ndarray, baseline: np.ndarray) -> np.ndarray: ...

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, b: bytes, card: dict[str, Any]) -> Model: ...


def as_matrix(X: Any, n_features: int, who: str = "model") -> np.ndarray:
    """X as a float (n, n_features) matrix; a single vector becomes one row."""
    arr = np.asarray(X, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise ValueError(f"{who}: expected X of shape (n, {n_features}), got {arr.shape}")
    return arr


def sampling_shapley(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, baseline: np.ndarray,
                     *, permutations: int = 64, seed: int = 0) -> np.ndarray:
    """Monte-Carlo Shapley values of `predict` at `x` against `baseline` (permutation sampling).

    Every permutation's marginal contributions telescope to `f(x) - f(baseline)`, so the estimate sums to
    it exactly whatever the number of permutations; the split between features is what is sampled.
    All permutations of one call are evaluated in one batched `predict` (cheap for onnxruntime too).
    """
    x = np.asarray(x, dtype=float).ravel()
    b = np.asarray(baseline, dtype=float).ravel()
    d = x.size
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(d) for _ in range(permutations)]
    rows = np.empty((permutations * (d + 1), d))
    for p, order in enumerate(orders):
        cur = b.copy()
        rows[p * (d + 1)] = cur
        for k, j in enumerate(order, start=1):
            cur[j] = x[j]
            rows[p * (d + 1) + k] = cur
    values = np.asarray(predict(rows), dtype=float).reshape(permutations, d + 1)
    phi = np.zeros(d)
    for p, order in enumerate(orders):
        phi[order] += np.diff(values[p])
    return phi / permutations


def _monomial_shapley(factors: dict[int, int], x: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """Exact Shapley split of `prod_j x_j**p_j - prod_j b_j**p_j` between the distinct features j.

    Player j switches its factor from b_j**p to x_j**p; the value of a coalition is the product with the
    coalition's factors at x and the others at b. Terms have at most a handful of features, so the
    2**(k-1) coalitions per player are enumerated.
    """
    players = sorted(factors)
    k = len(players)
    at_x = {j: x[j] ** factors[j] for j in players}
    at_b = {j: b[j] ** factors[j] for j in players}
    out: dict[int, float] = {}
    for i in players:
        others = [j for j in players if j != i]
        total = 0.0
        for size in range(k):
            weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            for coalition in itertools.combinations(others, size):
                prod = 1.0
                for j in others:
                    prod *= at_x[j] if j in coalition else at_b[j]
                total += weight * prod
        out[i] = total * (at_x[i] - at_b[i])
    return out


@dataclass
class PolynomialRidge:
    """Ridge regression over product terms of named features (format `mlsysops-linear`).

    `terms[t]` lists the feature indices multiplied together (repeats mean powers). Coefficients are in
    raw feature units: `predict(x) = intercept + sum_t coef[t] * prod(x[terms[t]])`. `a_inv`,
    `term_mean`, `term_scale` and `sigma` give the posterior predictive spread of the fit.
    """

    name: str
    version: int
    feature_names: list[str]
    output_name: str
    terms: list[tuple[int, ...]]
    coef: np.ndarray
    intercept: float
    sigma: float = 0.0
    term_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    term_scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    a_inv: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    unseen_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per term: the spread (in output units per unit of the term) added for a term that was never
    active in the training data - the fit knows nothing about it, and says so."""
    card: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_LINEAR

    # -- fitting ------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, *, name: str, feature_names: Sequence[str],
            output_name: str, terms: Sequence[Sequence[int]] | None = None, alpha: float = 1.0,
            version: int = 0, sample_weight: np.ndarray | None = None,
            fit_intercept: bool = True) -> PolynomialRidge:
        """Least squares with an L2 penalty `alpha` on standardised term columns (so the penalty does
        not depend on feature units); deterministic (closed form, no randomness). `sample_weight`
        (relative, e.g. recency) weighs rows. `fit_intercept=False` makes the prediction exactly the sum
        of the terms (a response time that is work x queueing has no constant part; an intercept would
        let the fit go negative outside the load range it saw)."""
        names = list(feature_names)
        X = as_matrix(X, len(names), name)
        y = np.asarray(y, dtype=float).ravel()
        if X.shape[0] != y.size or y.size == 0:
            raise ValueError(f"{name}: need as many targets as rows (> 0), got {X.shape[0]} rows, {y.size} targets")
        term_list = [tuple(int(i) for i in t) for t in (terms if terms is not None else [(j,) for j in range(len(names))])]
        for t in term_list:
            if not t or any(i < 0 or i >= len(names) for i in t):
                raise ValueError(f"{name}: term {t} must name features 0..{len(names) - 1}")
        sw = np.ones(y.size) if sample_weight is None else np.asarray(sample_weight, dtype=float).ravel()
        if sw.size != y.size or np.any(sw < 0) or sw.sum() <= 0:
            raise ValueError(f"{name}: sample_weight must be {y.size} non-negative numbers, not all 0")
        sw = sw * (y.size / sw.sum())   # mean weight 1: alpha keeps its meaning
        phi = _term_matrix(X, term_list)
        mean = (sw @ phi) / sw.sum() if fit_intercept else np.zeros(phi.shape[1])
        scale = np.sqrt((sw @ (phi - mean) ** 2) / sw.sum())
        scale[scale < 1e-12] = 1.0
        z = (phi - mean) / scale
        y_mean = float(sw @ y / sw.sum()) if fit_intercept else 0.0
        zw = z * sw[:, None]
        a = zw.T @ z + alpha * np.eye(z.shape[1])
        a_inv = np.linalg.inv(a)
        w = a_inv @ (zw.T @ (y - y_mean))
        resid = y - y_mean - z @ w
        dof = max(1.0, float(sw.sum()) - min(y.size - 1, z.shape[1]))
        sigma = float(math.sqrt(float(sw @ resid ** 2) / dof))
        coef = w / scale
        intercept = y_mean - float(coef @ mean)
        never = ~np.any(phi != 0, axis=0)
        unseen = np.where(never, float(np.sqrt(sw @ (y - y.mean()) ** 2 / sw.sum())), 0.0)
        return cls(name, version, names, output_name, term_list, coef, intercept, sigma, mean, scale, a_inv,
                   unseen)

    # -- the protocol -------------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> np.ndarray:
        X = as_matrix(X, len(self.feature_names), self.name)
        return self.intercept + _term_matrix(X, self.terms) @ self.coef

    def predict_with_uncertainty(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = as_matrix(X, len(self.feature_names), self.name)
        phi = _term_matrix(X, self.terms)
        mean = self.intercept + phi @ self.coef
        if self.a_inv.size == 0:
            return mean, np.full(mean.shape, self.sigma)
        z = (phi - self.term_mean) / self.term_scale
        leverage = np.einsum("ij,jk,ik->i", z, self.a_inv, z)
        var = self.sigma ** 2 * (1.0 + np.maximum(leverage, 0.0))
        if self.unseen_scale.size == phi.shape[1]:
            var = var + (np.abs(phi) @ self.unseen_scale) ** 2
        return mean, np.sqrt(var)

    def attributions(self, x: np.ndarray, baseline: np.ndarray) -> np.ndarray:
        """Exact Shapley values: per term, the exact split of the product's change between its
        features; they sum to `predict(x) - predict(baseline)` up to float rounding."""
        x = np.asarray(x, dtype=float).ravel()
        b = np.asarray(baseline, dtype=float).ravel()
        phi = np.zeros(len(self.feature_names))
        for coef, term in zip(self.coef, self.terms):
            if coef == 0.0:
                continue
            factors: dict[int, int] = {}
            for i in term:
                factors[i] = factors.get(i, 0) + 1
            for j, share in _monomial_shapley(factors, x, b).items():
                phi[j] += coef * share
        return phi

    # -- bytes --------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        body = {
            "format": self.format, "name": self.name, "version": self.version,
            "feature_names": self.feature_names, "output_name": self.output_name,
            "terms": [list(t) for t in self.terms], "coef": self.coef.tolist(), "intercept": self.intercept,
            "sigma": self.sigma, "term_mean": self.term_mean.tolist(), "term_scale": self.term_scale.tolist(),
            "a_inv": self.a_inv.tolist(), "unseen_scale": self.unseen_scale.tolist(),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, b: bytes, card: dict[str, Any]) -> PolynomialRidge:
        """Load a model; the card's `name`/`version` (when given) win over the file's; the card's
        `inputs` (names) must be the model's features in order. Errors name model, version and field."""
        card = dict(card or {})
        who = f"model {card.get('name', '?')} version {card.get('version', '?')}"
        try:
            body = json.loads(bytes(b).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{who}: artifact is not {FORMAT_LINEAR} JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT_LINEAR:
            raise ModelFormatError(f"{who}: format: expected {FORMAT_LINEAR!r}, got "
                                   f"{body.get('format') if isinstance(body, dict) else type(body).__name__!r}")
        try:
            names = [str(n) for n in body["feature_names"]]
            terms = [tuple(int(i) for i in t) for t in body["terms"]]
            coef = np.asarray(body["coef"], dtype=float)
            model = cls(
                name=str(card.get("name", body["name"])), version=int(card.get("version", body["version"])),
                feature_names=names, output_name=str(body["output_name"]), terms=terms, coef=coef,
                intercept=float(body["intercept"]), sigma=float(body.get("sigma", 0.0)),
                term_mean=np.asarray(body.get("term_mean", []), dtype=float),
                term_scale=np.asarray(body.get("term_scale", []), dtype=float),
                a_inv=np.asarray(body.get("a_inv", []), dtype=float).reshape(
                    (len(terms), len(terms)) if body.get("a_inv") else (0, 0)),
                unseen_scale=np.asarray(body.get("unseen_scale", []), dtype=float),
                card=card)
        except (KeyError, TypeError, ValueError) as exc:
            field_name = exc.args[0] if isinstance(exc, KeyError) else type(exc).__name__
            raise ModelFormatError(f"{who}: field {field_name}: {exc}") from None
        if coef.size != len(terms) or any(i < 0 or i >= len(names) for t in terms for i in t):
            raise ModelFormatError(f"{who}: coef/terms: {coef.size} coefficients for {len(terms)} terms "
                                   f"over {len(names)} features")
        inputs = card.get("inputs")
        if inputs is not None:
            card_names = [i["name"] if isinstance(i, dict) else str(i) for i in inputs]
            if card_names != names:
                raise ModelFormatError(f"{who}: card inputs {card_names} do not match the model's features {names}")
        return model


def _term_matrix(X: np.ndarray, terms: Sequence[tuple[int, ...]]) -> np.ndarray:
    out = np.ones((X.shape[0], len(terms)))
    for t, term in enumerate(terms):
        for i in term:
            out[:, t] *= X[:, i]
    return out


BUILTIN_FORMATS: dict[str, Callable[[bytes, dict[str, Any]], Model]] = {FORMAT_LINEAR: PolynomialRidge.from_bytes}
"""Formats implemented in this module -> loader; `formats.register_format` takes these."""
