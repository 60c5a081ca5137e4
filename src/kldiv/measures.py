"""The discrete measures, each defined once as a value and a vector-Jacobian product.

Every function here reduces the last axis of canonical inputs (``Canon``: probabilities ``p`` and
log-probabilities ``lp``) and works with any array namespace ``xp``. The public functions at the bottom
feed them through :mod:`kldiv._engine`; :mod:`kldiv.grad`, :mod:`kldiv.nn` and :mod:`kldiv.pairwise` reuse
the same definitions.

Conventions, exact and without any epsilon: ``0 * log(0 / q) = 0`` for every ``q``; ``p > 0`` where
``q = 0`` makes KL, cross-entropy and Rényi of order > 1 equal ``+inf``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import rel_entr as _rel_entr

from . import _backend, _dispatch, _engine, _rows, _validate
from ._engine import Canon, Measure

INF = math.inf


def _plogr(xp: Any, P: Canon, r: Any) -> Any:
    """Terms ``p * r`` with ``0 * r = 0`` where the probability is 0 (``P.lp = -inf``, whatever ``r`` is) and ``r``
    where ``r`` is infinite (a positive probability, even one that underflowed, against an impossible outcome).
    NaN stays NaN: the selects test for ``-inf``, so they never drop a NaN."""
    term = P.p * r
    if xp is np and np.isfinite(r).all():  # the common case skips both selects (a third of a KL chunk's cost)
        return term
    return xp.where(P.lp == -INF, 0.0, xp.where(xp.isinf(r), r, term))


def _ratio(xp: Any, P: Canon, Q: Canon) -> Any:
    """``p / q`` with ``0 / q = 0`` for every ``q``, and ``p / 0 = inf`` for ``p > 0``."""
    return xp.where(P.lp == -INF, 0.0, P.p / Q.p)


def _sum(xp: Any, x: Any) -> Any:
    if isinstance(x, np.ndarray):  # the ufunc's reduce: np.sum's wrapper costs twice the sum of a small block
        return np.add.reduce(x, axis=-1)
    return xp.sum(x, axis=-1)


_non_negative = _rows.non_negative


def _log_mix(xp: Any, r: Any, w: float, rest: float | None = None) -> Any:
    """``log(w + rest e^r)`` (rest = 1 - w unless given: pass it where 1 - w would round away the weight's
    digits), the log of a mixture's ratio m / p with r = log(q / p) and m = w p + rest q, with no cancellation:
    ``log1p(rest expm1(r))`` for -1 <= r <= 30, a log-sum of two positives below (1 + rest expm1(r) cancels to 0
    where w and e^r are below the rounding of 1), and ``r + log(rest + w e^-r)`` above (no overflow of e^r).
    r = -inf gives log w, r = +inf gives +inf."""
    rest = 1 - w if rest is None else rest
    low = xp.logaddexp(xp.zeros_like(r) + math.log(w), math.log(rest) + r)
    high = r + xp.log(rest + w * xp.exp(-xp.where(r > 30, r, 30.0)))
    middle = xp.log1p(rest * xp.expm1(xp.clip(r, min=-1.0, max=30.0)))
    return xp.where(r > 30, high, xp.where(r < -1, low, middle))


def _mix_terms(xp: Any, A: Canon, B: Canon, w: float, rest: float | None = None) -> tuple[Any, Any, Any]:
    """For probabilities with M = w A + (1 - w) B, per entry: the terms of KL(A || M), ``log(m / a)`` and m.

    The terms are ``a (y - log1p(y))`` with y = m / a - 1 = (1 - w)(b - a) / a, each >= 0 and summing to
    KL(A || M) because sum m = sum a ((1 - w) b where a = 0); ``log(m / a)`` is ``log1p(y)`` for -1/2 <= y <= 1
    (where ``log m - log a`` would cancel: m close to a, as for a weight near 0 or 1 or near-identical sides) and
    ``log m - log a`` beyond, with m = w a + (1 - w) b summed directly (1 + y rounds to 0 where m is below the
    rounding of a); finite but meaningless where a = 0. ``rest`` is 1 - w (see :func:`_log_mix`)."""
    rest = 1 - w if rest is None else rest
    d = rest * (B.p - A.p)  # m - a
    m = w * A.p + rest * B.p
    zero = A.p == 0
    y = d / xp.where(zero, 1.0, A.p)
    far = (y > 1) | (y < -0.5)
    log_ratio = xp.where(far, xp.log(m) - xp.where(zero, 0.0, A.lp), xp.log1p(xp.where(far, 0.0, y)))
    term = xp.where(zero, d, xp.where(far, d - A.p * log_ratio, A.p * _excess(xp, y)))
    return term, log_ratio, m


def _log_ratio_limit(xp: Any, A: Canon, log_ratio: Any, m: Any, w: float) -> Any:
    """d/da of KL(A || M)'s leading term, log(a / m): -log(m / a) where a > 0, -inf where a = 0 < m, and the
    limit -log(w) where a = b = 0."""
    return xp.where(A.p > 0, -log_ratio, xp.where(m > 0, -INF, -math.log(w)))


def _zero_where_impossible(xp: Any, S: _rows.Side, term: Any) -> Any:
    """``term`` with 0 where the side's probability is 0 or underflowed (their terms vanish in the limit)."""
    if not S.edges:  # finite logits: every term is finite, and 0 where p underflowed
        return term
    return xp.where(S.p == 0, 0.0, term)


# --- entropy -------------------------------------------------------------------------------------


