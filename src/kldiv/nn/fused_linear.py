"""Fused linear distillation: the loss from hidden states and the LM head, never holding all the logits."""

from __future__ import annotations

import functools
from typing import Any

import torch

from .. import _validate
from . import _shards
from ._types import TopK
from .functional import Options, row_weight, selected_rows
from .kernels import run_fused

__all__ = ["FusedLinearDistillationLoss", "fused_linear_distillation_loss"]


class FusedLinearFunction(torch.autograd.Function):
    """Loss in forward with the gradients of hidden, weight and bias computed alongside; backward scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, teacher_hidden, teacher_weight, teacher_bias, teacher_logits,
                indices, logprobs, labels, config):
        options, vocab_size, tail, hard_label_weight, num_items, accum_dtype, shards = config
        n = hidden.shape[0]
        rows, count = selected_rows(labels, n, options.ignore_index)
        soft_scale = row_weight(options, count, num_items)
        hard_scale = row_weight(Options(options.divergence, 1.0, 1.0, options.ignore_index, options.reduction),
                                count, num_items)

        def keep(x):
            return x if x is None or rows is None else x.index_select(0, rows)

        h, kept_labels = keep(hidden.detach()), keep(labels)
        with torch.no_grad():
            if teacher_hidden is not None:
                th, tw = keep(teacher_hidden.detach()), teacher_weight.detach()[:vocab_size]
                tb = teacher_bias.detach()[:vocab_size] if teacher_bias is not None else None

                def teacher(lo, hi):
                    return torch.addmm(tb, th[lo:hi], tw.t()) if tb is not None else th[lo:hi] @ tw.t()
            elif teacher_logits is not None:
                tl = keep(teacher_logits.detach())[:, :vocab_size]

                def teacher(lo, hi):
                    return tl[lo:hi]
            else:
                idx, lp = keep(indices).long(), keep(logprobs.detach())

                def teacher(lo, hi):
                    return idx[lo:hi], lp[lo:hi]

        w = weight.detach()[:vocab_size]
        b = bias.detach()[:vocab_size] if bias is not None else None
        need_grad = any(ctx.needs_input_grad[:3])
        soft, hard, grads = run_fused(
            options.divergence, h, w, b, teacher, tail=tail, labels=kept_labels, hard_label_weight=hard_label_weight,
            temperature=options.temperature, soft_scale=soft_scale, hard_scale=hard_scale, accum_dtype=accum_dtype,
            need_grad=need_grad, shards=shards, squash=options.squash,
        )
        if bool(torch.isnan(soft).any() | torch.isnan(hard).any()):
            raise ValueError(
                "the loss is NaN: the hidden states, weights or teacher hold NaN or inf; check the model's outputs"
            )
        if need_grad:
            grad_h, grad_w, grad_b = grads
            if rows is not None:
                grad_h = torch.zeros_like(hidden).index_copy_(0, rows, grad_h)
            grad_w = _full(grad_w.to(weight.dtype), weight.shape[0])
            grad_b = _full(grad_b.to(bias.dtype), bias.shape[0]) if grad_b is not None else None
            ctx.grads = (grad_h, grad_w, grad_b)
        else:
            ctx.grads = None
        return soft.sum() * soft_scale + hard_label_weight * (hard.sum() * hard_scale)

    @staticmethod
    def backward(ctx, upstream):
        _validate.check_first_order("kldiv.nn's fused linear loss")
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError(
                "kldiv.nn: backward ran twice through the same fused linear loss; its gradients are computed once "
                "in forward and handed over; recompute the loss for a second backward"
            )
        if bool(upstream != 1):
            grads = tuple(g.mul_(upstream.to(g.dtype)) if g is not None else None for g in grads)
        return (*grads, None, None, None, None, None, None, None, None)


def _full(grad: torch.Tensor, rows: int) -> torch.Tensor:
    """Pad a vocabulary-truncated gradient with zero rows up to the parameter's size."""
    if grad.shape[0] == rows:
        return grad
    return torch.cat([grad, grad.new_zeros((rows - grad.shape[0], *grad.shape[1:]))])


