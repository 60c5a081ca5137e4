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