def _entropy_value(xp, P: Canon) -> Any:
    return _non_negative(xp, 0.0 - _sum(xp, _plogr(xp, P, P.lp)))  # 0.0 - x, not -x: no -0.0 for one-hot P


def _entropy_vjp(xp, P: Canon, value, logits: bool) -> tuple[Any]:
    if logits:
        return (-_plogr(xp, P, P.lp),)  # d/dlog p_i = -p_i (log p_i + 1); the -p_i term drops out
    return (-(P.lp + 1),)  # +inf at p_i = 0, the one-sided derivative


def _entropy_sums(xp, P: _rows.Side) -> tuple[Any]:
    return (_rows.row_sum(xp, _zero_where_impossible(xp, P, P.p * P.x)),)


def _entropy_finish(xp, sums, log_z) -> Any:
    # H = -sum p (x - log z) = log z - sum p x
    return _non_negative(xp, log_z - sums[0])


def _entropy_grad(xp, sides, sums, i) -> Any:
    # -p (log p + H) = -p (x - sum p x): the row constant log z cancels
    (P,) = sides
    return _zero_where_impossible(xp, P, P.p * (_rows.cast(xp, sums[0], P.x.dtype)[..., None] - P.x))


ENTROPY = Measure("entropy", _entropy_value, _entropy_vjp, _rows.RowForm(_entropy_sums, _entropy_finish, _entropy_grad))


# --- cross-entropy -------------------------------------------------------------------------------


def _cross_entropy_value(xp, P: Canon, Q: Canon) -> Any:
    return _non_negative(xp, 0.0 - _sum(xp, _plogr(xp, P, Q.lp)))


def _cross_entropy_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    if logits:
        return -_plogr(xp, P, Q.lp), -P.p
    return -Q.lp, -_ratio(xp, P, Q)


def _infinite_where_missing(xp, P: _rows.Side, Q: _rows.Side, term: Any, sign: float) -> Any:
    """``term`` with 0 where P's probability is 0 and ``sign * inf`` where P is possible (its logit finite, even if
    its probability underflowed) but Q is not: the terms of KL and cross-entropy at the support's edges."""
    if not (P.edges or Q.edges):
        return term
    term = xp.where(P.x == -INF, 0.0, term)
    return xp.where((Q.x == -INF) & (P.x > -INF), sign * INF, term)


def _cross_entropy_sums(xp, P: _rows.Side, Q: _rows.Side) -> tuple[Any]:
    return (_rows.row_sum(xp, _infinite_where_missing(xp, P, Q, P.p * Q.x, -1.0)),)


def _cross_entropy_finish(xp, sums, log_z_p, log_z_q) -> Any:
    # H(P, Q) = -sum p (y - log z_q) = log z_q - sum p y, with y Q's shifted logits
    return _non_negative(xp, _rows.poison(xp, log_z_q - sums[0], log_z_p))


def _cross_entropy_grad(xp, sides, sums, i) -> Any:
    P, Q = sides
    if i == 1:
        return Q.p - P.p
    # -p (log q + H) = p (sum p y - y): inf where q_i = 0 < p_i, -inf elsewhere on P's support when H = inf
    g = _zero_where_impossible(xp, P, P.p * (_rows.cast(xp, sums[0], P.x.dtype)[..., None] - Q.x))
    return _infinite_where_missing(xp, P, Q, g, 1.0) if Q.edges else g


CROSS_ENTROPY = Measure(
    "cross_entropy", _cross_entropy_value, _cross_entropy_vjp,
    _rows.RowForm(_cross_entropy_sums, _cross_entropy_finish, _cross_entropy_grad),
)


# --- KL --------------------------------------------------------------------------------------------


def _kl_value(xp, P: Canon, Q: Canon) -> Any:
    if not (P.has_lp or Q.has_lp) and (xp is np or _backend.is_torch(P.p) and not _backend.is_tracing(P.p)):
        # probabilities, eagerly: sum p log(p / q), one log per entry (not two), and log(p / q) is exact to the
        # rounding of p / q where log p - log q loses |log p| ulps; any row with an edge (a zero, an overflowing
        # or underflowing ratio) comes out NaN or infinite and takes the guarded formula below. NumPy: SciPy's
        # rel_entr, the same p log(p / q) in one ufunc (0 where p = 0)
        value = _sum(xp, _rel_entr(P.p, Q.p) if xp is np else P.p * xp.log(P.p / Q.p))
        if xp is np and math.isfinite(value if value.ndim == 0 else np.add.reduce(value, axis=None)):  # any inf or NaN shows in the sum
            return _non_negative(xp, value)
        fast = xp.isfinite(value)
        if bool(fast.all()):
            return _non_negative(xp, value)
        return _non_negative(xp, xp.where(fast, value, _sum(xp, _plogr(xp, P, P.lp - Q.lp))))
    return _non_negative(xp, _sum(xp, _plogr(xp, P, P.lp - Q.lp)))


def _kl_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    if logits:
        return _plogr(xp, P, P.lp - Q.lp), -P.p
    # d/dp_i = log(p_i / q_i) + 1 (-inf at p_i = 0 < q_i, +inf where q_i = 0); d/dq_i = -p_i / q_i
    return xp.where(Q.lp == -INF, INF, P.lp - Q.lp) + 1, -_ratio(xp, P, Q)


def _excess(xp, y: Any) -> Any:
    """``y - log1p(y)`` for y >= -1: non-negative, ~y^2 / 2 for small y (from its series there)."""
    return _rows.log1p_excess(xp, y)




