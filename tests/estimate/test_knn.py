"""k-NN estimator: known answers, invariances, degenerate input, intervals."""

import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kldiv.estimate import Estimate, knn
from kldiv.estimate._knn import knn_terms  # the per-point terms: the documented fallback's oracle


def gaussian_pair(n, d=1, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift


def test_knn_returns_an_estimate_with_value_stderr_and_sample_count():
    x, y = gaussian_pair(500)
    result = knn(x, y)
    assert isinstance(result, Estimate)
    assert result.n == 500 and result.ci is None and result.stderr > 0
    assert float(result) == result.value


@pytest.mark.parametrize("adaptive", [False, True])
def test_knn_1d_shift_is_close_to_the_closed_form_half(adaptive):
    x, y = gaussian_pair(10_000, seed=1)
    result = knn(x, y, k=5, adaptive=adaptive)
    assert abs(result.value - 0.5) < 0.06


def test_knn_matches_the_wang_kulkarni_verdu_formula_computed_by_brute_force():
    x, y = gaussian_pair(60, d=2, seed=2)
    k = 2
    n, d = x.shape
    rho = np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, k]  # column 0 is the point itself
    nu = np.sort(np.linalg.norm(x[:, None] - y[None], axis=-1), axis=1)[:, k - 1]
    expected = d * np.mean(np.log(nu / rho)) + math.log(len(y) / (n - 1))
    assert knn(x, y, k=k).value == pytest.approx(expected, rel=1e-12)


def test_knn_adaptive_matches_brute_force_neighbour_counts():
    from scipy.special import digamma

    x, y = gaussian_pair(80, d=2, seed=3)
    n, d = x.shape
    dx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    dy = np.linalg.norm(x[:, None] - y[None], axis=-1)
    terms = []
    for i in range(n):
        others = np.sort(np.delete(dx[i], i))
        to_y = np.sort(dy[i])
        eps = max(others[0], to_y[0])
        li, ki = int(np.sum(others <= eps)), int(np.sum(to_y <= eps))
        terms.append(d * np.log(to_y[ki - 1] / others[li - 1]) + digamma(li) - digamma(ki))
    expected = np.mean(terms) + math.log(len(y) / (n - 1))
    assert knn(x, y, k=1, adaptive=True).value == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("adaptive", [False, True])
def test_knn_self_divergence_is_near_zero(adaptive):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    assert abs(knn(x, y, k=3, adaptive=adaptive).value) < 0.05


@settings(max_examples=15)
@given(
    shift=st.floats(-100, 100),
    scale=st.floats(0.01, 100),
    angle=st.floats(0, 2 * math.pi),
    adaptive=st.booleans(),
)
def test_knn_is_invariant_under_translation_rotation_and_uniform_scaling(shift, scale, angle, adaptive):
    x, y = gaussian_pair(200, d=2, seed=5)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = knn(scale * x @ rotation.T + shift, scale * y @ rotation.T + shift, k=2, adaptive=adaptive)
    assert moved.value == pytest.approx(knn(x, y, k=2, adaptive=adaptive).value, abs=1e-6)


def test_knn_base_two_gives_bits():
    x, y = gaussian_pair(300)
    assert knn(x, y, base=2).value == pytest.approx(knn(x, y).value / math.log(2))


def test_knn_accepts_torch_tensors_and_lists_with_the_same_value():
    torch = pytest.importorskip("torch")
    x, y = gaussian_pair(200)
    expected = knn(x, y).value
    assert knn(torch.tensor(x), torch.tensor(y)).value == pytest.approx(expected)
    assert knn(x[:, 0].tolist(), y[:, 0].tolist()).value == pytest.approx(expected)


def test_knn_duplicates_raise_k_past_the_tie_group_with_a_warning_and_stay_finite():
    x, y = gaussian_pair(400, seed=6)
    x_dup = np.concatenate([x, x[:50]])  # 50 points appear twice
    y_dup = np.concatenate([y, x[:10]])  # and 10 points of x also appear in y
    with pytest.warns(UserWarning, match="raised past each tie group"):
        result = knn(x_dup, y_dup, k=1)
    assert math.isfinite(result.value)
    assert abs(result.value - 0.5) < 0.3


