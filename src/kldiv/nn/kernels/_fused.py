"""Fused linear distillation: logits one chunk of rows at a time, gradients of the linear layer in forward.

For each chunk of rows: ``z = h W^T + b`` (student), the teacher's logits likewise (or given), the divergence's
value and d/dz from the dense or top-k kernel, optionally plus the cross-entropy on the labels (the core
``CROSS_ENTROPY`` measure against the one-hot label), then ``dh = dz W``, ``dW += dz^T h``, ``db += sum dz``
accumulated in ``accum_dtype``. Only the chunk's logits and their gradient exist at any time; a chunk holds
``Config.fused_chunk`` logits on CPU and ``Config.fused_device_chunk`` on CUDA (see :func:`chunk_rows`). On
CUDA nothing in the loop waits for the device: the Triton kernel reads the loss's scale from device memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat.torch as xp
import torch

from ... import _config, _rows
from ...measures import CROSS_ENTROPY
from ._dense import Divergence, Squash, run_dense, squashed
from ._topk import run_topk


def label_cross_entropy(z: torch.Tensor, labels: torch.Tensor, scale: Any,
                        shards: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row -log softmax(z)[label] and ``scale`` times its gradient in z: the cross-entropy's row form
    H(P, S) with P the one-hot distribution of the label (logits 0 at the label, -inf elsewhere). With
    ``shards``, z is this rank's vocabulary slice (the label's 0 only on the rank that holds it)."""
    if shards is None:
        log_onehot = torch.full_like(z, -math.inf).scatter_(1, labels[:, None], 0.0)
    else:
        at, held = shards.localise(labels[:, None])
        spare = torch.full((z.shape[0], z.shape[1] + 1), -math.inf, dtype=z.dtype, device=z.device)
        log_onehot = spare.scatter_(1, at, 0.0)[:, : z.shape[1]]
    value, (g,) = _rows.evaluate(CROSS_ENTROPY.rows, xp, (log_onehot, z), {}, (1,), shards)
    return value.to(z.dtype), g * scale


_NO_OUT_DTYPE: set[tuple[Any, ...]] = set()  # (device type, dtype, accumulator dtype) where out_dtype failed


def accumulate_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    """``out += a @ b`` with ``out`` the accumulator (float32 or float64). On CUDA with a half-precision
    ``dtype`` the product runs on the tensor cores in ``dtype`` with a float32 result (cuBLAS's out_dtype): the
    chunk's contribution is not rounded to half precision, and the matmul is not a float32 one. Elsewhere (or
    where that form is refused) both factors are converted to the accumulator's dtype."""
    key = (out.device.type, dtype, out.dtype)
    if out.device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and out.dtype == torch.float32 and (
        key not in _NO_OUT_DTYPE
    ):
        try:
            torch.addmm(out, a.to(dtype), b.to(dtype), out_dtype=out.dtype, out=out)
            return
        except (RuntimeError, TypeError):  # an older or different backend: the float32 product below
            _NO_OUT_DTYPE.add(key)
    out.addmm_(a.to(out.dtype), b.to(out.dtype))


def chunk_rows(width: int, device: torch.device) -> int:
    """Rows per chunk of the fused loss for a vocabulary of ``width``: ``Config.fused_chunk`` logits on CPU
    (the chunk's buffers stay in the last-level cache), ``Config.fused_device_chunk`` on CUDA rounded down to a
    multiple of 128 rows (whole tensor-core tiles for the chunk's matmuls; 1024 rows at V = 128256, where the
    chunk's three float32 (rows, V) buffers take 1.6 GB), at least 2 rows."""
    config = _config.get_config()
    if device.type != "cuda":
        return max(2, config.fused_chunk // width)
    rows = config.fused_device_chunk // width
    return max(2, rows - rows % 128 if rows >= 128 else rows)


def run_fused(
    div: Divergence,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    teacher: Callable[[int, int], Any],
    *,
    tail: str | None,
    labels: torch.Tensor | None,
    hard_label_weight: float,
    temperature: float,
    soft_scale: Any,
    hard_scale: Any,
    accum_dtype: torch.dtype,
    need_grad: bool,
    shards: Any = None,
    squash: tuple[Squash | None, Squash | None] = (None, None),
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None]:
    """Returns per-row divergence values, per-row cross-entropies (zeros without ``hard_label_weight``) and,
    if ``need_grad``, (grad_hidden in hidden's dtype, grad_weight and grad_bias in ``accum_dtype``).

    ``hidden`` (N, H) holds only the kept rows; ``teacher(lo, hi)`` returns the teacher for rows lo:hi, as
    (rows, V) logits or as an (indices, logprobs) pair (``tail`` then says how the tail is treated).
    With ``shards``, ``weight`` and ``bias`` are this rank's vocabulary slice: every rank runs the same chunks,
    and the hidden states' gradient (a sum over the vocabulary) is summed over the group at the end.
    ``squash`` transforms (student's, teacher's) logits of each chunk first (the divergence and the
    cross-entropy see the transformed logits; a top-k teacher is taken as given).
    """
    n, v = hidden.shape[0], weight.shape[0]
    work = torch.float64 if torch.float64 in (hidden.dtype, weight.dtype, accum_dtype) else torch.float32
    accum_dtype = torch.promote_types(accum_dtype, weight.dtype)  # never accumulate below the weight's precision
    device = hidden.device
    step = chunk_rows(v if shards is None else shards.width, device)
    soft_values = torch.zeros(n, dtype=work, device=device)
    hard_values = torch.zeros(n, dtype=work, device=device)
    grads = None
    if need_grad:
        grads = (
            torch.empty_like(hidden),
            torch.zeros(weight.shape, dtype=accum_dtype, device=device),
            torch.zeros(v, dtype=accum_dtype, device=device) if bias is not None else None,
        )
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        h = hidden[lo:hi]
        raw = (torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()).to(work)
        z = squashed(squash[0], raw)
        g = torch.empty_like(z) if need_grad else None
        common = dict(temperature=temperature, rows=None, grad_scale=soft_scale, grad_out=g, shards=shards)
        t = teacher(lo, hi)
        if isinstance(t, tuple):
            soft_values[lo:hi] = run_topk(div, z, t[0], t[1], tail=tail, **common)
        else:
            soft_values[lo:hi] = run_dense(div, z, squashed(squash[1], t.to(work)), **common)
        if hard_label_weight:
            value, g_hard = label_cross_entropy(z, labels[lo:hi], hard_scale * hard_label_weight, shards)
            hard_values[lo:hi] = value
            if need_grad:
                g += g_hard
        if need_grad and squash[0] is not None:
            squash[0].chain(g, raw)
        del z, raw
        if need_grad:
            grad_h, grad_w, grad_b = grads
            grad_h[lo:hi] = g.to(weight.dtype) @ weight
            accumulate_product(grad_w, g.t(), h, weight.dtype)
            if grad_b is not None:
                grad_b += g.sum(0, dtype=accum_dtype)
    if need_grad and shards is not None:
        shards.sum(grads[0])
    return soft_values, hard_values, grads
