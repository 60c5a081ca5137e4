"""The k-nearest-neighbour estimator of KL(P ‖ Q) from samples (Wang, Kulkarni and Verdú 2009)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .. import _validate
from ._estimate import Estimate


def _kth_distance(tree: Any, points: np.ndarray, order: np.ndarray, workers: int) -> np.ndarray:
    """Distance from each point to its ``order[i]``-th nearest neighbour in ``tree`` (queried per distinct order)."""
    out = np.empty(len(points))
    for value in np.unique(order):
        rows = order == value
        out[rows] = tree.query(points[rows], k=[int(value)], workers=workers)[0][:, 0]
    return out


def knn_terms(x: np.ndarray, y: np.ndarray, k: int, adaptive: bool, workers: int = -1) -> tuple[np.ndarray, int]:
    """Per-point terms ``t_i`` with ``D̂ = mean(t) + log(m / (n − 1))``, and how many points had zero-distance ties."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    n, d = x.shape
    m = len(y)
    tree_x, tree_y = cKDTree(x), cKDTree(y)
    # The (k+1)-th neighbour of x_i within x, counting x_i itself at distance 0, is its k-th neighbour in x \ {x_i}.
    rho = tree_x.query(x, k=[k + 1], workers=workers)[0][:, 0]
    nu = tree_y.query(x, k=[k], workers=workers)[0][:, 0]
    l_order = np.full(n, k)
    k_order = np.full(n, k)

    tied = (rho == 0) | (nu == 0)
    if tied.any():
        # Raise k past the tie group: the k-th neighbour *beyond* the copies of x_i, never an epsilon.
        rows = np.flatnonzero(rho == 0)
        if rows.size:
            copies = tree_x.query_ball_point(x[rows], r=0.0, return_length=True, workers=workers) - 1
            l_order[rows] = k + copies
            if (l_order[rows] > n - 1).any():
                raise ValueError(
                    f"x has too few distinct points: a point of x has {int(copies.max())} copies, so no k={k}-th "
                    "neighbour at positive distance exists; x needs at least k+1 points different from each point"
                )
            rho[rows] = _kth_distance(tree_x, x[rows], l_order[rows] + 1, workers)
        rows = np.flatnonzero(nu == 0)
        if rows.size:
            copies = tree_y.query_ball_point(x[rows], r=0.0, return_length=True, workers=workers)
            k_order[rows] = k + copies
            if (k_order[rows] > m).any():
                raise ValueError(
                    f"y has too few distinct points: {int(copies.max())} points of y coincide with a point of x, so "
                    f"no k={k}-th neighbour in y at positive distance exists; y needs at least k points elsewhere"
                )
            nu[rows] = _kth_distance(tree_y, x[rows], k_order[rows], workers)

    if adaptive:
        # WKV 2009, Sec. III-B: one radius per point, eps_i = max(rho_k, nu_k), and neighbour counts inside it.
        eps = np.maximum(rho, nu)
        radius = eps * (1 + 1e-10)
        l_new = np.maximum(tree_x.query_ball_point(x, r=radius, return_length=True, workers=workers) - 1, l_order)
        k_new = np.maximum(tree_y.query_ball_point(x, r=radius, return_length=True, workers=workers), k_order)
        grew = l_new > l_order
        if grew.any():
            rho[grew] = _kth_distance(tree_x, x[grew], l_new[grew] + 1, workers)
        grew = k_new > k_order
        if grew.any():
            nu[grew] = _kth_distance(tree_y, x[grew], k_new[grew], workers)
        l_order, k_order = l_new, k_new

    terms = d * (np.log(nu) - np.log(rho)) + digamma(l_order) - digamma(k_order)
    return terms, int(tied.sum())


