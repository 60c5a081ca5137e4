"""The gradient buffer of the distillation losses, in transparent huge pages where Linux offers them, kept for
the next call.

A fresh (4096, 32000) float32 gradient is 524 MB that the kernel first touches page by page: with 4 KiB pages
that is 128 000 page faults, measured at about 0.2 s on the 2-core machine, as long as the whole divergence
kernel's arithmetic. Memory mapped with ``MADV_HUGEPAGE`` faults in 2 MiB pages (512 times fewer faults; 60 ms
to allocate and fill there), and anonymous mappings start zeroed, so the zero-filled buffer (rows excluded by
``ignore_index``) costs nothing extra. PyTorch's own allocator does this only when ``THP_MEM_ALLOC_ENABLE=1``
is set before it starts.

The mappings are pooled: once no tensor uses a mapping any more (a training step's gradient is freed after
backward), the next call of a size up to it reuses its resident pages (20 ms to fill instead of 60 ms), as
PyTorch's CUDA allocator keeps freed blocks. Whether a mapping is in use is exact: every tensor made on it
holds a buffer export, which references the mapping. ``Config.gradient_pool_bytes`` bounds what the pool keeps
(oldest dropped first; a dropped mapping is unmapped when its last tensor dies; 0 keeps nothing). Anything else
(no ``mmap.MADV_HUGEPAGE``, not CPU, small tensors, huge pages disabled) gets an ordinary tensor.
"""

from __future__ import annotations

import mmap
import sys
import threading

import torch

from .. import _config


def _huge_pages_possible() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


_POSSIBLE = hasattr(mmap, "MADV_HUGEPAGE") and _huge_pages_possible()


_POOL: list[mmap.mmap] = []  # the mappings made here, in use or idle, least recently handed out first
_POOL_LOCK = threading.Lock()
_PAGE = 1 << 21


def gradient_buffer(like: torch.Tensor, zero: bool) -> torch.Tensor:
    """A contiguous tensor of ``like``'s shape, dtype and device; zero-filled if ``zero``."""
    nbytes = like.numel() * like.element_size()
    config = _config.get_config()
    if not _POSSIBLE or not like.is_cpu or nbytes < config.huge_page_min_bytes:
        make = torch.zeros_like if zero else torch.empty_like
        return make(like, memory_format=torch.contiguous_format)
    mapping, reused = _mapping(nbytes, config.gradient_pool_bytes)
    buffer = torch.frombuffer(mapping, dtype=like.dtype, count=like.numel()).view(like.shape)
    return buffer.zero_() if zero and reused else buffer


def _mapping(nbytes: int, keep: int) -> tuple[mmap.mmap, bool]:
    """An idle pooled mapping of ``nbytes`` (in whole 2 MiB pages) to twice that, the smallest, else a new one,
    pooled while the pool holds at most ``keep`` bytes; and whether it was reused."""
    nbytes = -(-nbytes // _PAGE) * _PAGE  # whole huge pages
    with _POOL_LOCK:
        found = None
        for i in range(len(_POOL)):
            # idle: referenced by the pool and getrefcount's argument only (a tensor's buffer export adds one)
            size = len(_POOL[i])
            if nbytes <= size <= 2 * nbytes and sys.getrefcount(_POOL[i]) == 2 and (
                found is None or size < len(_POOL[found])
            ):
                found = i
        if found is not None:
            mapping = _POOL.pop(found)
            _POOL.append(mapping)
            return mapping, True
        mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mapping.madvise(mmap.MADV_HUGEPAGE)
        _POOL.append(mapping)
        total = sum(len(m) for m in _POOL)
        while _POOL and total > keep:
            total -= len(_POOL.pop(0))
        return mapping, False
