"""torch.func: values under vmap equal the per-row calls; gradient transforms get one clear error.

vmap batches kldiv's own torch operations (the engine sees the batched tensors as traced values: no value is read,
so there is no validation, as inside torch.compile); the gradient transforms cannot see through kldiv's autograd
Functions, whose gradients are computed in the forward pass, and are refused with a pointer to what works.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import kldiv
import kldiv.grad
from kldiv.nn import DistillationLoss, FusedLinearDistillationLoss
from kldiv.nn.functional import distillation_loss

MEASURES = [
    ("kl", kldiv.kl),
    ("cross_entropy", kldiv.cross_entropy),
    ("js", functools.partial(kldiv.js, weight=0.3)),
    ("skew_kl", functools.partial(kldiv.skew_kl, alpha=0.2)),
    ("tvd", kldiv.tvd),
    ("hellinger", kldiv.hellinger),
    ("renyi", functools.partial(kldiv.renyi, alpha=0.5)),
    ("renyi2", functools.partial(kldiv.renyi, alpha=2.0)),
]


def _logits(rows: int = 6, v: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a, b = 3 * torch.randn(rows, v, generator=g, dtype=torch.float64), 3 * torch.randn(rows, v, generator=g, dtype=torch.float64)
    a[1, 2] = -torch.inf  # an outcome P rules out
    b[2, 3] = -torch.inf  # one Q rules out
    b[3] = a[3]  # identical rows
    a[4, :4] = b[4, :4] = -torch.inf  # a shared zero block
    return a, b


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize(("name", "f"), MEASURES, ids=[m[0] for m in MEASURES])
def test_vmap_of_a_measure_equals_its_rows_one_by_one(name, f, from_logits):
    a, b = _logits()
    x, y = (a, b) if from_logits else (torch.softmax(a, -1), torch.softmax(b, -1))
    g = functools.partial(f, from_logits=from_logits)
    got = torch.func.vmap(g)(x, y)
    want = torch.stack([g(x[i], y[i]) for i in range(x.shape[0])])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, equal_nan=True)
    # one side batched, the other shared; and a batch of batches
    got = torch.func.vmap(g, in_dims=(0, None))(x, y[0])
    want = torch.stack([g(x[i], y[0]) for i in range(x.shape[0])])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, equal_nan=True)
    got = torch.func.vmap(torch.func.vmap(g))(x.reshape(2, 3, -1), y.reshape(2, 3, -1))
    torch.testing.assert_close(got.reshape(-1), g(x, y), rtol=1e-12, atol=1e-14, equal_nan=True)


def test_vmap_of_kl_in_float32_matches_float64_and_carries_nan():
    a, b = _logits()
    got = torch.func.vmap(lambda u, w: kldiv.kl(u, w, from_logits=True))(a.float(), b.float())
    want = kldiv.kl(a, b, from_logits=True)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    a[0, 0] = torch.nan  # no validation under vmap (as under torch.compile): NaN in, NaN out, never 0
    got = torch.func.vmap(lambda u, w: kldiv.kl(u, w, from_logits=True))(a, b)
    assert torch.isnan(got[0]) and torch.isfinite(got[1:]).sum() == 4 and got[2] == torch.inf


def test_vmap_of_kldiv_grad_equals_its_rows_one_by_one():
    a, b = _logits()
    ga, gb = torch.func.vmap(lambda u, w: kldiv.grad.kl(u, w, from_logits=True))(a, b)
    for i in range(a.shape[0]):
        wa, wb = kldiv.grad.kl(a[i], b[i], from_logits=True)
        torch.testing.assert_close(ga[i], wa, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(gb[i], wb, rtol=1e-12, atol=1e-14)
    # outcomes on the first axis of each (3, 9)^T sample: the gradient comes back in the input's layout
    x, y = a.reshape(2, 3, 9).transpose(1, 2), b.reshape(2, 3, 9).transpose(1, 2)
    values = torch.func.vmap(lambda u, w: kldiv.js(u, w, from_logits=True, axis=0))(x, y)
    torch.testing.assert_close(values.reshape(-1), kldiv.js(a, b, from_logits=True))
    ga, _ = torch.func.vmap(lambda u, w: kldiv.grad.js(u, w, from_logits=True, axis=0))(x, y)
    want, _ = kldiv.grad.js(a, b, from_logits=True)
    torch.testing.assert_close(ga.transpose(1, 2).reshape(6, 9), want, rtol=1e-12, atol=1e-14)


def test_gradient_transforms_get_one_clear_error():
    a, b = _logits()
    p = torch.softmax(b[0], -1)
    w = torch.randn(9, 4, dtype=torch.float64)
    calls = [
        lambda: torch.func.grad(lambda x: kldiv.kl(x, p))(torch.softmax(a[0], -1)),
        lambda: torch.func.grad(lambda x: kldiv.js(x, b[0], from_logits=True))(a[0]),
        lambda: torch.func.jacrev(lambda x: kldiv.kl(x, b, from_logits=True))(a),
        lambda: torch.func.hessian(lambda x: kldiv.tvd(x, b[0], from_logits=True))(a[0]),
        lambda: torch.func.jvp(lambda x: kldiv.kl(x, b[0], from_logits=True), (a[0],), (torch.ones(9, dtype=a.dtype),)),
        lambda: torch.func.vmap(torch.func.grad(lambda x, y: kldiv.kl(x, y, from_logits=True)))(a, b),
        lambda: torch.func.grad(lambda x: kldiv.grad.kl(x, b[0], from_logits=True)[0].sum())(a[0]),
        lambda: torch.func.grad(lambda x: DistillationLoss("kl")(x, b))(a),
        lambda: torch.func.grad(lambda h: FusedLinearDistillationLoss("kl")(h, w.T, teacher_logits=b))(torch.randn(6, 4, dtype=torch.float64)),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="does not run under torch.func's gradient transforms"):
            call()
    # vmap over tensors that require grad: the batched values would need kldiv's gradient too
    x = a.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="gradient transforms"):
        torch.func.vmap(lambda u, w: kldiv.kl(u, w, from_logits=True))(x, b)
    with pytest.raises(RuntimeError, match=r"does not run under torch.func.vmap: call it on the batched tensors"):
        torch.func.vmap(lambda u, w: distillation_loss(u[None], w[None]))(a, b)


def test_outside_any_transform_nothing_changes():
    a, b = _logits()
    x = a.clone().requires_grad_()
    kldiv.kl(x, b, from_logits=True).sum().backward()
    want = kldiv.grad.kl(a, b, from_logits=True)[0]
    np.testing.assert_allclose(x.grad.numpy(), want.numpy(), rtol=1e-12, atol=1e-14)
