"""Forward values against independent oracles (SciPy, PyTorch, direct float64 sums) and properties."""

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

import kldiv

from .strategies import distributions, pairs

rng = np.random.default_rng(12345)


def random_simplex(*shape, zeros=0.0):
    x = rng.random(shape)
    if zeros:
        x[rng.random(shape) < zeros] = 0.0
        x[..., 0] += 1e-3  # never an all-zero row
    return x / x.sum(-1, keepdims=True)


# --- oracles ------------------------------------------------------------------------------------------


def test_kl_matches_scipy_rel_entr_with_zeros_in_both():
    p, q = random_simplex(7, 9, zeros=0.3), random_simplex(7, 9, zeros=0.3)
    expected = scipy.special.rel_entr(p, q).sum(-1)
    np.testing.assert_allclose(kldiv.kl(p, q), expected, rtol=1e-13)


def test_kl_matches_scipy_stats_entropy_and_torch_kl_div():
    import torch

    p, q = random_simplex(5, 11), random_simplex(5, 11)
    np.testing.assert_allclose(kldiv.kl(p, q), scipy.stats.entropy(p, q, axis=-1), rtol=1e-12)
    torch_value = torch.nn.functional.kl_div(torch.tensor(q).log(), torch.tensor(p), reduction="none").sum(-1)
    np.testing.assert_allclose(kldiv.kl(p, q), torch_value.numpy(), rtol=1e-12)