def _kl_terms(xp, P: _rows.Side, Q: _rows.Side) -> tuple[Any, Any]:
    """Per-entry terms of KL(P || Q) = sum p (e^r - 1 - r) with r = log(q / p), and r.

    Each term is >= 0 and the sum has no cancellation: it equals sum p log(p / q) because sum p e^r = sum q = 1.
    Unlike sum p (x - y) + log z_q - log z_p, it is insensitive to first order to the rounding of the sums of
    exponentials (a shift of r by e changes it by e (sum q - 1) = 0), which in float32 would cost 3e-5 of the
    value of a small KL. Where r > 1 the same term is written q - p (1 + r) (no overflow of e^r). Where p = 0
    the term is q: sum p e^r covers P's support only, so KL = sum_{p > 0} p (e^r - 1 - r) + sum_{p = 0} q."""
    r = _rows.log_ratio(xp, P, Q)
    if not (P.edges or Q.edges):  # tame sides: p is a normal float and e^r finite, no select is needed
        if _rows.compiling(r):
            return _rows.weighted_excess(xp, r, P.p, Q.p), r
        # NumPy's float32 expm1 is 0.5 ulp too large on average, which expm1(r) - r turns into 2.5e-6 relative
        # error on near-identical rows: it is taken in float64 there (3e-8)
        y = np.expm1(r, dtype=np.float64) if xp is np else xp.expm1(r)
        y -= r  # p (expm1(r) - r): 2e-7 median relative error in float32 on near-identical rows
        y *= P.p
        return y, r
    e = xp.expm1(r)
    # |r| <= 1: y - log1p(y) with y = e^r - 1 (log1p(y) = r, its rounding correlated with y's: 3e-7 median
    # relative error in float32 on near-identical rows, 2e-6 for e^r - 1 - r); r < -1: e^r - 1 - r directly
    term = xp.where(r > 1, Q.p - P.p * (1 + r), P.p * xp.where(r < -1, e - r, _excess(xp, e)))
    term = xp.where(P.x == -INF, Q.p, term)
    return xp.where((Q.x == -INF) & (P.x > -INF), INF, term), r


def _kl_sums(xp, P: _rows.Side, Q: _rows.Side) -> tuple[Any]:
    return (_rows.row_sum(xp, _kl_terms(xp, P, Q)[0]),)


def _kl_finish(xp, sums, log_z_p, log_z_q) -> Any:
    return _non_negative(xp, _rows.poison(xp, sums[0], log_z_p, log_z_q))


def _kl_grad(xp, sides, sums, i) -> Any:
    P, Q = sides
    if i == 1:
        return Q.p - P.p
    # p (log p - log q - KL) = -p (r + KL)
    r = _rows.log_ratio(xp, P, Q)
    g = _zero_where_impossible(xp, P, -P.p * (r + _rows.cast(xp, sums[0], P.x.dtype)[..., None]))
    return xp.where((Q.x == -INF) & (P.x > -INF), INF, g) if Q.edges else g


KL = Measure("kl", _kl_value, _kl_vjp, _rows.RowForm(_kl_sums, _kl_finish, _kl_grad))


# --- Jensen-Shannon --------------------------------------------------------------------------------


def _js_value(xp, P: Canon, Q: Canon, *, weight: float) -> Any:
    if weight in (0.0, 1.0):  # M equals one side and the other side has weight 0
        return xp.zeros_like(P.p[..., 0])
    # w KL(P || M) + (1 - w) KL(Q || M), each from non-negative terms (see _mix_terms)
    h_p, h_q = _mix_terms(xp, P, Q, weight, 1 - weight)[0], _mix_terms(xp, Q, P, 1 - weight, weight)[0]
    return _non_negative(xp, weight * _sum(xp, h_p) + (1 - weight) * _sum(xp, h_q))


def _js_vjp(xp, P: Canon, Q: Canon, value, logits: bool, *, weight: float) -> tuple[Any, Any]:
    if weight in (0.0, 1.0):
        return xp.zeros_like(P.p), xp.zeros_like(Q.p)
    (_, l_p, m), (_, l_q, _) = _mix_terms(xp, P, Q, weight, 1 - weight), _mix_terms(xp, Q, P, 1 - weight, weight)
    if logits:  # w p log(p / m), (1 - w) q log(q / m); 0 where the probability is
        return -weight * (P.p * l_p), -(1 - weight) * (Q.p * l_q)
    # d/dp_i = w log(p_i / m_i); where p_i = q_i = 0 the limit is w log(1 / w)
    return weight * _log_ratio_limit(xp, P, l_p, m, weight), (1 - weight) * _log_ratio_limit(xp, Q, l_q, m, 1 - weight)


def _js_terms(xp, P: _rows.Side, Q: _rows.Side, weight: float) -> tuple[Any, Any]:
    """p log(p / m) and q log(q / m) per entry, from r = log(q / p) (see :func:`_log_mix`)."""
    r = _rows.log_ratio(xp, P, Q)
    h_p = _zero_where_impossible(xp, P, -P.p * _log_mix(xp, r, weight, 1 - weight))
    h_q = _zero_where_impossible(xp, Q, -Q.p * _log_mix(xp, -r, 1 - weight, weight))
    return h_p, h_q


