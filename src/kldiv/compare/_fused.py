"""The compiled per-token kernel for large PyTorch chunks: every statistic of a row block in a few loops.

The eager path in :mod:`._tokens` runs some thirty whole-array passes per block (two log-softmaxes, KL, JS's
mixture and log, TVD, two top-k selections), each reading and writing the block. Here the same Python code
(``_engine.canonical`` and the measures' own ``value`` functions from :mod:`kldiv.measures`) is traced by
``torch.compile``, which fuses a row's passes into a few loops that stay in cache, through the same compile
policy as :mod:`kldiv.nn` (``KLDIV_COMPILE``; a compilation failure falls back to the eager path with a warning).

Top-k uses a two-level selection instead of ``torch.topk`` over the whole row: split the row into groups of G
consecutive logits, take each group's maximum, pick the k groups with the largest maxima and select the top k
among those k G candidates. It is exact: the k largest logits all lie in those groups, because at least k
logits (one per chosen group) are >= the smallest chosen group maximum. The row maximum comes for free.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import torch

from .. import _engine, _validate
from ..measures import JS, KL, TVD
from ..nn.kernels import _compile

#: Rows per compiled call: a fixed shape (the last block is padded), so one compilation per vocabulary and dtype.
#: Inductor runs a row's passes one after another over the block, so its (ROWS, V) temporaries should stay in
#: L2: 16 rows measured best of 4..64 at V = 32,000 on the 2-core machine (236 vs 304 us/token at 64).
ROWS = 16


def group_size(v: int, k: int) -> int:
    """The largest group size in 128, 64, ..., 8 dividing ``v`` that leaves at least ``k`` groups; 1 (plain
    top-k) if none does."""
    for g in (128, 64, 32, 16, 8):
        if v % g == 0 and v // g >= k:
            return g
    return 1


def top_indices(x: Any, k: int, group: int) -> tuple[Any, Any]:
    """Indices of the k largest entries of each row of ``x`` (n, V), largest first, and the row maxima (n,)."""
    n, v = x.shape
    if group == 1:
        return torch.topk(x, k, dim=-1, sorted=True).indices, x.amax(-1)
    groups = x.reshape(n, v // group, group)
    group_max = groups.amax(-1)  # (n, V / G)
    chosen = torch.topk(group_max, k, dim=-1, sorted=True).indices  # (n, k) group numbers
    candidates = groups.gather(1, chosen[:, :, None].expand(n, k, group)).reshape(n, k * group)
    best = torch.topk(candidates, k, dim=-1, sorted=True).indices  # (n, k) positions among the candidates
    index = chosen.gather(1, best // group) * group + best % group
    return index, group_max.amax(-1)


def _kernel(reverse: bool, k: int, group: int, dtype: torch.dtype):
    def kernel(reference: Any, other: Any, labels: Any) -> tuple[Any, ...]:
        a, b = reference.to(dtype), other.to(dtype)
        top_a, max_a = top_indices(a, k, group)
        top_b, max_b = top_indices(b, k, group)
        P = _engine.canonical(xp, a, True, False, 0, None, 0.0)
        Q = _engine.canonical(xp, b, True, False, 0, None, 0.0)
        kld = KL.value(xp, Q, P) if reverse else KL.value(xp, P, Q)
        js = JS.value(xp, P, Q, weight=0.5)
        tvd = TVD.value(xp, P, Q)
        lr = P.lp.gather(-1, labels[:, None])[:, 0]
        lo = Q.lp.gather(-1, labels[:, None])[:, 0]
        return kld, js, tvd, top_a, top_b, lr, lo, max_a, max_b

    return kernel


def wanted(reference: Any) -> bool:
    """Whether a chunk should take the compiled path: a large enough PyTorch chunk under the compile policy."""
    return isinstance(reference, torch.Tensor) and _compile.wanted(reference.numel(), reference.device)


def token_rows(
    reference: Any, other: Any, labels: Any, *, reverse: bool, k: int, locators: tuple, row0: int = 0
) -> dict[str, Any]:
    """Per-row kld, js, tvd, top-k indices (``ref_top``, ``other_top``) and, with labels, the label
    log-probabilities (``lr``, ``lo``) of torch rows (n, V), like :func:`._tokens._block` computes them."""
    reference, other = reference.detach(), other.detach()
    n, v = reference.shape
    dtype = torch.float64 if torch.float64 in (reference.dtype, other.dtype) else torch.float32
    group = group_size(v, k)
    key = ("compare", reverse, k, group, dtype, v, reference.dtype, other.dtype, reference.device.type,
           torch.get_num_threads())
    make = lambda: _kernel(reverse, k, group, dtype)  # noqa: E731
    if labels is None:
        gather = torch.zeros(n, dtype=torch.int64, device=reference.device)
    else:
        gather = torch.as_tensor(labels, dtype=torch.int64, device=reference.device)
    pieces = []
    for lo in range(0, n, ROWS):
        hi = min(lo + ROWS, n)
        a, b, y = reference[lo:hi], other[lo:hi], gather[lo:hi]
        if hi - lo < ROWS:  # pad to the compiled shape with zero logits (uniform rows), dropped below
            pad = ROWS - (hi - lo)
            a = torch.cat([a, a.new_zeros(pad, v)])
            b = torch.cat([b, b.new_zeros(pad, v)])
            y = torch.cat([y, y.new_zeros(pad)])
        out = _compile.call(key, make, reference.device, a.contiguous(), b.contiguous(), y)
        out = [o[: hi - lo] for o in out]
        for x, row_max, loc in ((reference, out[7], locators[0]), (other, out[8], locators[1])):
            if not bool(torch.isfinite(row_max).all()):  # NaN, +inf or an all -inf row: the validator says where
                _validate.check_logit_rows(xp, x[lo:hi], row_max[:, None], row0 + lo, loc)
        pieces.append(out)
    names = ("kld", "js", "tvd", "ref_top", "other_top", "lr", "lo")
    rows = {name: torch.cat([p[i] for p in pieces]) for i, name in enumerate(names)}
    if labels is None:
        del rows["lr"], rows["lo"]
    return rows
