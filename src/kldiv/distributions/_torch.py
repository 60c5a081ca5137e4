"""Closed forms for ``torch.distributions``: every pair PyTorch registers, plus the pairs it lacks.

Imported only once a torch distribution has been passed in, so ``import kldiv`` never loads torch.
PyTorch's own closed forms enter the registry unchanged (same values, same gradients); the functions below
add what ``torch.distributions.kl`` is missing. All are written in torch operations, so results are
differentiable with respect to the parameters.
"""

from __future__ import annotations

import math

import torch
import torch.distributions as D
import torch.distributions.kl as torch_kl

from ._registry import _REGISTRY, register

# Every closed form PyTorch registers, under its own pair (ours below override a few of them).
for (_type_p, _type_q), _fn in list(torch_kl._KL_REGISTRY.items()):
    _REGISTRY.setdefault((_type_p, _type_q), _fn)


def _inf_like(x: torch.Tensor) -> torch.Tensor:
    return torch.full_like(x, math.inf)


def _sum_rightmost(x: torch.Tensor, dims: int) -> torch.Tensor:
    return x.reshape(x.shape[: x.dim() - dims] + (-1,)).sum(-1) if dims > 0 else x


# --- continuous families PyTorch lacks ------------------------------------------------------------------


@register(D.VonMises, D.VonMises)
def _kl_vonmises_vonmises(p: D.VonMises, q: D.VonMises) -> torch.Tensor:
    """KL = log(I0(κq) / I0(κp)) + A(κp) (κp − κq cos(μp − μq)), with A = I1/I0 (mean resultant length).

    Computed with exponentially scaled Bessel functions (``i0e``, ``i1e``) so large κ does not overflow.
    """
    kp, kq = p.concentration, q.concentration
    log_i0_p = torch.log(torch.special.i0e(kp)) + kp
    log_i0_q = torch.log(torch.special.i0e(kq)) + kq
    mean_resultant = torch.special.i1e(kp) / torch.special.i0e(kp)
    return log_i0_q - log_i0_p + mean_resultant * (kp - kq * torch.cos(p.loc - q.loc))


@register(D.Weibull, D.Weibull)
def _kl_weibull_weibull(p: D.Weibull, q: D.Weibull) -> torch.Tensor:
    """KL(Weib(k1, λ1) ‖ Weib(k2, λ2)) = log(k1/λ1^k1) − log(k2/λ2^k2) + (k1 − k2)(log λ1 − γ/k1)
    + (λ1/λ2)^k2 Γ(k2/k1 + 1) − 1  (Bauckhage 2013, "Computing the KL divergence between two Weibull
    distributions", arXiv:1310.3713)."""
    k1, l1, k2, l2 = p.concentration, p.scale, q.concentration, q.scale
    euler = 0.5772156649015329
    return (
        torch.log(k1) - k1 * torch.log(l1) - torch.log(k2) + k2 * torch.log(l2)
        + (k1 - k2) * (torch.log(l1) - euler / k1)
        + torch.exp(k2 * (torch.log(l1) - torch.log(l2)) + torch.lgamma(k2 / k1 + 1))
        - 1
    )


@register(D.LogNormal, D.LogNormal)
def _kl_lognormal_lognormal(p: D.LogNormal, q: D.LogNormal) -> torch.Tensor:
    """KL is invariant under the common bijection exp: KL(LogN(μ1, σ1) ‖ LogN(μ2, σ2)) = KL(N(μ1, σ1) ‖ N(μ2, σ2))."""
    return torch_kl._kl_normal_normal(p.base_dist, q.base_dist)


_KUMARASWAMY_TERMS = 2000


