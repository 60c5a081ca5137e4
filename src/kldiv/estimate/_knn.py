"""The k-nearest-neighbour estimator of KL(P ‖ Q) from samples (Wang, Kulkarni and Verdú 2009), with a standard
error and a bias estimate from disjoint folds."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .. import _validate
from .._config import get_config
from ._estimate import DiscreteSampleWarning, Estimate, normal_interval


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
    leaf = get_config().knn_leaf_size
    tree_x, tree_y = cKDTree(x, leafsize=leaf), cKDTree(y, leafsize=leaf)
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


DISCRETE_SHARE = 0.5  # above this share of tied points of x, the samples look discrete
FOLDS = 10  # disjoint folds per partition: the fold estimates give the standard error and the bias trend
MIN_FOLD = 20  # points of x (and of y) per fold; fewer and the fold estimates say little about size n


def _estimate(x: np.ndarray, y: np.ndarray, k: int, adaptive: bool, workers: int) -> tuple[float, int]:
    terms, tied = knn_terms(x, y, k, adaptive, workers)
    return float(np.mean(terms) + math.log(len(y) / (len(x) - 1))), tied


def fold_count(n: int, m: int, k: int) -> int:
    """Folds per partition: up to ``FOLDS``, each holding at least ``max(MIN_FOLD, k + 1)`` points of x and
    ``max(MIN_FOLD, k)`` of y (fewer than 2 means no fold-based error: the per-point formula is used)."""
    return max(0, min(FOLDS, n // max(MIN_FOLD, k + 1), m // max(MIN_FOLD, k)))


def bias_rate(d: int) -> float:
    """The assumed rate ``a`` of the k-NN bias, ``bias(n) ∝ n^(−a)`` with ``a = min(1/2, 1/d)``.

    Theory gives ``O(n^(−2/d))`` for smooth densities away from boundaries (Singh and Póczos 2016), slower where
    the densities have tails; the rates measured on Gaussian pairs (benchmarks/RESULTS.md, Estimators) lie
    between 0.36 and 0.62 in 1-D and between 0.07 and 0.14 in 10-D, which ``min(1/2, 1/d)`` follows.
    """
    return min(0.5, 1.0 / d)


def _fold_estimates(xs: np.ndarray, ys: np.ndarray, k: int, adaptive: bool, workers: int, folds: int,
                    partitions: int, rng: np.random.Generator) -> np.ndarray | None:
    """Estimates on ``partitions`` random partitions of x and y into ``folds`` disjoint folds, shape
    (partitions, folds); None when a fold is too degenerate to estimate (so many duplicates that a fold lacks k
    distinct neighbours), in which case the caller falls back to the per-point standard error."""
    estimates = np.empty((partitions, folds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ties were reported once, for the whole sample
        for r in range(partitions):
            parts_x = np.array_split(rng.permutation(len(xs)), folds)
            parts_y = np.array_split(rng.permutation(len(ys)), folds)
            for b in range(folds):
                try:
                    estimates[r, b] = _estimate(xs[parts_x[b]], ys[parts_y[b]], k, adaptive, workers)[0]
                except ValueError:
                    return None
    return estimates


def knn(
    x: Any,
    y: Any,
    *,
    k: int = 1,
    adaptive: bool = False,
    ci: float | None = None,
    resamples: int = 20,
    seed: int | None = 0,
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

    Neighbours come from SciPy ``cKDTree`` queries (leaf size ``kldiv.get_config().knn_leaf_size``),
    O((n + m) log(n + m)) in low dimension, slower in high dimension (10⁵ points in 10-D with k=5: see the
    README for the measured time).

    **Uncertainty.** The estimator is consistent but biased at finite n, and in high dimension the bias dominates
    (≈ −0.12 nats for a true 0.5 in 10-D at n = 10⁴, eight times the sampling noise). So the result carries two
    numbers from the same ``resamples`` fold estimates: x and y are split at random into ``B`` disjoint folds
    (``B`` = 10 while every fold keeps 20 points; ``resamples / B`` partitions), and each fold gives an estimate
    ``D̂_b`` at size n/B.

    * ``stderr`` = ``sd(D̂_b) / sqrt(B)`` (variance ∝ 1/n), the sampling noise of ``D̂``; it never depends on
      ``ci``. With fewer than 2 folds possible it is ``std(per-point terms) / sqrt(n)``, which ignores the
      dependence between terms, and so it is when a fold holds too few distinct points (heavy duplication).
    * ``bias`` = ``(mean(D̂_b) − D̂) / (B^a − 1)``: if the bias falls like ``n^(−a)``, the folds' mean lies
      ``B^a − 1`` times the bias away from ``D̂`` (a Richardson step), with ``a`` from :func:`bias_rate`.
    * ``ci`` (a level such as 0.95): the interval ``D̂ − bias ± z · stderr · sqrt(1 + 2c + 2c²)``,
      ``c = 1/(B^a − 1)``, which holds the bias correction's own noise: the factor is the standard deviation of
      ``(1 + c) D̂ − c·mean(D̂_b)`` in units of ``stderr`` if the two were uncorrelated (they are positively
      correlated, so this errs wide; assuming correlation 1/2 measured 85–90 % coverage in 1-D, too little).
      It is an interval for the true divergence, so it need not contain ``value`` (which stays the raw ``D̂``),
      and it is clipped at 0 (KL ≥ 0).
      Its coverage on known answers is recorded in benchmarks/RESULTS.md; it falls short where P lives in the
      far tail of Q (KL ≈ 4.5 between 1-D Gaussians), where the bias decays more slowly than assumed.

    Duplicate points: if ``x_i``'s k-th neighbour lies at distance 0 (copies of ``x_i`` in x or y), k is raised
    past the tie group for that point and that side only (``l_i = k + copies in x``, ``k_i = k + copies in y``), and
    the digamma terms above account for the unequal orders; no epsilon is added. A ``UserWarning`` says how many
    points were affected; when more than ``DISCRETE_SHARE`` (half) of the points of x are tied the samples look
    discrete, the k-NN estimator (which assumes densities) does not apply, and the warning (a
    :class:`DiscreteSampleWarning`) points to
    :func:`kldiv.estimate.plugin` on category counts (``kldiv estimate --discrete``). Too few distinct points
    (e.g. constant samples) is a ``ValueError``.

    Invariant under translation, rotation and uniform scaling of both samples together. Units: nats (or
    ``base``).

    Args:
        x: samples of P, shape ``(n, d)`` or ``(n,)``; NumPy, lists or torch tensors (not differentiable).
        y: samples of Q, shape ``(m, d)`` or ``(m,)``.
        k: neighbour order (the base order for ``adaptive=True``); needs ``n ≥ k + 1`` and ``m ≥ k``.
        adaptive: use the bias-reduced adaptive neighbour counts.
        ci: confidence level of the interval (e.g. 0.95), or None for none.
        resamples: fold estimates behind ``stderr``, ``bias`` and ``ci`` (rounded up to whole partitions).
        seed: seed of the random partitions into folds (results are deterministic for a given seed).
        base: logarithm base of the result (None for nats, 2 for bits).
        workers: threads for the KD-tree queries (-1: all cores).

    Returns:
        ``Estimate(value, stderr, ci, n, bias)`` of KL(P ‖ Q).

    References:
        Q. Wang, S. R. Kulkarni and S. Verdú, "Divergence estimation for multidimensional densities via
        k-nearest-neighbor distances", IEEE Trans. Inf. Theory 55(5), 2392–2405, 2009.
        S. Singh and B. Póczos, "Finite-sample analysis of fixed-k nearest neighbor density functional
        estimators", NeurIPS 2016.
        D. N. Politis, J. P. Romano and M. Wolf, "Subsampling", Springer 1999 (estimates at smaller sizes for
        the variance and the bias).
    """
    k = _validate.check_integer_at_least("k", k, 1, "a positive integer (the neighbour order)")
    level = _validate.check_level(ci)
    divisor = _validate.check_base(base) or 1.0  # nats: 1
    _validate.check_flag("adaptive", adaptive)
    workers = _validate.check_workers(workers)
    resamples = _validate.check_integer_at_least("resamples", resamples, 2, "an integer >= 2")
    xs, ys = _validate.check_points(x, "x"), _validate.check_points(y, "y")
    n, m = len(xs), len(ys)
    _validate.check_knn_samples(xs, ys, k)
    terms, tied = knn_terms(xs, ys, k, adaptive, workers)
    if tied:
        category = DiscreteSampleWarning if tied > DISCRETE_SHARE * n else UserWarning
        warnings.warn(_validate.knn_ties_message(tied, n, DISCRETE_SHARE), category, stacklevel=2)
    value = float(np.mean(terms) + math.log(m / (n - 1)))
    folds = fold_count(n, m, k)
    rng = np.random.default_rng(_validate.check_seed("seed", seed))
    estimates = _fold_estimates(xs, ys, k, adaptive, workers, folds, -(-resamples // folds), rng) if folds >= 2 else None
    bias = None
    if estimates is None:
        stderr = float(np.std(terms, ddof=1) / math.sqrt(n))
        spread = stderr
    else:
        stderr = float(math.sqrt(np.mean(np.var(estimates, axis=1, ddof=1)) / folds))
        c = 1.0 / (folds ** bias_rate(xs.shape[1]) - 1.0)
        bias = float(c * (np.mean(estimates) - value))
        spread = stderr * math.sqrt(1 + 2 * c + 2 * c * c)
    interval = None
    if level is not None:
        low, high = normal_interval(value - (bias or 0.0), spread, level)
        interval = (max(low, 0.0) / divisor, max(high, 0.0) / divisor)  # KL >= 0
    return Estimate(value / divisor, stderr / divisor, interval, n, None if bias is None else bias / divisor)
