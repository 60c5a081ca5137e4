"""Sparse teacher: the teacher's top-k log-probabilities only, against the student's full logits.

Both sides become distributions over the same few outcomes, given as logits, and the measure's row form applies:

- ``bucket``: the k kept outcomes plus one bucket for everything else, holding 1 - sum(top-k) on each side;
- ``renormalize``: the k kept outcomes only, each side renormalised over them.

Temperature divides the log-probabilities of these outcomes (for ``renormalize`` this equals tempering the full
distributions and then restricting them to the k outcomes).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import array_api_compat.torch as xp
import torch

from ... import _config, _rows
from . import _triton
from ._dense import Divergence, Squash, run_chunks, squashed, work_dtype


class _Positions:
    """Where a row's k token ids sit among ``x``'s columns. On one device: the ids themselves. On a vocabulary
    slice (``shards``): ids held by another rank point at a spare column past the slice, gathered values there
    are 0 before the sum across the group, and scatters into the spare column are dropped."""

    def __init__(self, x: torch.Tensor, indices: torch.Tensor, shards: Any) -> None:
        self.shards, self.width = shards, x.shape[1]
        self.at, self.held = (indices, None) if shards is None else shards.localise(indices)

    def gather(self, y: torch.Tensor) -> torch.Tensor:
        """y's entries at the k ids (on a slice: combined across the group, each id held by one rank)."""
        if self.shards is None:
            return torch.gather(y, 1, self.at)
        taken = torch.gather(y, 1, self.at.clamp(max=self.width - 1)) if self.width else y.new_zeros(self.at.shape)
        return self.shards.sum(torch.where(self.held, taken, 0.0))

    def scatter(self, fill: float, src: torch.Tensor, add: bool = False) -> torch.Tensor:
        """A (rows, width) tensor of ``fill`` with ``src`` (rows, k) written (or added) at the ids this rank holds."""
        spare = 0 if self.shards is None else 1
        out = torch.full((self.at.shape[0], self.width + spare), fill, dtype=src.dtype, device=src.device)
        out = out.scatter_add_(1, self.at, src) if add else out.scatter_(1, self.at, src)
        return out[:, : self.width]


def outcomes(x: torch.Tensor, indices: torch.Tensor, lt: torch.Tensor, bucket: bool,
             shards: Any = None) -> tuple[Any, Any, Any]:
    """Both sides as logits over the k (+1) outcomes: (student's, teacher's, what :func:`spread` needs).
    With ``shards``, ``x`` is this rank's vocabulary slice and ``indices`` are global ids: the student's row
    constants, its log-probabilities at the k ids and its tail mass are combined across the group (O(k) numbers
    per row), and every rank gets the same outcomes."""
    at = _Positions(x, indices, shards)
    if not bucket:
        return at.gather(x), lt, None
    full = _rows.side(xp, x) if shards is None else _rows.shared_sides(xp, (x,), shards)[0]
    log_p = full.x - full.log_z.to(x.dtype)
    outside = at.scatter(1.0, torch.zeros_like(lt, dtype=x.dtype))
    # the student's tail mass summed directly (no 1 - sum cancellation); the teacher's from its top-k:
    # log(1 - sum exp(lt)) = log(-expm1(logsumexp(lt))), clamped at probability 0 for rounding
    s_tail = torch.sum(full.p * outside, dim=-1, keepdim=True)
    if shards is not None:
        s_tail = shards.sum(s_tail.double()).to(x.dtype)
    t_lse = torch.clamp(torch.logsumexp(lt, dim=-1, keepdim=True), max=0.0)
    s_logits = torch.cat([at.gather(log_p), torch.log(s_tail)], dim=-1)
    # when the k indices cover the whole vocabulary the bucket holds no outcome: the teacher's leftover is
    # rounding, not mass, and both sides give the bucket probability 0 (not 1e-16 against an exact 0 = inf)
    if shards is None:
        empty = torch.sum(outside, dim=-1, keepdim=True) == 0
    else:  # the ids of a row are distinct (TopK's contract)
        empty = torch.full_like(s_tail, shards.width == indices.shape[1], dtype=torch.bool)
    t_tail = torch.where(empty, -math.inf, torch.log(-torch.expm1(t_lse)))
    return s_logits, torch.cat([lt, t_tail], dim=-1), (full.p, outside, s_tail)


