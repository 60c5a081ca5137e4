"""Closed forms for torch.distributions: PyTorch's values for its pairs, independent oracles for the others."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

torch = pytest.importorskip("torch")
D = torch.distributions
torch_kl = pytest.importorskip("torch.distributions.kl")

from kldiv.distributions import kl, register, registered_pairs  # noqa: E402

T = torch.float64


def t(*values):
    return torch.tensor(values if len(values) > 1 else values[0], dtype=T)


def examples():
    """Two instances per class (batch of 2, float64) for every class in PyTorch's KL registry."""
    eye = torch.eye(3, dtype=T)
    cov = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]], dtype=T)
    return {
        D.Bernoulli: [D.Bernoulli(t(0.3, 0.6)), D.Bernoulli(t(0.5, 0.2))],
        D.Beta: [D.Beta(t(2.0, 0.7), t(3.0, 1.5)), D.Beta(t(1.2, 2.0), t(0.8, 4.0))],
        D.Binomial: [D.Binomial(10, t(0.3, 0.6)), D.Binomial(10, t(0.5, 0.2))],
        D.Categorical: [D.Categorical(t([0.2, 0.3, 0.5])), D.Categorical(t([0.4, 0.4, 0.2]))],
        D.Cauchy: [D.Cauchy(t(0.0, 1.0), t(1.0, 2.0)), D.Cauchy(t(0.5, -1.0), t(2.0, 0.5))],
        D.ContinuousBernoulli: [D.ContinuousBernoulli(t(0.3, 0.7)), D.ContinuousBernoulli(t(0.6, 0.2))],
        D.Dirichlet: [D.Dirichlet(t([1.0, 2.0, 3.0])), D.Dirichlet(t([2.0, 0.5, 1.0]))],
        D.Exponential: [D.Exponential(t(1.0, 2.0)), D.Exponential(t(2.5, 0.5))],
        D.Gamma: [D.Gamma(t(2.0, 0.5), t(1.0, 3.0)), D.Gamma(t(1.5, 3.0), t(2.0, 0.7))],
        D.Geometric: [D.Geometric(t(0.3, 0.6)), D.Geometric(t(0.5, 0.2))],
        D.Gumbel: [D.Gumbel(t(0.0, 1.0), t(1.0, 2.0)), D.Gumbel(t(0.5, -1.0), t(2.0, 0.5))],
        D.HalfNormal: [D.HalfNormal(t(1.0, 2.0)), D.HalfNormal(t(0.5, 3.0))],
        D.Independent: [
            D.Independent(D.Normal(t([0.0, 1.0]), t([1.0, 2.0])), 1),
            D.Independent(D.Normal(t([0.5, -1.0]), t([2.0, 0.5])), 1),
        ],
        D.Laplace: [D.Laplace(t(0.0, 1.0), t(1.0, 2.0)), D.Laplace(t(0.5, -1.0), t(2.0, 0.5))],
        D.LowRankMultivariateNormal: [
            D.LowRankMultivariateNormal(t([0.0, 1.0, 0.0]), t([[1.0], [0.5], [0.2]]), t([1.0, 2.0, 0.5])),
            D.LowRankMultivariateNormal(t([0.5, 0.0, 1.0]), t([[0.3], [0.1], [1.0]]), t([0.5, 1.0, 1.5])),
        ],
        D.MultivariateNormal: [
            D.MultivariateNormal(t([0.0, 1.0, 0.0]), covariance_matrix=cov),
            D.MultivariateNormal(t([0.5, 0.0, 1.0]), covariance_matrix=2 * eye),
        ],
        D.Normal: [D.Normal(t(0.0, 1.0), t(1.0, 2.0)), D.Normal(t(0.5, -1.0), t(2.0, 0.5))],
        D.OneHotCategorical: [D.OneHotCategorical(t([0.2, 0.3, 0.5])), D.OneHotCategorical(t([0.4, 0.4, 0.2]))],
        D.Pareto: [D.Pareto(t(1.0, 2.0), t(3.0, 4.0)), D.Pareto(t(0.5, 1.0), t(2.5, 3.0))],
        D.Poisson: [D.Poisson(t(1.0, 4.0)), D.Poisson(t(2.5, 0.5))],
        D.TransformedDistribution: [D.LogNormal(t(0.0, 1.0), t(1.0, 2.0)), D.LogNormal(t(0.5, -1.0), t(2.0, 0.5))],
        D.Uniform: [D.Uniform(t(0.1, -1.0), t(0.9, 2.0)), D.Uniform(t(-1.0, -2.0), t(3.0, 3.0))],
        D.ExponentialFamily: [D.Gamma(t(2.0, 0.5), t(1.0, 3.0)), D.Gamma(t(1.5, 3.0), t(2.0, 0.7))],
    }


