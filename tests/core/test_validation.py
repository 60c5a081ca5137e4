"""Every bad input gets a ValueError/TypeError that names the argument, the place and the fix."""

import math

import numpy as np
import pytest

import kldiv

GOOD = np.array([0.2, 0.3, 0.5])


@pytest.mark.parametrize(
    "p,q,kwargs,error,pattern",
    [
        ([0.2, -0.1, 0.9], GOOD, {}, ValueError, r"p\[1\] = -0.1 is negative; .*from_logits=True"),
        (GOOD, [0.2, np.nan, 0.8], {}, ValueError, r"q\[1\] is NaN"),
        ([[0.2, 0.3, 0.5], [0.5, 0.5, 0.5]], GOOD, {}, ValueError,
         r"p does not sum to 1 along axis 1 at batch position \(1,\): the sum is 1.5 .*kldiv.normalize"),
        (GOOD, [0.2, np.inf, 0.8], {}, ValueError, r"q\[1\] is inf"),
        ([1.0, np.inf], [0.0, 0.0], {"from_logits": True}, ValueError, r"p\[1\] is \+inf, which is not a valid logit"),
        ([1.0, np.nan], [0.0, 0.0], {"from_logits": True}, ValueError, r"p\[1\] is NaN, which is not a valid logit"),
        ([[0.0, 0.0], [-np.inf, -np.inf]], [0.0, 0.0], {"from_logits": True}, ValueError,
         r"every logit of p at batch position \(1,\) is -inf"),
        (np.ones((3, 2)) / 2, np.ones((4, 2)) / 2, {}, ValueError, r"batch shapes .* cannot be broadcast"),
        (GOOD, [0.5, 0.5], {}, ValueError, r"p has 3 and q has 2"),
        (np.zeros((2, 0)), np.zeros((2, 0)), {}, ValueError, r"p has no outcomes along axis"),
        (0.5, 0.5, {}, ValueError, r"p is a scalar"),
        (GOOD, GOOD, {"axis": 1}, ValueError, r"axis 1 is out of range for p"),
        (GOOD, GOOD, {"base": 1}, ValueError, r"base must be a positive finite number other than 1"),
        (GOOD, GOOD, {"base": -2}, ValueError, r"base must be"),
        (GOOD, GOOD, {"base": "2"}, TypeError, r"base must be a number"),
        (["a", "b"], GOOD[:2], {}, TypeError, r"p has dtype <U1, not a real number type; pass numbers"),
        ([[0.5, 0.5], [1.0]], GOOD[:2], {}, TypeError, r"p could not be read as an array of numbers"),
        (GOOD, GOOD, {"from_logits": "yes"}, TypeError, r"from_logits must be True or False"),
    ],
)
def test_bad_input_to_kl_gets_a_clear_error(p, q, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        kldiv.kl(p, q, **kwargs)


def test_error_index_refers_to_the_users_axis_layout():
    p = np.full((3, 4), 0.25)
    p[2, 1] = -0.25
    with pytest.raises(ValueError, match=r"p\[1, 2\] = -0.25"):
        kldiv.kl(p.T, np.full((4, 3), 0.25), axis=0)
    with pytest.raises(ValueError, match=r"p\[2, 1\] = -0.25"):
        kldiv.kl(p, np.full(4, 0.25))


def test_error_in_a_later_chunk_of_a_large_input_reports_its_row():
    p = np.full((4000, 100), 0.01)
    p[3777, 5] = np.nan
    with pytest.raises(ValueError, match=r"p\[3777, 5\] is NaN"):
        kldiv.kl(p, p.copy())


@pytest.mark.parametrize("weight", [-0.1, 1.5, math.nan])
def test_js_weight_outside_unit_interval(weight):
    with pytest.raises(ValueError, match="weight must lie in"):
        kldiv.js(GOOD, GOOD, weight=weight)


@pytest.mark.parametrize("alpha", [-0.1, 1.1])
def test_skew_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha must lie in"):
        kldiv.skew_kl(GOOD, GOOD, alpha=alpha)


@pytest.mark.parametrize("alpha", [-1, math.nan])
def test_renyi_alpha_must_be_non_negative(alpha):
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        kldiv.renyi(GOOD, GOOD, alpha=alpha)


def test_renyi_requires_alpha():
    with pytest.raises(TypeError):
        kldiv.renyi(GOOD, GOOD)


def test_tolerance_of_the_sum_scales_with_dtype():
    p32 = np.array([0.2, 0.3, 0.5001], dtype=np.float32)  # off by 1e-4: fine for float32
    kldiv.kl(p32, p32)
    with pytest.raises(ValueError, match="tolerance 1e-06"):
        kldiv.kl(p32.astype(np.float64), p32.astype(np.float64))


def test_validate_false_skips_checks():
    value = kldiv.kl([0.5, 0.6], [0.5, 0.6], validate=False)
    assert float(value) == 0.0


def test_normalize_rejects_negative_nan_and_zero_sums():
    with pytest.raises(ValueError, match=r"p\[1\] = -1; weights to normalise"):
        kldiv.normalize([1.0, -1.0])
    with pytest.raises(ValueError, match=r"p\[0\] = nan"):
        kldiv.normalize([np.nan, 1.0])
    with pytest.raises(ValueError, match="sums to 0"):
        kldiv.normalize([[1.0, 0.0], [0.0, 0.0]])


def test_numpy_beside_a_tensor_joins_the_tensor_backend():
    import torch

    value = kldiv.kl(np.array(GOOD), torch.tensor(GOOD[::-1].copy()))
    assert isinstance(value, torch.Tensor)
    assert float(value) == pytest.approx(float(kldiv.kl(GOOD, GOOD[::-1])))


def test_mixing_two_tensor_libraries_is_a_type_error():
    import torch

    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match="different array libraries"):
        kldiv.kl(jnp.asarray(GOOD), torch.tensor(GOOD))


