"""The Triton kernels (kernel="triton") give the row forms' numbers: run on CPU tensors through Triton's interpreter.

Oracles: the float64 reference losses of ``nn_reference`` (direct formulas over log-softmaxes, autograd for the
gradient) and the eager kernels. ``TRITON_INTERPRET`` must be set before ``triton.jit`` decorates the kernels:
this module sets it when the tests are collected (no other test uses Triton).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import nn_reference as ref  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import kldiv  # noqa: E402
from kldiv.nn.functional import distillation_loss  # noqa: E402

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="TRITON_INTERPRET=0 was set")

DIVERGENCES = ("kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd")


def _loss_and_grad(kernel, s, t, **kw):
    with kldiv.config_context(kernel=kernel):
        x = s.detach().clone().requires_grad_(True)
        rows = distillation_loss(x, t, reduction="none", **kw)
        rows.float().sum().backward()
    return rows.detach(), x.grad


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_triton_kernel_equals_the_float64_reference_value_and_gradient(divergence, temperature):
    g = torch.Generator().manual_seed(3)
    s, t = 3 * torch.randn(2, 3, 50, generator=g), 3 * torch.randn(2, 3, 50, generator=g)
    labels = torch.tensor([[0, -100, 2], [3, 4, -100]])
    kw = dict(divergence=divergence, temperature=temperature, beta=0.3, alpha=0.2, labels=labels)
    rows, grad = _loss_and_grad("triton", s, t, **kw)
    x = s.double().requires_grad_(True)
    want = ref.loss(x, t.double(), labels, divergence=divergence, beta=0.3, alpha=0.2, temperature=temperature,
                    reduction="none")
    want.sum().backward()
    torch.testing.assert_close(rows.double(), want.detach(), rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), x.grad, rtol=1e-4, atol=1e-6)
    assert grad[0, 1].abs().max() == 0 and grad[1, 2].abs().max() == 0  # masked rows: never read, gradient 0


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_topk_teachers_run_the_triton_kernel_on_their_outcomes_and_equal_the_float64_reference(divergence, tail):
    from kldiv.nn import TopK

    g = torch.Generator().manual_seed(7)
    s, t = 3 * torch.randn(5, 60, generator=g), 3 * torch.randn(5, 60, generator=g)
    lp, idx = torch.log_softmax(t, -1).topk(6, -1)
    labels = torch.tensor([0, 1, -100, 3, 4])
    kw = dict(divergence=divergence, temperature=1.7, beta=0.3, alpha=0.2)
    with kldiv.config_context(kernel="triton"):
        x = s.clone().requires_grad_(True)
        rows = distillation_loss(x, TopK(idx, lp), labels, tail=tail, reduction="none", **kw)
        rows.sum().backward()
    y = s.double().requires_grad_(True)
    want = ref.topk_loss(y, idx, lp.double(), labels, tail=tail, reduction="none", **kw)
    want.sum().backward()
    torch.testing.assert_close(rows.double(), want.detach(), rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), y.grad, rtol=1e-4, atol=1e-6)
    assert x.grad[2].abs().max() == 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_rows_that_are_not_tame_come_back_from_the_guarded_formulas(divergence):
    g = torch.Generator().manual_seed(4)
    s, t = 3 * torch.randn(6, 40, generator=g), 3 * torch.randn(6, 40, generator=g)
    s[1, :5] = -float("inf")  # impossible tokens for the student: KL(T || S) = inf
    t[2, 3:9] = -float("inf")
    s[3, 7], t[4, 0] = -150.0, 120.0  # spans beyond the tame bound
    want_rows, want_grad = _loss_and_grad("eager", s, t, divergence=divergence)
    rows, grad = _loss_and_grad("triton", s, t, divergence=divergence)
    torch.testing.assert_close(rows, want_rows, rtol=2e-5, atol=1e-6)
    finite = torch.isfinite(want_grad)
    assert torch.equal(finite, torch.isfinite(grad))
    torch.testing.assert_close(grad[finite], want_grad[finite], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_compute_in_float32_and_give_the_gradient_in_their_dtype(dtype):
    g = torch.Generator().manual_seed(5)
    s, t = (3 * torch.randn(4, 64, generator=g)).to(dtype), (3 * torch.randn(4, 64, generator=g)).to(dtype)
    rows, grad = _loss_and_grad("triton", s, t, divergence="js")
    want_rows, want_grad = _loss_and_grad("eager", s, t, divergence="js")
    assert rows.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(rows, want_rows, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(grad.float(), want_grad.float(), rtol=1e-2, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(1, 4), vocab=st.integers(2, 70), scale=st.floats(0.0, 8.0),
    divergence=st.sampled_from(DIVERGENCES), seed=st.integers(0, 2**16),
)
def test_any_logits_give_the_eager_kernels_numbers(rows, vocab, scale, divergence, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = scale * torch.randn(rows, vocab, generator=g), scale * torch.randn(rows, vocab, generator=g)
    got_rows, got_grad = _loss_and_grad("triton", s, t, divergence=divergence)
    want_rows, want_grad = _loss_and_grad("eager", s, t, divergence=divergence)
    torch.testing.assert_close(got_rows, want_rows, rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=2e-6)


def test_kernel_choice_is_checked_and_triton_on_cpu_needs_the_interpreter(monkeypatch):
    with pytest.raises(ValueError, match="kernel must be one of 'auto', 'triton', 'compiled', 'eager'"):
        kldiv.Config(kernel="cuda")
    s, t = torch.randn(2, 8), torch.randn(2, 8)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with kldiv.config_context(kernel="triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        distillation_loss(s, t)
    with kldiv.config_context(kernel="auto"):  # CPU tensors under auto never take Triton
        torch.testing.assert_close(distillation_loss(s, t), distillation_loss(s.double(), t.double()).float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_tensors_take_the_triton_kernel_and_match_the_reference():
    g = torch.Generator().manual_seed(6)
    s, t = 3 * torch.randn(64, 4096, generator=g), 3 * torch.randn(64, 4096, generator=g)
    for divergence in DIVERGENCES:
        rows, grad = _loss_and_grad("auto", s.cuda(), t.cuda(), divergence=divergence)
        x = s.double().requires_grad_(True)
        want = ref.loss(x, t.double(), divergence=divergence, reduction="none")
        want.sum().backward()
        torch.testing.assert_close(rows.double().cpu(), want.detach(), rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(grad.double().cpu(), x.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("KLDIV_KERNEL", "cuda", "KLDIV_KERNEL must be auto, triton, compiled or eager, got 'cuda'"),
    ("KLDIV_COMPILE", "sometimes", "KLDIV_COMPILE must be auto, always or never, got 'sometimes'"),
])
def test_a_bad_environment_default_is_a_one_line_error_naming_the_variable(monkeypatch, variable, value, message):
    from kldiv import _config

    monkeypatch.setattr(_config, "_process_default", None)  # the defaults are read again on first use
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        kldiv.get_config()
    monkeypatch.delenv(variable)
    assert kldiv.get_config().kernel == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_fused_linear_bf16_gradients_within_1e2_of_float64_in_several_chunks():
    from kldiv.nn import FusedLinearDistillationLoss

    g = torch.Generator().manual_seed(7)
    # inputs rounded to bf16 first: the oracle is float64 arithmetic on the same numbers
    h, w = (torch.randn(300, 64, generator=g) / 8).bfloat16(), torch.randn(2048, 64, generator=g).bfloat16()
    th, tw = (torch.randn(300, 32, generator=g) / 6).bfloat16(), torch.randn(2048, 32, generator=g).bfloat16()
    x, y = h.double().requires_grad_(True), w.double().requires_grad_(True)
    want = ref.loss(x @ y.T, th.double() @ tw.double().T, divergence="js")
    want.backward()
    hc, wc = h.cuda().requires_grad_(True), w.cuda().requires_grad_(True)
    with kldiv.config_context(fused_device_chunk=128 * 2048):  # 128-row chunks: three of them
        got = FusedLinearDistillationLoss("js")(hc, wc, th.cuda(), tw.cuda())
        got.backward()
    assert abs(float(got) - float(want)) <= 1e-2 * float(want)
    for mine, exact in ((hc.grad, x.grad), (wc.grad, y.grad)):
        assert float((mine.double().cpu() - exact).norm() / exact.norm()) <= 1e-2