def spread(g: torch.Tensor, x: torch.Tensor, indices: torch.Tensor, tail: Any, shards: Any = None) -> torch.Tensor:
    """The gradient in the student's full logits (on a vocabulary slice: the slice's) from ``g``, its gradient
    in the k (+1) outcomes' logits."""
    k = indices.shape[1]
    grad = _Positions(x, indices, shards).scatter(0.0, g[:, :k], add=True)
    if tail is not None:
        # s_logits[k] = log(sum_{i outside} p_i): its derivative in x_i is p_i [i outside] / tail - p_i,
        # and the -p_i terms cancel because the gradient's row sums to 0
        p, outside, s_tail = tail
        share = torch.where(s_tail > 0, p * outside / torch.where(s_tail > 0, s_tail, 1.0), 0.0)
        grad = grad + g[:, k:] * share
    return grad


def _topk_kernel(div: Divergence, bucket: bool, shards: Any = None, squash: Squash | None = None,
                 optimistic: bool = False):
    def kernel(student, indices, logprobs, inv_temperature, grad_scale, out):
        """The row form's reductions over the k (+1) outcomes; the student gradient scattered into ``out``.
        On a vocabulary slice the outcomes are the same on every rank, so their row form runs unshared."""
        dtype = work_dtype(student.dtype, logprobs.dtype)
        raw = student.to(dtype)
        x = squashed(squash, raw)
        s_logits, t_logits, tail = outcomes(x, indices, logprobs.to(dtype), bucket, shards)
        s = _rows.side(xp, s_logits, optimistic, inv_temperature)
        t = _rows.side(xp, t_logits, optimistic, inv_temperature)
        g = torch.empty_like(s.p) if out is not None else None
        pieces = div.reductions(s, t, inv_temperature * grad_scale, g)  # g: d value / d s_logits; rows sum to 0
        if out is not None:
            out.copy_(spread(g, x, indices, tail, shards))
            if squash is not None:
                squash.chain(out, raw)
        return pieces, _rows.bounds(s, t)

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
    shards: Any = None,
    squash: Squash | None = None,
) -> torch.Tensor:
    """Like :func:`run_dense`, with the teacher given as (N, k) ``indices`` (int64) and ``logprobs``. On the
    Triton path the k (+1) outcomes of a chunk of rows are formed eagerly and the dense Triton kernel runs on them.
    With ``shards``, ``student`` is this rank's vocabulary slice and ``indices`` are global token ids.
    ``squash`` transforms the student's logits first (the teacher's log-probabilities are taken as given)."""
    bucket = tail == "bucket"
    dtype = work_dtype(student.dtype, logprobs.dtype)
    chunks = functools.partial(
        run_chunks,
        ("topk", div, bucket, grad_out is not None, squash),
        functools.partial(_topk_kernel, div, bucket, shards, squash),
        div.finish,
        [student, indices, logprobs],
        student.shape[1] if shards is None else shards.width,
        dtype,
        temperature=temperature,
        grad_scale=grad_scale,
        grad_out=grad_out,
        compilable=shards is None,
    )
    params = dict(div.params)
    if shards is not None or squash is not None or not _triton.wanted(student, div.measure, params):
        return chunks(rows=rows)
    n, v = student.shape
    values = torch.zeros(n, dtype=dtype, device=student.device)
    selected = rows if rows is not None else torch.arange(n, device=student.device)
    step = max(1, _config.get_config().eager_chunk // v)  # bounds the bucket's full-vocabulary temporaries
    for lo in range(0, int(selected.numel()), step):
        at = selected[lo : lo + step]
        x = student[at].to(dtype)
        s_logits, t_logits, spare = outcomes(x, indices[at], logprobs[at].to(dtype), bucket)
        g = torch.empty_like(s_logits) if grad_out is not None else None
        _, chosen = _triton.run_dense(div.measure, params, div.student_first, s_logits, t_logits,
                                      temperature=temperature, rows=None, grad_scale=grad_scale, grad_out=g)
        values[at] = chosen.to(dtype)
        if grad_out is not None:
            grad_out[at] = spread(g, x, indices[at], spare).to(grad_out.dtype)
    return values
