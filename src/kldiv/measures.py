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

from . import _engine, _validate
from ._backend import compiling
from ._engine import Canon, Measure

INF = math.inf


def _plogr(xp: Any, p: Any, r: Any) -> Any:
    """``p * r`` with the convention ``0 * r = 0`` (``r`` may be ``±inf`` where ``p = 0``)."""
    if xp is np:
        support = p > 0
        if support.all():  # the common case skips the select, a third of the cost of a KL chunk
            return p * r
        return np.where(support, p * r, 0.0)
    return xp.where(p > 0, p * r, 0.0)


def _ratio(xp: Any, p: Any, q: Any) -> Any:
    """``p / q`` with ``0 / q = 0`` for every ``q``, and ``p / 0 = inf`` for ``p > 0``."""
    return xp.where(p > 0, p / q, 0.0)


def _sum(xp: Any, x: Any) -> Any:
    return xp.sum(x, axis=-1)


def _weighted_sum(xp: Any, *terms: tuple[float, Any]) -> Any:
    """``sum_k w_k * _sum(x_k)`` for ``(w_k, x_k)`` pairs. Inside ``torch.compile`` the weights go inside one sum
    instead: a value that is a single reduction lets Inductor run all of a row's passes in one loop over rows,
    which a pointwise step on the row sums prevents (see ``kldiv.nn.kernels._compile``)."""
    if compiling():
        return _sum(xp, sum(w * x for w, x in terms))
    return sum(w * _sum(xp, x) for w, x in terms)


# --- entropy -------------------------------------------------------------------------------------


def _entropy_value(xp, P: Canon) -> Any:
    return 0.0 - _sum(xp, _plogr(xp, P.p, P.lp))  # 0.0 - x, not -x: no -0.0 for one-hot P


def _entropy_vjp(xp, P: Canon, value, logits: bool) -> tuple[Any]:
    if logits:
        return (-_plogr(xp, P.p, P.lp),)  # d/dlog p_i = -p_i (log p_i + 1); the -p_i term drops out
    return (-(P.lp + 1),)  # +inf at p_i = 0, the one-sided derivative


ENTROPY = Measure("entropy", _entropy_value, _entropy_vjp)


# --- cross-entropy -------------------------------------------------------------------------------


def _cross_entropy_value(xp, P: Canon, Q: Canon) -> Any:
    return 0.0 - _sum(xp, _plogr(xp, P.p, Q.lp))


def _cross_entropy_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    if logits:
        return -_plogr(xp, P.p, Q.lp), -P.p
    return -Q.lp, -_ratio(xp, P.p, Q.p)


CROSS_ENTROPY = Measure("cross_entropy", _cross_entropy_value, _cross_entropy_vjp)


# --- KL --------------------------------------------------------------------------------------------


def _kl_value(xp, P: Canon, Q: Canon) -> Any:
    return _sum(xp, _plogr(xp, P.p, P.lp - Q.lp))


def _kl_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    if logits:
        return _plogr(xp, P.p, P.lp - Q.lp), -P.p
    # d/dp_i = log(p_i / q_i) + 1 (-inf at p_i = 0 < q_i, +inf where q_i = 0); d/dq_i = -p_i / q_i
    return xp.where(Q.p > 0, P.lp - Q.lp, INF) + 1, -_ratio(xp, P.p, Q.p)


KL = Measure("kl", _kl_value, _kl_vjp)


# --- Jensen-Shannon --------------------------------------------------------------------------------


def _mixture(xp, P: Canon, Q: Canon, weight: float) -> tuple[Any, Any]:
    m = weight * P.p + (1 - weight) * Q.p
    return m, xp.log(m)


def _js_value(xp, P: Canon, Q: Canon, *, weight: float) -> Any:
    if weight in (0.0, 1.0):  # M equals one side and the other side has weight 0
        return xp.zeros_like(P.p[..., 0])
    _, lm = _mixture(xp, P, Q, weight)
    return _weighted_sum(xp, (weight, _plogr(xp, P.p, P.lp - lm)), (1 - weight, _plogr(xp, Q.p, Q.lp - lm)))


def _js_vjp(xp, P: Canon, Q: Canon, value, logits: bool, *, weight: float) -> tuple[Any, Any]:
    if weight in (0.0, 1.0):
        return xp.zeros_like(P.p), xp.zeros_like(Q.p)
    m, lm = _mixture(xp, P, Q, weight)
    if logits:
        return weight * _plogr(xp, P.p, P.lp - lm), (1 - weight) * _plogr(xp, Q.p, Q.lp - lm)
    # d/dp_i = w log(p_i / m_i); where p_i = q_i = 0 the limit is w log(1 / w)
    return (
        weight * xp.where(m > 0, P.lp - lm, -math.log(weight)),
        (1 - weight) * xp.where(m > 0, Q.lp - lm, -math.log(1 - weight)),
    )


JS = Measure("js", _js_value, _js_vjp)