def _flatten_positions(hidden, teacher_hidden, teacher_logits, labels):
    """(B, T, H) hidden states as (B*T, H) rows, and the teacher and labels of the same batch shape likewise."""
    batch = tuple(hidden.shape[:-1])

    def flat(name, x, trailing=1):
        if not isinstance(x, torch.Tensor):
            return x
        if tuple(x.shape[: x.ndim - trailing]) != batch:
            raise ValueError(
                f"student_hidden has batch shape {batch} (all axes but the last) but {name} has shape "
                f"{tuple(x.shape)}; pass one per position"
            )
        return x.reshape(-1, *x.shape[x.ndim - trailing:]) if trailing else x.reshape(-1)

    if isinstance(teacher_logits, TopK):
        teacher_logits = TopK(flat("TopK.indices", teacher_logits.indices), flat("TopK.logprobs", teacher_logits.logprobs),
                              teacher_logits.tail)
    else:
        teacher_logits = flat("teacher_logits", teacher_logits)
    return (hidden.reshape(-1, hidden.shape[-1]), flat("teacher_hidden", teacher_hidden), teacher_logits,
            flat("labels", labels, 0))


def fused_linear_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | TopK | None = None,
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
    hard_label_weight: float = 0.0,
    accum_dtype: torch.dtype = torch.float32,
    process_group: Any = None,
    softcap: float | tuple[float | None, float | None] | None = None,
    logit_scale: float | tuple[float, float] = 1.0,
) -> torch.Tensor:
    """Distillation loss of ``z = student_hidden @ student_weight.T + student_bias`` against a teacher, fused.

    ``loss = sum_n w_n c D(T_n, S_n) + hard_label_weight * sum_n w_n CE(label_n, S_n)`` over kept positions,
    with S_n = softmax(z_n / tau), T_n the teacher's (``teacher_hidden @ teacher_weight.T + teacher_bias``,
    ``teacher_logits`` or a :class:`TopK`), c = tau**2 if ``scale_by_temperature_squared`` else 1, D as in
    :func:`kldiv.nn.functional.distillation_loss`, CE the cross-entropy of the untempered logits, and
    w_n = 1 / (kept positions) for "mean" (or 1 / ``num_items_in_batch``), 1 for "sum".

    The logits are computed a chunk of rows at a time; the gradients of the hidden states, weight and bias are
    computed in the forward pass (weight and bias accumulated in ``accum_dtype``) and only scaled in backward.
    Peak memory beyond the inputs: the gradients plus about three (chunk, V) float32 buffers.

    Args:
      student_hidden: (N, H_s) hidden states, or (B, T, H_s) (then the teacher's hidden states or logits and the
        labels have the same batch shape (B, T) and are flattened alike).
      student_weight: (V, H_s) LM head; student_bias: optional (V,).
      teacher_hidden, teacher_weight, teacher_bias: (N, H_t), (V_t, H_t), optional (V_t,); no gradient.
      teacher_logits: instead of the teacher's hidden states: (N, V_t) logits or a :class:`TopK`; no gradient.
      labels: optional (N,) integer tensor; positions equal to ``ignore_index`` are excluded (required with
        ``hard_label_weight``, where the others must be token ids in [0, V)).
      divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, num_items_in_batch,
      vocab_size, tail: as in :func:`kldiv.nn.functional.distillation_loss`.
      reduction: "mean" or "sum" ("none" is not available: the weight gradient is summed in forward).
      hard_label_weight: weight >= 0 of the cross-entropy on the labels (0: pure distillation).
      accum_dtype: dtype accumulating the weight and bias gradients (float32 or float64).
      softcap, logit_scale: the models' final transform of their logits, ``z -> softcap * tanh(logit_scale * z /
        softcap)`` (Gemma 2's ``final_logit_softcapping``; without ``softcap``, ``z -> logit_scale * z``, Cohere's
        ``logit_scale``), applied inside each chunk to the student's and the teacher's logits (a number: both; a
        pair: (student, teacher)) before the temperature and before the cross-entropy, with the exact gradient.
        Given ``teacher_logits`` are transformed too; a ``TopK`` teacher's log-probabilities are taken as given.
      process_group: vocabulary parallelism (a column-parallel LM head). Each rank passes its contiguous slice
        of the vocabulary, rank r holding token ids [offset_r, offset_r + V_r) in rank order (slices may differ
        in size): ``student_weight`` (V_r, H), ``student_bias`` (V_r,), ``teacher_weight`` (V_r, H_t) or
        ``teacher_logits`` (N, V_r), with the hidden states replicated; labels and ``TopK`` indices are global
        token ids. Every rank returns the same loss, equal to the single-device loss, the gradient of its own
        weight and bias slices, and the whole gradient of the hidden states (summed over the group once, an
        (N, H) all-reduce: do not also sum it in backward, as Megatron's copy-to-tensor-parallel region would).
        Per row, only O(1) numbers are exchanged (see :func:`kldiv.nn.functional.distillation_loss`), including
        for the vocabulary-parallel cross-entropy of ``hard_label_weight``. Weights given as DTensors sharded on
        their first dimension over a 1-D mesh need no group.

    Returns:
      A 0-d tensor, float32 for half-precision inputs.

    References:
      Hinton, Vinyals and Dean (2015); Agarwal et al. (2024), GKD; Ko et al. (2024), DistiLLM;
      Wijmans et al. (2024), Cut Your Losses in Large-Vocabulary Language Models (chunked logits).
    """
    _validate.check_no_torch_func("kldiv.nn's fused linear loss", student_hidden, student_weight, teacher_hidden,
                                  teacher_weight, student_bias, teacher_bias, teacher_logits, labels)
    options = Options.make(divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction,
                           softcap, logit_scale)
    _validate.check_fused_reduction(options.reduction)
    (student_weight, student_bias, teacher_weight, teacher_bias), mesh_group = _shards.unshard(
        student_weight, student_bias, teacher_weight, teacher_bias, dim=0)
    (teacher_logits,), logits_group = _shards.unshard(teacher_logits)
    labels = _shards.whole(labels)
    process_group = next((g for g in (process_group, mesh_group, logits_group) if g is not None), None)
    if isinstance(student_hidden, torch.Tensor) and student_hidden.ndim > 2:  # (B, T, H): positions flattened
        student_hidden, teacher_hidden, teacher_logits, labels = _flatten_positions(
            student_hidden, teacher_hidden, teacher_logits, labels)
    hidden = _validate.check_matrix("student_hidden", student_hidden)
    weight = _validate.check_matrix("student_weight", student_weight)
    heads = (hidden, weight, student_bias, teacher_hidden, teacher_weight, teacher_bias)
    floating = [x for x in heads if isinstance(x, torch.Tensor) and x.is_floating_point()]
    cast = None
    if torch.is_autocast_enabled(hidden.device.type):
        # as nn.Linear under autocast: the heads' matmuls in the autocast dtype, whatever the parameters' dtype
        # (a float32 LM head with bf16 hidden states)
        cast = torch.get_autocast_dtype(hidden.device.type)
    elif len({x.dtype for x in floating}) > 1:
        # mixed dtypes without autocast (bf16 hidden states, a float32 head): the matmuls in the widest of them
        cast = functools.reduce(torch.promote_types, (x.dtype for x in floating))
    if cast is not None:  # gradients flow back to each tensor in its own dtype
        hidden, weight, student_bias, teacher_hidden, teacher_weight, teacher_bias = (
            x.to(cast) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in heads
        )
    _validate.check_lm_head(hidden, weight)
    n, v = hidden.shape[0], weight.shape[0]
    _validate.check_bias("student_bias", student_bias, v)
    if labels is not None:
        _validate.check_labels(labels, (n,), "student_hidden")
    hard = _validate.check_hard_label_weight(hard_label_weight)
    _validate.check_accum_dtype(accum_dtype)
    num_items = _validate.check_num_items(num_items_in_batch, options.reduction)
    _validate.check_one_teacher(teacher_hidden, teacher_logits)
    if tail is not None:
        _validate.check_choice("tail", tail, _validate.TOPK_TAILS)
    indices = logprobs = None
    mode = None
    if teacher_hidden is not None:
        teacher_hidden, teacher_weight = _validate.check_teacher_head(teacher_hidden, teacher_weight, n)
        _validate.check_bias("teacher_bias", teacher_bias, teacher_weight.shape[0])
        teacher_v = teacher_weight.shape[0]
        _validate.check_same_device(hidden, teacher_hidden=teacher_hidden, teacher_weight=teacher_weight)
    elif isinstance(teacher_logits, TopK):
        indices, logprobs = teacher_logits.indices, teacher_logits.logprobs
        _validate.check_fused_topk(indices, n)
        mode = _validate.check_tail(teacher_logits.tail, tail)
        teacher_v, teacher_logits = v, None
    else:
        teacher_logits = _validate.check_fused_teacher_logits(teacher_logits, n)
        teacher_v = teacher_logits.shape[1]
    if process_group is None:
        size = whole = _validate.check_vocab_size(v, teacher_v, vocab_size, "the teacher")
        shards = None
    else:
        _validate.check_vocab_size(v, teacher_v, None, "the teacher")  # one slice: the same on both sides
        shards = _shards.shards_of(process_group, v, hidden.device, vocab_size)
        size, whole = shards.local, shards.width
    _validate.check_same_device(hidden, student_weight=weight, labels=labels)
    if hard:
        _validate.check_hard_labels(labels, options.ignore_index, whole)
    if indices is not None:
        _validate.check_topk_size(indices.shape[-1], whole)
        rows, _ = selected_rows(labels, n, options.ignore_index)
        _validate.check_topk_rows(indices.long(), logprobs, rows, whole, mode)
    config = (options, size, mode, hard, num_items, accum_dtype, shards)
    return FusedLinearFunction.apply(
        hidden, weight, student_bias, teacher_hidden, teacher_weight, teacher_bias, teacher_logits, indices,
        logprobs, labels, config,
    )


