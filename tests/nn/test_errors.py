"""Every bad input gets a one-line ValueError/TypeError that says what is wrong and how to fix it."""

from __future__ import annotations

import pytest
import torch

from kldiv.nn import DistillationLoss, TopK
from kldiv.nn.functional import distillation_loss

pytestmark = pytest.mark.usefixtures("cpu_path")  # on both CPU paths of a dense loss (see conftest)

S = torch.randn(2, 3, 8)
T = torch.randn(2, 3, 8)
L = torch.zeros(2, 3, dtype=torch.long)
IDX = torch.zeros(2, 3, 2, dtype=torch.long)
LP = torch.full((2, 3, 2), -3.0)

CASES = [
    (lambda: DistillationLoss("kld"), ValueError, "unknown divergence 'kld'; choose one of 'kl'"),
    (lambda: DistillationLoss("js", beta=1.5), ValueError, r"beta must lie in \[0, 1\], got 1.5"),
    (lambda: DistillationLoss("js", beta=-0.1), ValueError, r"beta must lie in \[0, 1\]"),
    (lambda: DistillationLoss("skew_kl", alpha=2), ValueError, r"alpha must lie in \[0, 1\]"),
    (lambda: DistillationLoss(beta="half"), TypeError, r"beta must be a number in \[0, 1\]"),
    (lambda: DistillationLoss(temperature=0), ValueError, "temperature must be a positive finite number"),
    (lambda: DistillationLoss(temperature=-1.0), ValueError, "temperature must be a positive finite number"),
    (lambda: DistillationLoss(temperature=float("inf")), ValueError, "temperature must be a positive finite"),
    (lambda: DistillationLoss(temperature="2"), TypeError, "temperature must be a positive number"),
    (lambda: DistillationLoss(reduction="avg"), ValueError, "unknown reduction 'avg'; choose one of 'mean'"),
    (lambda: DistillationLoss(ignore_index=1.5), TypeError, "ignore_index must be an integer"),
    (lambda: DistillationLoss(scale_by_temperature_squared=1), TypeError, "must be True or False"),
    (lambda: distillation_loss(S, T, L.float()), TypeError, "labels has dtype torch.float32; it must be an integer"),
    (lambda: distillation_loss(S, T, L.bool()), TypeError, "labels has dtype torch.bool"),
    (lambda: distillation_loss(S, T, L[:, :2]), ValueError, r"labels has shape \(2, 2\) but student_logits has batch shape \(2, 3\)"),
    (lambda: distillation_loss(S, T, [0, 1]), TypeError, "labels must be a torch.Tensor"),
    (lambda: distillation_loss(S, T[:, :2]), ValueError, r"all axes but the last .* must be equal"),
    (lambda: distillation_loss(S, T[..., :6]), ValueError, "student_logits has 8 entries .* teacher_logits has 6; .* pass vocab_size=6"),
    (lambda: distillation_loss(S, T, vocab_size=9), ValueError, r"vocab_size=9 must lie in \[1, 8\]"),
    (lambda: distillation_loss(S, T, vocab_size=0), ValueError, r"vocab_size=0 must lie in \[1, 8\]"),
    (lambda: distillation_loss(S, T, vocab_size=4.0), TypeError, "vocab_size must be an integer"),
    (lambda: distillation_loss(S.numpy(), T), TypeError, "student_logits must be a torch.Tensor, got ndarray"),
    (lambda: distillation_loss(S, T.long()), TypeError, "teacher_logits has dtype torch.int64; it must be a floating"),
    (lambda: distillation_loss(S[0, 0, 0], T), ValueError, "student_logits is a scalar"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=0), ValueError, "num_items_in_batch is 0 but this batch keeps 6"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=torch.tensor(0)), ValueError, "is 0 but this batch keeps 6"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=-2), ValueError, "must be a count >= 0 .* got -2"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=torch.tensor(-2)), ValueError, "must be a count >= 0 .* got -2"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=torch.tensor(float("nan"))), ValueError, "got nan"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=torch.tensor(True)), TypeError, "got a bool tensor"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=5, reduction="sum"), ValueError, "only applies with reduction='mean'"),
    (lambda: distillation_loss(S, T, L, num_items_in_batch=torch.ones(2)), ValueError, "must be a single number"),
    (lambda: distillation_loss(S, TopK(IDX, LP)), ValueError, "TopK.indices repeats token id 0 in kept row 0"),
    (lambda: distillation_loss(S, TopK(IDX + torch.tensor([0, 1]), LP + 3.5)), ValueError, "TopK.logprobs holds 0.5 > 0"),
    (lambda: distillation_loss(S, TopK(IDX + torch.tensor([0, 1]), LP + 3.5), tail="renormalize"), ValueError, "holds 0.5 > 0"),
    (lambda: distillation_loss(S, T, tail="drop"), ValueError, "unknown tail 'drop'"),
    (lambda: TopK(IDX.float(), LP), TypeError, "TopK.indices has dtype torch.float32; it must hold integer token ids"),
    (lambda: TopK(IDX, LP.long()), TypeError, "TopK.logprobs has dtype torch.int64"),
    (lambda: TopK(IDX, LP[..., :1]), ValueError, "they must have the same shape"),
    (lambda: TopK(IDX.tolist(), LP), TypeError, "TopK needs torch tensors"),
    (lambda: TopK(IDX, LP, tail="keep"), ValueError, "unknown tail 'keep'"),
    (lambda: TopK(IDX[..., :0], LP[..., :0]), ValueError, "k = 0"),
    (lambda: distillation_loss(S, TopK(IDX[:1], LP[:1])), ValueError, "TopK.indices has shape"),
    (lambda: distillation_loss(S, TopK(IDX + 8, LP)), ValueError, r"token id 8, outside the vocabulary \[0, 8\)"),
    (lambda: distillation_loss(S, TopK(IDX - 1, LP)), ValueError, "token id -1"),
    (lambda: distillation_loss(S, TopK(IDX + torch.tensor([0, 1]), LP + 2.9)), ValueError, "log-probabilities .* not raw logits"),
    (lambda: distillation_loss(S, torch.full_like(T, -float("inf"))), ValueError, r"the loss is NaN at position \(0, 0\)"),
    (lambda: distillation_loss(torch.full_like(S, float("nan")), T), ValueError, "NaN or \\+inf"),
]


