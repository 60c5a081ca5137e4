"""Monte Carlo KL(P ‖ Q) = E_P[log p(X) − log q(X)] for pairs without a closed form."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..estimate import Estimate, normal_interval


def _estimate(terms_value: Any, terms_host: np.ndarray, n: int, level: float) -> Estimate:
    """Mean and standard error along axis 0 (a batch of estimates when the distributions are batched)."""
    value = terms_value.mean(0)
    stderr = np.std(terms_host, axis=0, ddof=1) / math.sqrt(n)
    if np.ndim(stderr) == 0:
        stderr = float(stderr)
        value = value if hasattr(value, "detach") else float(value)
        return Estimate(value, stderr, normal_interval(value, stderr, level), n)
    host_value = value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    return Estimate(value, stderr, (host_value - z * stderr, host_value + z * stderr), n)


def torch_monte_carlo(p: Any, q: Any, samples: int, seed: int | None, level: float = 0.95) -> Estimate:
    """Draw ``samples`` points from P (reparameterised when P has ``rsample``, so the value is differentiable)
    and average ``log p − log q``. Points outside Q's support make the value +inf."""
    import torch

    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        x = p.rsample((samples,)) if p.has_rsample else p.sample((samples,))
    inside = q.support.check(x)
    if inside.dim() > 1 + len(q.batch_shape):
        inside = inside.reshape(inside.shape[: 1 + len(q.batch_shape)] + (-1,)).all(-1)
    if not bool(inside.all()):
        shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
        value = torch.full(shape, math.inf, dtype=x.dtype if x.is_floating_point() else torch.float64)
        outside = ~inside.all(0) if inside.dim() else ~inside
        value = torch.where(outside, value, torch.full_like(value, math.nan))
        if bool(torch.isnan(value).any()):
            raise NotImplementedError(
                "some samples of P fall outside Q's support in part of the batch; estimate the batch elements "
                "separately"
            )
        return Estimate(value if value.dim() else float(value), math.inf, (math.inf, math.inf), samples)
    terms = p.log_prob(x) - q.log_prob(x)
    host = terms.detach().cpu().double().numpy()
    if not np.isfinite(host).all():
        raise ValueError("log-densities at samples of P are not finite; check the parameters of p and q")
    return _estimate(terms, host, samples, level)


def scipy_monte_carlo(p: Any, q: Any, samples: int, seed: int | None, level: float = 0.95) -> Estimate:
    """Draw ``samples`` points from P with ``rvs`` and average ``log p − log q`` (logpdf, or logpmf)."""
    x = p.frozen.rvs(size=samples, random_state=np.random.default_rng(seed))
    if p.discrete:
        log_p, log_q = p.frozen.logpmf(x), q.frozen.logpmf(x)
    else:
        log_p, log_q = p.frozen.logpdf(x), q.frozen.logpdf(x)
    log_p, log_q = np.asarray(log_p, dtype=np.float64), np.asarray(log_q, dtype=np.float64)
    if np.isneginf(log_q).any():
        return Estimate(math.inf, math.inf, (math.inf, math.inf), samples)
    terms = log_p - log_q
    return _estimate(terms, terms, samples, level)
