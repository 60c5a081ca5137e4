"""The compiled per-token kernel for large PyTorch chunks: every statistic of a chunk in one loop per row.

The eager path in :mod:`._tokens` runs some thirty whole-array passes per block (two log-softmaxes, KL, JS's
mixture and log, TVD, two top-k selections), each reading and writing the block. Here a chunk's divergences and
label log-probabilities come from one ``torch.compile``'d kernel whose outputs are row reductions only, so that
Inductor runs all of a row's passes inside one loop over rows while the row is in cache (see
``kldiv.nn.kernels._compile``), through the same compile policy as :mod:`kldiv.nn` (``KLDIV_COMPILE``; a
compilation failure falls back to the eager path with a warning). The formulas are the closed forms of the
measures of :mod:`kldiv.measures` over logits; the tests hold them to the eager path, which uses the measures.

Top-k uses a two-level selection instead of ``torch.topk`` over the whole row: split the row into groups of G
consecutive logits, take each group's maximum, pick the k groups with the largest maxima and select the top k
among those k G candidates. It is exact: the k largest logits all lie in those groups, because at least k
logits (one per chosen group) are >= the smallest chosen group maximum. The row maximum comes for free.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import torch

from .. import _validate
from ..nn.kernels import _compile


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
    """Row reductions of a block, from which :func:`_finish` gives KLD, JS, TVD and the label log-probabilities.

    Only row reductions leave the kernel, so Inductor runs all of a row's passes in one loop over rows with its
    exponentials in a row-sized local buffer (see ``kldiv.nn.kernels._compile``); the logs of the row sums z
    are applied afterwards. With p = softmax(a), q = softmax(b):
    KL(P || Q) = sum_{p > 0} p (a - b) + log z_b - log z_a (sum p = 1); TVD = sum |p - q| / 2;
    JS = sum p log(2p / (p + q)) / 2 + sum q log(2q / (p + q)) / 2 (0 log 0 = 0), each log of a ratio near 1
    when P is near Q, so small values keep their relative precision; the label's logit is a masked sum over
    the row (a gather would be a separate loop). a and b are the logits shifted by their row maxima, so that
    log p = a - log z_a and the KL sum has no large offset to cancel afterwards."""

    def kernel(reference: Any, other: Any, labels: Any) -> tuple[Any, ...]:
        a, b = reference.to(dtype), other.to(dtype)
        m_a, m_b = xp.max(a, axis=-1, keepdims=True), xp.max(b, axis=-1, keepdims=True)
        a, b = a - m_a, b - m_b  # shifted logits: the sums below need no large offset to cancel afterwards
        e_a, e_b = xp.exp(a), xp.exp(b)
        # the sums of exponentials in float64: their float32 rounding (~2e-7) would be the largest error of a small KL
        z_a, z_b = torch.sum(e_a, -1, keepdim=True, dtype=torch.float64), torch.sum(e_b, -1, keepdim=True, dtype=torch.float64)
        p, q = e_a * (1.0 / z_a).to(dtype), e_b * (1.0 / z_b).to(dtype)
        if reverse:
            kl = xp.sum(xp.where(q > 0, q * (b - a), 0.0), axis=-1)
        else:
            kl = xp.sum(xp.where(p > 0, p * (a - b), 0.0), axis=-1)
        tvd = xp.sum(xp.abs(p - q), axis=-1)
        both = p + q
        js = xp.sum(
            xp.where(p > 0, p * xp.log(2 * p / both), 0.0) + xp.where(q > 0, q * xp.log(2 * q / both), 0.0), axis=-1
        )
        sums = (kl, tvd, js, z_a[:, 0], z_b[:, 0])
        if not labelled:
            return sums
        at_label = xp.arange(a.shape[-1], device=a.device) == labels[:, None]
        return (*sums, xp.sum(xp.where(at_label, a, 0.0), axis=-1), xp.sum(xp.where(at_label, b, 0.0), axis=-1))

    return kernel


def _finish(sums: tuple[Any, ...], reverse: bool) -> dict[str, Any]:
    """Values from the row reductions, formed in float64 (a float32 log of z ~ 1e4 alone would add ~5e-7
    absolute error to a KL that may be 1e-6). Measured on float32 logits of nearly identical models against
    float64 (median KL 4e-4): median relative error 9e-6, against 2.7e-4 for the eager path and 5.5e-4 for
    float32 ``F.kl_div``."""
    dtype = sums[0].dtype
    kl, tvd, js, z_a, z_b, *labelled = (x.double() for x in sums)
    log_z_a, log_z_b = xp.log(z_a), xp.log(z_b)
    kld = kl + ((log_z_a - log_z_b) if reverse else (log_z_b - log_z_a))
    rows = {"kld": kld, "js": 0.5 * js, "tvd": 0.5 * tvd}
    if labelled:
        rows["lr"], rows["lo"] = labelled[0] - log_z_a, labelled[1] - log_z_b
    return {name: value.to(dtype) for name, value in rows.items()}


def wanted(reference: Any) -> bool:
    """Whether a chunk should take the compiled path: a large enough PyTorch chunk under the compile policy."""
    return isinstance(reference, torch.Tensor) and _compile.wanted(reference.numel(), reference.device)


def token_rows(
    reference: Any, other: Any, labels: Any, *, reverse: bool, k: int, locators: tuple, row0: int = 0
) -> dict[str, Any]:
    """Per-row kld, js, tvd, top-k indices (``ref_top``, ``other_top``) and, with labels, the label
    log-probabilities (``lr``, ``lo``) of torch rows (n, V), like :func:`._tokens._block` computes them.

    One compiled call per chunk: the rows are a dynamic dimension, so a run compiles once per vocabulary and
    dtype, and nothing larger than a row is kept per row. Top-k runs eagerly (two-level selection, one pass
    over each side)."""
    reference, other = reference.detach(), other.detach()
    n, v = reference.shape
    dtype = torch.float64 if torch.float64 in (reference.dtype, other.dtype) else torch.float32
    labelled = labels is not None
    key = ("compare", reverse, labelled, dtype, v, reference.dtype, other.dtype, reference.device.type)
    make = lambda: _kernel(reverse, labelled, dtype)  # noqa: E731
    gather = torch.as_tensor(labels, dtype=torch.int64, device=reference.device) if labelled else None
    group = group_size(v, k)
    rows: dict[str, Any] = {}
    for name, x, loc in (("ref_top", reference, locators[0]), ("other_top", other, locators[1])):
        rows[name], row_max = top_indices(x, k, group)
        if not bool(torch.isfinite(row_max).all()):  # NaN, +inf or an all -inf row: the validator says where
            _validate.check_logit_rows(xp, x, row_max[:, None], row0, loc)
    if n == 1:  # PyTorch compiles a 1-row block separately (the rows are a dynamic dimension from 2 up)
        reference, other = reference.expand(2, v), other.expand(2, v)
        gather = gather.expand(2) if labelled else None
    y = gather if labelled else torch.zeros(0, dtype=torch.int64, device=reference.device)
    sums = _compile.call(key, make, reference.device, reference.contiguous(), other.contiguous(), y)
    rows.update({name: value[:n] for name, value in _finish(sums, reverse).items()})
    return rows
