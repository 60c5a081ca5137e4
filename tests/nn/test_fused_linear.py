"""FusedLinearDistillationLoss against materialised logits + the naive float64 oracle."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch
import torch.nn.functional as F

import kldiv
from kldiv.nn import FusedLinearDistillationLoss, TopK
from kldiv.nn.fused_linear import fused_linear_distillation_loss

N, H, HT, V = 9, 6, 4, 13


def _data(seed=0, dtype=torch.float64, bias=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    labels = torch.randint(0, V, (N,), generator=g)
    labels[::4] = -100
    return dict(h=r(N, H), w=r(V, H), b=r(V) if bias else None, th=r(N, HT), tw=r(V, HT), tb=r(V), labels=labels)


def _grads(fn, *xs):
    xs = [x.detach().clone().requires_grad_(True) if x is not None else None for x in xs]
    value = fn(*xs)
    value.backward()
    return value.detach(), [x.grad if x is not None else None for x in xs]


def _naive(d, divergence="kl", hard=0.0, reduction="mean", num_items=None, **kw):
    def fn(h, w, b):
        z = h @ w.T + (b if b is not None else 0)
        t = d["th"] @ d["tw"].T + d["tb"]
        soft = ref.loss(z, t, d["labels"], divergence=divergence, reduction=reduction, num_items_in_batch=num_items, **kw)
        if hard:
            ce = F.cross_entropy(z, d["labels"], reduction="sum")
            kept = int((d["labels"] != -100).sum())
            soft = soft + hard * ce / (num_items or (kept if reduction == "mean" else 1))
        return soft

    return fn


def _close(a, b, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd"])
def test_fused_value_and_grads_of_hidden_weight_bias_equal_float64_reference(divergence):
    d = _data()
    kw = dict(divergence=divergence, temperature=1.3, scale_by_temperature_squared=True)
    loss = FusedLinearDistillationLoss(**kw)
    got_v, got_g = _grads(
        lambda h, w, b: loss(h, w, d["th"], d["tw"], d["labels"], student_bias=b, teacher_bias=d["tb"]),
        d["h"], d["w"], d["b"],
    )
    want_v, want_g = _grads(_naive(d, **kw), d["h"], d["w"], d["b"])
    _close(got_v, want_v)
    for a, b in zip(got_g, want_g, strict=True):
        _close(a, b)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_with_hard_label_cross_entropy_equals_reference(reduction):
    d = _data(bias=False)
    loss = FusedLinearDistillationLoss("js", beta=0.3, hard_label_weight=0.7, reduction=reduction)
    got_v, got_g = _grads(lambda h, w: loss(h, w, d["th"], d["tw"], d["labels"], teacher_bias=d["tb"]), d["h"], d["w"])
    want_v, want_g = _grads(lambda h, w: _naive(d, "js", hard=0.7, reduction=reduction, beta=0.3)(h, w, None),
                            d["h"], d["w"])
    _close(got_v, want_v)
    for a, b in zip(got_g, want_g, strict=True):
        _close(a, b)


def test_fused_in_many_chunks_equals_one_chunk():
    d = _data()
    call = lambda h, w, b: fused_linear_distillation_loss(  # noqa: E731
        h, w, d["th"], d["tw"], d["labels"], student_bias=b, teacher_bias=d["tb"], divergence="reverse_kl")
    one_v, one_g = _grads(call, d["h"], d["w"], d["b"])
    with kldiv.config_context(fused_chunk=2 * V):  # 2 rows per chunk
        many_v, many_g = _grads(call, d["h"], d["w"], d["b"])
    _close(many_v, one_v)
    for a, b in zip(many_g, one_g, strict=True):
        _close(a, b)


def test_fused_accepts_teacher_logits_and_topk_teachers():
    d = _data()
    t = d["th"] @ d["tw"].T + d["tb"]
    base = lambda **kw: lambda h, w: fused_linear_distillation_loss(h, w, labels=d["labels"], **kw)  # noqa: E731
    got_v, got_g = _grads(base(teacher_logits=t), d["h"], d["w"])
    want_v, want_g = _grads(lambda h, w: ref.loss(h @ w.T, t, d["labels"]), d["h"], d["w"])
    _close(got_v, want_v)
    _close(got_g[1], want_g[1])
    lp, idx = torch.log_softmax(t, -1).topk(5, -1)
    got_v, got_g = _grads(base(teacher_logits=TopK(idx, lp), tail="renormalize"), d["h"], d["w"])
    want_v, want_g = _grads(lambda h, w: ref.topk_loss(h @ w.T, idx, lp, d["labels"], tail="renormalize"), d["h"], d["w"])
    _close(got_v, want_v)
    _close(got_g[0], want_g[0])


def test_fused_gradient_accumulation_with_num_items_equals_one_batch():
    d = _data()
    total = int((d["labels"] != -100).sum())
    loss = FusedLinearDistillationLoss("skew_kl")
    _, big = _grads(lambda w: loss(d["h"], w, d["th"], d["tw"], d["labels"]), d["w"])
    w = d["w"].clone().requires_grad_(True)
    for sl in (slice(0, 4), slice(4, N)):
        loss(d["h"][sl], w, d["th"][sl], d["tw"], d["labels"][sl], num_items_in_batch=total).backward()
    _close(w.grad, big[0])


def test_fused_vocab_size_truncation_gives_zero_gradient_to_padded_rows():
    d = _data()
    w_big = torch.cat([d["w"], torch.randn(3, H, dtype=torch.float64)])
    got_v, got_g = _grads(
        lambda w: fused_linear_distillation_loss(d["h"], w, d["th"], d["tw"], d["labels"], vocab_size=V), w_big
    )
    want_v, want_g = _grads(lambda w: ref.loss(d["h"] @ w.T, d["th"] @ d["tw"].T, d["labels"]), d["w"])
    _close(got_v, want_v)
    _close(got_g[0][:V], want_g[0])
    assert (got_g[0][V:] == 0).all()


def test_fused_bfloat16_gradients_within_1e2_of_float64_and_float32_accumulation():
    d = _data()
    d16 = {k: (v.bfloat16() if v is not None and v.is_floating_point() else v) for k, v in d.items()}
    got_v, got_g = _grads(lambda h, w: FusedLinearDistillationLoss()(h, w, d16["th"], d16["tw"], d["labels"]),
                          d16["h"], d16["w"])
    # the reference sees the same bf16-rounded inputs, in float64
    d64 = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in d16.items()}
    d64["tb"] = torch.zeros(V, dtype=torch.float64)
    want_v, want_g = _grads(_naive(d64), d64["h"], d64["w"], None)
    assert got_g[0].dtype == torch.bfloat16 and got_g[1].dtype == torch.bfloat16
    for a, b in zip(got_g, want_g[:2], strict=True):
        assert (a.double() - b).norm() / b.norm() <= 1e-2


def test_teacher_tensors_get_no_gradient():
    d = _data()
    th, tw = d["th"].clone().requires_grad_(True), d["tw"].clone().requires_grad_(True)
    h = d["h"].clone().requires_grad_(True)
    FusedLinearDistillationLoss()(h, d["w"], th, tw, d["labels"]).backward()
    assert th.grad is None and tw.grad is None and h.grad is not None


ERRORS = [
    (dict(reduction="none"), ValueError, "reduction='none' is not available"),
    (dict(teacher_hidden=None), ValueError, "pass exactly one teacher"),
    (dict(teacher_logits=torch.zeros(N, V)), ValueError, "pass exactly one teacher"),
    (dict(student_weight=torch.zeros(V, H + 1)), ValueError, r"must be \(V, H\) with H = student_hidden.shape\[1\]"),
    (dict(student_bias=torch.zeros(V + 1)), ValueError, r"student_bias has shape \(14,\); it must be \(13,\)"),
    (dict(teacher_weight=torch.zeros(V + 2, HT)), ValueError, "pass vocab_size=13"),
    (dict(teacher_weight=None), ValueError, "teacher_hidden needs teacher_weight"),
    (dict(student_hidden=torch.zeros(H)), ValueError, "it must be 2-D"),
    (dict(labels=torch.zeros(N)), TypeError, "labels has dtype torch.float32"),
    (dict(hard_label_weight=-1.0), ValueError, "hard_label_weight must be a finite number >= 0"),
    (dict(hard_label_weight=1.0, labels=None), ValueError, "hard_label_weight > 0 needs labels"),
    (dict(hard_label_weight=1.0, labels=torch.full((N,), V)), ValueError, r"labels hold token ids outside \[0, 13\)"),
    (dict(accum_dtype=torch.float16), TypeError, "accum_dtype must be torch.float32 or torch.float64"),
    (dict(temperature=0.0), ValueError, "temperature must be a positive finite number"),
]


@pytest.mark.parametrize(("change", "kind", "message"), ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_fused_bad_input_raises_clear_one_line_error(change, kind, message):
    args = dict(student_hidden=torch.zeros(N, H), student_weight=torch.zeros(V, H), teacher_hidden=torch.zeros(N, HT),
                teacher_weight=torch.zeros(V, HT), labels=torch.zeros(N, dtype=torch.long))
    args.update(change)
    with pytest.raises(kind, match=message) as info:
        fused_linear_distillation_loss(**args)
    assert "\n" not in str(info.value)


def test_under_autocast_a_float32_head_with_bf16_hidden_states_runs_in_bf16_and_gives_float32_gradients():
    from kldiv.nn import FusedLinearDistillationLoss

    g = torch.Generator().manual_seed(8)
    hidden = torch.randn(12, 16, generator=g).bfloat16().requires_grad_(True)
    weight = torch.randn(40, 16, generator=g).requires_grad_(True)  # float32, as an nn.Linear kept in float32
    teacher_hidden, teacher_weight = torch.randn(12, 16, generator=g).bfloat16(), torch.randn(40, 16, generator=g)
    loss_fn = FusedLinearDistillationLoss("js")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(hidden, weight, teacher_hidden, teacher_weight)
    loss.backward()
    assert weight.grad.dtype == torch.float32 and hidden.grad.dtype == torch.bfloat16
    # the same computation with the casts written out (what autocast does for nn.Linear)
    h, w = hidden.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)
    want = loss_fn(h, w.bfloat16(), teacher_hidden, teacher_weight.bfloat16())
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(weight.grad, w.grad)
    torch.testing.assert_close(hidden.grad, h.grad)


def test_batch_and_sequence_hidden_states_equal_the_loss_on_materialised_logits():
    from kldiv.nn import DistillationLoss, FusedLinearDistillationLoss

    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    teacher_hidden = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    teacher_weight = torch.randn(11, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 3), generator=g)
    labels[0, 1] = -100
    loss = FusedLinearDistillationLoss("js")(hidden, weight, teacher_hidden, teacher_weight, labels)
    loss.backward()
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ref = DistillationLoss("js")(h @ w.t(), teacher_hidden @ teacher_weight.t(), labels)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(hidden.grad, h.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(weight.grad, w.grad, rtol=1e-10, atol=1e-14)


def test_mixed_dtypes_without_autocast_compute_in_the_widest_and_return_each_tensor_its_own_dtype():
    from kldiv.nn import DistillationLoss, FusedLinearDistillationLoss

    g = torch.Generator().manual_seed(9)
    hidden = torch.randn(12, 16, generator=g).bfloat16().requires_grad_(True)
    weight = torch.randn(40, 16, generator=g, dtype=torch.float64).requires_grad_(True)
    teacher_hidden, teacher_weight = torch.randn(12, 8, generator=g), torch.randn(40, 8, generator=g).bfloat16()
    loss = FusedLinearDistillationLoss("kl")(hidden, weight, teacher_hidden, teacher_weight)
    loss.backward()
    assert weight.grad.dtype == torch.float64 and hidden.grad.dtype == torch.bfloat16
    h, w = hidden.detach().double().requires_grad_(True), weight.detach().clone().requires_grad_(True)
    want = DistillationLoss("kl")(h @ w.t(), teacher_hidden.double() @ teacher_weight.double().t())
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(weight.grad, w.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(hidden.grad, h.grad.bfloat16())


@pytest.mark.parametrize("n", [1, 2, 65536])
def test_any_number_of_rows_from_1_to_65536_equals_the_float64_oracle_in_many_chunks(n):
    # chunks of 4096 rows (fused_chunk 16 * 4096 at V = 16): 65536 rows run 16 chunks, 1 and 2 rows one
    g = torch.Generator().manual_seed(n)
    h, w = torch.randn(n, 8, generator=g), torch.randn(16, 8, generator=g)
    th, tw = torch.randn(n, 4, generator=g), torch.randn(16, 4, generator=g)
    labels = torch.randint(0, 16, (n,), generator=g)
    labels[::3] = -100
    with kldiv.config_context(fused_chunk=16 * 4096):
        value, (gh, gw) = _grads(lambda a, b: FusedLinearDistillationLoss("kl")(a, b, th, tw, labels), h, w)

    def oracle(a, b):
        return ref.loss(a.double() @ b.double().T, th.double() @ tw.double().T, labels, divergence="kl")

    want, (wh, ww) = _grads(oracle, h, w)
    _close(value.double(), want, rtol=2e-6, atol=1e-7)
    _close(gh.double(), wh.double(), rtol=1e-4, atol=1e-8)
    _close(gw.double(), ww.double(), rtol=1e-4, atol=1e-7)


def test_fused_chunk_rows_come_from_the_vocabulary_and_the_device():
    from kldiv.nn.kernels._fused import chunk_rows

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert chunk_rows(32000, cpu) == kldiv.get_config().fused_chunk // 32000
    assert chunk_rows(128256, cuda) == 1024  # 2**27 // 128256 = 1046, whole 128-row tiles
    assert chunk_rows(32000, cuda) == 4096
    assert chunk_rows(1 << 20, cuda) == 128 and chunk_rows(1 << 22, cuda) == 32 and chunk_rows(1 << 30, cuda) == 2
    with kldiv.config_context(fused_device_chunk=1 << 20):
        assert chunk_rows(1024, cuda) == 1024
