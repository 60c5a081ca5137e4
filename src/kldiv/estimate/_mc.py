"""Monte Carlo estimators of KL(P || Q) from log-densities at samples drawn from P."""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import numpy as np

from .. import _validate
from ._estimate import Estimate, normal_interval


def _is_torch(x: Any) -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    return isinstance(x, torch.Tensor)


def mc(log_p: Any, log_q: Any, *, estimator: str = "k1", ci: float | None = 0.95, base: float | None = None) -> Estimate:
    r"""Monte Carlo estimate of KL(P ‖ Q) from log-densities at samples ``x_i ~ P``.

    With the log-ratio ``log r_i = log q(x_i) − log p(x_i)`` the three estimators of Schulman (2020) are

    * ``"k1"``: ``mean(−log r)`` — unbiased, high variance, individual terms can be negative;
    * ``"k2"``: ``mean((log r)² / 2)`` — biased (it estimates an f-divergence that agrees with KL to second
      order as Q → P), low variance, non-negative;
    * ``"k3"``: ``mean((r − 1) − log r)`` — unbiased (``E_P[r] = 1``) and every term is ≥ 0; ``r − 1`` is
      evaluated as ``expm1(log r)`` so large ratios do not lose precision.

    The standard error is the sample standard deviation of the terms over ``sqrt(n)``; the interval is the
    normal one, ``value ± z · stderr``. Torch inputs keep their autograd graph in ``Estimate.value``.

    Args:
        log_p: log-density (or log-mass) of P at the n samples, shape ``(n,)``; the samples must come from P.
        log_q: log-density of Q at the same samples, shape ``(n,)``.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        ci: confidence level of the normal interval (None for no interval).
        base: logarithm base of the result (None for nats, 2 for bits).

    Returns:
        ``Estimate(value, stderr, ci, n)`` of KL(P ‖ Q). If Q gives zero density (``log_q = −inf``) to a sample,
        KL(P ‖ Q) is infinite: the value is ``+inf`` and a ``RuntimeWarning`` says so.

    Raises:
        ValueError: shapes differ, fewer than 2 samples, NaN, or ``log_p`` not finite (a sample P cannot draw).

    References:
        J. Schulman, "Approximating KL divergence", 2020, http://joschu.net/blog/kl-approx.html
    """
    _validate.check_mc_estimator(estimator)
    level = _validate.check_level(ci)
    divisor = _validate.check_base(base) or 1.0  # nats: 1
    lp, lq, host_p, host_q = _validate.check_log_densities(log_p, log_q)
    n = int(lp.shape[0])
    if np.isneginf(host_q).any():
        i = int(np.argmax(np.isneginf(host_q)))
        warnings.warn(
            f"log_q[{i}] is -inf: Q gives zero density to a sample of P, so KL(P || Q) is infinite",
            RuntimeWarning,
            stacklevel=2,
        )
        return Estimate(math.inf, math.inf, normal_interval(math.inf, math.inf, level), n)

    log_r = lq - lp
    if estimator == "k1":
        terms = -log_r
    elif estimator == "k2":
        terms = log_r * log_r / 2
    else:
        terms = (log_r.expm1() if _is_torch(log_r) else np.expm1(log_r)) - log_r
    value = terms.mean() / divisor
    host_terms = terms.detach().cpu().double().numpy() if _is_torch(terms) else terms
    stderr = float(np.std(host_terms, ddof=1) / math.sqrt(n) / divisor)
    if not _is_torch(value):
        value = float(value)
    return Estimate(value, stderr, normal_interval(value, stderr, level), n)