def test_knn_tie_rule_uses_the_first_neighbour_beyond_the_copies():
    # x = {0, 0, 1, 3}, y = {10, 11}: for the two zeros rho_1 = 0, so l = 1 + 1 copy and rho_2 = 1.
    from scipy.special import digamma

    x, y = np.array([0.0, 0.0, 1.0, 3.0]), np.array([10.0, 11.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = knn(x, y, k=1).value
    terms = [math.log(10 / 1) + digamma(2) - digamma(1)] * 2 + [math.log(9 / 1), math.log(7 / 2)]
    assert value == pytest.approx(np.mean(terms) + math.log(2 / 3))


def test_knn_constant_sample_is_a_clear_error():
    with pytest.raises(ValueError, match="x has too few distinct points"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        knn(np.zeros(20), np.arange(20.0))


def test_knn_y_equal_to_the_point_everywhere_is_a_clear_error():
    with pytest.raises(ValueError, match="y has too few distinct points"):
        knn(np.arange(5.0), np.zeros(3) + 2.0, k=1)


def test_knn_nan_row_is_named():
    x, y = gaussian_pair(10, d=2)
    x[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"^x row 7 contains NaN; remove or impute"):
        knn(x, y)


def test_knn_inf_row_in_y_is_named():
    x, y = gaussian_pair(10)
    y[2] = np.inf
    with pytest.raises(ValueError, match="y row 2 contains inf"):
        knn(x, y)


def test_knn_too_few_points_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x has 3 point\(s\) but k=3 needs at least k\+1 = 4"):
        knn(np.arange(3.0), np.arange(10.0), k=3)
    with pytest.raises(ValueError, match=r"y has 2 point\(s\) but k=3 needs at least k"):
        knn(np.arange(10.0), np.arange(2.0), k=3)


def test_knn_dimension_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"x has 2 dimension\(s\) per sample but y has 3"):
        knn(np.zeros((5, 2)), np.zeros((5, 3)))


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_knn_bad_k_is_rejected(k):
    with pytest.raises((ValueError, TypeError), match="k must be a positive integer"):
        knn(np.arange(5.0), np.arange(5.0), k=k)


def test_knn_bad_shapes_and_types_are_rejected():
    with pytest.raises(ValueError, match=r"has shape \(2, 2, 2\); pass an \(n, d\) array"):
        knn(np.zeros((2, 2, 2)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="x has dtype <U1"):
        knn(["a", "b"], [1.0, 2.0])
    with pytest.raises(TypeError, match="adaptive must be True or False"):
        knn(np.arange(5.0), np.arange(5.0), adaptive="yes")


def test_knn_standard_error_does_not_depend_on_ci():
    x, y = gaussian_pair(1500, d=3, seed=7)
    plain, with_interval = knn(x, y, k=5), knn(x, y, k=5, ci=0.95)
    assert plain.ci is None and with_interval.ci is not None
    assert with_interval.stderr == plain.stderr and with_interval.bias == plain.bias
    assert with_interval.value == plain.value
    assert knn(x, y, k=5, ci=0.9).stderr == plain.stderr


def test_knn_stderr_and_bias_are_the_documented_fold_formulas():
    # Oracle: the fold estimates recomputed with the public estimator on the same random partitions.
    x, y = gaussian_pair(400, d=2, seed=8)
    result = knn(x, y, k=2, resamples=20, seed=3, ci=0.9)
    rng = np.random.default_rng(3)
    folds = []
    for _ in range(2):
        parts_x, parts_y = np.array_split(rng.permutation(400), 10), np.array_split(rng.permutation(400), 10)
        folds.append([knn(x[a], y[b], k=2).value for a, b in zip(parts_x, parts_y, strict=True)])
    folds = np.array(folds)
    assert result.stderr == pytest.approx(math.sqrt(np.mean(np.var(folds, axis=1, ddof=1)) / 10), rel=1e-9)
    c = 1 / (10**0.5 - 1)  # d = 2: rate a = 1/2
    assert result.bias == pytest.approx(c * (folds.mean() - result.value), rel=1e-9)
    z = 1.6448536269514722
    half = z * result.stderr * math.sqrt(1 + 2 * c + 2 * c * c)
    expected = (max(result.value - result.bias - half, 0.0), result.value - result.bias + half)
    assert result.ci == pytest.approx(expected, rel=1e-9)


def test_knn_stderr_matches_the_spread_over_independent_samples():
    rng = np.random.default_rng(9)
    values, errors = [], []
    for seed in range(30):
        x, y = rng.normal(size=(1000, 1)), rng.normal(1, 1, size=(1000, 1))
        result = knn(x, y, k=5, seed=seed)
        values.append(result.value)
        errors.append(result.stderr)
    assert 0.7 < np.mean(errors) / np.std(values, ddof=1) < 1.4


def test_knn_interval_covers_a_10d_truth_that_value_plus_minus_two_stderr_misses():
    truth = 5 * (0.5 - 1 + math.log(2))  # KL(N(0, I_10) || N(0, 2 I_10)), closed form
    covered = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x, y = rng.normal(size=(1000, 10)), rng.normal(size=(1000, 10)) * math.sqrt(2)
        result = knn(x, y, k=5, ci=0.95)
        assert abs(result.value - truth) > 2 * result.stderr  # the bias: 0.5 nats at this n
        assert result.bias > 0
        covered += result.ci[0] <= truth <= result.ci[1]
    assert covered >= 4


def test_knn_interval_is_clipped_at_zero():
    x, y = gaussian_pair(300, d=4, shift=0.0, seed=10)
    low, high = knn(x, y, k=1, ci=0.95).ci
    assert low >= 0 and high > 0


def test_knn_small_samples_fall_back_to_the_per_point_stderr_without_bias():
    x, y = gaussian_pair(30, seed=11)
    result = knn(x, y, k=1, ci=0.9)
    assert result.bias is None
    terms_se = result.stderr
    assert terms_se > 0 and result.ci[0] < result.value < result.ci[1]


def test_knn_discrete_samples_warn_and_point_to_the_plugin_estimator():
    from kldiv.estimate import DiscreteSampleWarning

    rng = np.random.default_rng(12)
    with pytest.warns(DiscreteSampleWarning, match=r"look discrete.*kldiv\.estimate\.plugin.*--discrete"):
        knn(rng.poisson(3, size=500), rng.poisson(4, size=500))


def test_knn_interval_arguments_are_checked():
    x, y = gaussian_pair(10)
    with pytest.raises(ValueError, match="ci must be a confidence level strictly between 0 and 1"):
        knn(x, y, ci=1.5)
    with pytest.raises(ValueError, match="resamples must be an integer >= 2"):
        knn(x, y, ci=0.9, resamples=1)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KLDIV_SLOW"), reason="about a minute of CPU; set KLDIV_SLOW=1 to run")
def test_knn_handles_100k_points_in_10_dimensions():
    # Completes and is finite; the time is measured in benchmarks/bench_estimate.py, not asserted here.
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(100_000, 10)), rng.normal(size=(100_000, 10)) + 0.1
    result = knn(x, y, k=5)
    assert math.isfinite(result.value) and result.stderr > 0


def test_knn_leaf_size_changes_speed_not_the_value():
    import kldiv

    x, y = gaussian_pair(500, d=3, seed=13)
    with kldiv.config_context(knn_leaf_size=4):
        small = knn(x, y, k=3)
    assert small == knn(x, y, k=3)


def test_knn_heavily_duplicated_folds_fall_back_to_the_per_point_stderr():
    # 180 copies of one point among 200: the whole sample has k distinct neighbours beyond the copies, a fold of
    # 20 (about 18 copies) does not, so no fold-based error exists.
    rng = np.random.default_rng(14)
    x = np.concatenate([np.zeros((180, 1)), rng.normal(size=(20, 1))])
    y = rng.normal(size=(400, 1)) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = knn(x, y, k=5, ci=0.9)
        terms_se = np.std(knn_terms(x, y, 5, False)[0], ddof=1) / math.sqrt(200)
    assert result.bias is None and result.stderr == pytest.approx(terms_se)
    assert math.isfinite(result.value) and result.ci[0] <= result.value <= result.ci[1]
