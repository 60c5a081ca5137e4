"""Final-logit soft-capping and logit scale (softcap=, logit_scale=) in every loss, against the naive float64
computation with autograd through ``cap * tanh(scale * x / cap)`` on materialised logits."""

from __future__ import annotations

import nn_reference as ref
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kldiv.nn import DistillationLoss, FusedLinearDistillationLoss, TopK
from kldiv.nn.functional import distillation_loss


def capped(x: torch.Tensor, cap, scale) -> torch.Tensor:
    return x * scale if cap is None else cap * torch.tanh(scale * x / cap)


def pair(value, side):
    return value[side] if isinstance(value, tuple) else value


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "skew_kl", "tvd"])
@pytest.mark.parametrize(("softcap", "logit_scale"), [(30.0, 1.0), (5.0, 0.5), (None, 0.25), ((4.0, None), (1.0, 2.0))])
def test_capped_losses_and_gradients_equal_autograd_through_tanh(divergence, softcap, logit_scale):
    g = torch.Generator().manual_seed(1)
    student = (torch.randn(3, 4, 50, generator=g, dtype=torch.float64) * 8).requires_grad_()
    teacher = torch.randn(3, 4, 50, generator=g, dtype=torch.float64) * 8
    labels = torch.randint(0, 50, (3, 4), generator=g)
    labels[1, 2] = -100
    options = dict(divergence=divergence, temperature=1.7, scale_by_temperature_squared=True)
    got = distillation_loss(student, teacher, labels, softcap=softcap, logit_scale=logit_scale, **options)
    (grad,) = torch.autograd.grad(got, student)
    s = student.detach().clone().requires_grad_()
    want = ref.loss(capped(s, pair(softcap, 0), pair(logit_scale, 0)),
                    capped(teacher, pair(softcap, 1), pair(logit_scale, 1)), labels, **options)
    (grad_want,) = torch.autograd.grad(want, s)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, grad_want, rtol=1e-10, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(cap=st.floats(0.5, 50.0), spread=st.floats(0.1, 200.0), seed=st.integers(0, 2**16))
def test_the_gradient_through_the_cap_stays_exact_where_tanh_saturates(cap, spread, seed):
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(2, 30, generator=g, dtype=torch.float64) * spread).requires_grad_()
    teacher = torch.randn(2, 30, generator=g, dtype=torch.float64) * spread
    got = DistillationLoss("kl", softcap=cap)(student, teacher)
    (grad,) = torch.autograd.grad(got, student)
    s = student.detach().clone().requires_grad_()
    want = ref.loss(capped(s, cap, 1.0), capped(teacher, cap, 1.0))
    (grad_want,) = torch.autograd.grad(want, s)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-15)
    torch.testing.assert_close(grad, grad_want, rtol=1e-9, atol=1e-15)


def test_a_topk_teacher_is_taken_as_given_and_the_student_is_capped():
    g = torch.Generator().manual_seed(2)
    student = (torch.randn(5, 40, generator=g, dtype=torch.float64) * 6).requires_grad_()
    lp, idx = torch.log_softmax(torch.randn(5, 40, generator=g, dtype=torch.float64), -1).topk(6, -1)
    got = distillation_loss(student, TopK(idx, lp), divergence="js", softcap=3.0)
    (grad,) = torch.autograd.grad(got, student)
    s = student.detach().clone().requires_grad_()
    want = ref.topk_loss(capped(s, 3.0, 1.0), idx, lp, divergence="js")
    (grad_want,) = torch.autograd.grad(want, s)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, grad_want, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("teacher_kind", ["head", "logits", "topk"])
def test_the_fused_loss_caps_each_chunk_like_the_materialised_logits(teacher_kind):
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (torch.randn(40, 6, generator=g, dtype=torch.float64) * 4).requires_grad_()
    t_hidden = torch.randn(9, 5, generator=g, dtype=torch.float64)
    t_weight = torch.randn(40, 5, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(0, 40, (9,), generator=g)
    labels[2] = -100
    t_logits = t_hidden @ t_weight.t()
    lp, idx = torch.log_softmax(capped(t_logits, 2.0, 1.5), -1).topk(5, -1)
    loss_fn = FusedLinearDistillationLoss("reverse_kl", temperature=2.0, hard_label_weight=0.3, softcap=(3.0, 2.0),
                                          logit_scale=(1.0, 1.5))
    if teacher_kind == "head":
        got = loss_fn(hidden, weight, t_hidden, t_weight, labels)
    elif teacher_kind == "logits":
        got = loss_fn(hidden, weight, labels=labels, teacher_logits=t_logits)
    else:
        got = loss_fn(hidden, weight, labels=labels, teacher_logits=TopK(idx, lp))
    grads = torch.autograd.grad(got, (hidden, weight))
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    z = capped(h @ w.t(), 3.0, 1.0)
    if teacher_kind == "topk":
        soft = ref.topk_loss(z, idx, lp, labels, divergence="reverse_kl", temperature=2.0)
    else:
        soft = ref.loss(z, capped(t_logits, 2.0, 1.5), labels, divergence="reverse_kl", temperature=2.0)
    want = soft + 0.3 * torch.nn.functional.cross_entropy(z, labels)
    grads_want = torch.autograd.grad(want, (h, w))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    for a, b in zip(grads, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(("kwargs", "kind", "message"), [
    (dict(softcap=0.0), ValueError, "softcap must be a positive finite number"),
    (dict(softcap=-3), ValueError, "softcap must be a positive finite number"),
    (dict(softcap="30"), TypeError, "softcap must be a positive number or None"),
    (dict(softcap=(1.0, 2.0, 3.0)), ValueError, r"one value for both sides or a pair \(student, teacher\)"),
    (dict(logit_scale=0), ValueError, "logit_scale must be a positive finite number"),
    (dict(logit_scale=(1.0, float("inf"))), ValueError, r"logit_scale\[1\] \(teacher\) must be a positive finite"),
])
def test_bad_softcap_and_logit_scale_are_one_line_errors(kwargs, kind, message):
    with pytest.raises(kind, match=message):
        DistillationLoss(**kwargs)
    with pytest.raises(kind, match=message):
        FusedLinearDistillationLoss(**kwargs)