# --- skew KL -----------------------------------------------------------------------------------------


def _skew_kl_value(xp, P: Canon, Q: Canon, *, alpha: float) -> Any:
    _, lm = _mixture(xp, P, Q, alpha)
    return _sum(xp, _plogr(xp, P.p, P.lp - lm))


def _skew_kl_vjp(xp, P: Canon, Q: Canon, value, logits: bool, *, alpha: float) -> tuple[Any, Any]:
    if alpha == 0:
        return _kl_vjp(xp, P, Q, value, logits)
    m, lm = _mixture(xp, P, Q, alpha)
    p_over_m = _ratio(xp, P.p, m)  # finite: m >= alpha p > 0 wherever p > 0
    if logits:
        return _plogr(xp, P.p, P.lp - lm) - alpha * P.p * p_over_m, -(1 - alpha) * Q.p * p_over_m
    # d/dp_i = log(p_i / m_i) + 1 - alpha p_i / m_i; where p_i = q_i = 0 the log term's limit is -log(alpha)
    return xp.where(m > 0, P.lp - lm, -math.log(alpha)) + 1 - alpha * p_over_m, -(1 - alpha) * p_over_m


SKEW_KL = Measure("skew_kl", _skew_kl_value, _skew_kl_vjp)


# --- total variation ---------------------------------------------------------------------------------


def _tvd_value(xp, P: Canon, Q: Canon) -> Any:
    return _weighted_sum(xp, (0.5, xp.abs(P.p - Q.p)))


def _tvd_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    s = 0.5 * xp.sign(P.p - Q.p)  # subgradient 0 where p_i = q_i
    return (P.p * s, -Q.p * s) if logits else (s, -s)


TVD = Measure("tvd", _tvd_value, _tvd_vjp)


# --- Hellinger ---------------------------------------------------------------------------------------


def _hellinger_value(xp, P: Canon, Q: Canon) -> Any:
    # sqrt(1 - sum sqrt(p q)) equals sqrt(sum (sqrt p - sqrt q)^2 / 2) on the simplex; the second form
    # has no cancellation near P = Q and is never negative.
    h2 = 0.5 * _sum(xp, (xp.sqrt(P.p) - xp.sqrt(Q.p)) ** 2)
    return xp.sqrt(xp.clip(h2, 0.0, 1.0))


def _hellinger_vjp(xp, P: Canon, Q: Canon, value, logits: bool) -> tuple[Any, Any]:
    # H = sqrt(1 - sum sqrt(p q)): dH/dp_i = -sqrt(q_i / p_i) / (4 H). H is not differentiable where
    # P = Q (H = 0); there the gradient returned is 0, the gradient at the minimum.
    denominator = xp.where(value > 0, 4 * value, INF)[:, None]
    if logits:
        g = -(xp.sqrt(P.p) * xp.sqrt(Q.p)) / denominator
        return g, g
    return -xp.sqrt(_ratio(xp, Q.p, P.p)) / denominator, -xp.sqrt(_ratio(xp, P.p, Q.p)) / denominator


HELLINGER = Measure("hellinger", _hellinger_value, _hellinger_vjp)


# --- Rényi -------------------------------------------------------------------------------------------


def _renyi_terms(xp, P: Canon, Q: Canon, alpha: float) -> tuple[Any, Any]:
    """log(p_i^a q_i^(1-a)) (``-inf`` where p_i = 0) and its log-sum-exp over the row."""
    t = xp.where(P.p > 0, alpha * P.lp + (1 - alpha) * Q.lp, -INF)
    top = xp.max(t, axis=-1, keepdims=True)
    top = xp.where(xp.isfinite(top), top, 0.0)
    return t, top[..., 0] + xp.log(_sum(xp, xp.exp(t - top)))


def _renyi_max_terms(xp, P: Canon, Q: Canon) -> Any:
    return xp.where(P.p > 0, P.lp - Q.lp, -INF)


def _renyi_value(xp, P: Canon, Q: Canon, *, alpha: float) -> Any:
    if alpha == 1:
        return _kl_value(xp, P, Q)
    if alpha == INF:
        return xp.max(_renyi_max_terms(xp, P, Q), axis=-1)
    _, log_s = _renyi_terms(xp, P, Q, alpha)
    return log_s / (alpha - 1)