@register(D.Kumaraswamy, D.Beta)
def _kl_kumaraswamy_beta(p: D.Kumaraswamy, q: D.Beta) -> torch.Tensor:
    """KL(Kum(a, b) ‖ Beta(α, β)) = (a − α)/a (−γ − ψ(b) − 1/b) + log(ab) + log B(α, β) − (b − 1)/b
    + (β − 1) b Σ_{m≥1} B(m/a, b) / (m + ab)   (Nalisnick and Smyth 2017, "Stick-breaking variational
    autoencoders", eq. in Sec. 3.3).

    The series is summed to M = 2000 terms; its tail, ~ Γ(b) a^b m^(−1−b), is added as the integral
    Γ(b) a^b (M + 1/2)^(−b) / b.
    """
    a, b = p.concentration1, p.concentration0
    alpha, beta = q.concentration1, q.concentration0
    a, b, alpha, beta = torch.broadcast_tensors(a, b, alpha, beta)
    euler = 0.5772156649015329
    m = torch.arange(1, _KUMARASWAMY_TERMS + 1, dtype=a.dtype, device=a.device).reshape((-1,) + (1,) * a.dim())
    log_beta_fn = torch.lgamma(m / a) + torch.lgamma(b) - torch.lgamma(m / a + b)
    series = torch.exp(log_beta_fn - torch.log(m + a * b)).sum(0)
    tail = torch.exp(torch.lgamma(b) + b * torch.log(a) - b * math.log(_KUMARASWAMY_TERMS + 0.5)) / b
    log_beta_q = torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)
    return (
        (a - alpha) / a * (-euler - torch.digamma(b) - 1 / b)
        + torch.log(a * b)
        + log_beta_q
        - (b - 1) / b
        + (beta - 1) * b * (series + tail)
    )


# --- Independent and MultivariateNormal -------------------------------------------------------------------


def _unwrap(d: D.Distribution) -> D.Distribution:
    while isinstance(d, D.Independent):
        d = d.base_dist
    return d


def _as_multivariate_normal(d: D.Distribution) -> D.MultivariateNormal:
    """An ``Independent`` over ``Normal`` with one event dimension, as the equal ``MultivariateNormal``."""
    base = _unwrap(d)
    if isinstance(base, D.MultivariateNormal) and len(d.event_shape) == 1:
        return base
    if isinstance(base, D.Normal) and len(d.event_shape) == 1:
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        return D.MultivariateNormal(loc, scale_tril=torch.diag_embed(scale), validate_args=False)
    raise NotImplementedError(
        f"no closed form between {type(base).__name__} with event shape {tuple(d.event_shape)} and a "
        "MultivariateNormal; only Independent(Normal, 1) converts to a MultivariateNormal"
    )


def _check_events(p: D.Distribution, q: D.Distribution) -> None:
    if tuple(p.event_shape) != tuple(q.event_shape):
        raise ValueError(
            f"p has event shape {tuple(p.event_shape)} but q has {tuple(q.event_shape)}; KL needs distributions "
            "over the same space (use Independent(..., reinterpreted_batch_ndims) to match them)"
        )


@register(D.Independent, D.MultivariateNormal)
def _kl_independent_multivariatenormal(p: D.Independent, q: D.MultivariateNormal) -> torch.Tensor:
    """Independent(Normal(μ, σ), 1) is MultivariateNormal(μ, diag σ²); then the Gaussian closed form."""
    _check_events(p, q)
    return torch_kl._kl_multivariatenormal_multivariatenormal(_as_multivariate_normal(p), q)


@register(D.MultivariateNormal, D.Independent)
def _kl_multivariatenormal_independent(p: D.MultivariateNormal, q: D.Independent) -> torch.Tensor:
    _check_events(p, q)
    return torch_kl._kl_multivariatenormal_multivariatenormal(p, _as_multivariate_normal(q))


@register(D.Independent, D.Independent)
def _kl_independent_independent(p: D.Independent, q: D.Independent) -> torch.Tensor:
    """Sum of the base KL over the reinterpreted dimensions; the two sides may nest ``Independent`` differently
    (e.g. ``Independent(Normal, 2)`` against ``Independent(Independent(Normal, 1), 1)``) as long as their event
    shapes agree. A base of lower event rank is re-wrapped to match the other base."""
    from . import kl as _kl_exact

    _check_events(p, q)
    base_p, base_q = _unwrap(p), _unwrap(q)
    rank_p, rank_q = len(base_p.event_shape), len(base_q.event_shape)
    if rank_p < rank_q:
        base_p = D.Independent(base_p, rank_q - rank_p)
    elif rank_q < rank_p:
        base_q = D.Independent(base_q, rank_p - rank_q)
    rank = max(rank_p, rank_q)
    value = _kl_exact(base_p, base_q)
    return _sum_rightmost(value, len(p.event_shape) - rank)


