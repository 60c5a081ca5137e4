"""Monte Carlo k1/k2/k3 and plug-in estimators: exact formulas, known answers, errors."""

import math
import warnings

import numpy as np
import pytest
from scipy.stats import entropy as scipy_kl

from kldiv.estimate import Estimate, mc, plugin


def normal_log_densities(n, shift=1.0, seed=0):
    x = np.random.default_rng(seed).normal(size=n)
    return -0.5 * x**2, -0.5 * (x - shift) ** 2


@pytest.mark.parametrize(
    "estimator, term",
    [
        ("k1", lambda lr: -lr),
        ("k2", lambda lr: lr**2 / 2),
        ("k3", lambda lr: np.exp(lr) - 1 - lr),
    ],
)
def test_mc_value_and_stderr_are_the_mean_and_standard_error_of_schulman_terms(estimator, term):
    log_p, log_q = normal_log_densities(1000)
    terms = term(log_q - log_p)
    result = mc(log_p, log_q, estimator=estimator)
    assert isinstance(result, Estimate) and result.n == 1000
    assert result.value == pytest.approx(terms.mean(), rel=1e-12)
    assert result.stderr == pytest.approx(terms.std(ddof=1) / math.sqrt(1000), rel=1e-12)
    low, high = result.ci
    assert (high - low) / 2 == pytest.approx(1.959964 * result.stderr, rel=1e-5)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_mc_unbiased_estimators_recover_the_gaussian_closed_form(estimator):
    result = mc(*normal_log_densities(200_000, seed=1), estimator=estimator)
    assert abs(result.value - 0.5) < 4 * result.stderr


def test_mc_k2_and_k3_are_non_negative_and_k3_has_lower_variance_than_k1_when_close():
    log_p, log_q = normal_log_densities(5000, shift=0.1, seed=2)
    k1, k3 = mc(log_p, log_q, estimator="k1"), mc(log_p, log_q, estimator="k3")
    assert mc(log_p, log_q, estimator="k2").value >= 0 and k3.value >= 0
    assert k3.stderr < k1.stderr


def test_mc_k3_is_accurate_for_tiny_log_ratios():
    log_p = np.zeros(4)
    log_q = np.full(4, 1e-9)
    assert mc(log_p, log_q, estimator="k3").value == pytest.approx(0.5e-18, rel=1e-6)


def test_mc_keeps_the_torch_autograd_graph():
    torch = pytest.importorskip("torch")
    shift = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    x = torch.randn(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = mc(-0.5 * x**2, -0.5 * (x - shift) ** 2)
    result.value.backward()
    assert shift.grad.item() == pytest.approx(1.0, abs=0.02)  # d/dμ of μ²/2


def test_mc_base_two_gives_bits():
    log_p, log_q = normal_log_densities(100)
    assert mc(log_p, log_q, base=2).value == pytest.approx(mc(log_p, log_q).value / math.log(2))


def test_mc_zero_density_under_q_gives_infinity_with_a_warning():
    with pytest.warns(RuntimeWarning, match=r"log_q\[1\] is -inf: Q gives zero density"):
        result = mc([0.0, 0.0], [0.0, -np.inf])
    assert result.value == math.inf


@pytest.mark.parametrize(
    "log_p, log_q, kwargs, error, message",
    [
        ([0.0, 0.0], [0.0], {}, ValueError, r"log_p has shape \(2,\) but log_q has shape \(1,\)"),
        ([0.0], [0.0], {}, ValueError, "at least 2 samples"),
        ([0.0, np.nan], [0.0, 0.0], {}, ValueError, r"log_p\[1\] is NaN"),
        ([0.0, -np.inf], [0.0, 0.0], {}, ValueError, r"log_p\[1\] = -inf; samples must be drawn from P"),
        ([0.0, 0.0], [np.inf, 0.0], {}, ValueError, r"log_q\[0\] is \+inf"),
        ([[0.0]], [[0.0]], {}, ValueError, "must be 1-D"),
        ([0.0, 0.0], [0.0, 0.0], {"estimator": "k4"}, ValueError, "estimator must be one of 'k1', 'k2', 'k3'"),
        (["a", "b"], [0.0, 0.0], {}, TypeError, "log_p has dtype"),
        ([0.0, 0.0], [0.0, 0.0], {"ci": 2}, ValueError, "ci must be a confidence level"),
    ],
)
def test_mc_bad_input_is_a_one_line_error(log_p, log_q, kwargs, error, message):
    with pytest.raises(error, match=message):
        mc(log_p, log_q, **kwargs)


def test_plugin_without_correction_is_the_kl_of_the_frequencies():
    a, b = np.array([10, 20, 30, 0]), np.array([20, 20, 15, 5])
    result = plugin(a, b, correction="none")
    assert result.value == pytest.approx(scipy_kl(a / a.sum(), b / b.sum()))
    assert result.n == 60


def test_plugin_miller_madow_subtracts_the_documented_first_order_bias():
    a, b = np.array([10.0, 20, 30]), np.array([20.0, 20, 20])
    p, q = a / 60, b / 60
    expected = scipy_kl(p, q) - 2 / 120 - np.sum(p / q * (1 - q)) / 120
    assert plugin(a, b).value == pytest.approx(expected)


def test_plugin_miller_madow_is_less_biased_than_the_raw_plugin_on_average():
    rng = np.random.default_rng(3)
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.25, 0.25, 0.25, 0.25])
    truth = scipy_kl(p, q)
    raw, corrected = [], []
    for _ in range(2000):
        a, b = rng.multinomial(40, p), rng.multinomial(40, q)
        if (b == 0).any():
            continue
        raw.append(plugin(a, b, correction="none").value)
        corrected.append(plugin(a, b).value)
    assert abs(np.mean(corrected) - truth) < abs(np.mean(raw) - truth) / 2