def _js_guarded_sums(xp, P: _rows.Side, Q: _rows.Side, weight: float) -> tuple[Any, Any]:
    """KL(P || M) and KL(Q || M) on sides with edges, from the skew KL's non-negative terms (KL(P || M) is
    skew_kl(P, Q; w), KL(Q || M) is skew_kl(Q, P; 1 - w)): no cancellation, so a weight near 0 or 1 keeps the
    value's relative precision."""
    return (_rows.row_sum(xp, _skew_terms(xp, P, Q, weight, 1 - weight)[0]),
            _rows.row_sum(xp, _skew_terms(xp, Q, P, 1 - weight, weight)[0]))


def _js_tame_ratios(xp, P: _rows.Side, Q: _rows.Side, weight: float) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """On tame sides (see :mod:`kldiv._rows`): (y, log1p(y), y - log1p(y)) for y = m / p - 1 and for
    y = m / q - 1 per entry, select-free eagerly: expm1 of r = log(q / p) is finite there, and 1 + y >= weight
    > 0. Compiled: from arithmetic and log (:func:`kldiv._rows.tame_expm1`, :func:`kldiv._rows.tame_log1p`)."""
    r = _rows.log_ratio(xp, P, Q)
    if _rows.compiling(r):
        y_p, y_q = (1 - weight) * _rows.tame_expm1(xp, r, Q.p / P.p), weight * _rows.tame_expm1(xp, -r, P.p / Q.p)
        return (y_p, *_rows.tame_log1p(xp, y_p)), (y_q, *_rows.tame_log1p(xp, y_q))
    y_p, y_q = (1 - weight) * xp.expm1(r), weight * xp.expm1(-r)
    l_p, l_q = xp.log1p(y_p), xp.log1p(y_q)
    return (y_p, l_p, y_p - l_p), (y_q, l_q, y_q - l_q)


def _js_sums(xp, P: _rows.Side, Q: _rows.Side, *, weight: float) -> tuple[Any, Any]:
    if weight in (0.0, 1.0):
        zero = _rows.row_sum(xp, 0.0 * P.p)
        return zero, zero
    if not (P.edges or Q.edges):
        # KL(P || M) = sum p (y - log1p(y)) with y = m / p - 1 (sum m = sum p): terms >= 0, no cancellation
        (_, _, e_p), (_, _, e_q) = _js_tame_ratios(xp, P, Q, weight)
        return _rows.row_sum(xp, P.p * e_p), _rows.row_sum(xp, Q.p * e_q)
    return _js_guarded_sums(xp, P, Q, weight)  # KL(P || M), KL(Q || M)


def _js_finish(xp, sums, log_z_p, log_z_q, *, weight: float) -> Any:
    return _non_negative(xp, _rows.poison(xp, weight * sums[0] + (1 - weight) * sums[1], log_z_p, log_z_q))


def _js_grad(xp, sides, sums, i, *, weight: float) -> Any:
    P, Q = sides
    if weight in (0.0, 1.0):
        return 0.0 * sides[i].p
    # w (h_p - p KL(P || M)) for P, (1 - w) (h_q - q KL(Q || M)) for Q
    s = sides[i]
    if not (P.edges or Q.edges):
        h = -s.p * _js_tame_ratios(xp, P, Q, weight)[i][1]
    else:
        h = _js_terms(xp, P, Q, weight)[i]
    return (weight if i == 0 else 1 - weight) * (h - s.p * _rows.cast(xp, sums[i], s.x.dtype)[..., None])


JS = Measure("js", _js_value, _js_vjp, _rows.RowForm(_js_sums, _js_finish, _js_grad))


# --- skew KL -----------------------------------------------------------------------------------------


def _skew_kl_value(xp, P: Canon, Q: Canon, *, alpha: float) -> Any:
    if alpha == 0:
        return _kl_value(xp, P, Q)
    # the non-negative terms (see _mix_terms) sum to KL(P || M) + (1 - alpha)(sum q - sum p): the correction,
    # 0 on the simplex, is taken from the inputs' sums in the wide dtype, so the value is sum p log(p / m) for
    # any input (validate=False) and its gradient the one below
    wide = _rows.wide(xp, P.p)
    drift = xp.sum(Q.p, axis=-1, dtype=wide) - xp.sum(P.p, axis=-1, dtype=wide)
    value = xp.sum(_mix_terms(xp, P, Q, alpha)[0], axis=-1, dtype=wide) - (1 - alpha) * drift
    return _non_negative(xp, _rows.cast(xp, value, P.p.dtype))


def _skew_kl_vjp(xp, P: Canon, Q: Canon, value, logits: bool, *, alpha: float) -> tuple[Any, Any]:
    if alpha == 0:
        return _kl_vjp(xp, P, Q, value, logits)
    _, l_p, m = _mix_terms(xp, P, Q, alpha)
    p_over_m = xp.where(P.p > 0, xp.exp(-l_p), 0.0)  # finite: m >= alpha p > 0 wherever p > 0
    if logits:
        return -(P.p * l_p) - alpha * P.p * p_over_m, -(1 - alpha) * Q.p * p_over_m
    # d/dp_i = log(p_i / m_i) + 1 - alpha p_i / m_i; where p_i = q_i = 0 the log term's limit is -log(alpha)
    return _log_ratio_limit(xp, P, l_p, m, alpha) + 1 - alpha * p_over_m, -(1 - alpha) * p_over_m


