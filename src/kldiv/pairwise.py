"""All-pairs matrices: ``D[i, j] = divergence(P[i], Q[j])`` for ``P`` of shape (n, k) and ``Q`` of shape (m, k).

KL and cross-entropy use matrix products (one BLAS call instead of n * m loops), accumulated in float64 where
the namespace has it; JS, TVD and Hellinger, whose product forms cancel or do not exist, run the same definitions
as :mod:`kldiv.measures` over blocks of pairs. Divergences that are >= 0 by theorem (KL, JS, TVD, Hellinger) are
never returned negative; NaN (from ``validate=False``) stays NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _backend, _engine, _rows, _validate
from .measures import HELLINGER, JS, TVD, Canon

__all__ = ["kl", "cross_entropy", "js", "tvd", "hellinger"]

_BLOCK = 1 << 20  # elements per block of broadcast pairs


def _canonical_rows(P: Any, Q: Any, from_logits: bool, validate: bool,
                    wide: bool = False) -> tuple[Any, Canon, Canon, Any]:
    """Both sides in canonical form, in the compute dtype, or with ``wide`` in float64 where the namespace (and
    device) has it; also returns the namespace and the output dtype."""
    _validate.check_not_tf("kldiv.pairwise", P, Q)
    xp = _backend.namespace(P, Q)
    like = next((a for a in (P, Q) if _backend._is_array(a) and not isinstance(a, np.ndarray)), None)
    canons = []
    arrays = []
    for x, name in ((P, "P"), (Q, "Q")):
        # one backend for both sides: a NumPy array or list beside a tensor joins the tensor's library and device
        x = _backend.to_array(x, name, xp, like)
        _, (a,), layout = _engine.prepare((x,), (name,), -1)
        if a.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array (one distribution per row), got shape {tuple(a.shape)}; "
                "use kldiv.kl with broadcasting for other layouts"
            )
        arrays.append(a)
    devices = {str(a.device) for a in arrays if hasattr(a, "device") and not isinstance(a, np.ndarray)}
    if len(devices) > 1:
        raise ValueError(f"P and Q are on different devices ({' and '.join(sorted(devices))}); move them to one device")
    if arrays[0].shape[1] != arrays[1].shape[1]:
        raise ValueError(
            f"P has {arrays[0].shape[1]} outcomes per row and Q has {arrays[1].shape[1]}; the rows must describe "
            "the same outcomes"
        )
    out_dtype = _backend.result_dtype(xp, arrays[0].dtype, arrays[1].dtype)
    work = _backend.compute_dtype(xp, out_dtype)
    if wide and _rows.wide(xp, arrays[0]) == getattr(xp, "float64", None):
        work = xp.float64
    check = validate and all(_backend.has_values(a) for a in arrays)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, name in zip(arrays, ("P", "Q"), strict=True):
            loc = _validate.Locator(name, tuple(a.shape), 1, (a.shape[0],))
            eps = float(xp.finfo(a.dtype).eps)
            canons.append(_engine.canonical(xp, xp.astype(a, work), from_logits, check and a.shape[0] > 0, 0, loc, eps))
    return xp, canons[0], canons[1], out_dtype


def _finish(xp: Any, d: Any, out_dtype: Any, base: float | None) -> Any:
    log_base = _validate.check_base(base)
    if log_base:
        d = d / log_base
    return xp.astype(d, out_dtype)


def _cross_term(xp: Any, P: Canon, Q: Canon) -> Any:
    """sum_k p_ik log q_jk as a matrix product, exact at zeros: -inf marks pairs where q_jk = 0 < p_ik."""
    finite_log_q = xp.where(Q.p > 0, Q.lp, 0.0)
    cross = P.p @ xp.matrix_transpose(finite_log_q) if hasattr(xp, "matrix_transpose") else P.p @ finite_log_q.T
    zeros = Q.p == 0
    # without readable values (meta tensors, tracers) the exact-zero correction is always applied
    if not _backend.has_values(zeros) or bool(xp.any(zeros)):
        support = xp.astype(P.p > 0, P.p.dtype)
        missing = support @ xp.matrix_transpose(xp.astype(zeros, P.p.dtype))
        cross = xp.where(missing > 0, -math.inf, cross)
    return cross


def kl(P: Any, Q: Any, *, from_logits: bool = False, base: float | None = None, validate: bool = True) -> Any:
    """Matrix of KL(P_i || Q_j) = sum_k p_ik log(p_ik / q_jk) = -H(P_i) - P_i . log Q_j, shape (n, m).

    One matrix product; pairs where Q_j gives 0 to an outcome P_i gives mass are exactly +inf. The logarithms,
    the entropies and the product are computed in float64 where the namespace has it (float32 and half-precision
    inputs included) and the result is cast to the inputs' dtype: the two terms are of the size of the entropy
    while KL of near-identical rows is orders of magnitude smaller, so in float32 the difference would lose all
    its digits (exactly 0 for P_i != Q_j). Rounding can still leave -1e-16 where P_i = Q_j; KL >= 0 (Gibbs'
    inequality), so negative values are set to 0 (NaN stays NaN).

    References: Kullback and Leibler (1951), On Information and Sufficiency, eq. 2.4.
    """
    _validate.check_base(base)
    xp, Pc, Qc, out_dtype = _canonical_rows(P, Q, from_logits, validate, wide=True)
    with np.errstate(invalid="ignore"):
        negative_entropy = xp.sum(xp.where(Pc.p > 0, Pc.p * Pc.lp, 0.0), axis=-1)
    d = negative_entropy[:, None] - _cross_term(xp, Pc, Qc)
    return _finish(xp, _rows.non_negative(xp, d), out_dtype, base)


def cross_entropy(P: Any, Q: Any, *, from_logits: bool = False, base: float | None = None, validate: bool = True) -> Any:
    """Matrix of H(P_i, Q_j) = -P_i . log Q_j, shape (n, m), +inf where Q_j misses P_i's support.

    The product is accumulated in float64 where the namespace has it, like :func:`kl`.
    """
    _validate.check_base(base)
    xp, Pc, Qc, out_dtype = _canonical_rows(P, Q, from_logits, validate, wide=True)
    return _finish(xp, -_cross_term(xp, Pc, Qc), out_dtype, base)


def _blocked(measure: _engine.Measure, P: Any, Q: Any, from_logits: bool, validate: bool, params: dict) -> tuple:
    xp, Pc, Qc, out_dtype = _canonical_rows(P, Q, from_logits, validate)
    n, m, k = Pc.p.shape[0], Qc.p.shape[0], Pc.p.shape[1]
    step = max(1, _BLOCK // max(1, m * k))
    blocks = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for lo in range(0, n, step):
            a = Canon(Pc.p[lo : lo + step, None, :], Pc.lp[lo : lo + step, None, :])
            b = Canon(Qc.p[None, :, :], Qc.lp[None, :, :])
            blocks.append(measure.value(xp, a, b, **params))
    d = xp.concat(blocks, axis=0) if blocks else xp.zeros((0, m), dtype=Pc.p.dtype)
    return xp, _rows.non_negative(xp, d), out_dtype


def hellinger(P: Any, Q: Any, *, from_logits: bool = False, validate: bool = True) -> Any:
    """Matrix of Hellinger distances H(P_i, Q_j) = sqrt(1 - sum_k sqrt(p_ik q_jk)), shape (n, m), in [0, 1].

    Computed as sqrt(sum_k (sqrt p_ik - sqrt q_jk)^2 / 2), equal on the simplex, over blocks of pairs with the
    definition of :func:`kldiv.hellinger`: exact near P_i = Q_j (exactly 0 on the diagonal of ``hellinger(P, P)``),
    where the product form 1 - sqrt(P) . sqrt(Q)^T cancels (1e-8 instead of 0 even in float64).
    """
    xp, d, out_dtype = _blocked(HELLINGER, P, Q, from_logits, validate, {})
    return _finish(xp, d, out_dtype, None)


def js(P: Any, Q: Any, *, weight: float = 0.5, from_logits: bool = False, base: float | None = None,
       validate: bool = True) -> Any:
    """Matrix of JS_w(P_i, Q_j), shape (n, m): the definition of :func:`kldiv.js` over blocks of pairs.

    JS_w(P, Q) = w KL(P || M) + (1 - w) KL(Q || M) with M = w P + (1 - w) Q; >= 0, so rounding below 0 is set to 0.

    References: Lin (1991), Divergence measures based on the Shannon entropy, eq. 4.1.
    """
    w = _validate.check_in_unit_interval("weight", weight)
    _validate.check_base(base)
    xp, d, out_dtype = _blocked(JS, P, Q, from_logits, validate, {"weight": w})
    return _finish(xp, d, out_dtype, base)


def tvd(P: Any, Q: Any, *, from_logits: bool = False, validate: bool = True) -> Any:
    """Matrix of total variation distances 1/2 sum_k |P_ik - Q_jk|, shape (n, m), over blocks of pairs."""
    xp, d, out_dtype = _blocked(TVD, P, Q, from_logits, validate, {})
    return _finish(xp, d, out_dtype, None)