@pytest.mark.parametrize(("call", "kind", "message"), CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_raises_one_line_error_saying_what_and_how(call, kind, message):
    with pytest.raises(kind, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_an_all_masked_global_batch_with_num_items_zero_has_loss_and_gradient_zero():
    student = S.clone().requires_grad_()
    loss = distillation_loss(student, T, torch.full((2, 3), -100), num_items_in_batch=torch.tensor(0))
    loss.backward()
    assert float(loss) == 0.0 and bool((student.grad == 0).all())


def test_num_items_as_a_tensor_weighs_as_the_same_number():
    by_tensor = distillation_loss(S, T, L, num_items_in_batch=torch.tensor(7))
    by_number = distillation_loss(S, T, L, num_items_in_batch=7)
    summed = distillation_loss(S, T, L, reduction="sum")
    torch.testing.assert_close(by_tensor, by_number)
    torch.testing.assert_close(by_tensor, summed / 7)


def test_checked_options_are_remembered_by_value_and_type():
    # the memo of checked options must not let a refused value through under an equal accepted one
    DistillationLoss(temperature=1, scale_by_temperature_squared=False, softcap=(30, None))
    for bad in (dict(temperature=True), dict(scale_by_temperature_squared=0), dict(softcap=(True, None))):
        with pytest.raises(TypeError):
            DistillationLoss(**bad)
    s = torch.randn(2, 5, requires_grad=True)
    t = torch.randn(2, 5)
    assert distillation_loss(s, t, temperature=2) == distillation_loss(s, t, temperature=2.0)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        distillation_loss(s, t, temperature=-2)


def test_second_derivatives_through_the_losses_are_refused_with_one_clear_message():
    from kldiv.nn import FusedLinearDistillationLoss

    s, t = torch.randn(3, 6, requires_grad=True), torch.randn(3, 6)
    with pytest.raises(RuntimeError, match="distillation loss has first derivatives only"):
        torch.autograd.grad(DistillationLoss("kl")(s, t), s, create_graph=True)
    h, w = torch.randn(3, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="fused linear loss has first derivatives only"):
        torch.autograd.grad(FusedLinearDistillationLoss("kl")(h, w, teacher_logits=t), h, create_graph=True)
