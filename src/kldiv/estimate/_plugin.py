"""Plug-in estimate of KL(P ‖ Q) from category counts of discrete samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _validate
from ._estimate import Estimate, normal_interval


def plugin(
    counts_p: Any,
    counts_q: Any,
    *,
    correction: str | float = "miller-madow",
    ci: float | None = 0.95,
    base: float | None = None,
) -> Estimate:
    r"""Plug-in estimate of KL(P ‖ Q) from the category counts of samples of P (N draws) and Q (M draws).

    With empirical frequencies ``p̂_j = a_j / N`` and ``q̂_j = b_j / M``:

        D̂ = Σ_j p̂_j log(p̂_j / q̂_j)

    ``correction``:

    * ``"miller-madow"`` (default) subtracts the first-order bias of D̂ (a second-order Taylor expansion of both
      logarithms, as Miller (1955) did for entropy):
      ``E[D̂] − D ≈ (K − 1) / (2N) + Σ_j p_j (1 − q_j) / (2 M q_j)``, with K the number of categories seen in P's
      sample, estimated with p̂ and q̂;
    * ``"none"``: the raw plug-in value;
    * a number ``α > 0``: add the pseudo-count α to every category of both samples (additive smoothing), which
      keeps the estimate finite when a category seen in P was never seen in Q.

    Edge cases: a category with ``a_j = 0`` contributes 0; ``a_j > 0`` with ``b_j = 0`` makes the estimate infinite,
    which is refused with a ValueError suggesting a pseudo-count (the true KL is rarely infinite; the sample was
    too small). The standard error is the delta-method one,
    ``Var ≈ Var_P[log p/q] / N + Var_Q[p/q] / M``, and the interval is normal.

    Args:
        counts_p: counts of P's sample per category, shape ``(K,)``.
        counts_q: counts of Q's sample over the same categories, shape ``(K,)``.
        correction: ``"miller-madow"``, ``"none"``, or a positive pseudo-count.
        ci: confidence level of the interval (None for none).
        base: logarithm base of the result (None for nats, 2 for bits).

    Returns:
        ``Estimate(value, stderr, ci, n)`` of KL(P ‖ Q) with ``n = N``.

    References:
        G. A. Miller, "Note on the bias of information estimates", 1955.
        Z. Zhang and M. Grabchak, "Nonparametric estimation of Küllback-Leibler divergence", Neural
        Computation 26(11), 2014.
    """
    level = _validate.check_level(ci)
    divisor = _validate.check_base(base) or 1.0  # nats: 1
    pseudo = _validate.check_pseudo_count(correction)
    a, b = _validate.check_counts(counts_p, "counts_p"), _validate.check_counts(counts_q, "counts_q")
    _validate.check_same_categories(a, b)
    n, m = float(a.sum()), float(b.sum())
    a, b = a + pseudo, b + pseudo
    p, q = a / a.sum(), b / b.sum()
    seen = p > 0
    unseen_q = seen & (q == 0)
    if unseen_q.any():
        j = int(np.argmax(unseen_q))
        raise ValueError(
            f"category {j} has count {a[j]:g} in counts_p but 0 in counts_q, so the plug-in estimate is infinite; "
            "pass a pseudo-count such as correction=0.5, or collect more samples of Q"
        )
    log_ratio = np.where(seen, np.log(np.where(seen, p, 1.0)) - np.log(np.where(seen, q, 1.0)), 0.0)
    value = float(np.sum(p * log_ratio))
    ratio = np.where(seen, p / np.where(seen, q, 1.0), 0.0)
    if correction == "miller-madow":
        # E[Σ p̂ log p̂] ≈ Σ p log p + (K − 1)/(2N) and E[−log q̂_j] ≈ −log q_j + (1 − q_j)/(2 M q_j).
        value -= (int(seen.sum()) - 1) / (2 * n) + float(np.sum(ratio * (1 - q))) / (2 * m)
    variance = (float(np.sum(p * log_ratio**2)) - float(np.sum(p * log_ratio)) ** 2) / n
    variance += (float(np.sum(q * ratio**2)) - 1) / m
    stderr = math.sqrt(max(variance, 0.0)) / divisor
    value /= divisor
    return Estimate(value, stderr, normal_interval(value, stderr, level), int(n))


def category_counts(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of each distinct value (or distinct row) of samples ``x ~ P`` and ``y ~ Q``, over the categories seen
    in either, for :func:`plugin`.

    Args:
        x: samples of P, shape ``(n,)`` or ``(n, d)`` (a row is one outcome).
        y: samples of Q, shape ``(m,)`` or ``(m, d)``.

    Returns:
        ``(categories, counts_p, counts_q)``: the distinct outcomes (sorted, shape ``(K, d)``) and how often each
        occurs in x and in y.
    """
    xs, ys = _validate.check_points(x, "x"), _validate.check_points(y, "y")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(
            f"x has {xs.shape[1]} value(s) per sample but y has {ys.shape[1]}; both samples must have the same outcomes"
        )
    categories, index = np.unique(np.concatenate([xs, ys]), axis=0, return_inverse=True)
    index = index.reshape(-1)
    size = len(categories)
    counts_p = np.bincount(index[: len(xs)], minlength=size).astype(np.float64)
    counts_q = np.bincount(index[len(xs):], minlength=size).astype(np.float64)
    return categories, counts_p, counts_q
