"""SciPy frozen distributions: an adapter to small parameter classes, and their closed forms in NumPy.

``scipy.stats.norm(0, 1)`` and friends become instances of the classes below (each keeps the frozen object
for sampling); the registry dispatches on these classes exactly as it does on ``torch.distributions``.
Location–scale families keep SciPy's ``loc``/``scale``; a pair whose closed form needs a shared ``loc`` raises
``NotImplementedError`` otherwise (``kl`` then falls back to Monte Carlo when given ``samples``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from ._registry import register

EULER = 0.5772156649015329


class ScipyDistribution:
    """A SciPy frozen distribution with its parameters as NumPy arrays."""

    discrete = False

    def __init__(self, frozen: Any, **params: Any):
        self.frozen = frozen
        for name, value in params.items():
            setattr(self, name, np.asarray(value, dtype=np.float64))

    def support(self) -> tuple[float, float]:
        low, high = self.frozen.support()
        return float(np.min(low)), float(np.max(high))


class Normal(ScipyDistribution):
    pass


class LogNormal(ScipyDistribution):
    pass


class Gamma(ScipyDistribution):
    """gamma(a, loc, scale), expon(loc, scale) = Gamma(1, …), chi2(df, loc, scale) = Gamma(df/2, 2·scale)."""


class Beta(ScipyDistribution):
    pass


class Uniform(ScipyDistribution):
    pass


class Laplace(ScipyDistribution):
    pass


class VonMises(ScipyDistribution):
    pass


class Weibull(ScipyDistribution):
    pass


class Cauchy(ScipyDistribution):
    pass


class Gumbel(ScipyDistribution):
    pass


class HalfNormal(ScipyDistribution):
    pass


class OtherContinuous(ScipyDistribution):
    """Any other univariate continuous SciPy distribution (no closed form; Monte Carlo only)."""


class Discrete(ScipyDistribution):
    """Any univariate discrete SciPy distribution (poisson, bernoulli, binom, geom, nbinom, …)."""

    discrete = True


class Poisson(Discrete):
    pass


class Bernoulli(Discrete):
    pass


class Binomial(Discrete):
    pass


class Geometric(Discrete):
    pass


class NegativeBinomial(Discrete):
    pass


class MultivariateNormal(ScipyDistribution):
    pass


class Dirichlet(ScipyDistribution):
    pass


class Multinomial(ScipyDistribution):
    discrete = True


def from_scipy(frozen: Any) -> ScipyDistribution:
    """Wrap a SciPy frozen distribution in its adapter class."""
    kind = type(frozen).__name__
    if kind == "multivariate_normal_frozen":
        return MultivariateNormal(frozen, mean=frozen.mean, cov=frozen.cov)
    if kind == "dirichlet_frozen":
        return Dirichlet(frozen, alpha=frozen.alpha)
    if kind == "multinomial_frozen":
        return Multinomial(frozen, n=frozen.n, p=frozen.p)
    dist = getattr(frozen, "dist", None)
    name = getattr(dist, "name", None)
    if name is None or not hasattr(frozen, "args"):
        raise TypeError(
            f"{kind} is not a SciPy frozen distribution kldiv can read; pass e.g. scipy.stats.norm(0, 1)"
        )
    shapes, loc, scale = dist._parse_args(*frozen.args, **frozen.kwds)[:3]
    if getattr(frozen, "discrete", False) or isinstance(dist, _discrete_type()):
        cls = {"poisson": Poisson, "bernoulli": Bernoulli, "binom": Binomial, "geom": Geometric,
               "nbinom": NegativeBinomial}.get(name, Discrete)
        names = {"poisson": ("mu",), "bernoulli": ("p",), "binom": ("n", "p"), "geom": ("p",), "nbinom": ("n", "p")}
        params = dict(zip(names.get(name, ()), shapes, strict=False))
        return cls(frozen, loc=loc, **params)
    simple = {"norm": Normal, "uniform": Uniform, "laplace": Laplace, "cauchy": Cauchy, "gumbel_r": Gumbel,
              "halfnorm": HalfNormal}
    if name in simple:
        return simple[name](frozen, loc=loc, scale=scale)
    if name == "lognorm":  # lognorm(s, loc, scale): log(X − loc) ~ N(log scale, s)
        return LogNormal(frozen, mu=np.log(scale), sigma=shapes[0], loc=loc)
    if name == "expon":
        return Gamma(frozen, a=1.0, rate=1 / np.asarray(scale), loc=loc)
    if name == "gamma":
        return Gamma(frozen, a=shapes[0], rate=1 / np.asarray(scale), loc=loc)
    if name == "chi2":
        return Gamma(frozen, a=np.asarray(shapes[0]) / 2, rate=1 / (2 * np.asarray(scale)), loc=loc)
    if name == "beta":
        return Beta(frozen, a=shapes[0], b=shapes[1], loc=loc, scale=scale)
    if name == "vonmises" and np.all(np.asarray(scale) == 1):
        return VonMises(frozen, kappa=shapes[0], loc=loc)
    if name == "weibull_min":
        return Weibull(frozen, c=shapes[0], loc=loc, scale=scale)
    return OtherContinuous(frozen)


def _discrete_type() -> type:
    from scipy.stats import rv_discrete

    return rv_discrete


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if not np.all(a == b):
        raise NotImplementedError(f"no closed form for different {what}")


def _support_check(p: ScipyDistribution, q: ScipyDistribution) -> np.ndarray | None:
    """+inf when P's support is not inside Q's (P gives mass where Q has none)."""
    (lp, hp), (lq, hq) = p.support(), q.support()
    if lp < lq or hp > hq:
        return np.asarray(math.inf)
    return None


# --- continuous closed forms ------------------------------------------------------------------------------


@register(Normal, Normal)
def _kl_normal_normal(p: Normal, q: Normal) -> np.ndarray:
    """log(σq/σp) + (σp² + (μp − μq)²) / (2σq²) − 1/2."""
    ratio = (p.scale / q.scale) ** 2
    return 0.5 * (ratio + ((p.loc - q.loc) / q.scale) ** 2 - 1 - np.log(ratio))


@register(LogNormal, LogNormal)
def _kl_lognormal_lognormal(p: LogNormal, q: LogNormal) -> np.ndarray:
    """The Normal KL of the logarithms (KL is invariant under the shared bijection), for a shared loc."""
    _same(p.loc, q.loc, "lognorm loc")
    ratio = (p.sigma / q.sigma) ** 2
    return 0.5 * (ratio + ((p.mu - q.mu) / q.sigma) ** 2 - 1 - np.log(ratio))


@register(Gamma, Gamma)
def _kl_gamma_gamma(p: Gamma, q: Gamma) -> np.ndarray:
    """(a_p − a_q) ψ(a_p) − ln Γ(a_p) + ln Γ(a_q) + a_q (ln b_p − ln b_q) + a_p (b_q − b_p)/b_p (rates b);
    covers expon and chi2 too. Different locs: +inf if P starts left of Q, else no closed form."""
    if np.any(p.loc < q.loc):
        return np.full(np.broadcast(p.a, q.a, p.loc, q.loc).shape, math.inf)
    _same(p.loc, q.loc, "gamma/expon/chi2 loc")
    return (
        (p.a - q.a) * special.digamma(p.a) - special.gammaln(p.a) + special.gammaln(q.a)
        + q.a * (np.log(p.rate) - np.log(q.rate)) + p.a * (q.rate - p.rate) / p.rate
    )


@register(Beta, Beta)
def _kl_beta_beta(p: Beta, q: Beta) -> np.ndarray:
    """ln B(α_q, β_q) − ln B(α_p, β_p) + (α_p − α_q) ψ(α_p) + (β_p − β_q) ψ(β_p) + (α_q − α_p + β_q − β_p) ψ(α_p + β_p)."""
    infinite = _support_check(p, q)
    if infinite is not None:
        return infinite
    _same(p.loc, q.loc, "beta loc")
    _same(p.scale, q.scale, "beta scale")
    return (
        special.betaln(q.a, q.b) - special.betaln(p.a, p.b)
        + (p.a - q.a) * special.digamma(p.a) + (p.b - q.b) * special.digamma(p.b)
        + (q.a - p.a + q.b - p.b) * special.digamma(p.a + p.b)
    )


@register(Uniform, Uniform)
def _kl_uniform_uniform(p: Uniform, q: Uniform) -> np.ndarray:
    """log(width_q / width_p) if [a_p, b_p] ⊆ [a_q, b_q], else +inf."""
    inside = (q.loc <= p.loc) & (p.loc + p.scale <= q.loc + q.scale)
    return np.where(inside, np.log(q.scale / p.scale), math.inf)


@register(Laplace, Laplace)
def _kl_laplace_laplace(p: Laplace, q: Laplace) -> np.ndarray:
    """log(b_q/b_p) + |μ_p − μ_q|/b_q + (b_p/b_q) exp(−|μ_p − μ_q|/b_p) − 1."""
    shift = np.abs(p.loc - q.loc)
    return np.log(q.scale / p.scale) + shift / q.scale + p.scale / q.scale * np.exp(-shift / p.scale) - 1


@register(VonMises, VonMises)
def _kl_vonmises_vonmises(p: VonMises, q: VonMises) -> np.ndarray:
    """log(I0(κq)/I0(κp)) + A(κp)(κp − κq cos(μp − μq)), A = I1/I0, with scaled Bessel functions."""
    log_i0_p = np.log(special.i0e(p.kappa)) + p.kappa
    log_i0_q = np.log(special.i0e(q.kappa)) + q.kappa
    mean_resultant = special.i1e(p.kappa) / special.i0e(p.kappa)
    return log_i0_q - log_i0_p + mean_resultant * (p.kappa - q.kappa * np.cos(p.loc - q.loc))


@register(Weibull, Weibull)
def _kl_weibull_weibull(p: Weibull, q: Weibull) -> np.ndarray:
    """Bauckhage (2013), arXiv:1310.3713, for a shared loc."""
    if np.any(p.loc < q.loc):
        return np.full(np.broadcast(p.c, q.c, p.loc, q.loc).shape, math.inf)
    _same(p.loc, q.loc, "weibull_min loc")
    k1, l1, k2, l2 = p.c, p.scale, q.c, q.scale
    return (
        np.log(k1) - k1 * np.log(l1) - np.log(k2) + k2 * np.log(l2) + (k1 - k2) * (np.log(l1) - EULER / k1)
        + np.exp(k2 * (np.log(l1) - np.log(l2)) + special.gammaln(k2 / k1 + 1)) - 1
    )


@register(Cauchy, Cauchy)
def _kl_cauchy_cauchy(p: Cauchy, q: Cauchy) -> np.ndarray:
    """log(((γp + γq)² + (μp − μq)²) / (4 γp γq))  (Chyzak and Nielsen 2019)."""
    return np.log(((p.scale + q.scale) ** 2 + (p.loc - q.loc) ** 2) / (4 * p.scale * q.scale))


@register(Gumbel, Gumbel)
def _kl_gumbel_gumbel(p: Gumbel, q: Gumbel) -> np.ndarray:
    """log(βq/βp) + γ(βp/βq − 1) + exp((μq − μp)/βq) Γ(βp/βq + 1) − 1 + (μp − μq)/βq."""
    ratio = p.scale / q.scale
    return (
        np.log(q.scale / p.scale) + EULER * (ratio - 1) - 1 + (p.loc - q.loc) / q.scale
        + np.exp((q.loc - p.loc) / q.scale + special.gammaln(ratio + 1))
    )


@register(HalfNormal, HalfNormal)
def _kl_halfnormal_halfnormal(p: HalfNormal, q: HalfNormal) -> np.ndarray:
    """The Normal KL with equal means (same loc), +inf if P starts left of Q."""
    if np.any(p.loc < q.loc):
        return np.full(np.broadcast(p.scale, q.scale, p.loc, q.loc).shape, math.inf)
    _same(p.loc, q.loc, "halfnorm loc")
    ratio = (p.scale / q.scale) ** 2
    return 0.5 * (ratio - 1 - np.log(ratio))


@register(ScipyDistribution, ScipyDistribution)
def _kl_support_mismatch(p: ScipyDistribution, q: ScipyDistribution) -> np.ndarray:
    """Any pair without a closed form: +inf when P's support reaches outside Q's, else no closed form."""
    if p.discrete != q.discrete:
        raise NotImplementedError("one distribution is discrete and the other continuous")
    if not isinstance(p, MultivariateNormal | Dirichlet | Multinomial) and not isinstance(
        q, MultivariateNormal | Dirichlet | Multinomial
    ):
        infinite = _support_check(p, q)
        if infinite is not None:
            return infinite
    raise NotImplementedError(f"no closed form for {type(p).__name__} against {type(q).__name__}")


# --- multivariate -------------------------------------------------------------------------------------------


@register(MultivariateNormal, MultivariateNormal)
def _kl_mvn_mvn(p: MultivariateNormal, q: MultivariateNormal) -> np.ndarray:
    """½ (tr(Σq⁻¹Σp) + (μq − μp)ᵀ Σq⁻¹ (μq − μp) − d + ln det Σq − ln det Σp), via Cholesky factors."""
    if p.mean.shape != q.mean.shape:
        raise ValueError(
            f"p has dimension {p.mean.shape[-1]} but q has {q.mean.shape[-1]}; KL needs distributions over the same space"
        )
    from scipy.linalg import cho_factor, cho_solve

    d = p.mean.shape[-1]
    factor = cho_factor(q.cov, lower=True)
    diff = q.mean - p.mean
    trace = np.trace(cho_solve(factor, p.cov))
    mahalanobis = diff @ cho_solve(factor, diff)
    logdet_q = 2 * np.sum(np.log(np.diag(factor[0])))
    logdet_p = np.linalg.slogdet(p.cov)[1]
    return np.asarray(0.5 * (trace + mahalanobis - d + logdet_q - logdet_p))


@register(Dirichlet, Dirichlet)
def _kl_dirichlet_dirichlet(p: Dirichlet, q: Dirichlet) -> np.ndarray:
    """ln Γ(Σα_p) − Σ ln Γ(α_p) − ln Γ(Σα_q) + Σ ln Γ(α_q) + Σ (α_p − α_q)(ψ(α_p) − ψ(Σα_p))."""
    if p.alpha.shape != q.alpha.shape:
        raise ValueError(f"p has {p.alpha.shape[-1]} categories but q has {q.alpha.shape[-1]}; they must agree")
    ap, aq = p.alpha, q.alpha
    sp = ap.sum(-1)
    return np.asarray(
        special.gammaln(sp) - special.gammaln(ap).sum(-1) - special.gammaln(aq.sum(-1)) + special.gammaln(aq).sum(-1)
        + ((ap - aq) * (special.digamma(ap) - special.digamma(sp)[..., None])).sum(-1)
    )


@register(Multinomial, Multinomial)
def _kl_multinomial_multinomial(p: Multinomial, q: Multinomial) -> np.ndarray:
    """n Σ_j p_j log(p_j / q_j) for equal n (+inf where some p_j > 0 = q_j); different n: disjoint supports, +inf."""
    if p.p.shape != q.p.shape:
        raise ValueError(f"p has {p.p.shape[-1]} categories but q has {q.p.shape[-1]}; they must agree")
    if not np.all(p.n == q.n):
        return np.asarray(math.inf)
    with np.errstate(divide="ignore"):
        terms = np.where(p.p > 0, p.p * (np.log(np.where(p.p > 0, p.p, 1)) - np.log(q.p)), 0.0)
    return np.asarray(p.n * terms.sum(-1))


# --- discrete -------------------------------------------------------------------------------------------------


@register(Discrete, Discrete)
def _kl_discrete_series(p: Discrete, q: Discrete) -> np.ndarray:
    """Σ_x p(x) log(p(x)/q(x)) over P's support, to mean + 40 sd + 50 (exact for bounded support; the tails
    of the usual counting families decay at least geometrically, so the remainder is below e^-40); +inf when P gives mass to a point outside Q's support."""
    if np.ndim(p.frozen.mean()) or np.ndim(q.frozen.mean()):
        raise NotImplementedError("the series form handles scalar parameters only")
    low, high = p.frozen.support()
    upper = high if math.isfinite(high) else math.ceil(p.frozen.mean() + 40 * p.frozen.std()) + 50
    x = np.arange(low, upper + 1)
    log_p, log_q = p.frozen.logpmf(x), q.frozen.logpmf(x)
    mass = np.exp(log_p)
    if np.any((mass > 0) & np.isneginf(log_q)) or (not math.isfinite(high) and math.isfinite(q.frozen.support()[1])):
        return np.asarray(math.inf)
    q_low = q.frozen.support()[0]
    if low < q_low:
        return np.asarray(math.inf)
    return np.asarray(np.sum(np.where(mass > 0, mass * (log_p - log_q), 0.0)))


