"""Backends: PyTorch parity (values, dtypes, devices, autograd), lazy imports, JAX when installed."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import kldiv

rng = np.random.default_rng(3)
NAMES = ["kl", "js", "skew_kl", "tvd", "hellinger", "cross_entropy"]


def simplex(*shape):
    x = rng.random(shape)
    return x / x.sum(-1, keepdims=True)


def test_import_kldiv_does_not_import_torch_or_jax():
    code = "import sys, kldiv; kldiv.kl([0.5, 0.5], [0.5, 0.5]); print('torch' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("name", NAMES + ["renyi"])
def test_torch_and_numpy_give_the_same_values(name):
    p, q = simplex(4, 7), simplex(4, 7)
    params = {"alpha": 0.7} if name == "renyi" else {}
    f = getattr(kldiv, name)
    value = f(torch.tensor(p), torch.tensor(q), **params)
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float64 and value.shape == (4,)
    np.testing.assert_allclose(value.numpy(), f(p, q, **params), rtol=1e-14)


def test_torch_float32_chunked_path_matches_float64():
    x = torch.randn(300, 20000)
    y = torch.randn(300, 20000)
    value = kldiv.kl(x, y, from_logits=True)
    reference = kldiv.kl(x.double().numpy(), y.double().numpy(), from_logits=True)
    np.testing.assert_allclose(value.numpy(), reference, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_torch_computes_in_float32_and_returns_input_dtype(dtype):
    x, y = torch.randn(3, 50), torch.randn(3, 50)
    value = kldiv.kl(x.to(dtype), y.to(dtype), from_logits=True)
    assert value.dtype == dtype
    reference = kldiv.kl(x.to(dtype).double(), y.to(dtype).double(), from_logits=True)
    torch.testing.assert_close(value.double(), reference, rtol=1e-2, atol=1e-3)


def test_bfloat16_gradient_is_accurate_against_float64():
    x = torch.randn(8, 1000).to(torch.bfloat16).requires_grad_()
    y = torch.randn(8, 1000).to(torch.bfloat16)
    kldiv.kl(y, x, from_logits=True).sum().backward()
    x64 = x.detach().double().requires_grad_()
    torch.nn.functional.kl_div(x64.log_softmax(-1), y.double().log_softmax(-1), log_target=True,
                               reduction="sum").backward()
    error = (x.grad.double() - x64.grad).norm() / x64.grad.norm()
    assert error < 1e-2


def test_lists_adopt_the_backend_of_the_tensor_argument():
    value = kldiv.kl(torch.tensor([0.1, 0.9]), [0.9, 0.1])
    assert isinstance(value, torch.Tensor)
    assert float(value) == pytest.approx(float(kldiv.kl([0.1, 0.9], [0.9, 0.1])))


def test_torch_autograd_matches_kldiv_grad_with_upstream_and_broadcasting():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, dtype=torch.float64)
    (kldiv.js(x, y, from_logits=True) * upstream).sum().backward()
    gx, gy = kldiv.grad.js(x.detach(), y.detach(), upstream=upstream, from_logits=True)
    torch.testing.assert_close(x.grad, gx, rtol=1e-12, atol=0)
    torch.testing.assert_close(y.grad, gy, rtol=1e-12, atol=0)
    assert gy.shape == (5,)


def test_validation_errors_work_for_tensors():
    with pytest.raises(ValueError, match=r"p\[0, 1\] = -0.5 is negative"):
        kldiv.kl(torch.tensor([[0.5, -0.5]]), torch.tensor([[0.5, 0.5]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_tensors_stay_on_the_gpu():
    x = torch.randn(4, 100, device="cuda")
    value = kldiv.kl(x, x.flip(-1), from_logits=True)
    assert value.device.type == "cuda"


def test_jax_arrays_when_jax_is_installed():
    jnp = pytest.importorskip("jax.numpy")
    import jax

    p, q = simplex(3, 6), simplex(3, 6)
    value = kldiv.kl(jnp.asarray(p), jnp.asarray(q))
    np.testing.assert_allclose(np.asarray(value), kldiv.kl(p, q), rtol=1e-6)
    jitted = jax.jit(lambda a, b: kldiv.kl(a, b, from_logits=True))
    np.testing.assert_allclose(np.asarray(jitted(jnp.asarray(p), jnp.asarray(q))),
                               kldiv.kl(p, q, from_logits=True), rtol=1e-4, atol=1e-7)  # JAX defaults to float32


def test_validation_is_skipped_while_torch_compile_traces():
    compiled = torch.compile(lambda a, b: kldiv.kl(a, b, from_logits=True), backend="eager")
    x, y = torch.randn(2, 5), torch.randn(2, 5)
    torch.testing.assert_close(compiled(x, y), kldiv.kl(x, y, from_logits=True))
    assert math.isfinite(float(compiled(x, y).sum()))


def test_jax_grad_uses_the_exact_vjp_even_with_minus_inf_logits():
    jnp = pytest.importorskip("jax.numpy")
    import jax

    x = np.array([[0.2, -np.inf, 1.0], [0.5, 0.5, 0.1]])
    y = np.array([0.5, 0.5, 0.0])
    upstream = np.array([1.0, 2.0])
    gx, gy = jax.grad(lambda a, b: (kldiv.js(a, b, from_logits=True) * upstream).sum(), argnums=(0, 1))(
        jnp.asarray(x), jnp.asarray(y)
    )
    ex, ey = kldiv.grad.js(x, y, from_logits=True, upstream=upstream)
    np.testing.assert_allclose(np.asarray(gx), ex, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gy), ey, rtol=1e-5, atol=1e-7)


def test_empty_torch_batch_gives_empty_tensors_for_values_and_gradients():
    x = torch.zeros(0, 3, dtype=torch.float64)
    assert kldiv.kl(x, x, from_logits=True).shape == (0,)
    gx, gy = kldiv.grad.kl(x, x, from_logits=True)
    assert isinstance(gx, torch.Tensor) and gx.shape == (0, 3) and gy.device == x.device