@register(D.Multinomial, D.Multinomial)
def _kl_multinomial_multinomial(p: D.Multinomial, q: D.Multinomial) -> torch.Tensor:
    """KL = n KL(Cat(p) ‖ Cat(q)) for equal trial counts n; different counts have disjoint supports: +inf."""
    value = p.total_count * torch_kl._kl_categorical_categorical(p._categorical, q._categorical)
    if p.total_count != q.total_count:
        return _inf_like(value)
    return value


# --- counting distributions: Bernoulli, Binomial, Poisson, Geometric, NegativeBinomial -------------------

_COUNTING = (D.Bernoulli, D.Binomial, D.Poisson, D.Geometric, D.NegativeBinomial)


def _support_max(d: D.Distribution) -> torch.Tensor | None:
    """Largest value of a bounded counting support (None if unbounded)."""
    if isinstance(d, D.Bernoulli):
        return torch.ones_like(d.probs)
    if isinstance(d, D.Binomial):
        return torch.broadcast_tensors(d.total_count, d.probs)[0]
    return None


def _series_kl(p: D.Distribution, q: D.Distribution) -> torch.Tensor:
    """Σ_x p(x) (log p(x) − log q(x)) over x = 0, 1, 2, …: exact for bounded P, else summed until P's remaining
    mass is below e^-40 (mean + 40 sd + 50 terms; the tails of these families decay at least geometrically)."""
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    max_p, max_q = _support_max(p), _support_max(q)
    if max_p is not None:
        upper = int(max_p.max().item())
    else:
        upper = int((p.mean + 40 * p.stddev).max().item()) + 50
    dtype = p.mean.dtype
    x = torch.arange(upper + 1, dtype=dtype, device=p.mean.device).reshape((-1,) + (1,) * len(shape))
    x = x.expand((upper + 1,) + tuple(shape))
    in_p = torch.ones_like(x, dtype=torch.bool) if max_p is None else x <= max_p
    in_q = torch.ones_like(x, dtype=torch.bool) if max_q is None else x <= max_q
    safe_p = torch.where(in_p, x, torch.zeros_like(x))
    safe_q = torch.where(in_q, x, torch.zeros_like(x))
    log_p = torch.where(in_p, p.log_prob(safe_p), torch.full_like(x, -math.inf))
    log_q = torch.where(in_q, q.log_prob(safe_q), torch.full_like(x, -math.inf))
    mass = torch.exp(log_p)
    terms = torch.where(mass > 0, mass * (log_p - torch.where(in_q, log_q, torch.zeros_like(log_q))), torch.zeros_like(x))
    value = terms.sum(0)
    outside = ((mass > 0) & ~in_q).any(0)
    if max_p is None and max_q is not None:
        outside = torch.ones_like(outside)  # unbounded P against bounded Q
    return torch.where(outside, torch.full_like(value, math.inf), value)


def _register_counting() -> None:
    for type_p in _COUNTING:
        for type_q in _COUNTING:
            if (type_p, type_q) not in torch_kl._KL_REGISTRY:
                register(type_p, type_q)(_series_kl)


_register_counting()


@register(D.Binomial, D.Binomial)
def _kl_binomial_binomial(p: D.Binomial, q: D.Binomial) -> torch.Tensor:
    """Closed form n (p log(p/q) + (1−p) log((1−p)/(1−q))) for equal trial counts; +inf where P's count
    exceeds Q's; the exact finite sum where it is smaller (PyTorch raises NotImplementedError there)."""
    if bool((p.total_count == q.total_count).all()):
        return torch_kl._kl_binomial_binomial(p, q)
    return _series_kl(p, q)


@register(D.NegativeBinomial, D.NegativeBinomial)
def _kl_negativebinomial_negativebinomial(p: D.NegativeBinomial, q: D.NegativeBinomial) -> torch.Tensor:
    """With equal ``total_count`` r: KL = r p/(1−p) · log(p/q) + r log((1−p)/(1−q)) (``probs`` = p, q, PyTorch's
    parameterisation: successes before r failures); otherwise the series over the support."""
    if bool((p.total_count == q.total_count).all()):
        r = p.total_count
        log1m_p, log1m_q = torch.nn.functional.logsigmoid(-p.logits), torch.nn.functional.logsigmoid(-q.logits)
        return r * torch.exp(p.logits) * (p.logits + log1m_p - q.logits - log1m_q) + r * (log1m_p - log1m_q)
    return _series_kl(p, q)
