"""Sparse teacher: the teacher's top-k log-probabilities only, against the student's full logits.

Both sides become distributions over the same few outcomes, then the measure's own value and vjp apply:

- ``bucket``: the k kept outcomes plus one bucket for everything else, holding 1 - sum(top-k) on each side;
- ``renormalize``: the k kept outcomes only, each side renormalised over them.

Temperature divides the log-probabilities of these outcomes (for ``renormalize`` this equals tempering the full
distributions and then restricting them to the k outcomes).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as xp
import torch

from ... import _engine
from ._dense import Divergence, canonical_logits, into_out, poison, run_chunks, work_dtype


def topk_rows(
    div: Divergence,
    bucket: bool,
    student: Any,
    indices: Any,
    logprobs: Any,
    inv_temperature: Any,
    grad_scale: Any,
    need_grad: bool,
) -> tuple[Any, Any]:
    """Values (rows,) and ``grad_scale`` times d value / d student logits (rows, V) for a top-k teacher."""
    dtype = inv_temperature.dtype
    x = student.to(dtype)
    lt = logprobs.to(dtype)
    if bucket:
        full = canonical_logits(x)
        outside = torch.ones_like(x).scatter(1, indices, 0.0)
        # the student's tail mass summed directly (no 1 - sum cancellation); the teacher's from its top-k:
        # log(1 - sum exp(lt)) = log(-expm1(logsumexp(lt))), clamped at probability 0 for rounding
        s_tail = torch.sum(full.p * outside, dim=-1, keepdim=True)
        t_lse = torch.clamp(torch.logsumexp(lt, dim=-1, keepdim=True), max=0.0)
        s_logits = torch.cat([torch.gather(full.lp, 1, indices), torch.log(s_tail)], dim=-1)
        # when the k indices cover the whole vocabulary the bucket holds no outcome: the teacher's leftover is
        # rounding, not mass, and both sides give the bucket probability 0 (not 1e-16 against an exact 0 = inf)
        empty = torch.sum(outside, dim=-1, keepdim=True) == 0
        t_tail = torch.where(empty, -math.inf, torch.log(-torch.expm1(t_lse)))
        t_logits = torch.cat([lt, t_tail], dim=-1)
    else:
        s_logits, t_logits = torch.gather(x, 1, indices), lt
    s = canonical_logits(s_logits * inv_temperature)
    t = canonical_logits(t_logits * inv_temperature)
    value, g = div.value_and_student_grad(s, t)
    value = poison(value, s, t)
    if not need_grad:
        return value, None
    g = _engine.log_softmax_vjp(xp, g, s) * (inv_temperature * grad_scale)  # d/d s_logits; rows sum to 0
    k = indices.shape[1]
    grad = torch.zeros_like(x).scatter_add(1, indices, g[:, :k])
    if bucket:
        # s_logits[k] = log(sum_{i outside} p_i): its derivative in x_i is p_i [i outside] / tail - p_i, and the
        # -p_i terms cancel because the gradient's row sums to 0
        share = torch.where(s_tail > 0, full.p * outside / torch.where(s_tail > 0, s_tail, 1.0), 0.0)
        grad = grad + g[:, k:] * share
    return value, grad.to(student.dtype)


def _kernel(div: Divergence, bucket: bool, need_grad: bool):
    def kernel(student, indices, logprobs, inv_temperature, grad_scale, out):
        return into_out(*topk_rows(div, bucket, student, indices, logprobs, inv_temperature, grad_scale, need_grad), out)

    return kernel


def run_topk(
    div: Divergence,
    student: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
    *,
    tail: str,
    temperature: float,
    rows: torch.Tensor | None,
    grad_scale: float | torch.Tensor,
    grad_out: torch.Tensor | None,
) -> torch.Tensor:
    """Like :func:`run_dense`, with the teacher given as (N, k) ``indices`` (int64) and ``logprobs``."""
    need_grad, bucket = grad_out is not None, tail == "bucket"
    return run_chunks(
        ("topk", div, bucket, need_grad),
        lambda: _kernel(div, bucket, need_grad),
        [student, indices, logprobs],
        student.shape[1],
        work_dtype(student.dtype, logprobs.dtype),
        temperature=temperature,
        rows=rows,
        grad_scale=grad_scale,
        grad_out=grad_out,
    )
