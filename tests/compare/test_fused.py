"""The compiled per-token kernel (large torch chunks) against the eager path and exact NumPy values."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


from compare_reference import oracle, random_logits, se  # noqa: E402,I001

import kldiv  # noqa: E402
from kldiv.compare import Comparison, _fused  # noqa: E402


@pytest.fixture
def always_compile():
    previous = kldiv.set_config(compile="always")
    yield
    kldiv.set_config(compile=previous.compile)


@pytest.mark.parametrize("v", [256, 250, 37])
def test_two_level_top_k_selects_the_exact_top_k_in_order(v):
    x = torch.randn(50, v, generator=torch.Generator().manual_seed(v))
    group = _fused.group_size(v, 10)
    index, row_max = _fused.top_indices(x, 10, group)
    expected = np.argsort(-x.numpy(), axis=-1)[:, :10]
    np.testing.assert_array_equal(index.numpy(), expected)
    np.testing.assert_array_equal(row_max.numpy(), x.numpy().max(-1))


def test_group_size_leaves_at_least_k_groups_or_falls_back_to_plain_top_k():
    assert _fused.group_size(32000, 10) == 128
    assert _fused.group_size(256, 10) == 16
    assert _fused.group_size(37, 10) == 1 and _fused.group_size(64, 10) == 1


@pytest.mark.parametrize("reverse", [False, True])
def test_compiled_statistics_match_numpy_and_the_eager_path(always_compile, reverse):
    a, b, y = random_logits(n=100, v=256, noise=0.5, seed=3)  # 100 rows: the last 16-row block is padded
    results = {}
    for mode in ("always", "never"):
        kldiv.set_config(compile=mode)
        c = Comparison(reverse=reverse)
        for lo in range(0, 100, 50):
            c.update(torch.tensor(a[lo:lo + 50], dtype=torch.float32), torch.tensor(b[lo:lo + 50], dtype=torch.float32),
                     torch.tensor(y[lo:lo + 50]))
        results[mode] = c.result()
    compiled, eager = results["always"], results["never"]
    o = oracle(a.astype(np.float32), b.astype(np.float32), y)
    kld = o["kld_reverse" if reverse else "kld"]
    np.testing.assert_allclose([compiled.kld_mean, compiled.kld_se], [kld.mean(), se(kld)], rtol=1e-4)
    np.testing.assert_allclose([compiled.js_mean, compiled.tvd_mean], [o["js"].mean(), o["tvd"].mean()], rtol=1e-4)
    assert compiled.same_top_p == pytest.approx(o["same"].mean()) == eager.same_top_p
    assert compiled.top_k_overlap[5] == pytest.approx(o["overlap5"].mean())
    assert compiled.top_k_overlap[10] == pytest.approx(o["overlap10"].mean())
    np.testing.assert_allclose(compiled.delta_p_mean, o["dp"].mean(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(compiled.ppl_ratio, np.exp((o["nll_o"] - o["nll_r"]).mean()), rtol=1e-5)
    for q, value in compiled.kld_percentiles.items():
        assert value == pytest.approx(eager.kld_percentiles[q], rel=1e-4)


def test_compiled_path_names_a_nan_logit_like_the_eager_path(always_compile):
    a = torch.randn(20, 256)
    a[17, 3] = float("nan")
    with pytest.raises(ValueError, match=r"reference_logits\[17, 3\] is NaN"):
        Comparison().update(a, torch.randn(20, 256))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_token_values_equal_the_eager_ones_with_impossible_tokens(always_compile, reverse, dtype):
    from kldiv import _validate
    from kldiv.compare._tokens import token_values

    g = torch.Generator().manual_seed(5)
    n, v = 9, 64
    a, b = 3 * torch.randn(n, v, generator=g, dtype=dtype), 3 * torch.randn(n, v, generator=g, dtype=dtype)
    a[0, :10] = -torch.inf  # impossible tokens on one side
    b[1, :10] = -torch.inf
    a[2, 5:] = -torch.inf  # nearly one-hot
    b[3] = a[3]  # identical rows: every divergence 0
    a[4, 7], b[4, 7] = -torch.inf, -torch.inf  # impossible on both sides
    labels = torch.arange(n) * 3  # row 1's label (3) is impossible for `other`
    loc = (_validate.Locator("reference_logits", (n, v), 1, (n,)), _validate.Locator("other_logits", (n, v), 1, (n,)))
    got = {}
    for mode in ("always", "never"):
        kldiv.set_config(compile=mode)
        got[mode] = token_values(a, b, labels.numpy(), reverse=reverse, top_k=(1, 5), locators=loc)
    for name in ("kld", "js", "tvd", "log_p_reference", "log_p_other"):
        np.testing.assert_allclose(
            np.asarray(getattr(got["always"], name)), np.asarray(getattr(got["never"], name)),
            rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6 if dtype == torch.float32 else 1e-14,
            err_msg=name,
        )
    assert got["always"].kld[3] == pytest.approx(0, abs=1e-6) and got["always"].js[3] == pytest.approx(0, abs=1e-6)
    np.testing.assert_array_equal(got["always"].same_top, got["never"].same_top)


def test_compiled_kld_of_nearly_identical_models_keeps_its_relative_precision(always_compile):
    """Tiny per-token KLs (an 8-bit quantised model's) against float64: the float32 kernel is held to a tenth
    of the error of float32 ``F.kl_div`` on the same inputs (measured 9e-6 median against 5.5e-4)."""
    import torch.nn.functional as F

    from kldiv import _validate

    g = torch.Generator().manual_seed(0)
    n, v = 128, 32000
    a = torch.randn(n, v, generator=g) * (1 + 3 * torch.rand(n, 1, generator=g))
    b = a + (0.002 + 0.05 * torch.rand(n, 1, generator=g)) * torch.randn(n, v, generator=g) + 3.0
    truth = F.kl_div(F.log_softmax(b.double(), -1), F.log_softmax(a.double(), -1), log_target=True,
                     reduction="none").sum(-1)
    naive = F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True, reduction="none").sum(-1)
    loc = (_validate.Locator("r", (n, v), 1, (n,)), _validate.Locator("o", (n, v), 1, (n,)))
    ours = _fused.token_rows(a, b, None, reverse=False, k=10, locators=loc)["kld"]
    error = ((ours.double() - truth).abs() / truth).median()
    naive_error = ((naive.double() - truth).abs() / truth).median()
    assert error < naive_error / 10, (float(error), float(naive_error))


@pytest.mark.parametrize("path", ["numpy", "torch", "torch compiled"])
def test_same_top_breaks_ties_by_the_first_maximum_on_every_path(path):
    # integer logits in a narrow range: most rows have several maxima
    rng = np.random.default_rng(9)
    a = rng.integers(0, 3, (512, 64)).astype(np.float32)
    b = rng.integers(0, 3, (512, 64)).astype(np.float32)
    a[0], b[0] = [0, 2, 2, 2] * 16, [0, 2, 0, 0] * 16  # the first maximum is index 1 on both sides
    want = np.mean(np.argmax(a, -1) == np.argmax(b, -1))  # numpy.argmax, torch.argmax and llama.cpp agree
    mode = "always" if path == "torch compiled" else "never"
    previous = kldiv.set_config(compile=mode)
    try:
        result = Comparison()
        result.update(*((a, b) if path == "numpy" else (torch.tensor(a), torch.tensor(b))))
        got = result.result().same_top_p
    finally:
        kldiv.set_config(compile=previous.compile)
    assert got == pytest.approx(want, abs=1e-12)