def knn(
    x: Any,
    y: Any,
    *,
    k: int = 1,
    adaptive: bool = False,
    ci: float | None = None,
    resamples: int = 100,
    seed: int | None = None,
    base: float | None = None,
    workers: int = -1,
) -> Estimate:
    r"""k-nearest-neighbour estimate of KL(P ‖ Q) from samples ``x ~ P`` (n points) and ``y ~ Q`` (m points).

    With ``ρ_l(i)`` the distance from ``x_i`` to its l-th nearest neighbour in ``x \ {x_i}`` and ``ν_k(i)`` the
    distance to its k-th nearest neighbour in ``y`` (Euclidean, d dimensions), Wang, Kulkarni and Verdú (2009,
    eq. 17) give

        D̂ = (d/n) Σ_i log(ν_{k_i}(i) / ρ_{l_i}(i)) + (1/n) Σ_i [ψ(l_i) − ψ(k_i)] + log(m / (n − 1))

    * fixed k (``adaptive=False``): ``l_i = k_i = k`` and the digamma terms cancel (their eq. 5);
    * ``adaptive=True``, the bias-reduced variant (their Sec. III-B): for each point the radius
      ``ε_i = max(ρ_k(i), ν_k(i))`` and the neighbour counts ``l_i``, ``k_i`` are the numbers of points of x and y
      inside it, so both densities are estimated at the same scale.

    Neighbours come from SciPy ``cKDTree`` queries, O((n + m) log(n + m)) in low dimension.

    Duplicate points: if ``x_i``'s k-th neighbour lies at distance 0 (copies of ``x_i`` in x or y), k is raised
    past the tie group for that point and that side only (``l_i = k + copies in x``, ``k_i = k + copies in y``), and
    the digamma terms above account for the unequal orders; no epsilon is added. A ``UserWarning`` says how many
    points were affected. Too few distinct points (e.g. constant samples) is a ``ValueError``.

    Invariant under translation, rotation and uniform scaling of both samples together. Units: nats (or
    ``base``). The standard error is ``std(per-point terms) / sqrt(n)``, which ignores the weak dependence
    between terms; with ``ci`` the interval and the standard error come instead from ``resamples`` subsamples of
    half the points drawn without replacement, rescaled by ``sqrt(1/2)`` (Politis and Romano 1994).

    Args:
        x: samples of P, shape ``(n, d)`` or ``(n,)``; NumPy, lists or torch tensors (not differentiable).
        y: samples of Q, shape ``(m, d)`` or ``(m,)``.
        k: neighbour order (the base order for ``adaptive=True``); needs ``n ≥ k + 1`` and ``m ≥ k``.
        adaptive: use the bias-reduced adaptive neighbour counts.
        ci: confidence level for a subsampling interval (e.g. 0.95), or None for none.
        resamples: number of subsamples for ``ci``.
        seed: seed of the subsampling.
        base: logarithm base of the result (None for nats, 2 for bits).
        workers: threads for the KD-tree queries (-1: all cores).

    Returns:
        ``Estimate(value, stderr, ci, n)`` of KL(P ‖ Q).

    References:
        Q. Wang, S. R. Kulkarni and S. Verdú, "Divergence estimation for multidimensional densities via
        k-nearest-neighbor distances", IEEE Trans. Inf. Theory 55(5), 2392–2405, 2009.
        D. N. Politis and J. P. Romano, "Large sample confidence regions based on subsamples under minimal
        assumptions", Ann. Statist. 22(4), 1994.
    """
    k = _validate.check_integer_at_least("k", k, 1, "a positive integer (the neighbour order)")
    level = _validate.check_level(ci)
    divisor = _validate.check_base(base) or 1.0  # nats: 1
    _validate.check_flag("adaptive", adaptive)
    workers = _validate.check_workers(workers)
    xs, ys = _validate.check_points(x, "x"), _validate.check_points(y, "y")
    n, m = len(xs), len(ys)
    _validate.check_knn_samples(xs, ys, k)
    terms, tied = knn_terms(xs, ys, k, adaptive, workers)
    if tied:
        warnings.warn(
            f"{tied} point(s) of x had duplicate neighbours at distance 0; k was raised past each tie group "
            "for those points (see kldiv.estimate.knn)",
            UserWarning,
            stacklevel=2,
        )
    value = float(np.mean(terms) + math.log(m / (n - 1)))
    stderr = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    interval = None
    if level is not None:
        resamples = _validate.check_integer_at_least("resamples", resamples, 2, "an integer >= 2")
        _validate.check_knn_subsamples(n, m, k)
        half_n, half_m = n // 2, m // 2
        rng = np.random.default_rng(_validate.check_seed("seed", seed))
        values = np.empty(resamples)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for b in range(resamples):
                sx = xs[rng.choice(n, half_n, replace=False)]
                sy = ys[rng.choice(m, half_m, replace=False)]
                t, _ = knn_terms(sx, sy, k, adaptive, workers)
                values[b] = np.mean(t) + math.log(half_m / (half_n - 1))
        scale = math.sqrt(half_n / n)
        deviations = (values - value) * scale
        low, high = np.quantile(deviations, [(1 - level) / 2, (1 + level) / 2])
        interval = ((value - high) / divisor, (value - low) / divisor)
        stderr = float(np.std(values, ddof=1) * scale)
    return Estimate(value / divisor, stderr / divisor, interval, n)
