"""Each measure's row form equals its reference form: values and gradients in the logits, every edge included.

The reference form is the measure's ``value``/``vjp`` on log-softmaxed logits followed by the log-softmax
backward; the row form is what every fast path computes (``kldiv._rows``). Private names: this is the test
that holds the two definitions of each divergence together.
"""

from __future__ import annotations

import math

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

from kldiv import _engine, _rows
from kldiv.measures import CROSS_ENTROPY, ENTROPY, JS, KL, SKEW_KL, TVD

torch = pytest.importorskip("torch")
import array_api_compat.torch as torch_xp  # noqa: E402

CASES = [
    (ENTROPY, {}),
    (CROSS_ENTROPY, {}),
    (KL, {}),
    (JS, {"weight": 0.5}),
    (JS, {"weight": 0.2}),
    (JS, {"weight": 0.0}),
    (JS, {"weight": 1.0}),
    (SKEW_KL, {"alpha": 0.1}),
    (SKEW_KL, {"alpha": 0.7}),
    (SKEW_KL, {"alpha": 0.0}),
    (SKEW_KL, {"alpha": 1.0}),
    (TVD, {}),
]
BAD_ROWS = (6, 7, 8)  # NaN, +inf, no finite logit: the value is NaN


def edge_logits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of float64 logits with every edge: impossible outcomes on either side or both, infinite KL, NaN,
    +inf, an all -inf row, one-hot rows, a huge shift, identical rows."""
    rng = np.random.default_rng(seed)
    a, b = 3 * rng.standard_normal((12, 40)), 3 * rng.standard_normal((12, 40))
    a[0, :5] = -math.inf  # impossible for P
    b[1, :7] = -math.inf  # impossible for Q where P is possible: KL and cross-entropy are +inf
    a[2, 3:9] = b[2, 3:9] = -math.inf  # impossible for both
    a[3, 1:] = -math.inf  # one-hot P
    b[4, :-1] = -math.inf  # one-hot Q
    a[5] += 1000.0  # a huge shift changes nothing
    a[6, 2] = math.nan
    b[7, 4] = math.inf
    a[8] = -math.inf
    b[9] = a[9]  # identical: every divergence 0
    a[10, :3], b[10, 3:6] = -math.inf, -math.inf
    return a, b


def reference(xp, measure, logits, params):
    cs = [_engine.canonical(xp, x, True, False, 0, None, 0.0) for x in logits]
    value = measure.value(xp, *cs, **params)
    grads = [_engine.log_softmax_vjp(xp, g, c) for g, c in zip(measure.vjp(xp, *cs, value, True, **params), cs, strict=True)]
    return value, grads


def as_numpy(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def on_backend(backend, measure, a, b):
    """The namespace and the measure's logits (a alone for entropy) on ``backend``."""
    xp = np_xp if backend == "numpy" else torch_xp
    logits = (a,) if measure is ENTROPY else (a, b)
    if backend == "torch":
        logits = tuple(torch.tensor(x) for x in logits)
    return xp, logits


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("measure", "params"), CASES, ids=[f"{m.name}-{p}" for m, p in CASES])
def test_row_form_equals_the_reference_value_and_vjp_in_float64_at_every_edge(measure, params, backend):
    a, b = edge_logits(0)
    xp, logits = on_backend(backend, measure, a, b)
    sides = tuple(range(len(logits)))
    with np.errstate(all="ignore"):
        want_v, want_g = reference(xp, measure, logits, params)
        got_v, got_g = _rows.evaluate(measure.rows, xp, logits, params, sides)
    want_v, got_v = as_numpy(want_v), as_numpy(got_v)
    bad = np.isin(np.arange(len(a)), BAD_ROWS)
    if measure is ENTROPY:
        bad &= np.arange(len(a)) != 7  # entropy reads P only
    assert np.isnan(got_v[bad]).all(), "NaN in, NaN out"
    np.testing.assert_allclose(got_v[~bad], want_v[~bad], rtol=1e-12, atol=1e-13)
    assert (got_v[~bad] >= 0).all()
    for want, got in zip(want_g, got_g, strict=True):
        want, got = as_numpy(want)[~bad], as_numpy(got)[~bad]
        assert not np.isnan(got).any(), "gradients are never NaN on valid rows"
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        np.testing.assert_array_equal(got[np.isinf(got)], want[np.isinf(want)])
        finite = np.isfinite(got)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-10, atol=1e-11)  # values up to ~10


def _near_identical(dtype):
    rng = np.random.default_rng(1)
    a = (3 * rng.standard_normal((64, 32000)) + 50).astype(dtype)  # the shape of the measurement
    b = (a + 0.02 * rng.standard_normal(a.shape)).astype(dtype)
    return a, b


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("measure", "params"), [c for c in CASES if c[1].get("weight", c[1].get("alpha", 0.5)) not in (0.0, 1.0) or c[0] is KL])
def test_row_form_in_float32_keeps_the_relative_precision_of_near_identical_rows(measure, params, backend):
    a32, b32 = _near_identical(np.float32)
    xp = np_xp if backend == "numpy" else torch_xp
    logits32 = (a32,) if measure is ENTROPY else (a32, b32)
    logits64 = tuple(x.astype(np.float64) for x in logits32)
    if backend == "torch":
        logits32 = tuple(torch.tensor(x) for x in logits32)
    want = reference(np_xp, measure, logits64, params)[0]
    got = as_numpy(_rows.evaluate(measure.rows, xp, logits32, params)[0])
    error = np.abs(got - want) / want
    assert np.median(error) <= 2e-5, f"median relative error {np.median(error):.2e}"


