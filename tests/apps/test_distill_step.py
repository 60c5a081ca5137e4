"""The distillation app's training loss against direct float64 formulas: direction, temperature, position
alignment of teacher, student and labels, hard-label mix; and frozen models keep their eval mode."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from kldiv.apps import charlm  # noqa: E402
from kldiv.apps import distill as distill_app  # noqa: E402
from kldiv.nn import DistillationLoss  # noqa: E402

V = 9


def reference(divergence: str, s_logits, t_logits, temperature: float, beta: float = 0.5, alpha: float = 0.1):
    """Per-position divergence D(teacher ‖ student) at temperature T, float64, written out."""
    log_s = torch.log_softmax(s_logits.double() / temperature, -1)
    log_t = torch.log_softmax(t_logits.double() / temperature, -1)
    s, t = log_s.exp(), log_t.exp()

    def kl(p, q):
        return (p * (p.log() - q.log())).sum(-1)

    return {
        "kl": lambda: kl(t, s),
        "reverse_kl": lambda: kl(s, t),
        "js": lambda: beta * kl(t, beta * t + (1 - beta) * s) + (1 - beta) * kl(s, beta * t + (1 - beta) * s),
        "skew_kl": lambda: kl(t, alpha * t + (1 - alpha) * s),
        "skew_reverse_kl": lambda: kl(s, alpha * s + (1 - alpha) * t),
        "tvd": lambda: 0.5 * (t - s).abs().sum(-1),
    }[divergence]()


@pytest.fixture
def models():
    torch.manual_seed(0)
    student = charlm.CharGRU(V, 4, 6).double()
    teacher = charlm.CharGRU(V, 5, 8).double()
    with torch.no_grad():  # a peaked teacher, so a wrong direction or shift changes the value a lot
        teacher.head.weight.mul_(8)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    windows = torch.randint(0, V, (3, 8))
    return student, teacher, windows[:, :-1], windows[:, 1:]


@pytest.mark.parametrize("divergence", distill_app.DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_step_loss_and_gradient_equal_the_direct_formula(models, divergence, temperature):
    student, teacher, inputs, targets = models
    module = DistillationLoss(divergence, temperature=temperature, scale_by_temperature_squared=True)
    loss, parts = distill_app.step_loss(student, teacher, module, inputs, targets, hard_label_weight=0.0)
    grads = torch.autograd.grad(loss, list(student.parameters()))

    s_logits = student(inputs)[0]
    t_logits = teacher(inputs)[0]  # same positions: both predict targets[:, n] from inputs[:, :n + 1]
    expected = temperature**2 * reference(divergence, s_logits, t_logits, temperature).mean()
    expected_grads = torch.autograd.grad(expected, list(student.parameters()))
    assert float(loss) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-10)
    if divergence == "kl":  # the other direction and a one-position shift give clearly different values
        assert float(loss) != pytest.approx(float(temperature**2 * reference("reverse_kl", s_logits, t_logits, temperature).mean()), rel=1e-3)
        shifted = temperature**2 * reference("kl", s_logits[:, 1:], t_logits[:, :-1], temperature).mean()
        assert float(loss) != pytest.approx(float(shifted), rel=1e-3)


def test_forward_kl_gradient_on_the_logits_is_student_minus_teacher_probabilities(models):
    student, teacher, inputs, targets = models
    temperature = 2.0
    module = DistillationLoss("kl", temperature=temperature, scale_by_temperature_squared=True)
    s_logits = student(inputs)[0].detach().requires_grad_(True)
    t_logits = teacher(inputs)[0]
    module(s_logits.reshape(-1, V), t_logits.reshape(-1, V)).backward()
    n = inputs.numel()
    expected = temperature * (torch.softmax(s_logits.detach() / temperature, -1) - torch.softmax(t_logits / temperature, -1)) / n
    torch.testing.assert_close(s_logits.grad, expected, rtol=1e-9, atol=1e-12)


def test_hard_label_mix_and_from_scratch(models):
    student, teacher, inputs, targets = models
    module = DistillationLoss("kl")
    s_logits = student(inputs)[0]
    ce = torch.nn.functional.cross_entropy(s_logits.reshape(-1, V), targets.reshape(-1))
    kl = reference("kl", s_logits, teacher(inputs)[0], 1.0).mean()
    loss, _ = distill_app.step_loss(student, teacher, module, inputs, targets, hard_label_weight=0.3)
    assert float(loss) == pytest.approx(float(0.7 * kl + 0.3 * ce), rel=1e-9)
    loss, parts = distill_app.step_loss(student, teacher, module, inputs, targets, hard_label_weight=1.0)
    assert float(loss) == pytest.approx(float(ce), rel=1e-12) and "distill_loss" not in parts


def test_top_k_teacher_with_k_equal_to_the_vocabulary_is_the_dense_loss(models):
    student, teacher, inputs, targets = models
    module = DistillationLoss("kl")
    dense, _ = distill_app.step_loss(student, teacher, module, inputs, targets, hard_label_weight=0.0)
    topk, _ = distill_app.step_loss(student, teacher, module, inputs, targets, hard_label_weight=0.0, top_k=V)
    assert float(topk) == pytest.approx(float(dense), rel=1e-9)


class DropoutLM(torch.nn.Module):
    """A model whose output depends on train/eval mode."""

    def __init__(self):
        super().__init__()
        self.inner = charlm.CharGRU(V, 4, 6)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, ids, state=None):
        logits, state = self.inner(ids, state)
        return self.dropout(logits), state


def test_evaluating_or_sampling_a_frozen_teacher_keeps_it_in_eval_mode(models):
    _, _, inputs, targets = models
    model = DropoutLM().eval()
    first = charlm.logits_in_chunks(model, inputs)
    assert not model.training  # used to be switched to train mode here, turning dropout on in later teacher calls
    charlm.generate(model.inner.eval(), charlm.Vocabulary([chr(97 + i) for i in range(V - 1)]), "ab", 3)
    assert not model.inner.training
    torch.testing.assert_close(model(inputs)[0], first)
    model.train()
    charlm.logits_in_chunks(model, inputs)
    assert model.training  # a student being trained goes back to train mode


def test_step_loss_runs_the_teacher_in_eval_mode(models):
    student, _, inputs, targets = models
    teacher = DropoutLM().double().train()
    module = DistillationLoss("kl")
    a, _ = distill_app.step_loss(student, teacher, module, inputs, targets, hard_label_weight=0.0)
    b, _ = distill_app.step_loss(student, teacher, module, inputs, targets, hard_label_weight=0.0)
    assert not teacher.training and math.isclose(float(a), float(b), rel_tol=1e-12)
