"""The compiled kernels give the reference kernels' numbers; properties that hold for any input."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kldiv
from kldiv import _compile  # private: the test checks that no kernel fell back to eager
from kldiv.nn import TopK
from kldiv.nn.functional import distillation_loss


def _value_and_grad(fn, s):
    x = s.detach().clone().requires_grad_(True)
    v = fn(x)
    v.backward()
    return v.detach(), x.grad


@pytest.mark.parametrize(
    ("teacher_kind", "divergence", "masked"),
    [("dense", "js", True), ("topk", "skew_reverse_kl", True), ("dense", "kl", True), ("dense", "reverse_kl", False)],
)
def test_compiled_kernel_gives_the_reference_kernels_numbers(teacher_kind, divergence, masked):
    # chunks of 3 rows of 40: 10 rows in 3 + 3 + 3 + (the row before and) 1, or 8 selected rows through the
    # buffers in 3 + 3 + 2
    g = torch.Generator().manual_seed(0)
    s, t = 3 * torch.randn(2, 5, 40, generator=g), 3 * torch.randn(2, 5, 40, generator=g)
    labels = torch.arange(10).reshape(2, 5)
    if masked:
        labels[0, 1] = labels[1, 3] = -100
    kw = dict(divergence=divergence, beta=0.3, temperature=2.0)
    if teacher_kind == "dense":
        teacher = t
    else:
        lp, idx = torch.log_softmax(t, -1).topk(6, -1)
        teacher, kw = TopK(idx, lp), dict(kw, tail="bucket")
    eager_v, eager_g = _value_and_grad(lambda x: distillation_loss(x, teacher, labels, **kw), s)
    with kldiv.config_context(compile="always", compiled_chunk=3 * 40):
        fast_v, fast_g = _value_and_grad(lambda x: distillation_loss(x, teacher, labels, **kw), s)
        again_v, _ = _value_and_grad(lambda x: distillation_loss(x, teacher, labels, **kw), s)
    assert not _compile._broken, "torch.compile failed and fell back to eager"
    torch.testing.assert_close(fast_v, eager_v, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(fast_g, eager_g, rtol=2e-5, atol=1e-8)
    if masked:
        assert fast_g[0, 1].abs().max() == 0 and fast_g[1, 3].abs().max() == 0
    assert again_v == fast_v


def test_compile_policy_rejects_unknown_modes_and_scopes_to_the_block():
    with pytest.raises(ValueError, match="compile must be one of 'auto', 'always', 'never'"):
        kldiv.set_config(compile="sometimes")
    before = kldiv.get_config()
    with kldiv.config_context(compile="always", eager_chunk=1024) as inside:
        assert kldiv.get_config() is inside and inside.compile == "always" and inside.eager_chunk == 1024
    assert kldiv.get_config() == before


logits = st.integers(1, 6).flatmap(
    lambda v: st.tuples(
        st.lists(st.floats(-30, 30), min_size=v, max_size=v), st.lists(st.floats(-30, 30), min_size=v, max_size=v)
    )
)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(logits, min_size=1, max_size=4).filter(lambda r: len({len(a) for a, _ in r}) == 1),
    divergence=st.sampled_from(["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd"]),
    temperature=st.floats(0.25, 4.0),
)
def test_any_logits_give_the_reference_value_and_gradient_and_a_nonnegative_loss(rows, divergence, temperature):
    s = torch.tensor([a for a, _ in rows], dtype=torch.float64)
    t = torch.tensor([b for _, b in rows], dtype=torch.float64)
    got_v, got_g = _value_and_grad(lambda x: distillation_loss(x, t, divergence=divergence, temperature=temperature), s)
    want_v, want_g = _value_and_grad(lambda x: ref.loss(x, t, divergence=divergence, temperature=temperature), s)
    assert got_v >= -1e-15  # non-negative up to rounding
    torch.testing.assert_close(got_v, want_v, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_g, want_g, rtol=1e-7, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    shift=st.floats(-50, 50),
    # not TVD: at P = Q it is not differentiable, and rounding picks which side's subgradient |p - q| gets
    divergence=st.sampled_from(["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl"]),
)
def test_identical_distributions_give_zero_loss_and_zero_gradient_whatever_the_logit_shift(shift, divergence):
    s = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v, g = _value_and_grad(lambda x: distillation_loss(x, s + shift, divergence=divergence), s)
    assert abs(float(v)) < 1e-12
    assert g.abs().max() < 1e-12


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd"])
def test_dense_kernel_gives_the_measures_reference_numbers_including_inf_and_nan_rows(divergence):
    import math

    import array_api_compat.torch as xp

    from kldiv import _engine
    from kldiv.nn.functional import divergence_of
    from kldiv.nn.kernels import run_dense

    g = torch.Generator().manual_seed(3)
    s = 3 * torch.randn(7, 50, generator=g, dtype=torch.float64)
    t = 3 * torch.randn(7, 50, generator=g, dtype=torch.float64)
    s[0, :5] = -math.inf  # impossible tokens
    t[1, :7] = -math.inf  # KL may be +inf
    t[2, 3] = math.nan
    s[3] = -math.inf  # no finite logit
    t[4, 2] = math.inf
    s[5, 1:] = -math.inf  # one-hot student
    div = divergence_of(divergence, 0.3, 0.2)
    got_g = torch.empty_like(s)
    got_v = run_dense(div, s, t, temperature=2.0, rows=None, grad_scale=0.3, grad_out=got_g)
    no_grad_v = run_dense(div, s, t, temperature=2.0, rows=None, grad_scale=0.3, grad_out=None)
    # the reference form: log-softmaxes, the measure's value and vjp, the log-softmax backward
    cs = [_engine.canonical(xp, x / 2.0, True, False, 0, None, 0.0) for x in (s, t)]
    ordered = div.ordered(*cs)
    params = dict(div.params)
    want_v = div.measure.value(xp, *ordered, **params)
    want_g = _engine.log_softmax_vjp(xp, div.measure.vjp(xp, *ordered, want_v, True, **params)[div.student], cs[0])
    want_g = want_g * (0.3 / 2.0)
    bad = torch.tensor([r in (2, 3, 4) for r in range(7)])
    want_v = torch.where(bad, math.nan, want_v)  # a NaN, +inf or no finite logit makes the row NaN
    torch.testing.assert_close(no_grad_v, got_v, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(got_v, want_v, rtol=1e-12, atol=1e-14, equal_nan=True)
    torch.testing.assert_close(got_g[~bad], want_g[~bad], rtol=1e-10, atol=1e-15)
    assert not torch.isnan(got_g[~bad]).any()


@pytest.mark.parametrize("teacher_kind", ["dense", "topk"])
@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "tvd", "skew_kl"])
def test_compiled_rows_that_are_not_tame_are_evaluated_again_with_the_guarded_formulas(teacher_kind, divergence):
    # the compiled kernel uses the select-free formulas on every row; rows with an impossible outcome, or wider
    # than the tame span (a probability below float32's normal range), must come out as the eager kernel's
    g = torch.Generator().manual_seed(1)
    s, t = 3 * torch.randn(6, 40, generator=g), 3 * torch.randn(6, 40, generator=g)
    s[1, :5] = -float("inf")  # the student rules tokens out: KL(T || S) = inf on that row
    t[2, 3:9] = -float("inf")
    s[3, 7], t[4, 0] = -150.0, 120.0  # spans of 150 and ~130: not tame
    teacher = t
    kw = dict(divergence=divergence, reduction="none")
    if teacher_kind == "topk":
        lp, idx = torch.log_softmax(t, -1).topk(8, -1)
        teacher, kw = TopK(idx, lp), dict(kw, tail="bucket")
    eager_v, eager_g = _value_and_grad(lambda x: distillation_loss(x, teacher, **kw).sum(), s)
    eager_rows = distillation_loss(s, teacher, **kw)
    with kldiv.config_context(compile="always", compiled_chunk=4 * 40):
        fast_v, fast_g = _value_and_grad(lambda x: distillation_loss(x, teacher, **kw).sum(), s)
        fast_rows = distillation_loss(s, teacher, **kw)
    assert not _compile._broken, "torch.compile failed and fell back to eager"
    torch.testing.assert_close(fast_rows, eager_rows, rtol=2e-6, atol=1e-7)
    finite = torch.isfinite(eager_g)
    assert torch.equal(finite, torch.isfinite(fast_g))
    torch.testing.assert_close(fast_g[finite], eager_g[finite], rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("teacher_kind", ["dense", "topk"])
@pytest.mark.parametrize("policy", ["auto", "always"])
def test_a_loss_inside_the_callers_torch_compile_gives_the_eager_numbers_and_refuses_nan(teacher_kind, policy):
    # the caller compiles a step that holds the loss: the kernel is traced into the caller's graph, where rows
    # that are not tame (an impossible outcome, a wide span) must still get the guarded formulas, and a NaN row
    # the loss's one-line error (it used to re-evaluate the rows forever: RecursionError)
    g = torch.Generator().manual_seed(2)
    s, t = 3 * torch.randn(6, 40, generator=g), 3 * torch.randn(6, 40, generator=g)
    s[1, :5] = -float("inf")
    t[2, 3:9] = -float("inf")
    s[3, 7] = -150.0
    teacher, kw = t, dict(divergence="kl", reduction="none")
    if teacher_kind == "topk":
        lp, idx = torch.log_softmax(t, -1).topk(8, -1)
        teacher, kw = TopK(idx, lp), dict(kw, tail="bucket")
    eager_v, eager_g = _value_and_grad(lambda x: distillation_loss(x, teacher, **kw).sum(), s)
    step = torch.compile(lambda x: distillation_loss(x, teacher, **kw).sum())
    with kldiv.config_context(compile=policy):
        got_v, got_g = _value_and_grad(step, s)
        torch.testing.assert_close(got_v, eager_v, rtol=2e-6, atol=1e-7)
        finite = torch.isfinite(eager_g)
        assert torch.equal(finite, torch.isfinite(got_g))
        torch.testing.assert_close(got_g[finite], eager_g[finite], rtol=2e-5, atol=1e-7)
        bad = s.clone()
        bad[4, 2] = float("nan")
        with pytest.raises(ValueError, match=r"the loss is NaN at position \(4,\)"):
            step(bad.requires_grad_(True))


def test_auto_compiles_a_kernel_once_its_calls_have_done_enough_work_eagerly():
    # calls of 4 x 67 = 268 logits, below compile_min_elements: eager until the kernel has evaluated 804 logits
    # (three calls), compiled from the fourth call on, with the same numbers; calls of at most nn_small logits
    # stay eager (nn_small=1 first: no call is that small)
    g = torch.Generator().manual_seed(3)
    s, t = (3 * torch.randn(4, 67, generator=g, dtype=torch.float64) for _ in range(2))

    def kernels(name):
        return {k for k in _compile._cache if k[0] == "dense" and k[1].measure.name == name and 67 in k}

    loss = kldiv.nn.DistillationLoss("tvd")
    eager_v, eager_g = _value_and_grad(lambda x: loss(x, t), s)
    before = kernels("tvd")
    found = []
    with kldiv.config_context(compile="auto", compile_after_elements=804, compile_min_elements=1 << 30, nn_small=1):
        for _ in range(5):
            found.append((*_value_and_grad(lambda x: loss(x, t), s), len(kernels("tvd") - before)))
    assert [n for _, _, n in found] == [0, 0, 0, 1, 1]
    assert not _compile._broken
    for v, grad, _ in found:
        torch.testing.assert_close(v, eager_v, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, eager_g, rtol=1e-12, atol=1e-14)
    before = kernels("js")
    with kldiv.config_context(compile="auto", compile_after_elements=1, compile_min_elements=1 << 30, nn_small=512):
        for _ in range(3):
            kldiv.nn.DistillationLoss("js")(s, t)
    assert kernels("js") == before