def _skew_terms(xp, P: _rows.Side, Q: _rows.Side, alpha: float, rest: float | None = None) -> tuple[Any, Any, Any]:
    """Per entry: the value's terms p (m / p - 1 - log(m / p)) (>= 0, summing to KL(P || M) because sum m = 1,
    without cancellation, as KL's; rest q where p = 0), p log(p / m) and p / m (0 where p is; m = alpha p +
    rest q, rest = 1 - alpha unless given: see :func:`_log_mix`)."""
    rest = 1 - alpha if rest is None else rest
    r = _rows.log_ratio(xp, P, Q)
    if not (P.edges or Q.edges) and _rows.compiling(r):  # tame, from arithmetic and log (see _js_tame_ratios)
        y = rest * _rows.tame_expm1(xp, r, Q.p / P.p)
        log_m_over_p, excess = _rows.tame_log1p(xp, y)
        return P.p * excess, -P.p * log_m_over_p, 1 / (1 + y)
    y = rest * xp.expm1(r)  # m / p - 1
    if not (P.edges or Q.edges):  # tame: y is finite, and p a normal float
        log_m_over_p = xp.log1p(y)
        return P.p * _excess(xp, y), -P.p * log_m_over_p, xp.exp(-log_m_over_p)
    log_m_over_p = _log_mix(xp, r, alpha, rest)
    # y > 1 (or overflowing) and y < -1/2 (where 1 + y rounds to 0 for m below the rounding of p): m - p - p log(m
    # / p) directly, with log(m / p) from _log_mix, where y - log1p(y) >= 0.19 |y| cannot cancel
    far = (y > 1) | (y < -0.5)
    term = xp.where(far, rest * (Q.p - P.p) - P.p * log_m_over_p, P.p * _excess(xp, xp.where(far, 0.0, y)))
    return (
        xp.where(P.x == -INF, rest * Q.p, term) if P.edges else term,
        _zero_where_impossible(xp, P, -P.p * log_m_over_p),
        _zero_where_impossible(xp, P, xp.exp(-log_m_over_p)),
    )


def _skew_kl_sums(xp, P: _rows.Side, Q: _rows.Side, *, alpha: float) -> tuple[Any, ...]:
    if alpha == 0:
        return _kl_sums(xp, P, Q)
    if alpha == 1:  # M = P
        zero = _rows.row_sum(xp, 0.0 * P.p)
        return zero, zero
    term, _, ratio = _skew_terms(xp, P, Q, alpha)
    return _rows.row_sum(xp, term), _rows.row_sum(xp, P.p * ratio)  # the value, and T = sum p^2 / m


def _skew_kl_finish(xp, sums, log_z_p, log_z_q, *, alpha: float) -> Any:
    if alpha == 0:
        return _kl_finish(xp, sums, log_z_p, log_z_q)
    return _non_negative(xp, _rows.poison(xp, sums[0], log_z_p, log_z_q))


def _skew_kl_grad(xp, sides, sums, i, *, alpha: float) -> Any:
    if alpha == 0:
        return _kl_grad(xp, sides, sums, i)
    P, Q = sides
    if alpha == 1:
        return 0.0 * sides[i].p
    _, h, ratio = _skew_terms(xp, P, Q, alpha)
    value, t = (_rows.cast(xp, s, P.x.dtype)[..., None] for s in sums)
    if i == 0:  # g - p sum(g) with g = h - alpha p (p / m)
        return h - alpha * P.p * ratio - P.p * (value - alpha * t)
    # g = -(1 - alpha) q (p / m), and sum(g) = -(1 - alpha T) because alpha T + (1 - alpha) sum q p / m = sum p = 1
    return Q.p * ((1 - alpha * t) - (1 - alpha) * ratio)


SKEW_KL = Measure("skew_kl", _skew_kl_value, _skew_kl_vjp, _rows.RowForm(_skew_kl_sums, _skew_kl_finish, _skew_kl_grad))


# --- total variation ---------------------------------------------------------------------------------


def _tvd_value(xp, P: Canon, Q: Canon) -> Any:
    return _non_negative(xp, 0.5 * _sum(xp, xp.abs(P.p - Q.p)))


def _tvd_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    s = 0.5 * _rows.sign(xp, P.p - Q.p)  # subgradient 0 where p_i = q_i
    return (P.p * s, -Q.p * s) if logits else (s, -s)


def _tvd_terms(xp, P: _rows.Side, Q: _rows.Side) -> tuple[Any, Any]:
    """|p - q| and sign(p - q) per entry. On tame sides (see :mod:`kldiv._rows`) the plain difference: its
    rounding is random across the row, 2.5e-7 median relative error on near-identical float32 rows. Otherwise
    from r = log(q / p): |p - q| = q (1 - e^-r) where q > p and p (1 - e^r) elsewhere, exact per entry to the
    working precision (and 0 where both probabilities are)."""
    if not (P.edges or Q.edges):
        d = P.p - Q.p
        return xp.abs(d), _rows.sign_of_finite(xp, d)
    r = _rows.log_ratio(xp, P, Q)
    r = xp.where((P.x == -INF) & (Q.x == -INF), 0.0, r)
    diff = xp.where(r > 0, -Q.p * xp.expm1(-r), -P.p * xp.expm1(r))
    return diff, -_rows.sign(xp, r)


def _tvd_sums(xp, P: _rows.Side, Q: _rows.Side) -> tuple[Any, Any, Any]:
    diff, sign = _tvd_terms(xp, P, Q)
    return _rows.row_sum(xp, diff), _rows.row_sum(xp, P.p * sign), _rows.row_sum(xp, Q.p * sign)


