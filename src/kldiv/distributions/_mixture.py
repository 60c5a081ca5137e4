"""Closed-form approximations and bounds of KL between Gaussian mixtures.

For mixtures f = Σ_a π_a f_a and g = Σ_b ω_b g_b of Gaussians, with component quantities
``D_ab = KL(f_a ‖ g_b)``, ``H_a`` the entropy of f_a, ``z_aa' = ∫ f_a f_a'`` and ``t_ab = ∫ f_a g_b``
(a product of Gaussians integrates to a Gaussian density: ``N(μ_a; μ_b, Σ_a + Σ_b)``):

* variational approximation (Hershey and Olsen 2007, eq. 18):
  ``D_var = Σ_a π_a log(Σ_a' π_a' e^(−D_aa') / Σ_b ω_b e^(−D_ab))``;
* product approximation (Hershey and Olsen 2007, eq. 10): ``D_prod = Σ_a π_a log(Σ_a' π_a' z_aa' / Σ_b ω_b t_ab)``;
* bounds (Durrieu, Thiran and Kelly 2012, from Jensen's inequality on log ∫ f_a · and the variational bound):
  ``lower = Σ_a π_a [log Σ_a' π_a' e^(−D_aa') − H_a − log Σ_b ω_b t_ab]`` (clipped at 0),
  ``upper = Σ_a π_a [log Σ_a' π_a' z_aa' + H_a − log Σ_b ω_b e^(−D_ab)]``.

Mixtures are ``torch.distributions.MixtureSameFamily`` over ``Normal``, ``MultivariateNormal`` or
``Independent(Normal, 1)`` components (results are differentiable), or NumPy tuples
``(weights (A,), means (A, d), covariances (A, d, d))``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class _Ops:
    def __init__(self, torch_mode: bool):
        self.torch_mode = torch_mode
        if torch_mode:
            import torch

            self.xp = torch
        else:
            self.xp = np

    def logsumexp(self, x: Any, axis: int) -> Any:
        if self.torch_mode:
            return self.xp.logsumexp(x, dim=axis)
        from scipy.special import logsumexp

        return logsumexp(x, axis=axis)

    def cholesky(self, x: Any) -> Any:
        return self.xp.linalg.cholesky(x)

    def solve_lower(self, lower: Any, b: Any) -> Any:
        if self.torch_mode:
            return self.xp.linalg.solve_triangular(lower, b, upper=False)
        from scipy.linalg import solve_triangular

        if lower.ndim == 2:
            return solve_triangular(lower, b, lower=True)
        return np.stack([solve_triangular(lo, bb, lower=True) for lo, bb in zip(lower, b, strict=True)])

    def logdet(self, lower: Any) -> Any:
        diag = self.xp.diagonal(lower, 0, -2, -1) if self.torch_mode else np.diagonal(lower, 0, -2, -1)
        return 2 * self.xp.log(diag).sum(-1)


def _components(mixture: Any) -> tuple[Any, Any, Any, bool]:
    """(log weights (A,), means (A, d), covariances (A, d, d), torch?) of a Gaussian mixture."""
    if isinstance(mixture, tuple):
        if len(mixture) != 3:
            raise TypeError("a NumPy Gaussian mixture is the tuple (weights, means, covariances)")
        weights, means, covs = (np.asarray(v, dtype=np.float64) for v in mixture)
        if means.ndim == 1:
            means = means[:, None]
        if covs.ndim == 1:
            covs = covs[:, None, None]
        a, d = means.shape
        if weights.shape != (a,) or covs.shape != (a, d, d):
            raise ValueError(
                f"mixture shapes disagree: weights {weights.shape}, means {means.shape}, covariances {covs.shape}; "
                "expected (A,), (A, d), (A, d, d)"
            )
        if np.any(weights < 0) or not math.isclose(weights.sum(), 1, rel_tol=1e-6):
            raise ValueError(f"mixture weights must be >= 0 and sum to 1, got sum {weights.sum():.6g}")
        with np.errstate(divide="ignore"):
            return np.log(weights), means, covs, False
    import torch.distributions as D

    if not isinstance(mixture, D.MixtureSameFamily):
        raise TypeError(
            f"expected a torch MixtureSameFamily or a (weights, means, covariances) tuple, got {type(mixture).__name__}"
        )
    if mixture.batch_shape != ():
        raise ValueError(f"mixture has batch shape {tuple(mixture.batch_shape)}; pass one mixture at a time")
    import torch

    log_w = torch.log_softmax(mixture.mixture_distribution.logits, -1)
    comp = mixture.component_distribution
    if isinstance(comp, D.Normal):
        return log_w, comp.loc.unsqueeze(-1), (comp.scale**2).unsqueeze(-1).unsqueeze(-1), True
    if isinstance(comp, D.Independent) and isinstance(comp.base_dist, D.Normal) and comp.reinterpreted_batch_ndims == 1:
        loc, scale = torch.broadcast_tensors(comp.base_dist.loc, comp.base_dist.scale)
        return log_w, loc, torch.diag_embed(scale**2), True
    if isinstance(comp, D.MultivariateNormal):
        return log_w, comp.loc.expand(comp.batch_shape + comp.event_shape), comp.covariance_matrix, True
    raise TypeError(
        f"mixture components are {type(comp).__name__}; Gaussian mixture formulas need Normal, MultivariateNormal "
        "or Independent(Normal, 1) components"
    )


def _pairwise(f: tuple, g: tuple, ops: _Ops) -> tuple[Any, Any, Any]:
    """Matrices D_ab = KL(f_a ‖ g_b), log t_ab = log ∫ f_a g_b, and entropies H_a."""
    _, mu_f, cov_f = f[:3]
    _, mu_g, cov_g = g[:3]
    d = mu_f.shape[-1]
    if mu_g.shape[-1] != d:
        raise ValueError(f"p's components have dimension {d} but q's have {mu_g.shape[-1]}; they must agree")
    chol_f, chol_g = ops.cholesky(cov_f), ops.cholesky(cov_g)
    logdet_f, logdet_g = ops.logdet(chol_f), ops.logdet(chol_g)
    a, b = mu_f.shape[0], mu_g.shape[0]
    # KL(f_a ‖ g_b) = ½ (tr(Σ_b⁻¹ Σ_a) + δᵀ Σ_b⁻¹ δ − d + log|Σ_b| − log|Σ_a|)
    lg = chol_g[None].expand(a, b, d, d) if ops.torch_mode else np.broadcast_to(chol_g[None], (a, b, d, d))
    lf = chol_f[:, None].expand(a, b, d, d) if ops.torch_mode else np.broadcast_to(chol_f[:, None], (a, b, d, d))
    delta = (mu_g[None] - mu_f[:, None])[..., None]
    solved = ops.solve_lower(lg.reshape(a * b, d, d), lf.reshape(a * b, d, d)).reshape(a, b, d, d)
    trace = (solved**2).sum((-2, -1)) if ops.torch_mode else (solved**2).sum(axis=(-2, -1))
    maha = (ops.solve_lower(lg.reshape(a * b, d, d), delta.reshape(a * b, d, 1)) ** 2).reshape(a, b, d).sum(-1)
    kl = 0.5 * (trace + maha - d + logdet_g[None] - logdet_f[:, None])
    # log ∫ f_a g_b = log N(μ_a; μ_b, Σ_a + Σ_b)
    sum_cov = cov_f[:, None] + cov_g[None]
    chol_s = ops.cholesky(sum_cov.reshape(a * b, d, d))
    maha_s = (ops.solve_lower(chol_s, delta.reshape(a * b, d, 1)) ** 2).reshape(a, b, d).sum(-1)
    log_t = -0.5 * (d * math.log(2 * math.pi) + ops.logdet(chol_s).reshape(a, b) + maha_s)
    entropy = 0.5 * (d * (1 + math.log(2 * math.pi)) + logdet_f)
    return kl, log_t, entropy


def _parts(p: Any, q: Any) -> tuple:
    f, g = _components(p), _components(q)
    if f[3] != g[3]:
        raise TypeError("p and q come from different libraries; pass two torch mixtures or two NumPy tuples")
    ops = _Ops(f[3])
    kl_ff, log_z, entropy = _pairwise(f, f, ops)
    kl_fg, log_t, _ = _pairwise(f, g, ops)
    return ops, f[0], g[0], kl_ff, log_z, entropy, kl_fg, log_t


def _result(value: Any, ops: _Ops) -> Any:
    return value if ops.torch_mode else float(value)


def mixture_variational(p: Any, q: Any) -> Any:
    """Hershey–Olsen variational approximation of KL(p ‖ q) between Gaussian mixtures (module docstring).

    Exact when both mixtures have one component; not a bound.

    Args:
        p, q: Gaussian mixtures (torch ``MixtureSameFamily`` or ``(weights, means, covariances)`` tuples).

    Returns:
        The approximation in nats (a 0-d tensor for torch input, else a float).

    References:
        J. R. Hershey and P. A. Olsen, "Approximating the Kullback Leibler divergence between Gaussian mixture
        models", ICASSP 2007, eq. 18.
    """
    ops, log_pi, log_omega, kl_ff, _, _, kl_fg, _ = _parts(p, q)
    num = ops.logsumexp(log_pi[None, :] - kl_ff, 1)
    den = ops.logsumexp(log_omega[None, :] - kl_fg, 1)
    return _result((ops.xp.exp(log_pi) * (num - den)).sum(), ops)


def mixture_product(p: Any, q: Any) -> Any:
    """Hershey–Olsen product-of-Gaussians approximation of KL(p ‖ q) (module docstring; not a bound).

    References:
        J. R. Hershey and P. A. Olsen, ICASSP 2007, eq. 10.
    """
    ops, log_pi, log_omega, _, log_z, _, _, log_t = _parts(p, q)
    num = ops.logsumexp(log_pi[None, :] + log_z, 1)
    den = ops.logsumexp(log_omega[None, :] + log_t, 1)
    return _result((ops.xp.exp(log_pi) * (num - den)).sum(), ops)


def mixture_bounds(p: Any, q: Any) -> tuple[Any, Any]:
    """Lower and upper bounds ``(lower, upper)`` on KL(p ‖ q) between Gaussian mixtures (module docstring).

    The lower bound is clipped at 0 (KL is never negative). Both hold for any mixtures; they are tight when the
    components are well separated.

    References:
        J.-L. Durrieu, J.-P. Thiran and F. Kelly, "Lower and upper bounds for approximation of the
        Kullback-Leibler divergence between Gaussian mixture models", ICASSP 2012.
    """
    ops, log_pi, log_omega, kl_ff, log_z, entropy, kl_fg, log_t = _parts(p, q)
    pi = ops.xp.exp(log_pi)
    lower = (pi * (ops.logsumexp(log_pi[None, :] - kl_ff, 1) - entropy - ops.logsumexp(log_omega[None, :] + log_t, 1))).sum()
    upper = (pi * (ops.logsumexp(log_pi[None, :] + log_z, 1) + entropy - ops.logsumexp(log_omega[None, :] - kl_fg, 1))).sum()
    lower = ops.xp.clamp(lower, min=0) if ops.torch_mode else max(float(lower), 0.0)
    return _result(lower, ops), _result(upper, ops)
