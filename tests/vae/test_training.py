"""kldiv.vae training helpers against direct NumPy formulas."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import norm

import kldiv.vae as kvae

HAS_GAUSSIAN = importlib.util.find_spec("kldiv.vae._gaussian") is not None
needs_gaussian = pytest.mark.skipif(not HAS_GAUSSIAN, reason="kldiv.vae.gaussian_kl not written yet")

kl_matrices = st.integers(1, 6).flatmap(
    lambda b: st.integers(1, 5).flatmap(
        lambda d: st.lists(st.floats(0, 10), min_size=b * d, max_size=b * d).map(lambda v: np.array(v).reshape(b, d))
    )
)


def test_beta_kl_multiplies_by_beta():
    assert kvae.beta_kl(np.array([2.0, 3.0]), 0.5).tolist() == [1.0, 1.5]


def test_capacity_kl_is_beta_times_absolute_gap():
    kl = np.array([0.5, 4.0])
    np.testing.assert_allclose(kvae.capacity_kl(kl, 2.0, beta=10.0), 10.0 * np.abs(kl - 2.0))


def test_free_bits_batch_mode_clamps_the_batch_mean_per_group():
    kl = np.array([[0.1, 3.0, 0.0], [0.3, 1.0, 0.9]])
    expected = sum(max(0.5, kl[:, j].mean()) for j in range(3))
    assert kvae.free_bits(kl, 0.5, mode="batch") == pytest.approx(expected)


def test_free_bits_sample_mode_clamps_each_sample_and_group():
    kl = np.array([[0.1, 3.0, 0.0], [0.3, 1.0, 0.9]])
    expected = np.mean([sum(max(0.5, v) for v in row) for row in kl])
    assert kvae.free_bits(kl, 0.5, mode="sample") == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(kl_matrices, st.floats(0, 5))
def test_free_bits_sample_mode_is_never_below_batch_mode_and_both_at_least_the_floor(kl, threshold):
    batch = kvae.free_bits(kl, threshold, mode="batch")
    sample = kvae.free_bits(kl, threshold, mode="sample")
    assert sample >= batch - 1e-9
    assert batch >= threshold * kl.shape[1] - 1e-9
    assert batch >= kl.sum(axis=1).mean() - 1e-9


@settings(max_examples=40, deadline=None)
@given(kl_matrices)
def test_free_bits_with_zero_threshold_is_the_plain_batch_mean(kl):
    for mode in ("batch", "sample"):
        assert kvae.free_bits(kl, 0.0, mode=mode) == pytest.approx(kl.sum(axis=1).mean())


def test_free_bits_gives_no_gradient_to_groups_below_the_floor_in_torch():
    torch = pytest.importorskip("torch")
    kl = torch.tensor([[0.1, 3.0], [0.2, 1.0]], requires_grad=True)
    kvae.free_bits(kl, 0.5, mode="batch").backward()
    np.testing.assert_allclose(kl.grad.numpy(), [[0.0, 0.5], [0.0, 0.5]])
    kl.grad = None
    kvae.free_bits(kl, 0.5, mode="sample").backward()
    np.testing.assert_allclose(kl.grad.numpy(), [[0.0, 0.5], [0.0, 0.5]])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kvae.beta_kl(1.0, -1.0), "beta must be a finite number >= 0"),
        (lambda: kvae.capacity_kl(1.0, -2.0), "capacity must be a finite number >= 0"),
        (lambda: kvae.free_bits(np.ones((2, 2)), -0.1), "threshold must be a finite number >= 0"),
        (lambda: kvae.free_bits(np.ones((2, 2)), 0.1, mode="token"), "mode must be 'batch' or 'sample'"),
        (lambda: kvae.free_bits(np.ones(3), 0.1), "shape (batch, groups)"),
        (lambda: kvae.LinearWarmup(10)(-1), "step must be >= 0"),
        (lambda: kvae.LinearWarmup(-3), "warmup_steps must be an int >= 0"),
        (lambda: kvae.CyclicalSchedule(100, ratio=0.0), "ratio must be in (0, 1]"),
        (lambda: kvae.CyclicalSchedule(100, ramp="cubic"), "ramp must be one of"),
        (lambda: kvae.CyclicalSchedule(0), "total_steps must be an int >= 1"),
    ],
)
def test_bad_arguments_raise_a_clear_error(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


# --- schedules ---------------------------------------------------------------------------------------


def test_constant_schedule_is_constant():
    schedule = kvae.ConstantSchedule(0.3)
    assert [schedule(t) for t in (0, 5, 10_000)] == [0.3, 0.3, 0.3]


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 50), st.integers(0, 20), st.floats(-2, 2), st.floats(-2, 2), st.integers(0, 200))
def test_linear_warmup_matches_the_clipped_line(warmup, delay, start, stop, step):
    schedule = kvae.LinearWarmup(warmup, start=start, stop=stop, delay=delay)
    if warmup == 0:
        expected = start if step < delay else stop
    else:
        expected = start + (stop - start) * np.clip((step - delay) / warmup, 0.0, 1.0)
    assert schedule(step) == pytest.approx(expected, abs=1e-12)


def _fu_reference(total, n_cycles, ratio, ramp):
    """Fu et al.'s frange_cycle_* code, written independently as a loop over the whole schedule."""
    values = np.ones(total)
    period = total / n_cycles
    step_size = 1.0 / (period * ratio)
    for c in range(n_cycles):
        v, i = 0.0, 0
        while v <= 1.0 and int(i + c * period) < total:
            if ramp == "linear":
                w = v
            elif ramp == "cosine":
                w = 0.5 - 0.5 * math.cos(v * math.pi)
            else:
                w = 1.0 / (1.0 + math.exp(-(v * 12.0 - 6.0)))
            values[int(i + c * period)] = w
            v += step_size
            i += 1
    return values


