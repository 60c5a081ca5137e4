"""DistillationLoss / distillation_loss against the naive float64 autograd oracle in nn_reference.py."""

from __future__ import annotations

import math

import nn_reference as ref
import pytest
import torch

import kldiv
from kldiv.nn import DistillationLoss, TopK
from kldiv.nn.functional import distillation_loss

DIVERGENCES = ["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd"]
RTOL = 1e-10

pytestmark = pytest.mark.usefixtures("cpu_path")  # every case on both CPU paths (see conftest)


def test_small_calls_take_the_small_path_and_larger_ones_the_chunked_kernel(cpu_path, monkeypatch):
    import kldiv.nn.functional as functional

    taken = []
    for name in ("small_dense", "run_dense"):
        monkeypatch.setattr(functional, name, lambda *a, _f=getattr(functional, name), _n=name, **k: (
            taken.append(_n), _f(*a, **k))[1])
    s, t, _ = _data()
    distillation_loss(s, t)
    assert taken == (["small_dense"] if cpu_path == "small" else ["run_dense"])
    from kldiv.nn.kernels import small

    for asked in ({"compile": "always"}, {"kernel": "compiled"}):  # compilation asked for: never the small path
        with kldiv.config_context(**asked):
            assert not small(s.reshape(-1, 11))


