"""Distillation losses as functions, and the autograd Function behind them.

The divergences are the measures of :mod:`kldiv.measures`, applied to (teacher, student):

==================  ======================================  ==========================================
``divergence``      loss per position                        measure
==================  ======================================  ==========================================
``"kl"``            KL(T || S) = sum_i t_i log(t_i / s_i)     ``KL`` (teacher, student)
``"reverse_kl"``    KL(S || T)                               ``KL`` (student, teacher)
``"js"``            b KL(T || M) + (1 - b) KL(S || M)         ``JS`` with weight b on the teacher,
                    with M = b T + (1 - b) S                  0 at b = 0 and b = 1 (its continuous limit)
``"generalized_jsd"`` as ``"js"`` for 0 < b < 1; KL(T || S)    TRL's and Liger-Kernel's convention
                    at b = 0, KL(S || T) at b = 1             (``generalized_jsd_loss``, GKD)
``"skew_kl"``       KL(T || a T + (1 - a) S)                 ``SKEW_KL`` (teacher, student)
``"skew_reverse_kl"`` KL(S || a S + (1 - a) T)               ``SKEW_KL`` (student, teacher)
``"tvd"``           1/2 sum_i |t_i - s_i|                     ``TVD``
==================  ======================================  ==========================================

with T = softmax(teacher_logits / temperature), S = softmax(student_logits / temperature).
The value and the student's gradient are computed together in the forward pass, chunk by chunk over rows;
only the gradient is kept, and backward scales it in place by the upstream gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _validate
from ..measures import JS, KL, SKEW_KL, TVD
from . import _memory, _shards
from ._types import TopK
from .kernels import Divergence, Squash, run_dense, run_topk, small, small_dense
from .kernels._dense import work_dtype

__all__ = ["distillation_loss", "TopK"]


def divergence_of(name: Any, beta: Any, alpha: Any) -> Divergence:
    """The measure, argument order and parameters behind a ``divergence`` name (see the module table)."""
    _validate.check_choice("divergence", name, _validate.NN_DIVERGENCES)
    beta = _validate.check_in_unit_interval("beta", beta)
    alpha = _validate.check_in_unit_interval("alpha", alpha)
    if name == "generalized_jsd":  # TRL's endpoints: forward KL at beta 0, reverse KL at beta 1
        name = {0.0: "kl", 1.0: "reverse_kl"}.get(beta, "js")
    return {
        "kl": lambda: Divergence(KL, False),
        "reverse_kl": lambda: Divergence(KL, True),
        "js": lambda: Divergence(JS, False, (("weight", beta),)),
        "skew_kl": lambda: Divergence(SKEW_KL, False, (("alpha", alpha),)),
        "skew_reverse_kl": lambda: Divergence(SKEW_KL, True, (("alpha", alpha),)),
        "tvd": lambda: Divergence(TVD, False),
    }[name]()


@dataclass(frozen=True)
class Options:
    """Checked loss options shared by the logits-level and the fused linear losses."""

    divergence: Divergence
    temperature: float
    factor: float  # temperature ** 2 if scale_by_temperature_squared, else 1
    ignore_index: int
    reduction: str
    squash: tuple[Squash | None, Squash | None] = (None, None)  # (student's, teacher's) transform of the logits

    @classmethod
    def make(cls, divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction,
             softcap=None, logit_scale=1.0):
        """The checked options; one loss's (hashable) arguments are checked once and remembered."""
        args = (divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction, softcap,
                logit_scale)
        key = _memo_key(args)
        if key is None:
            return cls.check(*args)
        found = _CHECKED.get(key)
        if found is None:
            if len(_CHECKED) >= 64:
                _CHECKED.clear()
            found = _CHECKED[key] = cls.check(*args)
        return found

    @classmethod
    def check(cls, divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction,
              softcap, logit_scale):
        div = divergence_of(divergence, beta, alpha)
        t = _validate.check_temperature(temperature)
        _validate.check_flag("scale_by_temperature_squared", scale_by_temperature_squared)
        index = _validate.check_integer("ignore_index", ignore_index)
        reduction = _validate.check_choice("reduction", reduction, _validate.NN_REDUCTIONS)
        return cls(div, t, t * t if scale_by_temperature_squared else 1.0, index, reduction,
                   squash_of(softcap, logit_scale))


_CHECKED: dict[tuple, Options] = {}