PAIRS = sorted(torch_kl._KL_REGISTRY, key=lambda pair: (pair[0].__name__, pair[1].__name__))


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: f"{pair[0].__name__}-{pair[1].__name__}")
def test_every_pytorch_pair_gives_pytorchs_value(pair):
    type_p, type_q = pair
    table = examples()
    for p in table[type_p]:
        for q in table[type_q]:
            expected = torch_kl.kl_divergence(p, q)
            assert torch.allclose(kl(p, q), expected, rtol=1e-10, atol=1e-12, equal_nan=False), (p, q)


def test_registry_holds_every_pytorch_pair():
    ours = set(registered_pairs("torch"))
    assert {(a.__name__, b.__name__) for a, b in torch_kl._KL_REGISTRY} <= ours


def quad_kl(log_p, log_q, low, high):
    value, _ = integrate.quad(lambda x: math.exp(log_p(x)) * (log_p(x) - log_q(x)), low, high, limit=200)
    return value


def torch_log_prob(d):
    return lambda x: float(d.log_prob(torch.tensor(x, dtype=T)))


@pytest.mark.parametrize(
    "p, q, low, high",
    [
        (D.VonMises(t(0.3), t(2.0)), D.VonMises(t(-1.0), t(0.5)), -math.pi, math.pi),
        (D.VonMises(t(0.0), t(40.0)), D.VonMises(t(0.2), t(30.0)), -math.pi, math.pi),
        (D.Weibull(t(1.5), t(2.0)), D.Weibull(t(0.8), t(1.2)), 0, math.inf),
        (D.LogNormal(t(0.2), t(0.5)), D.LogNormal(t(-0.3), t(1.2)), 0, math.inf),
        (D.Kumaraswamy(t(2.0), t(3.0)), D.Beta(t(1.5), t(2.5)), 0, 1),
        (D.Kumaraswamy(t(0.7), t(1.3)), D.Beta(t(0.9), t(0.6)), 0, 1),
    ],
    ids=["vonmises", "vonmises-large-kappa", "weibull", "lognormal", "kumaraswamy-beta", "kumaraswamy-beta-u"],
)
def test_pairs_pytorch_lacks_match_numerical_integration(p, q, low, high):
    expected = quad_kl(torch_log_prob(p), torch_log_prob(q), low, high)
    assert float(kl(p, q)) == pytest.approx(expected, rel=1e-6, abs=1e-8)


def test_chi2_gamma_and_exponential_mixes_match_the_gamma_closed_form():
    chi2, gamma, expo = D.Chi2(t(3.0)), D.Gamma(t(1.5), t(0.5)), D.Exponential(t(0.5))
    assert float(kl(chi2, gamma)) == pytest.approx(0.0, abs=1e-12)  # Chi2(3) is Gamma(3/2, 1/2)
    expected = quad_kl(torch_log_prob(chi2), torch_log_prob(expo), 0, math.inf)
    assert float(kl(chi2, expo)) == pytest.approx(expected, rel=1e-6)
    assert float(kl(expo, D.Chi2(t(2.0)))) == pytest.approx(0.0, abs=1e-12)  # Chi2(2) is Exp(1/2)


def test_independent_normal_and_multivariate_normal_agree_both_ways():
    loc, scale = t([0.0, 1.0, -1.0]), t([1.0, 2.0, 0.5])
    diagonal = D.Independent(D.Normal(loc, scale), 1)
    as_mvn = D.MultivariateNormal(loc, scale_tril=torch.diag(scale))
    q = examples()[D.MultivariateNormal][0]
    assert torch.allclose(kl(diagonal, q), torch_kl.kl_divergence(as_mvn, q))
    assert torch.allclose(kl(q, diagonal), torch_kl.kl_divergence(q, as_mvn))


def test_independent_with_differing_reinterpreted_dims_sums_the_base_kl():
    loc_p, loc_q = torch.randn(4, 2, 3, dtype=T), torch.randn(4, 2, 3, dtype=T)
    p = D.Independent(D.Normal(loc_p, 1.0), 2)
    q = D.Independent(D.Independent(D.Normal(loc_q, 2.0), 1), 1)
    expected = torch_kl.kl_divergence(D.Normal(loc_p, 1.0), D.Normal(loc_q, 2.0)).sum((-2, -1))
    assert torch.allclose(kl(p, q), expected)
    assert torch.allclose(kl(q, p), torch_kl.kl_divergence(D.Normal(loc_q, 2.0), D.Normal(loc_p, 1.0)).sum((-2, -1)))


def test_independent_with_different_event_shapes_is_a_clear_error():
    p = D.Independent(D.Normal(torch.zeros(2, 3, dtype=T), 1.0), 2)
    q = D.Independent(D.Normal(torch.zeros(2, 3, dtype=T), 1.0), 1)
    with pytest.raises(ValueError, match=r"p has event shape \(2, 3\) but q has \(3,\)"):
        kl(p, q)


