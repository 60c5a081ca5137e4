"""kldiv.grad against torch.autograd on the naive float64 forward, and against finite differences."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given

import kldiv

from .strategies import pairs

rng = np.random.default_rng(7)
T = torch.float64


def naive(name, lp, lq, params):
    """The textbook forward in float64 torch ops, on log-probabilities (no epsilon, no masking needed
    because every probability in these tests is positive)."""
    p, q = lp.exp(), lq.exp()
    if name == "entropy":
        return -(p * lp).sum(-1)
    if name == "cross_entropy":
        return -(p * lq).sum(-1)
    if name == "kl":
        return (p * (lp - lq)).sum(-1)
    if name == "js":
        w = params["weight"]
        lm = (w * p + (1 - w) * q).log()
        return w * (p * (lp - lm)).sum(-1) + (1 - w) * (q * (lq - lm)).sum(-1)
    if name == "skew_kl":
        a = params["alpha"]
        return (p * (lp - (a * p + (1 - a) * q).log())).sum(-1)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "hellinger":
        return torch.sqrt(1 - torch.sqrt(p * q).sum(-1))
    if name == "renyi":
        a = params["alpha"]
        if a == 1:
            return (p * (lp - lq)).sum(-1)
        return torch.logsumexp(a * lp + (1 - a) * lq, -1) / (a - 1)
    raise AssertionError(name)


CASES = [
    ("kl", {}), ("js", {"weight": 0.5}), ("js", {"weight": 0.2}), ("skew_kl", {"alpha": 0.1}),
    ("skew_kl", {"alpha": 0.7}), ("tvd", {}), ("hellinger", {}), ("cross_entropy", {}),
    ("renyi", {"alpha": 0.5}), ("renyi", {"alpha": 2.0}), ("renyi", {"alpha": 1.0}),
]


def torch_grads(name, x, y, params, from_logits, upstream):
    x = torch.tensor(x, dtype=T, requires_grad=True)
    y = torch.tensor(y, dtype=T, requires_grad=True)
    lp, lq = (x.log_softmax(-1), y.log_softmax(-1)) if from_logits else (x.log(), y.log())
    (naive(name, lp, lq, params) * torch.tensor(upstream)).sum().backward()
    return x.grad.numpy(), y.grad.numpy()


@pytest.mark.parametrize("name,params", CASES)
def test_logit_gradients_match_torch_autograd(name, params):
    x, y = rng.normal(size=(4, 9)) * 3, rng.normal(size=(4, 9)) * 3
    upstream = rng.normal(size=4)
    gx, gy = getattr(kldiv.grad, name)(x, y, upstream=upstream, from_logits=True, **params)
    tx, ty = torch_grads(name, x, y, params, True, upstream)
    np.testing.assert_allclose(gx, tx, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gy, ty, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,params", CASES)
def test_probability_gradients_are_partial_derivatives_matching_torch(name, params):
    p = rng.random((3, 6)) + 0.05
    p /= p.sum(-1, keepdims=True)
    q = rng.random((3, 6)) + 0.05
    q /= q.sum(-1, keepdims=True)
    upstream = rng.normal(size=3)
    gp, gq = getattr(kldiv.grad, name)(p, q, upstream=upstream, **params)
    tp, tq = torch_grads(name, p, q, params, False, upstream)
    np.testing.assert_allclose(gp, tp, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gq, tq, rtol=1e-10, atol=1e-14)


def test_entropy_gradient_matches_torch_for_logits_and_probabilities():
    x = rng.normal(size=(3, 5))
    t = torch.tensor(x, requires_grad=True)
    naive("entropy", t.log_softmax(-1), t.log_softmax(-1), {}).sum().backward()
    np.testing.assert_allclose(kldiv.grad.entropy(x, from_logits=True), t.grad.numpy(), rtol=1e-10)
    p = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(kldiv.grad.entropy(p), -(np.log(p) + 1), rtol=1e-14)


def test_kl_logit_gradient_is_softmax_difference():
    x, y = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    _, gy = kldiv.grad.kl(x, y, from_logits=True)
    softmax = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(gy, softmax(y) - softmax(x), rtol=1e-12)


def finite_difference(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


@pytest.mark.parametrize("name,params", CASES)
def test_gradients_match_finite_differences_with_zeros_in_p(name, params):
    p = np.array([0.0, 0.3, 0.0, 0.7])  # zeros in p: the q-side derivative there is finite
    q = np.array([0.1, 0.2, 0.3, 0.4])
    f = getattr(kldiv, name)
    _, gq = getattr(kldiv.grad, name)(p, q, **params)
    fd = finite_difference(lambda z: float(f(p, z, validate=False, **params)), q)
    if name == "hellinger":
        # The value is computed as sqrt(sum (sqrt p - sqrt q)^2 / 2), equal to the stated formula on the
        # simplex only, so compare the derivatives along the simplex (remove the mean).
        gq, fd = gq - gq.mean(), fd - fd.mean()
    np.testing.assert_allclose(gq, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,params", CASES)
def test_logit_gradients_match_finite_differences_with_minus_inf_logits(name, params):
    x = np.array([0.5, -np.inf, 1.0, -0.3])  # an outcome P gives probability zero
    y = np.array([0.1, 0.4, -0.2, 0.0])
    f = getattr(kldiv, name)
    gx, gy = getattr(kldiv.grad, name)(x, y, from_logits=True, **params)
    assert np.isfinite(gx).all() and np.isfinite(gy).all()
    fd_y = finite_difference(lambda z: float(f(x, z, from_logits=True, **params)), y)
    np.testing.assert_allclose(gy, fd_y, rtol=1e-5, atol=1e-7)
    finite = np.isfinite(x)
    fd_x = finite_difference(lambda z: float(f(np.where(finite, z, -np.inf), y, from_logits=True, **params)),
                             np.where(finite, x, 0.0))
    np.testing.assert_allclose(gx[finite], fd_x[finite], rtol=1e-5, atol=1e-7)
    assert gx[~finite] == 0


def test_gradient_at_zeros_takes_one_sided_limits_and_is_never_nan():
    gp, gq = kldiv.grad.kl([0.0, 0.5, 0.5], [0.5, 0.5, 0.0])
    assert gp[0] == -math.inf and gq[0] == 0.0  # p_0 = 0 < q_0
    assert gq[2] == -math.inf  # q_2 = 0 < p_2: the value is infinite too
    for name, params in CASES:
        for g in getattr(kldiv.grad, name)([0.0, 0.5, 0.5], [0.0, 0.5, 0.5], **params):
            assert not np.isnan(g).any(), name


def test_broadcast_input_gets_gradient_summed_over_the_batch():
    p = rng.dirichlet(np.ones(5), size=(3,))
    q = rng.dirichlet(np.ones(5))
    gp, gq = kldiv.grad.kl(p, q)
    assert gp.shape == (3, 5) and gq.shape == (5,)
    np.testing.assert_allclose(gq, (-p / q).sum(0), rtol=1e-13)


def test_base_divides_gradients():
    x, y = rng.normal(size=5), rng.normal(size=5)
    g2 = kldiv.grad.kl(x, y, from_logits=True, base=2)
    g = kldiv.grad.kl(x, y, from_logits=True)
    for a, b in zip(g2, g, strict=True):
        np.testing.assert_allclose(a, b / math.log(2), rtol=1e-14)


def test_upstream_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="upstream has shape"):
        kldiv.grad.kl(np.ones((3, 2)) / 2, np.ones((3, 2)) / 2, upstream=np.ones(4))


@given(pairs(zeros=False))
def test_kl_logit_gradients_sum_to_zero(pq):
    p, q = pq
    gx, gy = kldiv.grad.kl(np.log(p), np.log(q), from_logits=True)
    assert abs(gx.sum()) < 1e-12 and abs(gy.sum()) < 1e-12


def test_torch_autograd_through_kldiv_matches_naive_and_gradcheck():
    x = torch.randn(3, 6, dtype=T, requires_grad=True)
    y = torch.randn(6, dtype=T, requires_grad=True)
    for name, params in CASES:
        f = getattr(kldiv, name)
        assert torch.autograd.gradcheck(lambda a, b, f=f, params=params: f(a, b, from_logits=True, **params), (x, y)), name
    # partial derivatives of the formulas at points of the simplex (where the divergences are >= 0, the values
    # kldiv clamps to); gradcheck's perturbations leave it by 1e-6, far from any value's clamp at 0
    p = torch.rand(2, 4, dtype=T) + 0.1
    q = torch.rand(2, 4, dtype=T) + 0.1
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    for name, params in CASES:
        if name == "hellinger":  # value and stated formula agree on the simplex only (tested above)
            continue
        f = getattr(kldiv, name)
        args = (p.clone().requires_grad_(), q.clone().requires_grad_())
        assert torch.autograd.gradcheck(lambda a, b, f=f, params=params: f(a, b, validate=False, **params), args), name


def test_second_derivatives_are_refused_in_torch_and_exact_in_jax():
    # the torch bridge computes the gradient in forward, so it is not differentiable: create_graph=True must say
    # so, not hand back a gradient whose own gradient is silently missing (a gradient penalty would train wrong)
    p, q = [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]
    x = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="first derivatives only.*create_graph=True"):
        torch.autograd.grad(kldiv.kl(x, torch.tensor(q, dtype=torch.float64)), x, create_graph=True)
    (first,) = torch.autograd.grad(kldiv.kl(x, torch.tensor(q, dtype=torch.float64)), x)
    np.testing.assert_allclose(first.numpy(), np.log(np.divide(p, q)) + 1, rtol=1e-12)
    jax = pytest.importorskip("jax")
    hessian = jax.hessian(lambda a: kldiv.kl(a, jax.numpy.asarray(q)))(jax.numpy.asarray(p))  # float32
    np.testing.assert_allclose(np.asarray(hessian), np.diag(1 / np.asarray(p)), rtol=1e-6, atol=1e-6)  # d2/dp2 p log(p/q)