def _memo_key(args: tuple) -> tuple | None:
    """A key under which checked arguments are remembered, holding each value with its type (True and 1, or 1
    and 1.0, differ: a bool is refused where a number is asked for); None for any other kind of value."""
    key = []
    for a in args:
        if isinstance(a, tuple):
            if not all(type(b) in _PLAIN for b in a):
                return None
            key.append(tuple((type(b), b) for b in a))
        elif type(a) in _PLAIN:
            key.append((type(a), a))
        else:
            return None
    return tuple(key)


_PLAIN = (str, int, float, bool, type(None))


def squash_of(softcap: Any, logit_scale: Any) -> tuple[Squash | None, Squash | None]:
    """The (student's, teacher's) logit transforms of ``softcap`` and ``logit_scale``: each a number for both
    sides or a pair (student, teacher); None where a side's is the identity (no cap, scale 1)."""
    caps = _validate.check_side_pair("softcap", softcap, _validate.check_softcap)
    scales = _validate.check_side_pair("logit_scale", logit_scale, _validate.check_logit_scale)
    return tuple(None if cap is None and scale == 1.0 else Squash(scale, cap)
                 for cap, scale in zip(caps, scales, strict=True))


def selected_rows(labels: torch.Tensor | None, n: int, ignore_index: int) -> tuple[torch.Tensor | None, int]:
    """Indices of the rows whose label is not ``ignore_index`` (None when all are kept) and their count."""
    if labels is None:
        return None, n
    keep = labels.reshape(-1) != ignore_index
    count = int(keep.sum())
    if count == n:
        return None, n
    return torch.nonzero(keep).reshape(-1), count


def row_weight(options: Options, count: int, num_items: Any) -> Any:
    """The weight of each kept row in the reduced loss: factor / count (mean; 0 when nothing is kept),
    factor / num_items_in_batch (0 for an all-masked global batch), or factor (sum, none)."""
    if num_items is not None:
        _validate.check_kept_items(num_items, count)
        return options.factor / num_items if num_items else 0.0
    if options.reduction == "mean":
        return options.factor / count if count else 0.0
    return options.factor


def reduce(values: Any, weight: Any, reduction: str, batch: tuple[int, ...], dtype: Any = None) -> torch.Tensor:
    """The loss from the per-row values and the row weight; the values are a tensor, or the small path's float64
    NumPy array, reduced in float64 and returned in ``dtype``."""
    if isinstance(values, np.ndarray):
        if reduction == "none":
            return torch.from_numpy(values * float(weight)).to(dtype).reshape(batch)
        return torch.scalar_tensor(float(np.add.reduce(values)) * float(weight), dtype=dtype)
    if reduction == "none":
        return (values * weight).reshape(batch)
    return values.sum() * weight


class DistillationFunction(torch.autograd.Function):
    """Loss value in forward with the student's gradient computed alongside; backward scales it in place."""

    @staticmethod
    def forward(ctx, student, teacher, indices, logprobs, labels, options, vocab_size, tail, num_items, shards):
        v_student = student.shape[-1]
        batch = tuple(student.shape[:-1])
        flat = student.detach()
        if flat.dim() != 2:
            flat = flat.reshape(math.prod(batch), v_student)  # (N, 0): an empty vocabulary slice
        n = flat.shape[0]
        rows, count = selected_rows(labels, n, options.ignore_index)
        weight = row_weight(options, count, num_items)
        need_grad = ctx.needs_input_grad[0]
        grad = None
        if need_grad:
            full = vocab_size == v_student and rows is None
            grad = _memory.gradient_buffer(flat, zero=not full)
        grad_view = _first(grad, vocab_size) if grad is not None else None
        common = dict(temperature=options.temperature, rows=rows, grad_scale=weight, grad_out=grad_view)
        dtype = None  # the loss's dtype where the values are the small path's NumPy array
        if teacher is not None:
            t = teacher.detach()
            s, t = _first(flat, vocab_size), _first(t if t.dim() == 2 else t.reshape(n, t.shape[-1]), vocab_size)
            if small(flat, shards, options.squash):
                values, dtype = small_dense(options.divergence, s, t, **common), work_dtype(s.dtype, t.dtype)
            else:
                values = run_dense(options.divergence, s, t, squash=options.squash, shards=shards, **common)
        else:
            k = indices.shape[-1]
            idx = indices.reshape(-1, k).long()
            lp = logprobs.detach().reshape(-1, k)
            _validate.check_topk_rows(idx, lp, rows, vocab_size if shards is None else shards.width, tail)
            values = run_topk(options.divergence, _first(flat, vocab_size), idx, lp, tail=tail,
                              squash=options.squash[0], shards=shards, **common)
        loss = reduce(values, weight, options.reduction, batch, dtype)
        _check_finite(values, loss, batch)
        ctx.grad, ctx.reduction, ctx.shape = grad, options.reduction, student.shape
        return loss

    @staticmethod
    def backward(ctx, upstream):
        _validate.check_first_order("kldiv.nn's distillation loss")
        grad, ctx.grad = ctx.grad, None  # hand the one gradient tensor over (no copy is made anywhere)
        if grad is None:
            raise RuntimeError(
                "kldiv.nn: backward ran twice through the same distillation loss; its gradient is computed once in "
                "forward and handed over; recompute the loss for a second backward"
            )
        if ctx.reduction == "none":
            grad.mul_(upstream.reshape(-1, 1).to(grad.dtype))
        elif upstream.item() != 1:  # (item: a third of the time of bool(upstream != 1))
            grad.mul_(upstream.to(grad.dtype))
        return grad if grad.shape == ctx.shape else grad.view(ctx.shape), None, None, None, None, None, None, None, None, None