def test_entropy_and_cross_entropy_match_scipy():
    p, q = random_simplex(4, 6, zeros=0.3), random_simplex(4, 6)
    np.testing.assert_allclose(kldiv.entropy(p), scipy.stats.entropy(p, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(kldiv.cross_entropy(p, q), -(scipy.special.xlogy(p, q)).sum(-1), rtol=1e-13)


def test_js_is_the_square_of_scipy_jensenshannon():
    p, q = random_simplex(6, 8, zeros=0.3), random_simplex(6, 8, zeros=0.3)
    expected = scipy.spatial.distance.jensenshannon(p, q, axis=-1) ** 2
    np.testing.assert_allclose(kldiv.js(p, q), expected, rtol=1e-10)
    np.testing.assert_allclose(kldiv.js(p, q, base=2), scipy.spatial.distance.jensenshannon(p, q, axis=-1, base=2) ** 2, rtol=1e-10)


@pytest.mark.parametrize("weight", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_weighted_js_matches_direct_float64_sum(weight):
    p, q = random_simplex(5, 7, zeros=0.3), random_simplex(5, 7, zeros=0.3)
    m = weight * p + (1 - weight) * q
    expected = sum(w * scipy.special.rel_entr(x, m).sum(-1) for w, x in ((weight, p), (1 - weight, q)) if w > 0)
    np.testing.assert_allclose(kldiv.js(p, q, weight=weight), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_skew_kl_matches_rel_entr_against_the_mixture(alpha):
    p, q = random_simplex(5, 7, zeros=0.3), random_simplex(5, 7, zeros=0.3)
    expected = scipy.special.rel_entr(p, alpha * p + (1 - alpha) * q).sum(-1)
    np.testing.assert_allclose(kldiv.skew_kl(p, q, alpha=alpha), expected, rtol=1e-12, atol=1e-15)


def test_tvd_and_hellinger_match_direct_formulas():
    p, q = random_simplex(5, 7, zeros=0.3), random_simplex(5, 7)
    np.testing.assert_allclose(kldiv.tvd(p, q), 0.5 * np.abs(p - q).sum(-1), rtol=1e-13)
    np.testing.assert_allclose(kldiv.hellinger(p, q), np.sqrt(1 - np.sqrt(p * q).sum(-1)), rtol=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 2.0, 5.0])
def test_renyi_matches_direct_formula(alpha):
    p, q = random_simplex(5, 7), random_simplex(5, 7)
    if alpha == 0:
        expected = -np.log(np.where(p > 0, q, 0).sum(-1))
    else:
        expected = np.log((p**alpha * q ** (1 - alpha)).sum(-1)) / (alpha - 1)
    np.testing.assert_allclose(kldiv.renyi(p, q, alpha=alpha), expected, rtol=1e-12, atol=1e-15)


def test_renyi_at_infinity_is_log_max_ratio_on_the_support():
    p = np.array([0.0, 0.5, 0.5])
    q = np.array([0.9, 0.05, 0.05])
    assert float(kldiv.renyi(p, q, alpha=math.inf)) == pytest.approx(math.log(10))


# --- exact edge cases --------------------------------------------------------------------------------


def test_zero_p_terms_contribute_exactly_zero_and_one_hot_is_minus_log_q():
    assert float(kldiv.kl([0.0, 1.0, 0.0], [0.2, 0.5, 0.3])) == pytest.approx(-math.log(0.5), rel=1e-15)
    assert float(kldiv.kl([1.0, 0.0], [1.0, 0.0])) == 0.0
    assert float(kldiv.entropy([0.0, 1.0])) == 0.0


def test_positive_p_where_q_is_zero_gives_inf_never_nan():
    values = [kldiv.kl([0.5, 0.5], [1.0, 0.0]), kldiv.cross_entropy([0.5, 0.5], [1.0, 0.0]),
              kldiv.renyi([0.5, 0.5], [1.0, 0.0], alpha=2), kldiv.renyi([0.5, 0.5], [1.0, 0.0], alpha=math.inf)]
    assert all(float(v) == math.inf for v in values)


def test_disjoint_supports_give_kl_inf_js_log2_tvd_and_hellinger_one():
    p, q = [1.0, 0.0], [0.0, 1.0]
    assert float(kldiv.kl(p, q)) == math.inf
    assert float(kldiv.js(p, q)) == pytest.approx(math.log(2), rel=1e-15)
    assert float(kldiv.tvd(p, q)) == 1.0
    assert float(kldiv.hellinger(p, q)) == 1.0
    assert float(kldiv.renyi(p, q, alpha=0.5)) == math.inf  # Bhattacharyya coefficient 0


def test_huge_logits_do_not_overflow():
    x = np.array([1e4, -1e4, 0.0])
    y = np.array([-1e4, 1e4, 0.0])
    assert float(kldiv.kl(x, y, from_logits=True)) == pytest.approx(2e4, rel=1e-12)
    assert float(kldiv.kl(x, x, from_logits=True)) == 0.0
    assert float(kldiv.js(x, y, from_logits=True)) == pytest.approx(math.log(2), rel=1e-12)


def test_minus_inf_logits_mean_probability_zero():
    x = np.array([0.0, -np.inf, 0.0])
    np.testing.assert_allclose(kldiv.kl(x, [0.0, 0.0, 0.0], from_logits=True), math.log(1.5), rtol=1e-14)
    assert float(kldiv.kl([0.0, 0.0, 0.0], x, from_logits=True)) == math.inf


def test_from_logits_equals_probabilities_of_the_softmax():
    x, y = rng.normal(size=(3, 10)) * 4, rng.normal(size=(3, 10)) * 4
    p, q = scipy.special.softmax(x, -1), scipy.special.softmax(y, -1)
    for name in ["kl", "js", "skew_kl", "tvd", "hellinger", "cross_entropy"]:
        f = getattr(kldiv, name)
        np.testing.assert_allclose(f(x, y, from_logits=True), f(p, q), rtol=1e-10, err_msg=name)


# --- shapes, axes, dtypes, units -----------------------------------------------------------------------


def test_one_d_inputs_give_a_zero_d_numpy_array():
    value = kldiv.kl([0.1, 0.9], [0.9, 0.1])
    assert isinstance(value, np.ndarray) and value.shape == ()


def test_batch_axes_broadcast_and_axis_selects_the_distribution():
    p = random_simplex(2, 3, 5)
    q = random_simplex(5)
    expected = scipy.special.rel_entr(p, q).sum(-1)
    np.testing.assert_allclose(kldiv.kl(p, q), expected, rtol=1e-13)
    np.testing.assert_allclose(kldiv.kl(np.moveaxis(p, -1, 0), np.moveaxis(np.broadcast_to(q, p.shape), -1, 0), axis=0),
                               expected, rtol=1e-13)
    assert kldiv.kl(random_simplex(4, 1, 6), random_simplex(3, 6)).shape == (4, 3)


def test_float32_input_returns_float32_close_to_float64():
    p, q = random_simplex(3, 1000), random_simplex(3, 1000)
    value = kldiv.kl(p.astype(np.float32), q.astype(np.float32))
    assert value.dtype == np.float32
    np.testing.assert_allclose(value, kldiv.kl(p, q), rtol=2e-5)


def test_float16_numpy_computes_in_float32_and_returns_float16():
    p, q = random_simplex(4, 50), random_simplex(4, 50)
    value = kldiv.kl(p.astype(np.float16), q.astype(np.float16))
    assert value.dtype == np.float16
    np.testing.assert_allclose(value.astype(np.float64), kldiv.kl(p, q), rtol=2e-2, atol=2e-3)


def test_integer_one_hot_inputs_are_accepted():
    assert float(kldiv.kl([0, 1], [0.5, 0.5])) == pytest.approx(math.log(2))


@pytest.mark.parametrize("base", [2, 10, math.e, 0.5])
def test_base_divides_by_log_base(base):
    p, q = random_simplex(3, 4), random_simplex(3, 4)
    np.testing.assert_allclose(kldiv.kl(p, q, base=base), kldiv.kl(p, q) / math.log(base), rtol=1e-14)
    np.testing.assert_allclose(kldiv.entropy(p, base=base), scipy.stats.entropy(p, axis=-1, base=base), rtol=1e-13)


def test_large_chunked_threaded_input_equals_scipy():
    p, q = random_simplex(300, 2000, zeros=0.01).astype(np.float32), random_simplex(300, 2000).astype(np.float32)
    np.testing.assert_allclose(kldiv.kl(p, q), scipy.special.rel_entr(p.astype(np.float64), q).sum(-1), rtol=2e-5)


def test_empty_batch_gives_empty_result():
    assert kldiv.kl(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)


def test_normalize_divides_by_the_sum_along_axis():
    w = rng.random((3, 4))
    np.testing.assert_allclose(kldiv.normalize(w), w / w.sum(-1, keepdims=True))
    np.testing.assert_allclose(kldiv.normalize(w, axis=0).sum(0), 1.0)


# --- properties ---------------------------------------------------------------------------------------


@given(pairs())
def test_kl_is_non_negative_and_zero_on_equal_inputs(pq):
    p, q = pq
    assert float(kldiv.kl(p, q)) >= -1e-15
    assert float(kldiv.kl(p, p)) == pytest.approx(0.0, abs=1e-15)


@given(pairs(zeros=False, min_size=2))
def test_kl_is_zero_only_when_distributions_are_equal(pq):
    p, q = pq
    if np.abs(p - q).max() > 1e-3:
        assert float(kldiv.kl(p, q)) > 0


@given(pairs())
def test_kl_equals_cross_entropy_minus_entropy(pq):
    p, q = pq
    kl = float(kldiv.kl(p, q))
    difference = float(kldiv.cross_entropy(p, q)) - float(kldiv.entropy(p))
    if math.isinf(kl):
        assert math.isinf(difference)
    else:
        assert kl == pytest.approx(difference, abs=1e-12)


@given(pairs(), st.floats(0, 1))
def test_js_is_bounded_by_the_entropy_of_the_weights(pq, weight):
    p, q = pq
    value = float(kldiv.js(p, q, weight=weight))
    bound = float(kldiv.entropy([weight, 1 - weight]))
    assert -1e-15 <= value <= bound + 1e-12 <= math.log(2) + 1e-12


@given(pairs())
def test_pinsker_inequality(pq):
    p, q = pq
    assert float(kldiv.tvd(p, q)) <= math.sqrt(float(kldiv.kl(p, q)) / 2) + 1e-12


@given(pairs(), st.lists(st.floats(0, 8), min_size=2, max_size=5))
def test_renyi_is_non_decreasing_in_alpha_and_kl_at_one(pq, alphas):
    p, q = pq
    values = [float(kldiv.renyi(p, q, alpha=a)) for a in sorted(alphas) + [math.inf]]
    for low, high in zip(values, values[1:], strict=False):
        assert low <= high + 1e-9 * max(1.0, abs(high))
    assert float(kldiv.renyi(p, q, alpha=1)) == float(kldiv.kl(p, q))


@given(distributions(), st.floats(1.01, 100))
def test_base_conversion_of_entropy(p, base):
    assert float(kldiv.entropy(p, base=base)) == pytest.approx(float(kldiv.entropy(p)) / math.log(base), abs=1e-12)


@given(pairs())
def test_hellinger_and_tvd_lie_in_unit_interval_and_are_symmetric(pq):
    p, q = pq
    for f in (kldiv.hellinger, kldiv.tvd):
        value = float(f(p, q))
        assert 0 <= value <= 1
        assert value == pytest.approx(float(f(q, p)), abs=1e-15)


def _mixture_kl_exact(p, q, w):
    """KL(P || w P + (1 - w) Q) in 50-digit arithmetic."""
    import mpmath

    mpmath.mp.dps = 50
    total = mpmath.mpf(0)
    for a, b in zip(p, q, strict=True):
        a, b = mpmath.mpf(float(a)), mpmath.mpf(float(b))
        if a > 0:
            total += a * mpmath.log(a / (w * a + (1 - w) * b))
    return total


@pytest.mark.parametrize("weight", [1e-12, 1e-9, 3e-8, 1e-4, 0.5, 1 - 1e-4, 1 - 3e-8, 1 - 1e-9])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("last", [0.0, 0.1], ids=["a zero in p", "no zero"])
def test_js_and_skew_kl_keep_their_relative_precision_for_weights_near_0_and_1(weight, dtype, last):
    """Weights within the rounding of 1 of 0 or 1 (float32: 6e-8): no cancellation of log p - log m, no log 0,
    on every path (probabilities, logits, the distillation loss; guarded and tame row forms)."""
    pytest.importorskip("mpmath")
    import mpmath
    import torch

    from kldiv.nn.functional import distillation_loss

    p = np.array([0.2, 0.3, 0.5 - last, last], dtype=dtype)
    q = np.array([0.5, 0.25, 0.125, 0.125], dtype=dtype)
    w = mpmath.mpf(weight)
    js = float(w * _mixture_kl_exact(p, q, w) + (1 - w) * _mixture_kl_exact(q, p, 1 - w))
    skew = float(_mixture_kl_exact(p, q, w))
    rtol = 2e-6 if dtype == "float32" else 1e-12
    tp, tq = torch.tensor(p), torch.tensor(q)
    for value in (kldiv.js(p, q, weight=weight), kldiv.js(tp, tq, weight=weight),
                  kldiv.js(np.log(p), np.log(q), weight=weight, from_logits=True),
                  distillation_loss(torch.log(tq)[None], torch.log(tp)[None], divergence="js", beta=weight)):
        np.testing.assert_allclose(float(value), js, rtol=rtol, atol=0)
    atol = 1e-20 if dtype == "float64" else 1e-15
    for value in (kldiv.skew_kl(p, q, alpha=weight), kldiv.skew_kl(tp, tq, alpha=weight)):
        np.testing.assert_allclose(float(value), skew, rtol=rtol, atol=atol)
    # from logits, the probabilities themselves carry the softmax's rounding (eps each): the value, O((1 - a)^2),
    # is known to about eps / (1 - a) of itself, the float32 limit, not a cancellation of the formula
    limit = rtol + (4 * float(np.finfo(dtype).eps) / (1 - weight))
    value = distillation_loss(torch.log(tq)[None], torch.log(tp)[None], divergence="skew_kl", alpha=weight)
    np.testing.assert_allclose(float(value), skew, rtol=limit, atol=atol)
