"""All-pairs matrices: ``D[i, j] = divergence(P[i], Q[j])`` for ``P`` of shape (n, k) and ``Q`` of shape (m, k).

KL, cross-entropy and Hellinger use matrix products (one BLAS call instead of n * m loops); JS and TVD,
which have no product form, run the same definitions as :mod:`kldiv.measures` over blocks of pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _backend, _engine, _validate
from .measures import JS, TVD, Canon

__all__ = ["kl", "cross_entropy", "js", "tvd", "hellinger"]

_BLOCK = 1 << 20  # elements per block of broadcast pairs


def _canonical_rows(P: Any, Q: Any, from_logits: bool, validate: bool) -> tuple[Any, Canon, Canon, Any]:
    xp = _backend.namespace(P, Q)
    canons = []
    arrays = []
    for x, name in ((P, "P"), (Q, "Q")):
        _, (a,), layout = _engine.prepare((x,), (name,), -1)
        if a.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array (one distribution per row), got shape {tuple(a.shape)}; "
                "use kldiv.kl with broadcasting for other layouts"
            )
        arrays.append(a)
    if arrays[0].shape[1] != arrays[1].shape[1]:
        raise ValueError(
            f"P has {arrays[0].shape[1]} outcomes per row and Q has {arrays[1].shape[1]}; the rows must describe "
            "the same outcomes"
        )
    out_dtype = _backend.result_dtype(xp, arrays[0].dtype, arrays[1].dtype)
    work = _backend.compute_dtype(xp, out_dtype)
    check = validate and not any(_backend.is_tracing(a) for a in arrays)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, name in zip(arrays, ("P", "Q"), strict=True):
            loc = _validate.Locator(name, tuple(a.shape), 1, (a.shape[0],))
            canons.append(_engine.canonical(xp, xp.astype(a, work), from_logits, check, 0, loc, float(xp.finfo(a.dtype).eps)))
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
    if bool(xp.any(zeros)):
        support = xp.astype(P.p > 0, P.p.dtype)
        missing = support @ xp.matrix_transpose(xp.astype(zeros, P.p.dtype))
        cross = xp.where(missing > 0, -math.inf, cross)
    return cross


def kl(P: Any, Q: Any, *, from_logits: bool = False, base: float | None = None, validate: bool = True) -> Any:
    """Matrix of KL(P_i || Q_j) = -H(P_i) - P_i . log Q_j, shape (n, m).

    One matrix product; pairs where Q_j gives 0 to an outcome P_i gives mass are exactly +inf. The result
    is clipped at 0 from below, since rounding in the product can leave -1e-16 where P_i = Q_j.
    """
    _validate.check_base(base)
    xp, Pc, Qc, out_dtype = _canonical_rows(P, Q, from_logits, validate)
    with np.errstate(invalid="ignore"):
        negative_entropy = xp.sum(xp.where(Pc.p > 0, Pc.p * Pc.lp, 0.0), axis=-1)
    d = negative_entropy[:, None] - _cross_term(xp, Pc, Qc)
    d = xp.where(d > 0, d, 0.0)
    return _finish(xp, d, out_dtype, base)


def cross_entropy(P: Any, Q: Any, *, from_logits: bool = False, base: float | None = None, validate: bool = True) -> Any:
    """Matrix of H(P_i, Q_j) = -P_i . log Q_j, shape (n, m), +inf where Q_j misses P_i's support."""
    _validate.check_base(base)
    xp, Pc, Qc, out_dtype = _canonical_rows(P, Q, from_logits, validate)
    return _finish(xp, -_cross_term(xp, Pc, Qc), out_dtype, base)


def hellinger(P: Any, Q: Any, *, from_logits: bool = False, validate: bool = True) -> Any:
    """Matrix of Hellinger distances sqrt(1 - sqrt(P_i) . sqrt(Q_j)), shape (n, m).

    The product is accumulated in float64, so the absolute error near H = 0 is about 1e-8.
    """
    xp, Pc, Qc, out_dtype = _canonical_rows(P, Q, from_logits, validate)
    wide = xp.float64 if hasattr(xp, "float64") else Pc.p.dtype
    a, b = xp.astype(xp.sqrt(Pc.p), wide), xp.astype(xp.sqrt(Qc.p), wide)
    bc = a @ xp.matrix_transpose(b)
    return xp.astype(xp.sqrt(xp.clip(1 - bc, 0.0, 1.0)), out_dtype)


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
    return xp, d, out_dtype


def js(P: Any, Q: Any, *, weight: float = 0.5, from_logits: bool = False, base: float | None = None,
       validate: bool = True) -> Any:
    """Matrix of JS_w(P_i, Q_j), shape (n, m): the definition of :func:`kldiv.js` over blocks of pairs."""
    w = _validate.check_in_unit_interval("weight", weight)
    _validate.check_base(base)
    xp, d, out_dtype = _blocked(JS, P, Q, from_logits, validate, {"weight": w})
    return _finish(xp, d, out_dtype, base)


def tvd(P: Any, Q: Any, *, from_logits: bool = False, validate: bool = True) -> Any:
    """Matrix of total variation distances 1/2 sum_k |P_ik - Q_jk|, shape (n, m)."""
    xp, d, out_dtype = _blocked(TVD, P, Q, from_logits, validate, {})
    return _finish(xp, d, out_dtype, None)
