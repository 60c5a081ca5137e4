"""``divergence="generalized_jsd"`` is TRL's generalized JSD: equal to TRL's own ``generalized_jsd_loss`` (value
and gradient) at its endpoints and inside, with temperatures, ignored labels and ``num_items_in_batch``.

Oracle: ``trl``'s function itself (in the test extra); the endpoint mapping is also checked without it.
"""

from __future__ import annotations

import pytest
import torch

from kldiv.nn import DistillationLoss, FusedLinearDistillationLoss
from kldiv.nn.functional import distillation_loss

BETAS = (0.0, 0.1, 0.5, 0.9, 1.0)


def _trl_loss():
    pytest.importorskip("trl")
    try:
        from trl.experimental.gkd.gkd_trainer import GKDTrainer  # trl >= 1.0
    except ImportError:
        from trl import GKDTrainer
    return GKDTrainer.generalized_jsd_loss


def _value_and_grad(fn, s):
    x = s.detach().clone().requires_grad_(True)
    value = fn(x)
    value.backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("num_items", [None, 11])
def test_generalized_jsd_equals_trls_generalized_jsd_loss(beta, temperature, num_items):
    trl_loss = _trl_loss()
    g = torch.Generator().manual_seed(int(beta * 10) + int(temperature))
    s = 2 * torch.randn(2, 5, 40, generator=g, dtype=torch.float64)
    t = 2 * torch.randn(2, 5, 40, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 40, (2, 5), generator=g)
    labels[0, 1] = labels[1, 4] = -100
    want_v, want_g = _value_and_grad(
        lambda x: trl_loss(x, t, labels=labels, beta=beta, temperature=temperature, num_items_in_batch=num_items), s
    )
    loss = DistillationLoss("generalized_jsd", beta=beta, temperature=temperature)  # "mean" = TRL's batchmean
    got_v, got_g = _value_and_grad(lambda x: loss(x, t, labels, num_items_in_batch=num_items), s)
    torch.testing.assert_close(got_v, want_v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_g, want_g, rtol=1e-8, atol=1e-12)


def test_trls_sum_reduction_is_kldivs_sum():
    trl_loss = _trl_loss()
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(3, 4, 16, generator=g, dtype=torch.float64), torch.randn(3, 4, 16, generator=g, dtype=torch.float64)
    want = trl_loss(s, t, beta=0.3, reduction="sum")
    torch.testing.assert_close(distillation_loss(s, t, divergence="generalized_jsd", beta=0.3, reduction="sum"), want)


@pytest.mark.parametrize("beta", BETAS)
def test_generalized_jsd_is_forward_kl_at_0_reverse_kl_at_1_and_js_inside(beta):
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(6, 30, generator=g), torch.randn(6, 30, generator=g)
    same = {0.0: "kl", 1.0: "reverse_kl"}.get(beta, "js")
    got = distillation_loss(s, t, divergence="generalized_jsd", beta=beta, reduction="none")
    assert torch.equal(got, distillation_loss(s, t, divergence=same, beta=beta, reduction="none"))
    if beta in (0.0, 1.0):
        assert (got > 0).all()  # not "js"'s continuous limit, 0, on which a ported TRL config would train nothing
    h, w = torch.randn(6, 8, generator=g), torch.randn(30, 8, generator=g)
    fused = FusedLinearDistillationLoss("generalized_jsd", beta=beta, reduction="sum")(h, w, h + 0.1, w)
    torch.testing.assert_close(
        fused, FusedLinearDistillationLoss(same, beta=beta, reduction="sum")(h, w, h + 0.1, w), rtol=0, atol=0
    )
