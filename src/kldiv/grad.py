"""The backward pass as a public API: vector-Jacobian products of every measure.

``kldiv.grad.<name>(p, q, *, upstream=None, ...)`` returns the gradients of ``sum(upstream * measure(p, q))``
with respect to each input, in that input's shape (summed over axes it was broadcast along). ``upstream``
has the batch shape (default: ones). The formulas live beside the values in :mod:`kldiv.measures`.

With ``from_logits=True`` the gradients are with respect to the logits x and y (log-softmax included):

    KL:       dKL/dx_i = p_i (log p_i - log q_i - KL),    dKL/dy_i = q_i - p_i
    entropy:  dH/dx_i  = -p_i (log p_i + H)
    JS_w:     dJS/dx_i = w (g_i - p_i sum_j g_j) with g_i = p_i log(p_i / m_i), and the same for y with 1 - w

With probabilities they are the partial derivatives of the formula, without renormalisation:

    KL:       dKL/dp_i = log(p_i / q_i) + 1,              dKL/dq_i = -p_i / q_i
    H(P, Q):  dH/dp_i  = -log q_i,                        dH/dq_i  = -p_i / q_i
    entropy:  dH/dp_i  = -(log p_i + 1)
    JS_w:     dJS/dp_i = w log(p_i / m_i),                dJS/dq_i = (1 - w) log(q_i / m_i)
    skew KL:  d/dp_i   = log(p_i / m_i) + 1 - a p_i / m_i, d/dq_i  = -(1 - a) p_i / m_i   (m = a p + (1 - a) q)
    TVD:      d/dp_i   = sign(p_i - q_i) / 2             (0 where p_i = q_i)
    Hellinger (H = sqrt(1 - sum sqrt(p q))): dH/dp_i = -sqrt(q_i / p_i) / (4 H)   (0 where H = 0)
    Rényi:    dD/dp_i  = a/(a-1) p_i^(a-1) q_i^(1-a) / S,  dD/dq_i = -p_i^a q_i^(-a) / S   (S = sum p^a q^(1-a))

At zeros they take their one-sided limits: dKL/dq_i = 0 where p_i = 0, dKL/dp_i = -inf where p_i = 0 < q_i,
infinite where the value itself is infinite; never NaN. With ``base`` every gradient is divided by log(base).
"""

from __future__ import annotations

from typing import Any

from . import _dispatch, _validate
from .measures import CROSS_ENTROPY, ENTROPY, HELLINGER, JS, KL, RENYI, SKEW_KL, TVD

__all__ = ["entropy", "cross_entropy", "kl", "js", "skew_kl", "tvd", "hellinger", "renyi"]


def _pair(measure, p, q, upstream, axis, from_logits, base, validate, params=None):
    return _dispatch.gradients(
        measure, (p, q), ("p", "q"), upstream=upstream, axis=axis, from_logits=from_logits, base=base,
        validate=validate, params=params,
    )


def entropy(p: Any, *, upstream: Any = None, axis: int = -1, from_logits: bool = False, base: float | None = None,
            validate: bool = True) -> Any:
    """Gradient of sum(upstream * H(P)) with respect to p (or its logits). Returns one array."""
    (g,) = _dispatch.gradients(ENTROPY, (p,), ("p",), upstream=upstream, axis=axis, from_logits=from_logits,
                             base=base, validate=validate)
    return g


def cross_entropy(p: Any, q: Any, *, upstream: Any = None, axis: int = -1, from_logits: bool = False,
                  base: float | None = None, validate: bool = True) -> tuple[Any, Any]:
    """(grad_p, grad_q) of sum(upstream * H(P, Q))."""
    return _pair(CROSS_ENTROPY, p, q, upstream, axis, from_logits, base, validate)


def kl(p: Any, q: Any, *, upstream: Any = None, axis: int = -1, from_logits: bool = False,
       base: float | None = None, validate: bool = True) -> tuple[Any, Any]:
    """(grad_p, grad_q) of sum(upstream * KL(P || Q)); from logits grad_q = upstream (softmax(q) - softmax(p))."""
    return _pair(KL, p, q, upstream, axis, from_logits, base, validate)


def js(p: Any, q: Any, *, upstream: Any = None, weight: float = 0.5, axis: int = -1, from_logits: bool = False,
       base: float | None = None, validate: bool = True) -> tuple[Any, Any]:
    """(grad_p, grad_q) of sum(upstream * JS_w(P, Q))."""
    params = {"weight": _validate.check_in_unit_interval("weight", weight)}
    return _pair(JS, p, q, upstream, axis, from_logits, base, validate, params)


def skew_kl(p: Any, q: Any, *, upstream: Any = None, alpha: float = 0.1, axis: int = -1, from_logits: bool = False,
            base: float | None = None, validate: bool = True) -> tuple[Any, Any]:
    """(grad_p, grad_q) of sum(upstream * KL(P || alpha P + (1 - alpha) Q))."""
    params = {"alpha": _validate.check_in_unit_interval("alpha", alpha)}
    return _pair(SKEW_KL, p, q, upstream, axis, from_logits, base, validate, params)


def tvd(p: Any, q: Any, *, upstream: Any = None, axis: int = -1, from_logits: bool = False,
        validate: bool = True) -> tuple[Any, Any]:
    """(grad_p, grad_q) of sum(upstream * TVD(P, Q)); the subgradient 0 where p_i = q_i."""
    return _pair(TVD, p, q, upstream, axis, from_logits, None, validate)


def hellinger(p: Any, q: Any, *, upstream: Any = None, axis: int = -1, from_logits: bool = False,
              validate: bool = True) -> tuple[Any, Any]:
    """(grad_p, grad_q) of sum(upstream * Hellinger(P, Q)); 0 where P = Q."""
    return _pair(HELLINGER, p, q, upstream, axis, from_logits, None, validate)


def renyi(p: Any, q: Any, *, alpha: float, upstream: Any = None, axis: int = -1, from_logits: bool = False,
          base: float | None = None, validate: bool = True) -> tuple[Any, Any]:
    """(grad_p, grad_q) of sum(upstream * D_alpha(P || Q)); at alpha = inf the subgradient at the first arg max."""
    params = {"alpha": _validate.check_renyi_alpha(alpha)}
    return _pair(RENYI, p, q, upstream, axis, from_logits, base, validate, params)