def _first(x: torch.Tensor, columns: int) -> torch.Tensor:
    """The first ``columns`` columns of 2-D ``x`` (x itself when that is all of them: a slice costs a few us)."""
    return x if x.shape[1] == columns else x[:, :columns]


def _check_finite(values: Any, loss: torch.Tensor, batch: tuple[int, ...]) -> None:
    """Refuse a NaN value. The values are >= 0, +inf or NaN (a divergence, NaN in, NaN out) and the loss is
    their sum or their product with a weight that is positive (0 only when every value is 0), so the loss is
    NaN exactly where a value is: one number to read back for "mean" and "sum"."""
    if not (math.isnan(loss.item()) if loss.numel() == 1 else bool(torch.isnan(loss).any())):
        return
    if isinstance(values, np.ndarray):  # the small path's
        values = torch.from_numpy(values)
    bad = torch.isnan(values)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(row), batch)) if batch else ()
        raise ValueError(
            f"the loss is NaN at position {where}: the logits there hold NaN or +inf, or every teacher logit is "
            "-inf; pass finite logits (-inf only for impossible tokens), or mask the position with "
            "labels = ignore_index"
        )


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopK,
    labels: torch.Tensor | None = None,
    *,
    divergence: str = "kl",
    beta: float = 0.5,
    alpha: float = 0.1,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | float | torch.Tensor | None = None,
    vocab_size: int | None = None,
    tail: str | None = None,
    process_group: Any = None,
    softcap: float | tuple[float | None, float | None] | None = None,
    logit_scale: float | tuple[float, float] = 1.0,
) -> torch.Tensor:
    """Divergence between a teacher's and a student's next-token distributions, per position, reduced.

    For each position n whose label is not ``ignore_index``: ``l_n = c * D(T_n, S_n)`` with
    ``T_n = softmax(teacher_logits[n] / tau)``, ``S_n = softmax(student_logits[n] / tau)``, ``c = tau**2`` if
    ``scale_by_temperature_squared`` else 1, and D the ``divergence`` (table in :mod:`kldiv.nn.functional`).
    Masked positions are removed before any arithmetic: their logits may be anything (garbage, NaN, -inf),
    their loss and gradient are exactly 0.

    Args:
      student_logits: (..., V) floating tensor; float16/bfloat16 are computed and accumulated in float32.
      teacher_logits: (..., V) floating tensor of the same batch shape, or a :class:`TopK` sparse teacher.
        It receives no gradient.
      labels: optional integer tensor of the batch shape; positions equal to ``ignore_index`` are excluded.
      divergence: "kl" (forward, KL(T || S)), "reverse_kl", "js", "generalized_jsd" (TRL's: "js" inside (0, 1),
        KL(T || S) at beta = 0 and KL(S || T) at beta = 1), "skew_kl", "skew_reverse_kl" or "tvd".
      beta: weight of the teacher in the JS mixture M = beta T + (1 - beta) S, in [0, 1].
      alpha: skew of "skew_kl" / "skew_reverse_kl", in [0, 1] (0 gives KL, 1 gives 0).
      temperature: tau > 0 dividing both logit sets.
      scale_by_temperature_squared: multiply by tau**2 (Hinton et al.), keeping gradient magnitudes comparable.
      ignore_index: label value of excluded positions.
      reduction: "mean" over kept positions (0 if none is kept), "sum", or "none" (batch shape, 0 where masked).
      num_items_in_batch: with "mean", divide the sum by this global count instead, so k micro-batches each
        given the whole batch's count sum exactly to the one-batch loss (gradient accumulation).
      vocab_size: compare only the first ``vocab_size`` entries of both (padded vocabularies); the student's
        other entries get gradient 0. Without it, different last dimensions are an error.
      tail: for a :class:`TopK` teacher, "bucket" (default) or "renormalize"; see :class:`TopK`.
      softcap, logit_scale: the model's final transform of its logits, applied before the temperature:
        ``x -> softcap * tanh(logit_scale * x / softcap)`` (final-logit soft-capping, Gemma 2; without
        ``softcap``, ``x -> logit_scale * x``, Cohere), with the exact gradient through it. A number applies to
        both sides, a pair ``(student, teacher)`` to each (None: no cap). Pass the raw logits: models that apply
        the transform in their forward (Hugging Face's Gemma 2 does) return transformed logits already. A
        ``TopK`` teacher's log-probabilities are taken as given.
      process_group: vocabulary parallelism (tensor-parallel LM heads). Each rank of the group passes its
        contiguous slice of the vocabulary, rank r holding token ids [offset_r, offset_r + V_r) in rank order
        (slices may differ in size): logits (..., V_r) for student and teacher; labels and ``TopK`` indices are
        global token ids, the same on every rank. Every rank returns the same loss, equal to the loss over the
        whole vocabulary, and the gradient of its own slice. Exchanged per row, in three all-reduces per chunk of
        rows: each side's max, minus min and a NaN flag; each side's sum of exponentials (float64); the
        divergence's partial sums (float64, 1 to 3 numbers); a ``TopK`` teacher adds the student's k
        log-probabilities and its tail mass. Nothing of size V travels; one all-gather of each rank's width
        precedes. ``vocab_size`` then counts the whole vocabulary (padding at its end). Student and teacher
        given as DTensors sharded on their last dimension over a 1-D mesh need no group: the mesh's is used,
        and the gradient comes back as a DTensor.

    Returns:
      A 0-d tensor ("mean", "sum") or a tensor of the batch shape ("none"); float32 for half-precision inputs.

    References:
      Hinton, Vinyals and Dean (2015), Distilling the Knowledge in a Neural Network, sec. 2;
      Agarwal et al. (2024), On-Policy Distillation of Language Models (GKD), eq. 1 (generalized JSD);
      Ko et al. (2024), DistiLLM, eq. 4-5 (skew KL and skew reverse KL).
    """
    _validate.check_no_torch_func("kldiv.nn's distillation loss", student_logits, teacher_logits, labels)
    options = Options.make(divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction,
                           softcap, logit_scale)
    if isinstance(teacher_logits, TopK):
        (student_logits,), mesh_group = _shards.unshard(student_logits)
    else:
        (student_logits, teacher_logits), mesh_group = _shards.unshard(student_logits, teacher_logits)
    labels = _shards.whole(labels)
    process_group = process_group if process_group is not None else mesh_group
    student = _validate.check_float_tensor("student_logits", student_logits)
    batch = tuple(student.shape[:-1])
    if labels is not None:
        _validate.check_labels(labels, batch)
    num_items = _validate.check_num_items(num_items_in_batch, options.reduction)
    if isinstance(teacher_logits, TopK):
        topk = teacher_logits
        mode = _validate.check_tail(topk.tail, tail)
        _validate.check_batch_shapes(student, topk.indices, "TopK.indices")
        _validate.check_same_device(student, labels=labels, **{"TopK.indices": topk.indices})
        v_student = student.shape[-1]
        if process_group is not None:
            shards = _shards.shards_of(process_group, v_student, student.device, vocab_size)
            v, whole = shards.local, shards.width
        else:
            shards = None
            v = v_student if vocab_size is None else _validate.check_vocab_size(v_student, v_student, vocab_size)
            whole = v
        _validate.check_topk_size(topk.indices.shape[-1], whole)
        return DistillationFunction.apply(
            student, None, topk.indices, topk.logprobs, labels, options, v, mode, num_items, shards
        )
    if tail is not None:
        _validate.check_choice("tail", tail, _validate.TOPK_TAILS)
    teacher = _validate.check_float_tensor("teacher_logits", teacher_logits)
    _validate.check_batch_shapes(student, teacher, "teacher_logits")
    _validate.check_same_device(student, teacher_logits=teacher, labels=labels)
    if process_group is None:
        v, shards = _validate.check_vocab_size(student.shape[-1], teacher.shape[-1], vocab_size), None
    else:
        _validate.check_vocab_size(student.shape[-1], teacher.shape[-1], None)  # one slice: the same on both sides
        shards = _shards.shards_of(process_group, student.shape[-1], student.device, vocab_size)
        v = shards.local
    return DistillationFunction.apply(student, teacher, None, None, labels, options, v, None, num_items, shards)
