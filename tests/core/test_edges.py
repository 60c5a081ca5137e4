"""Exact at the edges on every path (NumPy, torch eager and compiled, JAX), with validation on and off.

Oracles: the limits themselves (NaN, +inf, 0), float64 direct sums, and KL as the alpha -> 1 limit of Rényi.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special

import kldiv

torch = pytest.importorskip("torch")
INF, NAN = math.inf, math.nan


def _jax():
    jax = pytest.importorskip("jax")
    return jax, jax.numpy


def _torch_compiled(fn):
    return torch.compile(fn, fullgraph=False, dynamic=False)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("measure", ["kl", "js", "tvd", "skew_kl", "cross_entropy", "hellinger"])
def test_nan_in_gives_nan_out_with_validation_off_on_numpy_and_torch(measure, from_logits):
    f = getattr(kldiv, measure)
    p = [0.0, NAN] if from_logits else [0.5, NAN]
    q = [0.0, 0.0] if from_logits else [0.5, 0.5]
    assert math.isnan(float(f(np.array(p), np.array(q), from_logits=from_logits, validate=False)))
    assert math.isnan(float(f(np.array(q), np.array(p), from_logits=from_logits, validate=False)))
    got = f(torch.tensor([p, q]), torch.tensor([q, q]), from_logits=from_logits, validate=False)
    assert math.isnan(float(got[0])) and float(got[1]) == pytest.approx(math.log(2) if measure == "cross_entropy" else 0.0)
    with pytest.raises(ValueError, match="NaN"):
        f(np.array(p), np.array(q), from_logits=from_logits)


def test_nan_or_plus_inf_logit_gives_nan_inside_jax_jit_and_torch_compile():
    jax, jnp = _jax()
    kl = jax.jit(lambda a, b: kldiv.kl(a, b, from_logits=True))
    assert math.isnan(float(kl(jnp.array([0.0, jnp.nan]), jnp.zeros(2))))
    assert math.isnan(float(kl(jnp.zeros(2), jnp.array([0.0, jnp.inf]))))
    compiled = _torch_compiled(lambda a, b: kldiv.kl(a, b, from_logits=True))
    got = compiled(torch.tensor([[0.0, NAN], [0.0, 1.0]]), torch.zeros(2, 2))
    assert math.isnan(float(got[0])) and math.isfinite(float(got[1]))


def test_gradients_are_never_nan_where_the_value_is_infinite():
    gp, gq = kldiv.grad.kl([0.0, 0.0], [0.0, -INF], from_logits=True)
    assert not np.isnan(gp).any() and not np.isnan(gq).any()
    assert gp[1] == INF and gp[0] == -INF  # more mass on the impossible outcome raises KL, elsewhere lowers it
    np.testing.assert_allclose(gq, [0.5, -0.5])  # q - p
    gp, gq = kldiv.grad.cross_entropy([0.0, 0.0], [0.0, -INF], from_logits=True)
    assert not np.isnan(gp).any() and gp[1] == INF
    x = torch.tensor([0.0, 0.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, -INF], dtype=torch.float64, requires_grad=True)
    kldiv.kl(x, y, from_logits=True).backward()
    assert not torch.isnan(x.grad).any() and not torch.isnan(y.grad).any()


def test_renyi_at_alpha_inf_has_finite_gradients_where_its_value_is_zero():
    value = kldiv.renyi([1.0, 0.0], [1.0, 0.0], alpha=INF)
    gp, gq = kldiv.grad.renyi([1.0, 0.0], [1.0, 0.0], alpha=INF)
    assert float(value) == 0.0
    np.testing.assert_array_equal(gp, [1.0, 0.0])  # d/dp_k log(p_k / q_k) at the arg max, 0 elsewhere
    np.testing.assert_array_equal(gq, [-1.0, 0.0])


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0])
def test_renyi_above_one_where_q_rules_out_an_outcome_of_p_has_the_gradients_of_the_limit(alpha):
    # the value is +inf; the gradient is its limit as the excluded q_i shrink together, which the oracle reaches
    # by excluding them almost (logit -600, probability ~1e-261 in float64): the rest of the row no longer counts
    x = np.array([[0.3, -1.0, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    y = np.array([[0.5, -INF, -INF, 0.1], [0.0, -INF, 0.0, 0.0]])
    near = np.where(np.isinf(y), -600.0, y)
    assert np.isinf(kldiv.renyi(x, y, alpha=alpha, from_logits=True)).all()
    for got, want in zip(kldiv.grad.renyi(x, y, alpha=alpha, from_logits=True),
                         kldiv.grad.renyi(x, near, alpha=alpha, from_logits=True), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    p, q = scipy.special.softmax(x, axis=-1), scipy.special.softmax(y, axis=-1)
    gp, gq = kldiv.grad.renyi(p, q, alpha=alpha)
    _, gq_near = kldiv.grad.renyi(p, scipy.special.softmax(near, axis=-1), alpha=alpha)
    on = q == 0  # the excluded outcomes: there d/dp_i = a/(a-1) p_i^(a-1) / sum over them of p^a, 0 elsewhere
    want_p = np.where(on, alpha / (alpha - 1) * p ** (alpha - 1) / np.where(on, p**alpha, 0).sum(-1, keepdims=True), 0)
    np.testing.assert_allclose(gp, want_p, rtol=1e-12, atol=0)
    assert (gq[on] == -INF).all() and (gq[~on] == 0).all() and np.abs(gq_near[~on]).max() < 1e-100
    t = torch.tensor(x, requires_grad=True)
    u = torch.tensor(y, requires_grad=True)
    kldiv.renyi(t, u, alpha=alpha, from_logits=True).sum().backward()
    want = kldiv.grad.renyi(x, y, alpha=alpha, from_logits=True)
    np.testing.assert_allclose(t.grad.numpy(), want[0], rtol=1e-12)
    np.testing.assert_allclose(u.grad.numpy(), want[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.5, 2.0])
def test_renyi_gradients_in_float32_where_a_probability_underflows_are_the_float64_ones(alpha):
    # e^-120 is 0 in float32 while its log-probability is finite: the gradient must not form 0 * e^120
    x, y = np.array([[0.0, -120.0], [0.0, -100.0]]), np.array([[0.0, 0.0], [1.0, -90.0]])
    want = kldiv.grad.renyi(x, y, alpha=alpha, from_logits=True)
    got = kldiv.grad.renyi(x.astype(np.float32), y.astype(np.float32), alpha=alpha, from_logits=True)
    for g, w in zip(got, want, strict=True):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("library", ["numpy", "torch", "jax"])
def test_renyi_at_alpha_zero_is_exact_where_little_of_q_lies_outside_the_support_of_p(library):
    # D_0 = -log Q(supp P): from the mass outside (log1p), not from the sum over the support, which rounds to 1
    convert = {"numpy": np.asarray, "torch": torch.tensor, "jax": lambda a: _jax()[1].asarray(a)}[library]
    outside = np.array([7.7e-5, 3e-7, 0.0, 1.0], dtype=np.float32)
    p = np.array([[0.0, 0.3, 0.7], [0.0, 0.5, 0.5], [0.2, 0.3, 0.5], [0.0, 0.5, 0.5]], dtype=np.float32)
    q = np.stack([outside, (1 - outside) / 2, (1 - outside) / 2], axis=-1).astype(np.float32)
    got = np.asarray(kldiv.renyi(convert(p), convert(q), alpha=0.0, validate=False), dtype=np.float64)
    want = -np.log1p(-outside.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[2] == 0.0 and got[3] == INF  # full support: exactly 0; disjoint: +inf
    x = convert(np.array([[0.0, 1.0, NAN], [0.0, 1.0, 2.0]]))
    y = convert(np.array([[0.0, 0.0, 0.0], [3.0, NAN, 0.0]]))
    assert np.isnan(np.asarray(kldiv.renyi(x, y, alpha=0.0, from_logits=True, validate=False))).all()


@pytest.mark.parametrize("u", [1e-9, -1e-9, 1e-6, 1e-3, -1e-3, 0.2])
def test_renyi_near_alpha_one_is_kl_continuously_without_cancellation(u):
    p, q = np.array([0.3, 0.7]), np.array([0.31, 0.69])
    kl = float(np.sum(p * np.log(p / q)))
    # D_a = KL + (a - 1) V / 2 + O((a - 1)^2), V = the variance of log(p / q) under P
    d = np.log(p / q)
    variance = float(np.sum(p * d**2) - kl**2)
    want = kl + u * variance / 2
    assert float(kldiv.renyi(p, q, alpha=1 + u)) == pytest.approx(want, rel=max(1e-9, 10 * u * u / kl))
    x, y = np.log(p), np.log(q)
    assert float(kldiv.renyi(x, y, alpha=1 + u, from_logits=True)) == pytest.approx(want, rel=max(1e-9, 10 * u * u / kl))


def test_support_is_decided_from_log_probabilities_not_underflowed_probabilities():
    a = np.array([0.0, -120.0], dtype=np.float32)  # exp(-120) underflows in float32, but the outcome is possible
    b = np.array([0.0, -INF], dtype=np.float32)
    for validate in (True, False):
        assert float(kldiv.kl(a, b, from_logits=True, validate=validate)) == INF
        assert float(kldiv.kl(torch.tensor(a), torch.tensor(b), from_logits=True, validate=validate)) == INF
        assert float(kldiv.cross_entropy(a, b, from_logits=True, validate=validate)) == INF
    assert float(kldiv.kl(b, a, from_logits=True)) == pytest.approx(float(np.exp(np.float64(-120))), rel=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_divergences_non_negative_by_theorem_never_come_out_negative(backend):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 50))
    b = a + 1e-9 * rng.standard_normal(a.shape)  # near-identical rows: the values are rounding-sized
    for dtype in (np.float64, np.float32):
        x, y = a.astype(dtype), b.astype(dtype)
        if backend == "torch":
            x, y = torch.tensor(x), torch.tensor(y)
        for from_logits in (True, False):
            if not from_logits:
                x, y = (kldiv.normalize(np.exp(np.asarray(v, dtype=np.float64))).astype(dtype) for v in (a, b))
                if backend == "torch":
                    x, y = torch.tensor(x), torch.tensor(y)
            for name in ("kl", "js", "skew_kl", "tvd", "hellinger", "cross_entropy"):
                got = np.asarray(getattr(kldiv, name)(x, y, from_logits=from_logits))
                assert (got >= 0).all(), (name, dtype, from_logits, got.min())
            assert not np.isnan(np.sqrt(np.asarray(kldiv.js(x, y, from_logits=from_logits)))).any()
            assert (np.asarray(kldiv.renyi(x, y, alpha=2.0, from_logits=from_logits)) >= 0).all()


def test_float32_logits_of_near_identical_models_give_kl_to_float32_precision_on_every_core_path():
    rng = np.random.default_rng(1)
    a = (3 * rng.standard_normal((16, 32000)) + 50).astype(np.float32)
    b = (a + 0.02 * rng.standard_normal(a.shape)).astype(np.float32)
    from scipy.special import log_softmax

    la, lb = log_softmax(a.astype(np.float64), -1), log_softmax(b.astype(np.float64), -1)
    want = np.sum(np.exp(la) * (la - lb), axis=-1)
    jax, jnp = _jax()
    paths = {
        "numpy": kldiv.kl(a, b, from_logits=True),
        "torch": kldiv.kl(torch.tensor(a), torch.tensor(b), from_logits=True).numpy(),
        "jax": np.asarray(kldiv.kl(jnp.asarray(a), jnp.asarray(b), from_logits=True)),
    }
    for name, got in paths.items():
        error = np.median(np.abs(np.asarray(got, dtype=np.float64) - want) / want)
        assert error <= 2e-5, f"{name}: median relative error {error:.2e}"


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_kl_of_probabilities_is_as_precise_as_the_direct_formula_and_exact_at_every_edge(library):
    scipy_special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(11)
    logits = 3 * rng.standard_normal((64, 2000))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    q = p * np.exp(0.01 * rng.standard_normal(p.shape))  # near-identical rows: KL ~ 5e-5
    p[1, :10], q[2, :10] = 0.0, 0.0  # zeros in P (terms 0) and in Q where P is positive (KL = inf)
    p[3, 0], q[3, 0] = 0.5, 0.0
    p[3, 1:] *= 0.5 / p[3, 1:].sum()
    q /= q.sum(-1, keepdims=True)
    q[3, 0] = 1e-44  # a denormal q: p / q overflows float32 where the log-ratio is finite
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    want = scipy_special.rel_entr(p32.astype(np.float64), q32.astype(np.float64)).sum(-1)  # of the float32 numbers
    args = (torch.tensor(p32), torch.tensor(q32)) if library == "torch" else (p32, q32)
    got = np.asarray(kldiv.kl(*args, validate=False))
    assert got.dtype == np.float32
    assert np.isinf(got[2]) and not np.isinf(np.delete(got, 2)).any()
    assert abs(got[3] - want[3]) <= 1e-6 * want[3]  # the edge row, about 0.5 log(0.5 / 1e-44)
    plain = slice(4, None)  # the rows without an edge
    direct = (p32[plain] * np.log(p32[plain] / q32[plain])).sum(-1)  # what a user writes, in float32
    error = np.median(np.abs(got[plain] - want[plain]) / want[plain])
    assert error <= 1.1 * np.median(np.abs(direct - want[plain]) / want[plain])
    assert error <= 3e-4  # two logs, log p - log q, give 4e-4 here


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", ["kl", "js", "tvd", "cross_entropy", "hellinger", "entropy"])
def test_small_numpy_inputs_take_the_short_path_with_the_general_paths_numbers(name, from_logits, dtype):
    from kldiv import _engine, measures

    rng = np.random.default_rng(12)
    measure = {"kl": measures.KL, "js": measures.JS, "tvd": measures.TVD, "cross_entropy": measures.CROSS_ENTROPY,
               "hellinger": measures.HELLINGER, "entropy": measures.ENTROPY}[name]
    arity = 1 if name == "entropy" else 2
    # up to 32 values the probabilities are checked as Python floats, beyond as arrays; with and without a zero
    for shape, impossible in [((3,), True), ((4, 7), True), ((2, 3, 5), True), ((5, 8), True), ((3,), False),
                              ((5, 8), False)]:
        x = [rng.standard_normal(shape) for _ in range(arity)]
        x = [a if from_logits else np.exp(a) / np.exp(a).sum(-1, keepdims=True) for a in x]
        x = [a.astype(dtype) for a in x]
        if impossible:
            x[0][..., 0] = -np.inf if from_logits else 0.0  # an impossible outcome on the first side
        if not from_logits:
            x[0] = (x[0] / x[0].sum(-1, keepdims=True)).astype(dtype)
        options = dict(axis=-1, from_logits=from_logits, base=2.0, validate=True)
        if name == "js":
            options["params"] = {"weight": 0.5}
        short = _engine.small_numpy(measure, x, options)
        assert short is not None, "small plain NumPy inputs take the short path"
        general = _engine.run(measure, x, [f"x{i}" for i in range(arity)], **options)
        want = general.layout.values(general.values)
        assert short.dtype == want.dtype and short.shape == want.shape == shape[:-1]
        np.testing.assert_array_equal(short, want)
    for bad in ([0.5, 0.6, -0.1], [0.5, np.nan, 0.5], [0.5, 0.5, 0.01], [[0.125] * 8] * 4 + [[0.125] * 7 + [0.13]]):
        bad = np.array(bad, dtype=dtype)
        assert _engine.small_numpy(measure, [bad] * arity, dict(from_logits=False)) is None  # the general path says why