@register(Poisson, Poisson)
def _kl_poisson_poisson(p: Poisson, q: Poisson) -> np.ndarray:
    """μp log(μp/μq) − μp + μq, for a shared loc."""
    if not np.all(p.loc == q.loc):
        return _kl_discrete_series(p, q)
    return p.mu * (np.log(p.mu) - np.log(q.mu)) - p.mu + q.mu


@register(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p: Bernoulli, q: Bernoulli) -> np.ndarray:
    """p log(p/q) + (1 − p) log((1 − p)/(1 − q)), with 0 log 0 = 0."""
    if not np.all(p.loc == q.loc):
        return _kl_discrete_series(p, q)
    return special.rel_entr(p.p, q.p) + special.rel_entr(1 - p.p, 1 - q.p)


@register(Binomial, Binomial)
def _kl_binomial_binomial(p: Binomial, q: Binomial) -> np.ndarray:
    """n (p log(p/q) + (1 − p) log((1 − p)/(1 − q))) for equal n and loc; otherwise the exact finite sum."""
    if not (np.all(p.n == q.n) and np.all(p.loc == q.loc)):
        return _kl_discrete_series(p, q)
    return p.n * (special.rel_entr(p.p, q.p) + special.rel_entr(1 - p.p, 1 - q.p))


@register(Geometric, Geometric)
def _kl_geometric_geometric(p: Geometric, q: Geometric) -> np.ndarray:
    """log(p/q) + (1 − p)/p · log((1 − p)/(1 − q)) for a shared loc."""
    if not np.all(p.loc == q.loc):
        return _kl_discrete_series(p, q)
    return np.log(p.p / q.p) + (1 - p.p) / p.p * (np.log1p(-p.p) - np.log1p(-q.p))


@register(NegativeBinomial, NegativeBinomial)
def _kl_nbinom_nbinom(p: NegativeBinomial, q: NegativeBinomial) -> np.ndarray:
    """SciPy's nbinom(n, p) counts failures before n successes: for equal n,
    KL = n log(p_p/p_q) + n (1 − p_p)/p_p · log((1 − p_p)/(1 − p_q)); otherwise the series."""
    if not (np.all(p.n == q.n) and np.all(p.loc == q.loc)):
        return _kl_discrete_series(p, q)
    return p.n * (np.log(p.p / q.p) + (1 - p.p) / p.p * (np.log1p(-p.p) - np.log1p(-q.p)))
