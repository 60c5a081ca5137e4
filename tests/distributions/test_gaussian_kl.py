"""kldiv.vae.gaussian_kl and gaussian_kl_full against torch.distributions and each other."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kldiv.vae import gaussian_kl, gaussian_kl_full

torch = pytest.importorskip("torch")
D = torch.distributions


def torch_reference(mean, log_var, prior_mean=0.0, prior_log_var=0.0):
    p = D.Normal(torch.as_tensor(mean), torch.as_tensor(log_var).mul(0.5).exp())
    q = D.Normal(torch.as_tensor(prior_mean, dtype=torch.float64), torch.as_tensor(prior_log_var, dtype=torch.float64).mul(0.5).exp())
    return D.kl_divergence(p, q).numpy()


@settings(max_examples=30)
@given(
    mean=st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    log_var=st.lists(st.floats(-8, 8), min_size=3, max_size=3),
    prior_mean=st.floats(-2, 2),
    prior_log_var=st.floats(-3, 3),
)
def test_per_dimension_values_equal_torch_normal_kl(mean, log_var, prior_mean, prior_log_var):
    mean, log_var = np.array(mean), np.array(log_var)
    got = gaussian_kl(mean, log_var, prior_mean=prior_mean, prior_log_var=prior_log_var, reduction="none")
    expected = torch_reference(mean, log_var, prior_mean, prior_log_var)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_reductions_sum_mean_and_batchmean():
    rng = np.random.default_rng(0)
    mean, log_var = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    per_dim = gaussian_kl(mean, log_var, reduction="none")
    assert per_dim.shape == (4, 3)
    assert gaussian_kl(mean, log_var) == pytest.approx(per_dim.sum())
    assert gaussian_kl(mean, log_var, reduction="mean") == pytest.approx(per_dim.mean())
    assert gaussian_kl(mean, log_var, reduction="batchmean") == pytest.approx(per_dim.sum() / 4)


def test_standard_prior_matches_the_kingma_welling_expression():
    mean, log_var = np.array([0.5, -1.0]), np.array([0.3, -2.0])
    expected = -0.5 * np.sum(1 + log_var - mean**2 - np.exp(log_var))
    assert gaussian_kl(mean, log_var) == pytest.approx(expected, rel=1e-12)


def test_large_log_variance_stays_finite_and_non_negative_and_tiny_differences_are_exact():
    values = gaussian_kl(np.zeros(3), np.array([-700.0, 300.0, 1e-12]), reduction="none")
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert values[0] == pytest.approx(0.5 * 699.0)
    assert values[2] == pytest.approx(0.25e-24, rel=1e-6)  # expm1(d) − d ≈ d²/2, no cancellation


def test_torch_input_keeps_gradients_and_matches_numpy():
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    log_var = torch.tensor([0.3, -2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v: gaussian_kl(m, v), (mean, log_var))
    assert float(gaussian_kl(mean, log_var).detach()) == pytest.approx(gaussian_kl(mean.detach().numpy(), log_var.detach().numpy()))


def test_full_covariance_matches_torch_multivariate_normal():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    lower, lower0 = np.linalg.cholesky(a @ a.T + np.eye(3)), np.linalg.cholesky(b @ b.T + np.eye(3))
    mean, mean0 = rng.normal(size=3), rng.normal(size=3)
    expected = float(
        D.kl_divergence(
            D.MultivariateNormal(torch.tensor(mean), scale_tril=torch.tensor(lower)),
            D.MultivariateNormal(torch.tensor(mean0), scale_tril=torch.tensor(lower0)),
        )
    )
    assert gaussian_kl_full(mean, lower, prior_mean=mean0, prior_scale_tril=lower0) == pytest.approx(expected, rel=1e-10)
    got = gaussian_kl_full(torch.tensor(mean), torch.tensor(lower), prior_mean=torch.tensor(mean0),
                           prior_scale_tril=torch.tensor(lower0))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_full_covariance_with_diagonal_factor_equals_the_diagonal_form():
    mean, log_var = np.array([[0.5, -1.0], [0.1, 0.2]]), np.array([[0.3, -2.0], [1.0, 0.0]])
    lower = np.stack([np.diag(np.exp(v / 2)) for v in log_var])
    np.testing.assert_allclose(
        gaussian_kl_full(mean, lower, reduction="none"), gaussian_kl(mean, log_var, reduction="none").sum(-1)
    )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: gaussian_kl([0.0], [0.0], reduction="avg"), "reduction must be one of 'none'"),
        (lambda: gaussian_kl([0.0, np.nan], [0.0, 0.0]), r"mean\[1\] = nan; it must be finite"),
        (lambda: gaussian_kl([0.0, 1.0], [0.0, 0.0, 0.0]), "cannot be broadcast together"),
        (lambda: gaussian_kl_full(np.zeros(2), np.eye(3)), r"must end in \(2, 2\)"),
        (lambda: gaussian_kl_full(np.zeros(2), np.zeros((2, 2))), "zero on its diagonal"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_kl_is_zero_at_the_prior():
    assert gaussian_kl(np.full(4, 0.3), np.full(4, -1.0), prior_mean=0.3, prior_log_var=-1.0) == 0.0
    assert math.isclose(gaussian_kl_full(np.zeros(2), np.eye(2)), 0.0, abs_tol=1e-15)
