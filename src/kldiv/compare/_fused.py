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
from ..nn.kernels._dense import compiled_rows


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


def _kernel(reverse: bool, labelled: bool, dtype: torch.dtype):
    """KLD, JS, TVD and (``labelled``) the label log-probabilities of a block of rows: row reductions only, so
    Inductor runs a row's passes in one loop over rows with its exponentials in a row-sized local buffer (the
    label log-probability is a masked sum over the row for the same reason, not a gather)."""

    def kernel(reference: Any, other: Any, labels: Any) -> tuple[Any, ...]:
        P = _engine.canonical(xp, reference.to(dtype), True, False, 0, None, 0.0)
        Q = _engine.canonical(xp, other.to(dtype), True, False, 0, None, 0.0)
        kld = KL.value(xp, Q, P) if reverse else KL.value(xp, P, Q)
        js = JS.value(xp, P, Q, weight=0.5)
        tvd = TVD.value(xp, P, Q)
        if not labelled:
            return kld, js, tvd
        at_label = xp.arange(reference.shape[-1], device=reference.device) == labels[:, None]
        return kld, js, tvd, xp.sum(xp.where(at_label, P.lp, 0.0), axis=-1), xp.sum(xp.where(at_label, Q.lp, 0.0), axis=-1)

    return kernel


def wanted(reference: Any) -> bool:
    """Whether a chunk should take the compiled path: a large enough PyTorch chunk under the compile policy."""
    return isinstance(reference, torch.Tensor) and _compile.wanted(reference.numel(), reference.device)


def token_rows(
    reference: Any, other: Any, labels: Any, *, reverse: bool, k: int, locators: tuple, row0: int = 0
) -> dict[str, Any]:
    """Per-row kld, js, tvd, top-k indices (``ref_top``, ``other_top``) and, with labels, the label
    log-probabilities (``lr``, ``lo``) of torch rows (n, V), like :func:`._tokens._block` computes them.

    Blocks have a fixed number of rows per vocabulary (``kldiv.nn``'s one-loop chunk), so a run compiles once:
    a last block that would be short overlaps the one before instead (its rows are recomputed), and fewer rows
    than one block are padded with zero logits. Top-k runs eagerly (two-level selection, one pass per side)."""
    reference, other = reference.detach(), other.detach()
    n, v = reference.shape
    dtype = torch.float64 if torch.float64 in (reference.dtype, other.dtype) else torch.float32
    labelled = labels is not None
    step = compiled_rows(v, one_loop=True)
    key = ("compare", reverse, labelled, dtype, v, step, reference.dtype, other.dtype, reference.device.type)
    make = lambda: _kernel(reverse, labelled, dtype)  # noqa: E731
    gather = torch.as_tensor(labels, dtype=torch.int64, device=reference.device) if labelled else None
    group = group_size(v, k)
    rows: dict[str, Any] = {}
    for name, x, loc in (("ref_top", reference, locators[0]), ("other_top", other, locators[1])):
        rows[name], row_max = top_indices(x, k, group)
        if not bool(torch.isfinite(row_max).all()):  # NaN, +inf or an all -inf row: the validator says where
            _validate.check_logit_rows(xp, x, row_max[:, None], row0, loc)
    names = ("kld", "js", "tvd", "lr", "lo")[: 5 if labelled else 3]
    out = {name: torch.empty(n, dtype=dtype, device=reference.device) for name in names}
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        if hi - lo < step <= n:
            lo = hi - step  # overlap the block before: the same rows give the same numbers
        a, b = reference[lo:hi], other[lo:hi]
        y = gather[lo:hi] if labelled else torch.zeros(0, dtype=torch.int64)
        if hi - lo < step:  # fewer rows than one block: pad with zero logits (uniform rows), dropped below
            a, b = _pad(a, step), _pad(b, step)
            y = _pad(y, step) if labelled else y
        values = _compile.call(key, make, reference.device, a.contiguous(), b.contiguous(), y)
        for name, value in zip(names, values, strict=True):
            out[name][lo:hi] = value[: hi - lo]
    rows.update(out)
    return rows


def _pad(x: Any, rows: int) -> Any:
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])