def enumerate_kl(p, q, outcomes):
    lp, lq = p.log_prob(outcomes), q.log_prob(outcomes)
    return float((lp.exp() * (lp - lq)).sum())


def test_multinomial_equals_a_sum_over_every_outcome():
    p, q = D.Multinomial(3, t([0.2, 0.3, 0.5])), D.Multinomial(3, t([0.5, 0.1, 0.4]))
    outcomes = torch.tensor([[a, b, 3 - a - b] for a in range(4) for b in range(4 - a)], dtype=T)
    assert float(kl(p, q)) == pytest.approx(enumerate_kl(p, q, outcomes), rel=1e-10)
    assert float(kl(p, D.Multinomial(4, t([0.5, 0.1, 0.4])))) == math.inf


COUNTING = {
    "poisson": (D.Poisson(t(3.0)), stats.poisson(3.0)),
    "geometric": (D.Geometric(t(0.3)), stats.geom(0.3, loc=-1)),
    "negbinomial": (D.NegativeBinomial(t(4.0), t(0.4)), stats.nbinom(4.0, 0.6)),
    "negbinomial2": (D.NegativeBinomial(t(2.5), t(0.3)), stats.nbinom(2.5, 0.7)),
    "binomial": (D.Binomial(6, t(0.4)), stats.binom(6, 0.4)),
    "binomial-big": (D.Binomial(9, t(0.3)), stats.binom(9, 0.3)),
    "bernoulli": (D.Bernoulli(t(0.3)), stats.bernoulli(0.3)),
}


def scipy_series(p, q):
    x = np.arange(0, 2000)
    mass = p.pmf(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = q.logpmf(x)
        if np.any((mass > 0) & np.isneginf(log_q)):
            return math.inf
        return float(np.sum(np.where(mass > 0, mass * (p.logpmf(x) - log_q), 0.0)))


@pytest.mark.parametrize("name_p", sorted(COUNTING))
@pytest.mark.parametrize("name_q", sorted(COUNTING))
def test_counting_pairs_match_a_direct_scipy_series(name_p, name_q):
    (p, sp), (q, sq) = COUNTING[name_p], COUNTING[name_q]
    expected = scipy_series(sp, sq)
    got = float(kl(p, q))
    if math.isinf(expected):
        assert got == math.inf
    else:
        assert got == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_support_mismatch_gives_infinity():
    assert float(kl(D.Normal(t(0.0), t(1.0)), D.Poisson(t(2.0)))) == math.inf
    assert float(kl(D.HalfNormal(t(1.0)), D.Uniform(t(0.0), t(1.0)))) == math.inf
    assert float(kl(D.Geometric(t(0.5)), D.Binomial(5, t(0.5)))) == math.inf


@pytest.mark.parametrize(
    "make_p, make_q, params",
    [
        (lambda a, b: D.Normal(a, b), lambda a, b: D.Normal(b, a + 1), (t([0.3, 1.5]), t([1.2, 0.7]))),
        (lambda a, b: D.VonMises(a, b), lambda a, b: D.VonMises(b, a + 2), (t([0.3, 1.5]), t([1.2, 0.7]))),
        (lambda a, b: D.Weibull(a, b), lambda a, b: D.Weibull(b, a), (t([1.3, 2.0]), t([1.2, 0.7]))),
        (lambda a, b: D.Kumaraswamy(a, b), lambda a, b: D.Beta(b, a), (t([1.3, 2.0]), t([1.2, 0.7]))),
        (
            lambda a, b: D.NegativeBinomial(3.0, logits=a),
            lambda a, b: D.NegativeBinomial(3.0, logits=b),
            (t([0.3, 1.5]), t([1.2, 0.7])),
        ),
        (
            lambda a, b: D.Independent(D.Normal(a, b), 1),
            lambda a, b: D.MultivariateNormal(b, scale_tril=torch.diag(a.abs() + 1)),
            (t([0.3, 1.5]), t([1.2, 0.7])),
        ),
    ],
    ids=["normal", "vonmises", "weibull", "kumaraswamy-beta", "negbinomial", "independent-mvn"],
)
def test_closed_forms_have_correct_gradients_in_float64(make_p, make_q, params):
    params = tuple(x.clone().requires_grad_() for x in params)
    assert torch.autograd.gradcheck(lambda a, b: kl(make_p(a, b), make_q(a, b)), params)


def test_most_specific_registered_pair_wins():
    class Special(D.Normal):
        pass

    calls = []

    @register(Special, D.Normal)
    def _special(p, q):
        calls.append("special")
        return torch.zeros(())

    kl(Special(t(0.0), t(1.0)), D.Normal(t(1.0), t(1.0)))
    kl(D.Normal(t(0.0), t(1.0)), D.Normal(t(1.0), t(1.0)))
    assert calls == ["special"]


def test_register_rejects_non_classes():
    with pytest.raises(TypeError, match="register expects two classes"):
        register("Normal", D.Normal)
