"""SciPy adapter closed forms, the Monte Carlo fallback, Gaussian-mixture bounds, and error messages."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from kldiv.distributions import kl, mixture_bounds, mixture_product, mixture_variational, registered_pairs
from kldiv.estimate import Estimate


def quad_kl(p, q, low, high):
    def integrand(x):
        return math.exp(p.logpdf(x)) * (p.logpdf(x) - q.logpdf(x)) if p.pdf(x) > 0 else 0.0

    return integrate.quad(integrand, low, high, limit=200)[0]


CONTINUOUS = [
    (stats.norm(0.3, 1.2), stats.norm(-1, 0.7), -40, 40),
    (stats.lognorm(0.5, scale=1.3), stats.lognorm(1.1, scale=0.6), 0, np.inf),
    (stats.gamma(2.0, scale=0.5), stats.gamma(1.3, scale=2.0), 0, np.inf),
    (stats.expon(scale=1.0), stats.expon(scale=0.5), 0, np.inf),
    (stats.chi2(3), stats.gamma(1.0, scale=2.0), 0, np.inf),
    (stats.beta(2.0, 3.0), stats.beta(0.8, 1.5), 0, 1),
    (stats.uniform(0.2, 0.5), stats.uniform(0, 1), 0.2, 0.7),
    (stats.laplace(0.5, 1.0), stats.laplace(-0.5, 2.0), -60, 60),
    (stats.vonmises(2.0, loc=0.3), stats.vonmises(0.5, loc=-1.0), -math.pi, math.pi),
    (stats.weibull_min(1.5, scale=2.0), stats.weibull_min(0.8, scale=1.2), 0, np.inf),
    (stats.cauchy(0.0, 1.0), stats.cauchy(1.0, 2.0), -np.inf, np.inf),
    (stats.gumbel_r(0.5, 1.0), stats.gumbel_r(-0.5, 2.0), -30, 60),
    (stats.halfnorm(scale=1.0), stats.halfnorm(scale=2.5), 0, np.inf),
]


@pytest.mark.parametrize("p, q, low, high", CONTINUOUS, ids=lambda v: getattr(getattr(v, "dist", None), "name", ""))
def test_scipy_continuous_closed_forms_match_numerical_integration(p, q, low, high):
    value = kl(p, q)
    assert isinstance(value, float)
    assert value == pytest.approx(quad_kl(p, q, low, high), rel=1e-6, abs=1e-9)


DISCRETE = [
    (stats.poisson(3.0), stats.poisson(1.5)),
    (stats.bernoulli(0.3), stats.bernoulli(0.6)),
    (stats.binom(8, 0.3), stats.binom(8, 0.6)),
    (stats.binom(5, 0.3), stats.binom(8, 0.6)),
    (stats.geom(0.3), stats.geom(0.6)),
    (stats.nbinom(4, 0.4), stats.nbinom(4, 0.7)),
    (stats.nbinom(2, 0.4), stats.nbinom(5, 0.7)),
    (stats.geom(0.3), stats.nbinom(1, 0.5, loc=1)),
    (stats.binom(4, 0.5), stats.poisson(2.0)),
]


@pytest.mark.parametrize("p, q", DISCRETE, ids=lambda v: v.dist.name)
def test_scipy_discrete_pairs_match_a_direct_sum(p, q):
    x = np.arange(0, 3000)
    mass = p.pmf(x)
    keep = mass > 0
    expected = float(np.sum(mass[keep] * (p.logpmf(x[keep]) - q.logpmf(x[keep]))))
    assert kl(p, q) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_scipy_multivariate_pairs_match_their_closed_forms_against_torch():
    torch = pytest.importorskip("torch")
    D = torch.distributions
    cov = np.array([[2.0, 0.3], [0.3, 1.0]])
    p, q = stats.multivariate_normal([0, 1], cov), stats.multivariate_normal([1, 0], np.eye(2) * 2)
    tp = D.MultivariateNormal(torch.tensor([0.0, 1], dtype=torch.float64), torch.tensor(cov))
    tq = D.MultivariateNormal(torch.tensor([1.0, 0], dtype=torch.float64), torch.eye(2, dtype=torch.float64) * 2)
    assert kl(p, q) == pytest.approx(float(D.kl_divergence(tp, tq)), rel=1e-12)
    a, b = np.array([1.0, 2, 3]), np.array([2.0, 0.5, 1])
    expected = float(D.kl_divergence(D.Dirichlet(torch.tensor(a)), D.Dirichlet(torch.tensor(b))))
    assert kl(stats.dirichlet(a), stats.dirichlet(b)) == pytest.approx(expected, rel=1e-12)
    m1, m2 = stats.multinomial(3, [0.2, 0.3, 0.5]), stats.multinomial(3, [0.5, 0.1, 0.4])
    outcomes = [[i, j, 3 - i - j] for i in range(4) for j in range(4 - i)]
    direct = sum(m1.pmf(x) * (m1.logpmf(x) - m2.logpmf(x)) for x in outcomes)
    assert kl(m1, m2) == pytest.approx(direct, rel=1e-10)


def test_scipy_and_torch_give_the_same_values_for_the_same_families():
    torch = pytest.importorskip("torch")
    D = torch.distributions
    f = torch.float64
    pairs = [
        ((stats.norm(0, 1), stats.norm(1, 2)), (D.Normal(torch.tensor(0.0, dtype=f), 1.0), D.Normal(torch.tensor(1.0, dtype=f), 2.0))),
        ((stats.beta(2, 3), stats.beta(1, 1)), (D.Beta(torch.tensor(2.0, dtype=f), 3.0), D.Beta(torch.tensor(1.0, dtype=f), 1.0))),
        ((stats.expon(scale=1), stats.expon(scale=0.5)),
         (D.Exponential(torch.tensor(1.0, dtype=f)), D.Exponential(torch.tensor(2.0, dtype=f)))),
        ((stats.vonmises(2.0, 0.0), stats.vonmises(1.0, 1.0)),
         (D.VonMises(torch.tensor(0.0, dtype=f), 2.0), D.VonMises(torch.tensor(1.0, dtype=f), 1.0))),
    ]
    for (sp, sq), (tp, tq) in pairs:
        assert kl(sp, sq) == pytest.approx(float(kl(tp, tq)), rel=1e-10)


def test_scipy_support_mismatch_gives_infinity():
    assert kl(stats.uniform(0, 2), stats.uniform(0, 1)) == math.inf
    assert kl(stats.norm(), stats.expon()) == math.inf
    assert kl(stats.expon(loc=-1), stats.expon()) == math.inf
    assert kl(stats.poisson(2.0), stats.binom(3, 0.5)) == math.inf
    assert kl(stats.poisson(2.0), stats.geom(0.5)) == math.inf  # SciPy's geom starts at 1


def test_scipy_batched_parameters_broadcast():
    values = kl(stats.norm([0.0, 1.0], 1.0), stats.norm(0.0, 1.0))
    assert np.allclose(values, [0.0, 0.5])


def test_monte_carlo_fallback_returns_an_estimate_near_the_integral_for_torch():
    torch = pytest.importorskip("torch")
    D = torch.distributions
    p, q = D.StudentT(torch.tensor(5.0, dtype=torch.float64)), D.Normal(torch.tensor(0.5, dtype=torch.float64), 1.5)
    result = kl(p, q, samples=50_000, seed=0)
    assert isinstance(result, Estimate) and result.n == 50_000
    expected = quad_kl(stats.t(5), stats.norm(0.5, 1.5), -np.inf, np.inf)
    assert abs(float(result) - expected) < 5 * result.stderr
    assert float(kl(p, q, samples=1000, seed=3)) == float(kl(p, q, samples=1000, seed=3))


def test_monte_carlo_fallback_is_differentiable_through_rsample():
    torch = pytest.importorskip("torch")
    D = torch.distributions
    loc = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    result = kl(D.StudentT(torch.tensor(30.0, dtype=torch.float64), loc, 1.0), D.Normal(0.0, 1.0), samples=20_000, seed=1)
    result.value.backward()
    assert loc.grad.item() == pytest.approx(0.5, abs=0.05)  # ≈ d/dμ of μ²/2 for nearly normal P


def test_monte_carlo_fallback_for_scipy_matches_the_integral():
    p, q = stats.t(4), stats.norm(0, 1.3)
    result = kl(p, q, samples=50_000, seed=0)
    assert abs(result.value - quad_kl(p, q, -np.inf, np.inf)) < 5 * result.stderr


def test_missing_pair_without_samples_lists_the_registered_pairs():
    torch = pytest.importorskip("torch")
    D = torch.distributions
    with pytest.raises(NotImplementedError, match=r"no closed form for KL\(StudentT \|\| Normal\).*samples=10000"):
        kl(D.StudentT(3.0), D.Normal(0.0, 1.0))
    with pytest.raises(NotImplementedError, match=r"registered pairs with Normal first: .*Normal-Normal"):
        kl(D.Normal(0.0, 1.0), D.StudentT(3.0))
    with pytest.raises(NotImplementedError, match=r"no closed form for KL\(OtherContinuous"):
        kl(stats.t(3), stats.norm())


def test_registered_pairs_lists_both_libraries():
    assert ("Normal", "Normal") in registered_pairs("scipy")
    assert ("VonMises", "VonMises") in registered_pairs("torch")
    with pytest.raises(ValueError, match="library must be 'torch', 'scipy' or None"):
        registered_pairs("jax")


@pytest.mark.parametrize(
    "p, q, kwargs, error, message",
    [
        ([0.5, 0.5], stats.norm(), {}, TypeError, "p is a list, not a distribution"),
        (stats.norm(), "normal", {}, TypeError, "q is a str, not a distribution"),
        (stats.t(3), stats.norm(), {"samples": 1}, ValueError, "samples must be an integer >= 2"),
        (stats.t(3), stats.norm(), {"samples": 10.5}, TypeError, "samples must be an integer >= 2"),
        (stats.multivariate_normal([0, 0]), stats.multivariate_normal([0, 0, 0]), {}, ValueError,
         "p has dimension 2 but q has 3"),
    ],
)
def test_bad_arguments_are_one_line_errors(p, q, kwargs, error, message):
    with pytest.raises(error, match=message):
        kl(p, q, **kwargs)


def test_mixing_libraries_is_a_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="p is a torch distribution but q is a scipy one"):
        kl(torch.distributions.Normal(0.0, 1.0), stats.norm())


def gmm(weights, means, sds):
    return (np.array(weights), np.array(means, dtype=float)[:, None], (np.array(sds, dtype=float) ** 2)[:, None, None])


def gmm_logpdf(m):
    w, mu, cov = m
    return lambda x: math.log(sum(wi * stats.norm(mi[0], math.sqrt(ci[0, 0])).pdf(x) for wi, mi, ci in zip(w, mu, cov, strict=True)))


def test_mixture_bounds_bracket_the_integral_and_approximations_are_close():
    p, q = gmm([0.3, 0.7], [-1, 2], [1.0, 0.5]), gmm([0.5, 0.5], [0, 2], [1.0, 1.0])
    lp, lq = gmm_logpdf(p), gmm_logpdf(q)
    truth = integrate.quad(lambda x: math.exp(lp(x)) * (lp(x) - lq(x)), -30, 30, limit=200)[0]
    lower, upper = mixture_bounds(p, q)
    assert lower <= truth <= upper
    assert mixture_variational(p, q) == pytest.approx(truth, abs=0.05)
    assert mixture_product(p, q) == pytest.approx(truth, abs=0.1)


def test_mixture_formulas_are_exact_for_single_components():
    p, q = gmm([1.0], [0.0], [1.0]), gmm([1.0], [1.0], [2.0])
    exact = kl(stats.norm(0, 1), stats.norm(1, 2))
    assert mixture_variational(p, q) == pytest.approx(exact, rel=1e-12)
    lower, upper = mixture_bounds(p, q)
    assert lower <= exact + 1e-12 and upper >= exact - 1e-12


def test_mixture_formulas_agree_between_torch_and_numpy_and_are_differentiable():
    torch = pytest.importorskip("torch")
    D = torch.distributions
    f = torch.float64
    means = torch.tensor([[-1.0, 0.0], [2.0, 1.0]], dtype=f, requires_grad=True)
    cov = torch.tensor([[[1.0, 0.2], [0.2, 0.5]], [[0.7, 0.0], [0.0, 1.2]]], dtype=f)
    tp = D.MixtureSameFamily(D.Categorical(torch.tensor([0.3, 0.7], dtype=f)), D.MultivariateNormal(means, cov))
    tq = D.MixtureSameFamily(
        D.Categorical(torch.tensor([0.5, 0.5], dtype=f)),
        D.Independent(D.Normal(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=f), 1.0), 1),
    )
    np_p = (np.array([0.3, 0.7]), means.detach().numpy(), cov.numpy())
    np_q = (np.array([0.5, 0.5]), np.array([[0.0, 0.0], [1.0, 1.0]]), np.stack([np.eye(2)] * 2))
    assert float(mixture_variational(tp, tq).detach()) == pytest.approx(mixture_variational(np_p, np_q), rel=1e-10)
    assert float(mixture_product(tp, tq).detach()) == pytest.approx(mixture_product(np_p, np_q), rel=1e-10)
    lower, upper = mixture_bounds(tp, tq)
    assert (float(lower.detach()), float(upper.detach())) == pytest.approx(mixture_bounds(np_p, np_q), rel=1e-10)
    mc = kl(tp, tq, samples=40_000, seed=0)
    assert float(lower.detach()) - 4 * mc.stderr <= float(mc) <= float(upper.detach()) + 4 * mc.stderr
    mixture_variational(tp, tq).backward()
    assert torch.isfinite(means.grad).all()


def test_mixture_input_errors_are_clear():
    with pytest.raises(ValueError, match="mixture weights must be >= 0 and sum to 1"):
        mixture_variational(gmm([0.5, 0.6], [0, 1], [1, 1]), gmm([1.0], [0], [1]))
    with pytest.raises(ValueError, match="mixture shapes disagree"):
        mixture_variational((np.ones(2) / 2, np.zeros((3, 1)), np.ones((3, 1, 1))), gmm([1.0], [0], [1]))
    with pytest.raises(TypeError, match="expected a torch MixtureSameFamily or a"):
        mixture_bounds(stats.norm(), stats.norm())