HALF = ["float16", "bfloat16"]


def rounded_softmax(rows, outcomes, dtype, noise=0.0):
    """True distributions (a float64 softmax of random logits, plus ``noise`` times other random logits)
    rounded to a half-precision dtype."""
    import torch

    generator = torch.Generator().manual_seed(outcomes)
    logits = 2 * torch.randn(rows, outcomes, dtype=torch.float64, generator=generator)
    logits = logits + noise * torch.randn(rows, outcomes, dtype=torch.float64)
    return torch.softmax(logits, dim=-1).to(getattr(torch, dtype))


@pytest.mark.parametrize("outcomes", [10, 1000, 32000])
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_roundings_of_true_distributions_are_accepted_and_give_non_negative_kl(dtype, outcomes):
    import torch

    torch.manual_seed(0)
    p = rounded_softmax(64, outcomes, dtype)
    q = rounded_softmax(64, outcomes, dtype, noise=1e-3)  # near-identical: KL is of the size of the roundings
    value = kldiv.kl(p, q)  # must not raise: rounding alone moved these sums
    assert value.shape == (64,)
    # KL >= 0 (Gibbs' inequality) holds for the stored numbers only up to their sums' rounding; this assertion
    # relies on the measures' clamp at 0
    assert (value >= 0).all()


@pytest.mark.parametrize("outcomes", [2, 3, 10, 1000])
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_output_of_normalize_is_accepted(dtype, outcomes):
    import torch

    generator = torch.Generator().manual_seed(outcomes)
    weights = (3 * torch.rand(2000, outcomes, dtype=torch.float64, generator=generator)).to(getattr(torch, dtype))
    p = kldiv.normalize(weights)  # x / x.sum() in the half dtype: two roundings
    kldiv.kl(p, p)


@pytest.mark.parametrize(
    "dtype,values",
    [
        ("float16", [0.25, 0.25, 0.25, 0.25 + 4 * 2.0**-12]),  # sums to 1 + 9.8e-4: twice what rounding can do
        ("bfloat16", [0.25, 0.25, 0.25, 0.25 + 3 * 2.0**-9]),  # 1 + 5.9e-3, 1.5 times
    ],
)
def test_half_precision_sums_beyond_half_an_ulp_of_one_are_refused(dtype, values):
    import torch

    p = torch.tensor(values, dtype=getattr(torch, dtype))
    eps = torch.finfo(p.dtype).eps
    assert float(p.double().sum()) - 1 > 1.4 * eps / 2  # exactly representable, so the stored sum is the one above
    with pytest.raises(ValueError, match="p does not sum to 1 along axis 0"):
        kldiv.kl(p, torch.full((4,), 0.25, dtype=p.dtype))
    kldiv.kl(kldiv.normalize(p), torch.full((4,), 0.25, dtype=p.dtype))  # normalised, it is accepted


@pytest.mark.parametrize(
    "dtype,values",
    [
        ("float16", [0.25, 0.25, 0.52]),  # sums to 1.02; sqrt(eps) = 3 % used to accept it
        ("float16", [0.25, 0.25, 0.505]),  # 1.005
        ("bfloat16", [0.25, 0.25, 0.53]),  # 1.03; sqrt(eps) = 8.8 % used to accept it
        ("bfloat16", [0.25, 0.25, 0.515]),  # 1.016
    ],
)
def test_half_precision_input_that_is_not_a_distribution_is_refused(dtype, values):
    import torch

    p = torch.tensor(values, dtype=getattr(torch, dtype))
    good = torch.full((3,), 1 / 3, dtype=p.dtype)
    assert abs(float(p.double().sum()) - 1) > 0.004  # the stored values miss 1 by far more than rounding can
    with pytest.raises(ValueError, match="p does not sum to 1 along axis 0"):
        kldiv.kl(p, good)
    with pytest.raises(ValueError, match="q does not sum to 1 along axis 0"):
        kldiv.kl(good, p)


def test_masked_arrays_with_masked_entries_are_refused_everywhere_they_are_read():
    import kldiv.estimate

    masked = np.ma.array([0.5, 0.5], mask=[False, True])
    with pytest.raises(TypeError, match=r"p is a masked array with masked entries.*p.filled\(0\)"):
        kldiv.kl(masked, [0.25, 0.75])
    with pytest.raises(TypeError, match="P is a masked array with masked entries"):
        kldiv.pairwise.kl(np.ma.array(np.full((2, 2), 0.5), mask=[[0, 1], [0, 0]]), np.full((2, 2), 0.5))
    with pytest.raises(TypeError, match="counts_p is a masked array with masked entries"):
        kldiv.estimate.plugin(np.ma.array([3, 4], mask=[0, 1]), [2, 5])
    unmasked = np.ma.array([0.5, 0.5])  # nothing under a mask: read as the plain array
    assert float(kldiv.kl(unmasked, [0.25, 0.75])) == pytest.approx(float(kldiv.kl([0.5, 0.5], [0.25, 0.75])))