def _data(shape=(3, 4, 11), seed=0, dtype=torch.float64, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    s = (spread * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    t = (spread * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, shape[-1], shape[:-1], generator=g)
    labels.view(-1)[::3] = -100
    return s, t, labels


def _grad(fn, s):
    s = s.detach().clone().requires_grad_(True)
    value = fn(s)
    (value.sum() if value.ndim else value).backward()
    return value.detach(), s.grad


def _close(a, b, rtol=RTOL, atol=1e-13):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_value_and_student_gradient_equal_float64_autograd_reference(divergence, reduction):
    s, t, labels = _data()
    kw = dict(divergence=divergence, beta=0.3, alpha=0.2, temperature=1.7, scale_by_temperature_squared=True,
              reduction=reduction)
    got_v, got_g = _grad(lambda x: DistillationLoss(**kw)(x, t, labels), s)
    want_v, want_g = _grad(lambda x: ref.loss(x, t, labels, **kw), s)
    _close(got_v, want_v)
    _close(got_g, want_g)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_masked_rows_with_garbage_logits_contribute_no_loss_and_zero_gradient(divergence):
    s, t, labels = _data()
    s2, t2 = s.clone(), t.clone()
    masked = labels == -100
    s2[masked] = float("nan")
    s2[tuple(masked.nonzero()[0])] = float("inf")
    t2[masked] = -float("inf")
    got_v, got_g = _grad(lambda x: distillation_loss(x, t2, labels, divergence=divergence), s2)
    want_v, want_g = _grad(lambda x: ref.loss(x, t, labels, divergence=divergence), s)
    _close(got_v, want_v)
    assert torch.isfinite(got_g).all()
    assert (got_g[masked] == 0).all()
    _close(got_g, want_g)


def test_no_labels_means_every_position_counts():
    s, t, _ = _data()
    got_v, got_g = _grad(lambda x: DistillationLoss("js")(x, t), s)
    want_v, want_g = _grad(lambda x: ref.loss(x, t, None, divergence="js"), s)
    _close(got_v, want_v)
    _close(got_g, want_g)


def test_custom_ignore_index_is_honoured():
    s, t, labels = _data()
    labels = torch.where(labels == -100, torch.tensor(7), labels + 10)
    got = DistillationLoss(ignore_index=7)(s, t, labels)
    want = ref.loss(s, t, labels, ignore_index=7)
    _close(got, want)


def test_every_position_masked_gives_zero_mean_loss_and_zero_gradient():
    s, t, labels = _data()
    labels[:] = -100
    v, g = _grad(lambda x: DistillationLoss()(x, t, labels), s)
    assert v.item() == 0.0 and (g == 0).all()


@pytest.mark.parametrize("divergence", ["kl", "js", "skew_reverse_kl"])
def test_gradient_accumulation_with_num_items_in_batch_equals_one_big_batch(divergence):
    s, t, labels = _data(shape=(6, 5, 9), seed=3)
    loss = DistillationLoss(divergence)
    big_v, big_g = _grad(lambda x: loss(x, t, labels), s)
    total = int((labels != -100).sum())
    acc = torch.zeros_like(s)
    acc_v = 0.0
    for part in range(3):  # micro-batches with different numbers of kept tokens
        sl = slice(2 * part, 2 * part + 2)
        v, g = _grad(lambda x, sl=sl: loss(x, t[sl], labels[sl], num_items_in_batch=torch.tensor(total)), s[sl])
        acc[sl] += g
        acc_v += v
    _close(acc_v, big_v)
    _close(acc, big_g)


def test_num_items_in_batch_divides_the_sum():
    s, t, labels = _data()
    got = distillation_loss(s, t, labels, num_items_in_batch=13)
    _close(got, ref.loss(s, t, labels, num_items_in_batch=13))


def test_gradient_accumulates_into_existing_grad():
    s, t, labels = _data()
    x = s.clone().requires_grad_(True)
    DistillationLoss()(x, t, labels).backward()
    first = x.grad.clone()
    DistillationLoss()(x, t, labels).backward()
    _close(x.grad, 2 * first)


def test_upstream_gradient_scales_the_result():
    s, t, labels = _data()
    got_v, got_g = _grad(lambda x: 3.5 * DistillationLoss("reverse_kl")(x, t, labels), s)
    want_v, want_g = _grad(lambda x: 3.5 * ref.loss(x, t, labels, divergence="reverse_kl"), s)
    _close(got_g, want_g)


def test_reduction_none_with_per_position_upstream_weights():
    s, t, labels = _data()
    w = torch.rand(s.shape[:-1], dtype=torch.float64)
    got_v, got_g = _grad(lambda x: (w * DistillationLoss("skew_kl", reduction="none")(x, t, labels)).sum(), s)
    want_v, want_g = _grad(lambda x: (w * ref.loss(x, t, labels, divergence="skew_kl", reduction="none")).sum(), s)
    _close(got_v, want_v)
    _close(got_g, want_g)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_vocab_size_truncates_both_and_student_tail_gets_zero_gradient(divergence):
    s, _, labels = _data(shape=(2, 3, 12))
    t = torch.randn(2, 3, 10, dtype=torch.float64)
    got_v, got_g = _grad(lambda x: distillation_loss(x, t, labels, divergence=divergence, vocab_size=9), s)
    want_v, want_g = _grad(lambda x: ref.loss(x, t, labels, divergence=divergence, vocab_size=9), s)
    _close(got_v, want_v)
    _close(got_g, want_g)
    assert (got_g[..., 9:] == 0).all()


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_bfloat16_gradients_within_1e2_of_float64(divergence):
    s, t, labels = _data(shape=(8, 64), spread=4.0)
    _, want = _grad(lambda x: ref.loss(x, t, labels, divergence=divergence), s)
    value, got = _grad(lambda x: distillation_loss(x, t.bfloat16(), labels, divergence=divergence), s.bfloat16())
    assert got.dtype == torch.bfloat16 and value.dtype == torch.float32
    error = (got.double() - want).norm() / want.norm()
    assert error <= 1e-2


def test_float32_inputs_give_float32_loss_close_to_float64():
    s, t, labels = _data()
    got = distillation_loss(s.float(), t.float(), labels)
    assert got.dtype == torch.float32
    _close(got.double(), ref.loss(s, t, labels), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_js_at_beta_endpoints_is_zero_the_continuous_limit(beta):
    s, t, labels = _data()
    v, g = _grad(lambda x: distillation_loss(x, t, labels, divergence="js", beta=beta), s)
    assert v.item() == 0.0 and (g == 0).all()
    near = distillation_loss(s, t, labels, divergence="js", beta=abs(beta - 1e-6))
    assert 0 < near.item() < 1e-5


def test_skew_kl_at_alpha_zero_is_kl_and_skew_reverse_kl_is_reverse_kl():
    s, t, labels = _data()
    _close(distillation_loss(s, t, labels, divergence="skew_kl", alpha=0.0), distillation_loss(s, t, labels))
    _close(
        distillation_loss(s, t, labels, divergence="skew_reverse_kl", alpha=0.0),
        distillation_loss(s, t, labels, divergence="reverse_kl"),
    )


def test_teacher_receives_no_gradient():
    s, t, labels = _data()
    s.requires_grad_(True)
    t.requires_grad_(True)
    DistillationLoss()(s, t, labels).backward()
    assert t.grad is None and s.grad is not None


def test_no_grad_inference_returns_value_only():
    s, t, labels = _data()
    with torch.no_grad():
        v = DistillationLoss("tvd")(s.requires_grad_(True), t, labels)
    _close(v, ref.loss(s.detach(), t, labels, divergence="tvd"))


def test_student_minus_inf_logits_are_impossible_tokens_not_errors():
    s, t, labels = _data()
    s[..., 0] = -float("inf")
    t[..., 0] = -float("inf")
    for divergence in DIVERGENCES:
        got_v, got_g = _grad(lambda x, d=divergence: distillation_loss(x, t, labels, divergence=d), s)
        want_v, _ = _grad(lambda x, d=divergence: ref.loss(x, t, labels, divergence=d), s)
        _close(got_v, want_v)
        assert torch.isfinite(got_g).all()


def test_backward_twice_is_a_clear_error():
    s, t, labels = _data()
    x = s.requires_grad_(True)
    loss = DistillationLoss()(x, t, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


# --- top-k teacher -----------------------------------------------------------------------------------


def _topk(k=4, shape=(3, 4, 11), seed=1):
    s, t, labels = _data(shape=shape, seed=seed)
    lt = torch.log_softmax(t, -1)
    lp, idx = lt.topk(k, -1)
    return s, idx, lp, labels


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_topk_teacher_matches_explicit_bucketed_or_renormalised_reference(divergence, tail):
    s, idx, lp, labels = _topk()
    kw = dict(divergence=divergence, temperature=1.5, reduction="sum")
    got_v, got_g = _grad(lambda x: distillation_loss(x, TopK(idx, lp), labels, tail=tail, **kw), s)
    want_v, want_g = _grad(lambda x: ref.topk_loss(x, idx, lp, labels, tail=tail, **kw), s)
    _close(got_v, want_v, rtol=1e-9)
    _close(got_g, want_g, rtol=1e-9, atol=1e-12)


def test_topk_tail_can_be_set_on_the_topk_or_on_the_loss():
    s, idx, lp, labels = _topk()
    a = DistillationLoss(tail="renormalize")(s, TopK(idx, lp), labels)
    b = DistillationLoss()(s, TopK(idx, lp, tail="renormalize"), labels)
    _close(a, b)
    with pytest.raises(ValueError, match="conflicts"):
        DistillationLoss(tail="bucket")(s, TopK(idx, lp, tail="renormalize"), labels)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_topk_with_all_of_the_vocabulary_bucket_equals_dense_loss(divergence, dtype):
    # k = V leaves the bucket empty: the teacher's leftover 1 - sum(top-k) is rounding and must not meet the
    # student's exact 0 there (that gave KL = inf)
    s, t, labels = _data()
    s, t = s.detach().to(dtype), t.to(dtype)
    lp, idx = torch.log_softmax(t, -1).topk(t.shape[-1], -1)
    got_v, got_g = _grad(lambda x: DistillationLoss(divergence)(x, TopK(idx, lp, tail="bucket"), labels), s)
    want_v, want_g = _grad(lambda x: DistillationLoss(divergence)(x, t, labels), s)
    rtol, atol = (1e-9, 1e-13) if dtype == torch.float64 else (1e-4, 1e-6)  # float32: different roundings
    _close(got_v, want_v, rtol=rtol, atol=atol)
    _close(got_g, want_g, rtol=rtol, atol=atol)


def test_topk_garbage_indices_in_masked_rows_are_ignored():
    s, idx, lp, labels = _topk()
    idx, lp = idx.clone(), lp.clone()
    idx[labels == -100] = -1
    lp[labels == -100] = float("nan")
    got = distillation_loss(s, TopK(idx, lp), labels)
    _close(got, ref.topk_loss(s, idx.clamp_min(0), lp.nan_to_num(-1.0), labels))


def test_topk_with_vocab_size_truncates_the_student():
    s, idx, lp, labels = _topk(shape=(2, 3, 11))
    s_big = torch.cat([s, torch.randn(2, 3, 5, dtype=s.dtype)], -1)
    got_v, got_g = _grad(lambda x: distillation_loss(x, TopK(idx, lp), labels, vocab_size=11), s_big)
    want_v, want_g = _grad(lambda x: ref.topk_loss(x, idx, lp, labels), s)
    _close(got_v, want_v, rtol=1e-9)
    _close(got_g[..., :11], want_g, rtol=1e-9, atol=1e-12)
    assert (got_g[..., 11:] == 0).all()


# --- the measures' own autograd (kldiv.kl etc. on tensors that require grad) ---------------------------


@pytest.mark.parametrize("name", ["kl", "js", "skew_kl", "tvd", "cross_entropy", "hellinger"])
def test_measure_autograd_matches_naive_float64_autograd(name):
    s, t, _ = _data(shape=(5, 7))
    fn = getattr(kldiv, name)
    got_v, got_g = _grad(lambda x: fn(x, t, from_logits=True).sum(), s)

    def naive(x):
        lp, lq = torch.log_softmax(x, -1), torch.log_softmax(t, -1)
        p, q = lp.exp(), lq.exp()
        m = 0.5 * (p + q)
        return {
            "kl": (p * (lp - lq)).sum(-1),
            "js": 0.5 * (p * (lp - m.log())).sum(-1) + 0.5 * (q * (lq - m.log())).sum(-1),
            "skew_kl": (p * (lp - (0.1 * p + 0.9 * q).log())).sum(-1),
            "tvd": 0.5 * (p - q).abs().sum(-1),
            "cross_entropy": -(p * lq).sum(-1),
            "hellinger": (0.5 * ((p.sqrt() - q.sqrt()) ** 2).sum(-1)).sqrt(),
        }[name].sum()

    want_v, want_g = _grad(naive, s)
    _close(got_v, want_v)
    _close(got_g, want_g)


def test_import_kldiv_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, kldiv; kldiv.kl([0.5, 0.5], [0.1, 0.9]); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_module_repr_names_its_options():
    assert "divergence='js'" in repr(DistillationLoss("js"))
    assert math.isclose(DistillationLoss(temperature=2.0).temperature, 2.0)
