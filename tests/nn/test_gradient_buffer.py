"""The huge-page gradient buffers and their pool: reuse only what no tensor uses, zeros where asked, bounded."""

from __future__ import annotations

import pytest
import torch

import kldiv
from kldiv.nn import DistillationLoss, _memory

pytestmark = pytest.mark.skipif(not _memory._POSSIBLE, reason="no transparent huge pages on this machine")

SMALL = dict(huge_page_min_bytes=1 << 12)  # pooled buffers from 4 KiB, so the tests stay small


@pytest.fixture(autouse=True)
def _empty_pool():
    _memory._POOL.clear()
    yield
    _memory._POOL.clear()


def _address(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_a_freed_buffer_is_reused_and_a_live_one_never_is():
    like = torch.empty(64, 100)
    with kldiv.config_context(**SMALL):
        first = _memory.gradient_buffer(like, zero=False)
        first.fill_(7.0)
        view = first[3:5]  # a view keeps the mapping in use after the tensor itself is gone
        address = _address(first)
        del first
        second = _memory.gradient_buffer(like, zero=False)
        assert _address(second) != address and bool((view == 7.0).all())
        del view, second
        third = _memory.gradient_buffer(like, zero=False)
        assert _address(third) == address  # no tensor used it any more: its resident pages are handed out again


def test_a_reused_buffer_asked_for_zeros_is_zero():
    like = torch.empty(64, 100)
    with kldiv.config_context(**SMALL):
        first = _memory.gradient_buffer(like, zero=False)
        first.fill_(3.0)
        address = _address(first)
        del first
        again = _memory.gradient_buffer(like, zero=True)
        assert _address(again) == address and bool((again == 0).all())


def test_a_smaller_request_reuses_a_buffer_up_to_twice_its_size_only():
    with kldiv.config_context(**SMALL):
        big = _memory.gradient_buffer(torch.empty(2048, 1024), zero=False)  # 8 MiB
        address = _address(big)
        del big
        small = _memory.gradient_buffer(torch.empty(512, 1024), zero=False)  # 2 MiB: not worth 8 MiB
        assert _address(small) != address
        half = _memory.gradient_buffer(torch.empty(1200, 1024), zero=False)
        assert _address(half) == address and half.shape == (1200, 1024) and half.is_contiguous()


def test_the_pool_keeps_at_most_gradient_pool_bytes():
    like = torch.empty(512, 1024)  # 2 MiB mappings
    with kldiv.config_context(**SMALL, gradient_pool_bytes=2 * (1 << 21)):
        held = [_memory.gradient_buffer(like, zero=False) for _ in range(4)]
        assert sum(len(m) for m in _memory._POOL) <= 2 * (1 << 21)
        assert bool(all((t == 0).all() for t in held))
    with kldiv.config_context(**SMALL, gradient_pool_bytes=0):
        _memory._POOL.clear()
        _memory.gradient_buffer(like, zero=False)
        assert not _memory._POOL


def test_training_steps_reuse_the_gradient_and_give_the_same_numbers():
    g = torch.Generator().manual_seed(0)
    s = (3 * torch.randn(64, 300, generator=g)).requires_grad_(True)
    t = 3 * torch.randn(64, 300, generator=g)
    labels = torch.randint(0, 300, (64,), generator=g)
    labels[::5] = -100  # masked rows: the reused buffer must come back zero there
    loss = DistillationLoss("kl")
    results, addresses = [], []
    with kldiv.config_context(**SMALL, nn_small=1):
        for _ in range(3):
            value = loss(s, t, labels)
            value.backward()
            results.append((value.detach(), s.grad.clone()))
            addresses.append(_address(s.grad))
            s.grad = None
    assert addresses[1] == addresses[2]  # from the second step on, the freed gradient's pages
    for value, grad in results[1:]:
        assert torch.equal(value, results[0][0]) and torch.equal(grad, results[0][1])
    assert bool((results[0][1][::5] == 0).all())


def test_a_negative_pool_size_is_refused():
    with pytest.raises(ValueError, match="gradient_pool_bytes must be a non-negative integer"):
        kldiv.set_config(gradient_pool_bytes=-1)