def _tvd_finish(xp, sums, log_z_p, log_z_q) -> Any:
    return _non_negative(xp, _rows.poison(xp, 0.5 * sums[0], log_z_p, log_z_q))


def _tvd_grad(xp, sides, sums, i) -> Any:
    # p s - p sum(p s) for P and -(q s - q sum(q s)) for Q, s = sign(p - q) / 2
    s = sides[i]
    sign = _tvd_terms(xp, *sides)[1]
    return (0.5 if i == 0 else -0.5) * s.p * (sign - _rows.cast(xp, sums[1 + i], s.x.dtype)[..., None])


TVD = Measure("tvd", _tvd_value, _tvd_vjp, _rows.RowForm(_tvd_sums, _tvd_finish, _tvd_grad))


# --- Hellinger ---------------------------------------------------------------------------------------


def _hellinger_value(xp, P: Canon, Q: Canon) -> Any:
    # sqrt(1 - sum sqrt(p q)) equals sqrt(sum (sqrt p - sqrt q)^2 / 2) on the simplex; the second form
    # has no cancellation near P = Q and is never negative.
    h2 = 0.5 * _sum(xp, (xp.sqrt(P.p) - xp.sqrt(Q.p)) ** 2)
    return xp.sqrt(xp.where(h2 > 1, 1.0, _non_negative(xp, h2)))


def _hellinger_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    # H = sqrt(1 - sum sqrt(p q)): dH/dp_i = -sqrt(q_i / p_i) / (4 H). H is not differentiable where
    # P = Q (H = 0); there the gradient returned is 0, the gradient at the minimum.
    denominator = xp.where(value > 0, 4 * value, INF)[..., None]
    if logits:
        g = -(xp.sqrt(P.p) * xp.sqrt(Q.p)) / denominator
        return g, g
    return -xp.sqrt(_ratio(xp, Q, P)) / denominator, -xp.sqrt(_ratio(xp, P, Q)) / denominator


HELLINGER = Measure("hellinger", _hellinger_value, _hellinger_vjp)


# --- Rényi -------------------------------------------------------------------------------------------


def _renyi_terms(xp, P: Canon, Q: Canon, alpha: float) -> tuple[Any, Any]:
    """log(p_i^a q_i^(1-a)) (``-inf`` where p_i = 0) and its log-sum-exp over the row."""
    t = xp.where(P.lp == -INF, -INF, alpha * P.lp + (1 - alpha) * Q.lp)
    return t, _log_sum_exp(xp, t)


def _log_sum_exp(xp, t: Any) -> Any:
    top = xp.max(t, axis=-1, keepdims=True)
    top = xp.where(xp.isinf(top), 0.0, top)
    return top[..., 0] + xp.log(_sum(xp, xp.exp(t - top)))


def _renyi_max_terms(xp, P: Canon, Q: Canon) -> Any:
    return xp.where(P.lp == -INF, -INF, P.lp - Q.lp)


# For |alpha - 1| below this the value uses the series log S = log1p(sum p expm1((a - 1) log(p / q))), exact on
# the simplex (it uses sum p = 1) where the log-sum-exp form cancels: S -> 1 as alpha -> 1, and log S ~ (a - 1) KL
# is lost to rounding (alpha = 1 + 1e-9 gave -1.1e-7 for a true 2e-8). Off the simplex (validate=False) its
# partial derivatives differ from the stated formula's along the all-ones direction, as Hellinger's do.
_RENYI_SERIES_WITHIN = 0.25


def _renyi_value(xp, P: Canon, Q: Canon, *, alpha: float) -> Any:
    if alpha == 1:
        return _kl_value(xp, P, Q)
    if alpha == INF:
        return _non_negative(xp, xp.max(_renyi_max_terms(xp, P, Q), axis=-1))
    if alpha == 0:
        # -log Q(supp P) = -log1p(-Q(outside supp P)): on the simplex the same, and exact where little of Q
        # lies outside (the sum of Q over the support would round to 1 and cancel: 0 must come out 0). NaN in
        # either side reaches the sum through 0 * (p + q)
        outside = _sum(xp, xp.where(P.lp == -INF, Q.p, 0.0 * (P.p + Q.p)))
        return _non_negative(xp, -xp.log1p(-outside))
    u = alpha - 1
    _, log_s = _renyi_terms(xp, P, Q, alpha)
    if abs(u) >= _RENYI_SERIES_WITHIN:
        return _non_negative(xp, log_s / u)
    # log S = log(1 + sum p (e^(u d) - 1)) with d = log(p / q): no cancellation as alpha -> 1, and equal to KL's
    # value continuously there (log1p(u KL + O(u^2)) / u -> KL)
    ud = u * _renyi_max_terms(xp, P, Q)
    term = xp.where(ud > 30, xp.exp(P.lp + ud), P.p * xp.expm1(ud))  # e^(ud) >> 1 there: exp(log p + ud) = p e^(ud)
    series = xp.log1p(_sum(xp, xp.where(P.lp == -INF, 0.0, term)))
    log_s = xp.where(xp.abs(log_s) < 0.5, series, log_s)  # where log S is large the series may overflow
    return _non_negative(xp, log_s / u)