class FusedLinearDistillationLoss(torch.nn.Module):
    """Distillation from hidden states and LM heads without materialising the logits (see
    :func:`fused_linear_distillation_loss` for the formula).

    Args:
      divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction, vocab_size,
      tail, hard_label_weight, accum_dtype, process_group, softcap, logit_scale: see :func:`fused_linear_distillation_loss`.

    Call:
      ``loss(student_hidden, student_weight, teacher_hidden=None, teacher_weight=None, labels=None, *,
      student_bias=None, teacher_bias=None, teacher_logits=None, num_items_in_batch=None)``.

    References:
      Hinton, Vinyals and Dean (2015); Wijmans et al. (2024), Cut Your Losses in Large-Vocabulary Language Models.
    """

    def __init__(
        self,
        divergence: str = "kl",
        *,
        beta: float = 0.5,
        alpha: float = 0.1,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        reduction: str = "mean",
        vocab_size: int | None = None,
        tail: str | None = None,
        hard_label_weight: float = 0.0,
        accum_dtype: torch.dtype = torch.float32,
        process_group: Any = None,
        softcap: float | tuple[float | None, float | None] | None = None,
        logit_scale: float | tuple[float, float] = 1.0,
    ) -> None:
        super().__init__()
        Options.make(divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction,
                     softcap, logit_scale)
        _validate.check_fused_reduction(reduction)
        _validate.check_hard_label_weight(hard_label_weight)
        _validate.check_accum_dtype(accum_dtype)
        self.kwargs = dict(
            divergence=divergence, beta=beta, alpha=alpha, temperature=temperature,
            scale_by_temperature_squared=scale_by_temperature_squared, ignore_index=ignore_index,
            reduction=reduction, vocab_size=vocab_size, tail=tail, hard_label_weight=hard_label_weight,
            accum_dtype=accum_dtype, process_group=process_group, softcap=softcap, logit_scale=logit_scale,
        )

    def forward(
        self,
        student_hidden: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_hidden: torch.Tensor | None = None,
        teacher_weight: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        student_bias: torch.Tensor | None = None,
        teacher_bias: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | TopK | None = None,
        num_items_in_batch: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return fused_linear_distillation_loss(
            student_hidden, student_weight, teacher_hidden, teacher_weight, labels, student_bias=student_bias,
            teacher_bias=teacher_bias, teacher_logits=teacher_logits, num_items_in_batch=num_items_in_batch,
            **self.kwargs,
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k in ("divergence", "temperature", "reduction"))