@pytest.mark.parametrize("ramp", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize(("total", "n_cycles", "ratio"), [(100, 4, 0.5), (120, 3, 0.25), (60, 1, 1.0)])
def test_cyclical_schedule_matches_fu_et_al_reference_code(ramp, total, n_cycles, ratio):
    schedule = kvae.CyclicalSchedule(total, n_cycles=n_cycles, ratio=ratio, ramp=ramp)
    reference = _fu_reference(total, n_cycles, ratio, ramp)
    np.testing.assert_allclose([schedule(t) for t in range(total)], reference, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 10).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, 30).map(lambda k: k * m))),
    st.floats(0.05, 1.0),
    st.sampled_from(["linear", "cosine", "sigmoid"]),
    st.integers(0, 400),
)
def test_cyclical_schedule_is_bounded_and_periodic(cycles_total, ratio, ramp, step):
    n_cycles, total = cycles_total
    schedule = kvae.CyclicalSchedule(total, n_cycles=n_cycles, ratio=ratio, ramp=ramp, start=0.2, stop=0.9)
    value = schedule(step)
    assert 0.2 - 1e-12 <= value <= 0.9 + 1e-12
    period = total // n_cycles
    if step + period < total:
        assert schedule(step + period) == pytest.approx(value, abs=1e-9)
    if step >= total:
        assert value == 0.9


def test_cyclical_schedule_starts_each_cycle_at_start_and_holds_stop_after_the_ramp():
    schedule = kvae.CyclicalSchedule(100, n_cycles=4, ratio=0.5)
    assert [schedule(t) for t in (0, 25, 50, 75)] == [0.0, 0.0, 0.0, 0.0]
    assert [schedule(t) for t in (12, 13, 24)] == [pytest.approx(12 / 12.5), 1.0, 1.0]


# --- diagnostics --------------------------------------------------------------------------------------


def _posterior(seed=0, batch=50, dim=4):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(batch, dim)) * np.array([1.0, 0.05, 0.5, 0.001])[:dim]
    log_var = rng.normal(-1.0, 0.3, size=(batch, dim))
    return mean, log_var


def test_active_units_counts_dimensions_whose_posterior_mean_varies_more_than_0_01():
    mean, _ = _posterior()
    variances = mean.var(axis=0)
    assert kvae.active_units(mean) == int((variances > 0.01).sum()) == 2
    np.testing.assert_allclose(kvae.latent_variances(mean), variances)


def _mi_reference(mean, log_var, seed):
    """He et al.'s calc_mi with SciPy densities, the (B, B, d) way."""
    rng = np.random.default_rng(seed)
    std = np.exp(0.5 * log_var)
    z = mean + std * rng.standard_normal(mean.shape)
    neg_entropy = np.mean([norm.logpdf(z[i], mean[i], std[i]).sum() for i in range(len(z))])  # a draw, not closed form
    closed = np.mean(-0.5 * mean.shape[1] * np.log(2 * np.pi) - 0.5 * (1 + log_var).sum(axis=1))
    log_density = norm.logpdf(z[:, None, :], mean[None, :, :], std[None, :, :]).sum(axis=2)
    log_qz = logsumexp(log_density, axis=1) - np.log(len(z))
    return closed - log_qz.mean(), neg_entropy


def test_mutual_information_matches_he_et_al_estimator():
    mean, log_var = _posterior(batch=40)
    expected, _ = _mi_reference(mean, log_var, seed=3)
    assert kvae.mutual_information(mean, log_var, seed=3) == pytest.approx(expected, rel=1e-10)


def test_mutual_information_is_at_most_log_batch_and_near_zero_for_a_collapsed_posterior():
    mean, log_var = _posterior(batch=64)
    assert kvae.mutual_information(mean, log_var) <= math.log(64) + 1e-9
    collapsed = kvae.mutual_information(np.zeros((200, 3)), np.zeros((200, 3)), samples=20)
    assert abs(collapsed) < 0.1  # Monte Carlo noise around the exact 0 (sd about 0.02 here)


def test_diagnostics_accept_torch_tensors():
    torch = pytest.importorskip("torch")
    mean, log_var = _posterior()
    assert kvae.active_units(torch.tensor(mean)) == kvae.active_units(mean)
    assert kvae.mutual_information(torch.tensor(mean), torch.tensor(log_var)) == kvae.mutual_information(mean, log_var)


@needs_gaussian
def test_kl_per_dimension_matches_the_closed_form_averaged_over_the_batch():
    mean, log_var = _posterior()
    expected = (0.5 * (mean**2 + np.exp(log_var) - log_var - 1)).mean(axis=0)
    np.testing.assert_allclose(kvae.kl_per_dimension(mean, log_var), expected, rtol=1e-12)


def test_diagnostics_reject_mismatched_or_non_finite_input():
    with pytest.raises(ValueError, match="same shape"):
        kvae.mutual_information(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        kvae.active_units(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(batch, latent\)"):
        kvae.active_units(np.zeros(3))