def test_plugin_pseudo_count_adds_to_every_category():
    a, b = np.array([3.0, 0, 1]), np.array([0.0, 2, 2])
    expected = scipy_kl((a + 0.5) / 5.5, (b + 0.5) / 5.5)
    assert plugin(a, b, correction=0.5).value == pytest.approx(expected)


def test_plugin_delta_method_stderr_shrinks_like_one_over_root_n():
    small = plugin([10, 20, 30], [20, 20, 20], correction="none")
    large = plugin([1000, 2000, 3000], [2000, 2000, 2000], correction="none")
    assert small.stderr / large.stderr == pytest.approx(10, rel=1e-9)


@pytest.mark.parametrize(
    "a, b, kwargs, error, message",
    [
        ([1, 2], [1, 0], {}, ValueError, "category 1 has count 2 in counts_p but 0 in counts_q"),
        ([1, 2], [1, 2, 3], {}, ValueError, "counts_p has 2 categories but counts_q has 3"),
        ([1, -2], [1, 2], {}, ValueError, r"counts_p\[1\] = -2.0; counts must be finite"),
        ([0, 0], [1, 2], {}, ValueError, "counts_p sums to 0"),
        ([[1]], [[1]], {}, ValueError, "must be 1-D"),
        ([1, 2], [1, 2], {"correction": "laplace"}, ValueError, "correction must be 'miller-madow', 'none'"),
        ([1, 2], [1, 2], {"correction": -1.0}, ValueError, "pseudo-count correction must be a positive"),
        ([1, 2], [1, 2], {"correction": True}, TypeError, "correction must be"),
        (["x"], [1], {}, TypeError, "counts_p has dtype"),
    ],
)
def test_plugin_bad_input_is_a_one_line_error(a, b, kwargs, error, message):
    with pytest.raises(error, match=message):
        plugin(a, b, **kwargs)


def test_estimate_prints_value_stderr_interval_and_n():
    text = str(Estimate(0.5, 0.01, (0.48, 0.52), 100))
    assert text == "0.5 ± 0.01 [0.48, 0.52] (n=100)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(Estimate(1.0, 0.0, None, 2)) == 1.0


def test_category_counts_count_distinct_values_and_rows():
    from collections import Counter

    from kldiv.estimate import category_counts

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, size=(200, 2)), rng.integers(1, 5, size=(150, 2))
    categories, counts_p, counts_q = category_counts(x, y)
    seen_p, seen_q = Counter(map(tuple, x.tolist())), Counter(map(tuple, y.tolist()))
    assert sorted(map(tuple, categories.tolist())) == sorted(set(seen_p) | set(seen_q))
    for row, a, b in zip(categories.tolist(), counts_p, counts_q, strict=True):
        assert (a, b) == (seen_p[tuple(row)], seen_q[tuple(row)])
    with pytest.raises(ValueError, match="x has 2 value"):
        category_counts(x, y[:, 0:1].repeat(3, axis=1))