def _tame_logits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite float64 rows as wide as a tame side may be (max - min up to TAME_SPAN - log V), so that p reaches
    e^-86 where q is large and the log-ratio spans about +-86: where the select-free formulas must not overflow."""
    rng = np.random.default_rng(seed)
    v = 40
    span = _rows.TAME_SPAN - math.log(v) - 1e-9
    a = 3 * rng.standard_normal((8, v))
    b = a + 0.01 * rng.standard_normal((8, v))  # near-identical rows
    a[:4] = -span * rng.permuted(np.tile(np.linspace(0, 1, v), (4, 1)), axis=1)  # the widest tame rows
    b[:2] = -span * rng.permuted(np.tile(np.linspace(0, 1, v), (2, 1)), axis=1)
    b[2:4] = a[2:4, ::-1]  # the rarest outcome of one side is the likeliest of the other: r = +-86
    return a, b


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("measure", "params"), CASES, ids=[f"{m.name}-{p}" for m, p in CASES])
def test_tame_rows_take_the_select_free_formulas_and_equal_the_reference_in_float64(measure, params, backend):
    a, b = _tame_logits(2)
    xp, logits = on_backend(backend, measure, a, b)
    assert not any(_rows.side(xp, x).edges for x in logits), "these rows are tame"
    sides = tuple(range(len(logits)))
    want_v, want_g = reference(xp, measure, logits, params)
    got_v, got_g = _rows.evaluate(measure.rows, xp, logits, params, sides)
    np.testing.assert_allclose(as_numpy(got_v), as_numpy(want_v), rtol=1e-12, atol=1e-14)
    for want, got in zip(want_g, got_g, strict=True):
        np.testing.assert_allclose(as_numpy(got), as_numpy(want), rtol=1e-10, atol=1e-13)


def test_a_row_wider_than_the_tame_span_takes_the_guarded_formulas():
    v = 40
    a = torch.zeros(2, v, dtype=torch.float64)
    a[1, 0] = -(_rows.TAME_SPAN - math.log(v)) - 0.5  # p = e^-86.5 / z: below the tame bound
    assert _rows.side(torch_xp, a).edges
    assert not _rows.side(torch_xp, a[:1]).edges
    b = a.flip(-1)
    for measure, params in CASES[1:]:
        value = _rows.evaluate(measure.rows, torch_xp, (a, b), params)[0]
        want = reference(torch_xp, measure, (a, b), params)[0]
        np.testing.assert_allclose(value.numpy(), want.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_forms_arithmetic_series_equal_expm1_and_log1p_to_50_digits(dtype):
    # the select-free forms compiled kernels use, on both sides of their series' range, against 50-digit mpmath
    # values of the same rounded inputs; within a few ulps of the exact result
    mpmath = pytest.importorskip("mpmath")
    from kldiv import _rows

    mpmath.mp.dps = 50
    eps = float(np.finfo(dtype).eps)

    def exact(fn, x):
        return np.array([float(fn(mpmath.mpf(float(v)))) for v in x])

    r = np.concatenate([np.linspace(-20, 20, 801), np.geomspace(1e-12, 0.6, 200), -np.geomspace(1e-12, 0.6, 200)])
    r = r.astype(dtype)
    p = np.full_like(r, 0.25)
    q = (0.25 * exact(mpmath.exp, r)).astype(dtype)  # q = p e^r, rounded once
    got = _rows.tame_expm1(np, r, q / p)
    np.testing.assert_allclose(got, exact(mpmath.expm1, r), rtol=8 * eps, atol=0)
    # q's rounding, times e^r / (e^r - 1 - r) <= 11 beyond |r| = 1/2
    got = _rows.weighted_excess(np, r, p, q)
    np.testing.assert_allclose(got, 0.25 * exact(lambda x: mpmath.expm1(x) - x, r), rtol=40 * eps, atol=0)
    y = np.concatenate([np.linspace(-0.99, 20, 801), np.geomspace(1e-12, 0.3, 200), -np.geomspace(1e-12, 0.3, 200)])
    y = y.astype(dtype)
    log, rest = _rows.tame_log1p(np, y)
    np.testing.assert_allclose(log, exact(mpmath.log1p, y), rtol=8 * eps, atol=0)
    # y - log1p(y): from its series on |y| <= 1/4, to rounding; beyond, from log(1 + y), 2e-6 relative at worst
    # in float32, at the boundary
    want, near = exact(lambda x: x - mpmath.log1p(x), y), np.abs(y) <= 0.25
    np.testing.assert_allclose(rest[near], want[near], rtol=4 * eps, atol=0)
    np.testing.assert_allclose(rest[~near], want[~near], rtol=2.5e-6 if dtype == np.float32 else 2e-14, atol=0)
