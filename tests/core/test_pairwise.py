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


# --- edges: mixed libraries, empty inputs, meta tensors, double backward, overflowing sums -------------------


def direct(name, P, Q, from_logits=False):
    """The float64 oracle, written out in torch: D[i, j] from the textbook formulas over broadcast pairs."""
    if from_logits:
        P, Q = torch.softmax(P, -1), torch.softmax(Q, -1)
    p, q = P[:, None, :], Q[None, :, :]
    if name == "kl":
        return (p * (p.log() - q.log())).sum(-1)
    if name == "cross_entropy":
        return -(p * q.log()).sum(-1)
    if name == "js":
        m = (p + q) / 2
        return ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)) / 2
    if name == "tvd":
        return (p - q).abs().sum(-1) / 2
    return (((p.sqrt() - q.sqrt()) ** 2).sum(-1) / 2).sqrt()


NAMES = ["kl", "cross_entropy", "js", "tvd", "hellinger"]


@pytest.mark.parametrize("name", NAMES)
def test_pairwise_mixes_numpy_and_torch_like_the_elementwise_measures(name):
    P, Q = simplex(4, 6), simplex(3, 6)
    expected = getattr(kldiv.pairwise, name)(P, Q)
    # a list beside a tensor becomes a tensor of torch's default dtype (float32), as in kldiv.kl
    for a, b, rtol in ((P, torch.tensor(Q), 1e-12), (torch.tensor(P), Q, 1e-12), (P.tolist(), torch.tensor(Q), 1e-5)):
        got = getattr(kldiv.pairwise, name)(a, b)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected, rtol=rtol, atol=1e-7 if rtol > 1e-12 else 1e-15)


def test_pairwise_refuses_two_devices_and_two_libraries_in_one_line():
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match="different array libraries"):
        kldiv.pairwise.kl(torch.tensor(simplex(2, 3)), jnp.asarray(simplex(2, 3)))
    with pytest.raises(ValueError, match="different devices"):
        kldiv.pairwise.kl(torch.tensor(simplex(2, 3)), torch.empty(2, 3, dtype=torch.float64, device="meta"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("n", "m"), [(0, 3), (4, 0), (0, 0)])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_pairwise_of_empty_inputs_is_an_empty_matrix(name, n, m, library):
    P, Q = simplex(n, 5), simplex(m, 5)
    if library == "torch":
        P, Q = torch.tensor(P), torch.tensor(Q)
    got = getattr(kldiv.pairwise, name)(P, Q)
    assert tuple(got.shape) == (n, m) and got.dtype in (np.float64, torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_pairwise_of_meta_tensors_gives_the_meta_result_shape_and_dtype(name):
    P = torch.empty(5, 7, device="meta")
    Q = torch.empty(3, 7, device="meta", dtype=torch.float64)
    got = getattr(kldiv.pairwise, name)(P, Q)
    assert got.device.type == "meta" and tuple(got.shape) == (5, 3) and got.dtype == torch.float64
    assert getattr(kldiv.pairwise, name)(P, P, from_logits=True).shape == (5, 5)
    with pytest.raises(ValueError, match="7 outcomes per row and Q has 6"):
        getattr(kldiv.pairwise, name)(P, torch.empty(3, 6, device="meta"))


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_pairwise_double_backward_equals_autograd_of_the_direct_formula(name, from_logits):
    local = np.random.default_rng(3)
    if from_logits:
        P0, Q0 = local.normal(size=(4, 6)), local.normal(size=(3, 6))
    else:  # strictly positive rows, away from TVD's kinks: the direct formulas are smooth there
        P0, Q0 = simplex(4, 6) + 0.05, simplex(3, 6) + 0.05
        P0, Q0 = P0 / P0.sum(-1, keepdims=True), Q0 / Q0.sum(-1, keepdims=True)
    weights = torch.tensor(local.normal(size=(4, 3)))

    def second_derivatives(f):
        P = torch.tensor(P0, requires_grad=True)
        Q = torch.tensor(Q0, requires_grad=True)
        value = (f(P, Q) * weights).sum()
        gP, gQ = torch.autograd.grad(value, (P, Q), create_graph=True)
        # a scalar that depends on the gradients non-linearly, so its gradient is a Hessian-vector product
        hP, hQ = torch.autograd.grad((gP**2).sum() + (gQ * gQ.detach()).sum(), (P, Q), allow_unused=True)
        return [torch.zeros_like(P) if h is None else h for h in (hP, hQ)] + [gP.detach(), gQ.detach()]

    got = second_derivatives(lambda P, Q: getattr(kldiv.pairwise, name)(P, Q, from_logits=from_logits))
    expected = second_derivatives(lambda P, Q: direct(name, P, Q, from_logits))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_normalize_of_weights_whose_sum_overflows_is_exact(dtype, library):
    big = float(np.finfo(dtype).max) / 2
    weights = np.array([[big, big, big / 4, 0.0], [3.0, 1.0, 0.0, 0.0], [5e-324, 5e-324, 0.0, 0.0]], dtype=dtype)
    with np.errstate(over="ignore"):
        assert np.isinf(weights[0].sum())  # the naive division gives zeros
    # the oracle: exact ratios, in float64 (as integers times a power of two)
    expected = np.array([[4 / 9, 4 / 9, 1 / 9, 0], [0.75, 0.25, 0, 0], [0.5, 0.5, 0, 0]])
    if dtype == np.float32:
        weights[2] = [1e-45, 1e-45, 0, 0]
    x = torch.tensor(weights) if library == "torch" else weights
    got = kldiv.normalize(x)
    got = got.numpy() if library == "torch" else got
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype).eps, atol=0)
    assert np.allclose(got.sum(-1), 1)


def test_normalize_of_empty_and_meta_inputs():
    assert kldiv.normalize(np.zeros((0, 3))).shape == (0, 3)
    got = kldiv.normalize(torch.empty(4, 3, device="meta"))
    assert got.device.type == "meta" and got.shape == (4, 3)
    with pytest.raises(ValueError, match="sums to 0"):
        kldiv.normalize(np.zeros((2, 3)))