def _renyi_vjp(xp, P: Canon, Q: Canon, value, logits: bool, *, alpha: float) -> tuple[Any, Any]:
    if alpha == 1:
        return _kl_vjp(xp, P, Q, value, logits)
    if alpha == INF:  # D = log(p_k / q_k) at the arg max k (the first one on ties)
        r = _renyi_max_terms(xp, P, Q)
        k = xp.argmax(r, axis=-1, keepdims=True)
        positions = np.arange(r.shape[-1]) if xp is np else xp.arange(r.shape[-1], device=r.device)
        e = xp.astype(positions == k, r.dtype)
        if logits:
            return e, -e
        return xp.where(e > 0, _safe_reciprocal(xp, P.p), 0.0), -xp.where(e > 0, _safe_reciprocal(xp, Q.p), 0.0)
    t, log_s = _renyi_terms(xp, P, Q, alpha)
    if alpha > 1:
        # a term is +inf where q_i = 0 < p_i, and so is the value: the weights w_i = p_i^a q_i^(1-a) / S are
        # then their limit as those q_i -> 0 together, p_i^a / sum p_k^a over those terms (0 elsewhere)
        hit = t == INF
        infinite = xp.any(hit, axis=-1, keepdims=True)
        t = xp.where(infinite, xp.where(hit, alpha * P.lp, -INF), t)
        log_s = xp.where(infinite[..., 0], _log_sum_exp(xp, t), log_s)
    log_s = xp.where(xp.isfinite(log_s), log_s, INF)[..., None]  # rows with S = 0 (or NaN) get zero weights
    if logits:
        # d/dlog p_i = a/(a-1) w_i with w_i = p_i^a q_i^(1-a) / S; returned less the row constant a/(a-1) p_i
        # (which the log-softmax backward removes): w_i - p_i = p_i expm1(t_i - log p_i - log S), which has no
        # cancellation near a = 1; where that exponent exceeds 1 (p_i may even have underflowed to 0 while
        # log p_i is finite, and e^exponent overflow) w_i - p_i itself, which loses at most a factor e / (e - 1)
        w = xp.exp(t - log_s)
        exponent = xp.where(P.lp == -INF, 0.0, t - P.lp) - log_s
        near = P.p * xp.expm1(xp.minimum(exponent, 1.0))
        shifted = xp.where(P.lp == -INF, 0.0, xp.where(exponent > 1, w - P.p, near))
        return (alpha / (alpha - 1)) * shifted, -w
    # with w_i = p_i^a q_i^(1-a) / S: d/dp_i = a/(a-1) p_i^(a-1) q_i^(1-a) / S and d/dq_i = -p_i^a q_i^(-a) / S, with their limits at zero
    if alpha == 0:
        grad_p = xp.zeros_like(P.p)
    else:
        at_zero = INF if alpha < 1 else 0.0
        grad_p = (alpha / (alpha - 1)) * xp.where(P.lp == -INF, at_zero, xp.exp(t - log_s - P.lp))
    grad_q = -xp.where(Q.lp == -INF, xp.where(P.lp == -INF, 0.0, INF), xp.exp(t - log_s - Q.lp))
    return grad_p, grad_q


def _safe_reciprocal(xp, x: Any) -> Any:
    return xp.where(x > 0, 1 / x, INF)


RENYI = Measure("renyi", _renyi_value, _renyi_vjp)


# --- public API ----------------------------------------------------------------------------------------

_COMMON = """
    Args:
      {args}axis: the axis holding the distribution; all other axes are batch axes and broadcast.
      from_logits: if True the inputs are unnormalised log-probabilities (logits), normalised with a stable
        log-softmax; ``-inf`` means probability zero. Otherwise they are probabilities, which must be
        non-negative and sum to 1 along ``axis`` (no silent renormalisation: see :func:`normalize`).
      {base}validate: check the inputs (skipped automatically inside ``jax.jit``/``torch.compile``/``tf.function``).

    Returns:
      An array of the batch shape (0-d for 1-D inputs) in the inputs' backend and floating dtype;
      float16/bfloat16 inputs are computed in float32.
"""
_BASE = "base: units: None for nats, 2 for bits, any positive number other than 1.\n      "


def _doc(args: str, base: bool = True) -> str:
    return _COMMON.format(args=args, base=_BASE if base else "")


_PQ = "p, q: distributions P and Q (NumPy, PyTorch, JAX, TensorFlow or CuPy arrays, or nested lists).\n      "


def entropy(p: Any, *, axis: int = -1, from_logits: bool = False, base: float | None = None, validate: bool = True):
    """Shannon entropy H(P) = -sum_i p_i log p_i, with 0 log 0 = 0."""
    return _dispatch.forward(ENTROPY, (p,), ("p",), axis=axis, from_logits=from_logits, base=base, validate=validate)


def cross_entropy(
    p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, base: float | None = None, validate: bool = True
):
    """Cross-entropy H(P, Q) = -sum_i p_i log q_i = H(P) + KL(P || Q); +inf where q_i = 0 < p_i."""
    return _dispatch.forward(
        CROSS_ENTROPY, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate
    )


def kl(p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, base: float | None = None, validate: bool = True):
    """Kullback-Leibler divergence KL(P || Q) = sum_i p_i log(p_i / q_i), in mathematical argument order.

    Terms with p_i = 0 are 0 whatever q_i is; p_i > 0 where q_i = 0 gives +inf (never NaN, never a clipped
    finite number). KL is >= 0, zero only when P = Q, not symmetric, and KL(P || Q) = H(P, Q) - H(P).

    References: Kullback and Leibler (1951), On Information and Sufficiency, eq. 2.4.
    """
    return _dispatch.forward(KL, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate)