def _renyi_vjp(xp, P: Canon, Q: Canon, value, logits: bool, *, alpha: float) -> tuple[Any, Any]:
    if alpha == 1:
        return _kl_vjp(xp, P, Q, value, logits)
    if alpha == INF:  # D = log(p_k / q_k) at the arg max k (the first one on ties)
        r = _renyi_max_terms(xp, P, Q)
        k = xp.argmax(r, axis=-1, keepdims=True)
        positions = np.arange(r.shape[-1]) if xp is np else xp.arange(r.shape[-1], device=r.device)
        e = xp.astype(positions == k, r.dtype)
        return (e, -e) if logits else (e * _safe_reciprocal(xp, P.p), -e * _safe_reciprocal(xp, Q.p))
    t, log_s = _renyi_terms(xp, P, Q, alpha)
    log_s = xp.where(xp.isfinite(log_s), log_s, INF)[:, None]  # infinite rows get zero weights
    weight = xp.exp(t - log_s)  # p_i^a q_i^(1-a) / sum_j p_j^a q_j^(1-a)
    if logits:
        return (alpha / (alpha - 1)) * weight, -weight
    # d/dp_i = a/(a-1) p_i^(a-1) q_i^(1-a) / S and d/dq_i = -p_i^a q_i^(-a) / S, with their limits at zero
    if alpha == 0:
        grad_p = xp.zeros_like(P.p)
    else:
        at_zero = INF if alpha < 1 else 0.0
        grad_p = (alpha / (alpha - 1)) * xp.where(P.p > 0, xp.exp(t - log_s - P.lp), at_zero)
    grad_q = -xp.where(Q.p > 0, xp.exp(t - log_s - Q.lp), xp.where(P.p > 0, INF, 0.0))
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
      {base}validate: check the inputs (skipped automatically inside ``jax.jit``/``torch.compile``).

    Returns:
      An array of the batch shape (0-d for 1-D inputs) in the inputs' backend and floating dtype;
      float16/bfloat16 inputs are computed in float32.
"""
_BASE = "base: units: None for nats, 2 for bits, any positive number other than 1.\n      "


def _doc(args: str, base: bool = True) -> str:
    return _COMMON.format(args=args, base=_BASE if base else "")


_PQ = "p, q: distributions P and Q (NumPy, PyTorch, JAX or CuPy arrays, or nested lists).\n      "


def entropy(p: Any, *, axis: int = -1, from_logits: bool = False, base: float | None = None, validate: bool = True):
    """Shannon entropy H(P) = -sum_i p_i log p_i, with 0 log 0 = 0."""
    return _engine.forward(ENTROPY, (p,), ("p",), axis=axis, from_logits=from_logits, base=base, validate=validate)


def cross_entropy(
    p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, base: float | None = None, validate: bool = True
):
    """Cross-entropy H(P, Q) = -sum_i p_i log q_i = H(P) + KL(P || Q); +inf where q_i = 0 < p_i."""
    return _engine.forward(
        CROSS_ENTROPY, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate
    )


def kl(p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, base: float | None = None, validate: bool = True):
    """Kullback-Leibler divergence KL(P || Q) = sum_i p_i log(p_i / q_i), in mathematical argument order.

    Terms with p_i = 0 are 0 whatever q_i is; p_i > 0 where q_i = 0 gives +inf (never NaN, never a clipped
    finite number). KL is >= 0, zero only when P = Q, not symmetric, and KL(P || Q) = H(P, Q) - H(P).

    References: Kullback and Leibler (1951), On Information and Sufficiency, eq. 2.4.
    """
    return _engine.forward(KL, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate)


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
    return _engine.forward(
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
    return _engine.forward(
        SKEW_KL, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate, params={"alpha": a}
    )


def tvd(p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, validate: bool = True):
    """Total variation distance TVD(P, Q) = 1/2 sum_i |p_i - q_i|, in [0, 1]; Pinsker: TVD <= sqrt(KL / 2)."""
    return _engine.forward(TVD, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, validate=validate)


def hellinger(p: Any, q: Any, *, axis: int = -1, from_logits: bool = False, validate: bool = True):
    """Hellinger distance H(P, Q) = sqrt(1 - sum_i sqrt(p_i q_i)), in [0, 1].

    Computed as sqrt(sum_i (sqrt p_i - sqrt q_i)^2 / 2), which is equal on the simplex and exact near P = Q
    (the stated form loses half the digits there: 1e-8 instead of 0 in float64). Gradients with respect to
    probabilities are the partial derivatives of the stated form; off the simplex (``validate=False``) the two
    forms differ by a term along the all-ones direction.
    """
    return _engine.forward(HELLINGER, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, validate=validate)


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
    return _engine.forward(
        RENYI, (p, q), ("p", "q"), axis=axis, from_logits=from_logits, base=base, validate=validate, params={"alpha": a}
    )


for _f, _args, _base in (
    (entropy, "p: distribution P (NumPy, PyTorch, JAX or CuPy array, or nested list).\n      ", True),
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

    Raises ``ValueError`` for negative, NaN or infinite weights and for a row that sums to 0.
    """
    xp, arrays, layout = _engine.prepare((p,), ("p",), axis)
    x = arrays[0]
    _validate.check_normalizable(xp, layout.rows[0], 0, _validate.Locator("p", layout.shapes[0], layout.axes[0], layout.batch))
    return x / xp.sum(x, axis=layout.axes[0], keepdims=True)


MEASURES: dict[str, Measure] = {m.name: m for m in (ENTROPY, CROSS_ENTROPY, KL, JS, SKEW_KL, TVD, HELLINGER, RENYI)}
