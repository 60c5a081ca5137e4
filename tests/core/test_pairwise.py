"""kldiv.pairwise against loops over kldiv's elementwise measures and SciPy."""

import math

import numpy as np
import pytest
import scipy.special
import torch

import kldiv

rng = np.random.default_rng(11)


def simplex(n, k, zeros=0.0):
    x = rng.random((n, k))
    x[rng.random((n, k)) < zeros] = 0
    x[:, 0] += 1e-3
    return x / x.sum(-1, keepdims=True)


def loop(f, P, Q, **kw):
    return np.array([[float(f(p, q, **kw)) for q in Q] for p in P])


@pytest.mark.parametrize("name", ["kl", "cross_entropy", "js", "tvd", "hellinger"])
def test_pairwise_matrix_equals_loop_over_pairs_with_zeros(name):
    P, Q = simplex(6, 9, zeros=0.3), simplex(5, 9, zeros=0.3)
    expected = loop(getattr(kldiv, name), P, Q)
    got = getattr(kldiv.pairwise, name)(P, Q)
    assert got.shape == (6, 5)
    assert (np.isinf(got) == np.isinf(expected)).all()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-9, atol=1e-9)


def test_pairwise_kl_matches_broadcast_rel_entr():
    P, Q = simplex(7, 12), simplex(4, 12)
    expected = scipy.special.rel_entr(P[:, None, :], Q[None, :, :]).sum(-1)
    np.testing.assert_allclose(kldiv.pairwise.kl(P, Q), expected, rtol=1e-10, atol=1e-13)


def test_pairwise_kl_is_exactly_inf_where_support_is_missed_and_zero_on_diagonal():
    P = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    got = kldiv.pairwise.kl(P, P)
    assert got[0, 1] == math.inf and got[1, 0] == math.inf
    assert got[0, 0] == 0 and got[1, 1] == 0


def test_pairwise_from_logits_and_base():
    X, Y = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    expected = loop(kldiv.kl, X, Y, from_logits=True, base=2)
    np.testing.assert_allclose(kldiv.pairwise.kl(X, Y, from_logits=True, base=2), expected, rtol=1e-10)
    np.testing.assert_allclose(kldiv.pairwise.js(X, Y, from_logits=True, base=2),
                               loop(kldiv.js, X, Y, from_logits=True, base=2), rtol=1e-10)


def test_pairwise_works_on_torch_tensors():
    P, Q = simplex(3, 6), simplex(2, 6)
    got = kldiv.pairwise.kl(torch.tensor(P), torch.tensor(Q))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), kldiv.pairwise.kl(P, Q), rtol=1e-12)


def test_pairwise_float32_returns_float32():
    P = simplex(3, 6).astype(np.float32)
    assert kldiv.pairwise.kl(P, P).dtype == np.float32


def test_pairwise_errors():
    with pytest.raises(ValueError, match="P must be a 2-D array"):
        kldiv.pairwise.kl(np.array([0.5, 0.5]), simplex(2, 2))
    with pytest.raises(ValueError, match="P has 3 outcomes per row and Q has 2"):
        kldiv.pairwise.kl(simplex(2, 3), simplex(2, 2))
    with pytest.raises(ValueError, match=r"Q\[1, 0\] = -0.5 is negative"):
        kldiv.pairwise.kl(simplex(2, 2), np.array([[0.5, 0.5], [-0.5, 1.5]]))
    with pytest.raises(ValueError, match="weight must lie in"):
        kldiv.pairwise.js(simplex(2, 2), simplex(2, 2), weight=2)


def near_identical_float32_rows(n=50, k=1000, seed=5):
    """P = softmax(3 z) and Q = softmax(3 z + 0.01 e): KL(P_i || Q_i) ~ 1e-5, some 1e5 times below H(P_i)."""
    local = np.random.default_rng(seed)
    logits = 3 * local.standard_normal((n, k))
    P = scipy.special.softmax(logits, axis=-1).astype(np.float32)
    Q = scipy.special.softmax(logits + 0.01 * local.standard_normal((n, k)), axis=-1).astype(np.float32)
    return P, Q


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_pairwise_kl_in_float32_has_float32_relative_precision_on_near_identical_rows(library):
    P, Q = near_identical_float32_rows()
    # the oracle: the direct sum of p log(p / q) in float64, from the same float32 numbers
    expected = scipy.special.rel_entr(P[:, None, :].astype(np.float64), Q[None, :, :].astype(np.float64)).sum(-1)
    got = kldiv.pairwise.kl(torch.tensor(P), torch.tensor(Q)).numpy() if library == "torch" else kldiv.pairwise.kl(P, Q)
    assert got.dtype == np.float32
    assert (got > 0).all()  # P_i != Q_j everywhere: no pair cancels to an exact 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["kl", "js", "tvd", "hellinger"])
def test_pairwise_divergences_non_negative_by_theorem_are_never_negative(name, dtype):
    P, _ = near_identical_float32_rows(n=20, k=500, seed=6)
    P = P.astype(dtype)
    local = np.random.default_rng(7)  # Q_i = P_i moved by an ulp or two: rounding decides the sign of the terms
    Q = (P * (1 + 2 * np.finfo(dtype).eps * local.standard_normal(P.shape))).astype(dtype)
    Q = (Q / Q.sum(-1, keepdims=True)).astype(dtype)
    got = getattr(kldiv.pairwise, name)(np.concatenate([P, Q]), np.concatenate([Q, P]))
    assert (got >= 0).all()


@pytest.mark.parametrize("name", ["kl", "cross_entropy", "js", "tvd", "hellinger"])
def test_pairwise_nan_input_gives_nan_for_its_row_not_zero(name):
    P, Q = simplex(3, 4), simplex(2, 4)
    P[1, 2] = math.nan
    got = getattr(kldiv.pairwise, name)(P, Q, validate=False)
    assert np.isnan(got[1]).all()
    assert np.isfinite(got[[0, 2]]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pairwise_hellinger_of_p_with_itself_has_an_exactly_zero_diagonal(dtype):
    P, _ = near_identical_float32_rows(n=30, k=700, seed=8)
    got = kldiv.pairwise.hellinger(P.astype(dtype), P.astype(dtype))
    assert (np.diag(got) == 0).all()
    assert (got[~np.eye(30, dtype=bool)] > 0).all()


def test_pairwise_hellinger_equals_broadcast_hellinger_and_the_difference_of_square_roots():
    P, Q = simplex(7, 11, zeros=0.2), simplex(5, 11, zeros=0.2)
    got = kldiv.pairwise.hellinger(P, Q)
    np.testing.assert_allclose(got, kldiv.hellinger(P[:, None, :], Q[None, :, :]), rtol=1e-12, atol=0)
    oracle = np.sqrt(0.5 * ((np.sqrt(P[:, None, :]) - np.sqrt(Q[None, :, :])) ** 2).sum(-1))
    np.testing.assert_allclose(got, oracle, rtol=1e-12, atol=0)