def js(
    p: Any,
    q: Any,
    *,
    weight: float = 0.5,
    axis: int = -1,
    from_logits: bool = False,
    base: float | None = None,
    validate: bool = True,
):
    """Jensen-Shannon divergence JS_w(P, Q) = w KL(P || M) + (1 - w) KL(Q || M), M = w P + (1 - w) Q.

    Always finite and bounded by the entropy of (w, 1 - w) (log 2 for w = 1/2). w = 0 or 1 gives 0.
    Note: ``scipy.spatial.distance.jensenshannon`` returns the square root of this (a distance).

    References: Lin (1991), Divergence measures based on the Shannon entropy, eq. 4.1.
    """
    w = _validate.check_in_unit_interval("weight", weight)
    return _dispatch.forward(
        JS, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate, params={"weight": w}
    )


def skew_kl(
    p: Any,
    q: Any,
    *,
    alpha: float = 0.1,
    axis: int = -1,
    from_logits: bool = False,
    base: float | None = None,
    validate: bool = True,
):
    """Skew KL divergence KL(P || alpha P + (1 - alpha) Q): finite for alpha > 0, KL at alpha = 0, 0 at alpha = 1.

    References: Lee (1999), Measures of distributional similarity; Ko et al. (2024), DistiLLM, eq. 4.
    """
    a = _validate.check_in_unit_interval("alpha", alpha)
    return _dispatch.forward(
        SKEW_KL, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate, params={"alpha": a}
    )


def tvd(p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, validate: bool = True):
    """Total variation distance TVD(P, Q) = 1/2 sum_i |p_i - q_i|, in [0, 1]; Pinsker: TVD <= sqrt(KL / 2)."""
    return _dispatch.forward(TVD, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, validate=validate)


def hellinger(p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, validate: bool = True):
    """Hellinger distance H(P, Q) = sqrt(1 - sum_i sqrt(p_i q_i)), in [0, 1].

    Computed as sqrt(sum_i (sqrt p_i - sqrt q_i)^2 / 2), which is equal on the simplex and exact near P = Q
    (the stated form loses half the digits there: 1e-8 instead of 0 in float64). Gradients with respect to
    probabilities are the partial derivatives of the stated form; off the simplex (``validate=False``) the two
    forms differ by a term along the all-ones direction.
    """
    return _dispatch.forward(HELLINGER, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, validate=validate)


def renyi(
    p: Any,
    q: Any,
    *,
    alpha: float,
    axis: int = -1,
    from_logits: bool = False,
    base: float | None = None,
    validate: bool = True,
):
    """Rényi divergence of order alpha: D_a(P || Q) = log(sum_i p_i^a q_i^(1-a)) / (a - 1).

    alpha = 0 gives -log Q(supp P); alpha = 1 gives KL; alpha = inf gives log max_{p_i > 0} p_i / q_i.
    Non-decreasing in alpha. For alpha > 1, p_i > 0 where q_i = 0 gives +inf; for alpha < 1 it does not.

    References: Rényi (1961), On measures of entropy and information; van Erven and Harremoës (2014), eq. 1.
    """
    a = _validate.check_renyi_alpha(alpha)
    return _dispatch.forward(
        RENYI, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate, params={"alpha": a}
    )


for _f, _args, _base in (
    (entropy, "p: distribution P (NumPy, PyTorch, JAX, TensorFlow or CuPy array, or nested list).\n      ", True),
    (cross_entropy, _PQ, True),
    (kl, _PQ, True),
    (js, _PQ + "weight: w in [0, 1], the weight of P in the mixture.\n      ", True),
    (skew_kl, _PQ + "alpha: the weight of P in the skewed second argument, in [0, 1].\n      ", True),
    (tvd, _PQ, False),
    (hellinger, _PQ, False),
    (renyi, _PQ + "alpha: the order, >= 0 (float('inf') allowed).\n      ", True),
):
    _f.__doc__ += _doc(_args, _base)


def normalize(p: Any, axis: int = -1):
    """Divide non-negative weights by their sum along ``axis``: the explicit way to make probabilities.

    ``p_i / sum_j p_j``, computed as ``(p_i / m) / sum_j (p_j / m)`` with ``m = max_j p_j``, so that weights whose
    sum overflows the dtype (``[3e38, 3e38]`` in float32) still give their exact ratios instead of zeros, and
    subnormal weights keep their digits. Half precision (float16, bfloat16) is normalised in float32 and rounded
    once, so the result is a true distribution rounded to the dtype, which the measures accept. Raises
    ``ValueError`` for negative, NaN or infinite weights and for a row that sums to 0. Empty batches give empty
    results; meta tensors (no values) are not checked.
    """
    _validate.check_not_tf("kldiv.normalize", p)
    xp, arrays, layout = _engine.prepare((p,), ("p",), axis)
    x = arrays[0]
    if _backend.has_values(x) and layout.n_rows > 0:
        loc = _validate.Locator("p", layout.shapes[0], layout.axes[0], layout.batch)
        _validate.check_normalizable(xp, layout.rows[0], 0, loc)
    work = _backend.compute_dtype(xp, x.dtype)
    wide = x if work == x.dtype else xp.astype(x, work)
    scaled = wide / xp.max(wide, axis=layout.axes[0], keepdims=True)
    result = scaled / xp.sum(scaled, axis=layout.axes[0], keepdims=True)
    return result if work == x.dtype else xp.astype(result, x.dtype)


MEASURES: dict[str, Measure] = {m.name: m for m in (ENTROPY, CROSS_ENTROPY, KL, JS, SKEW_KL, TVD, HELLINGER, RENYI)}
