"""``torch.nn.Module`` wrappers: they hold the options and call :mod:`kldiv.nn.functional`; no arithmetic here."""

from __future__ import annotations

from typing import Any

import torch

from . import functional as F
from ._types import TopK


class DistillationLoss(torch.nn.Module):
    """Knowledge-distillation loss between student and teacher logits (or a :class:`TopK` teacher).

    ``loss = mean over kept positions n of c * D(T_n, S_n)``, with ``T_n, S_n`` the tempered softmaxes of the
    teacher's and the student's logits, ``c = temperature**2`` if ``scale_by_temperature_squared`` else 1, and
    D one of "kl" = KL(T || S), "reverse_kl" = KL(S || T), "js" (generalized JSD, mixture
    ``beta T + (1 - beta) S``, 0 at beta = 0 and 1), "generalized_jsd" (TRL's convention: "js" inside (0, 1),
    "kl" at beta = 0, "reverse_kl" at beta = 1), "skew_kl" = KL(T || alpha T + (1 - alpha) S), "skew_reverse_kl" =
    KL(S || alpha S + (1 - alpha) T), "tvd". Memory beyond the inputs: the student's gradient plus one chunk.

    Args:
      divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction,
      vocab_size, tail, process_group, softcap, logit_scale: see :func:`kldiv.nn.functional.distillation_loss` (``process_group``:
      each rank passes its slice of the vocabulary and gets the whole-vocabulary loss).

    Call:
      ``loss(student_logits, teacher_logits, labels=None, num_items_in_batch=None)``; returns the loss tensor.

    References:
      Hinton, Vinyals and Dean (2015); Agarwal et al. (2024), GKD; Ko et al. (2024), DistiLLM.
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
        process_group: Any = None,
        softcap: float | tuple[float | None, float | None] | None = None,
        logit_scale: float | tuple[float, float] = 1.0,
    ) -> None:
        super().__init__()
        F.Options.make(divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, reduction,
                       softcap, logit_scale)
        self.softcap, self.logit_scale = softcap, logit_scale
        self.divergence, self.beta, self.alpha = divergence, beta, alpha
        self.temperature, self.scale_by_temperature_squared = temperature, scale_by_temperature_squared
        self.ignore_index, self.reduction, self.vocab_size, self.tail = ignore_index, reduction, vocab_size, tail
        self.process_group = process_group

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | TopK,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        return F.distillation_loss(
            student_logits,
            teacher_logits,
            labels,
            divergence=self.divergence,
            beta=self.beta,
            alpha=self.alpha,
            temperature=self.temperature,
            scale_by_temperature_squared=self.scale_by_temperature_squared,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
            vocab_size=self.vocab_size,
            tail=self.tail,
            process_group=self.process_group,
            softcap=self.softcap,
            logit_scale=self.logit_scale,
        )

    def extra_repr(self) -> str:
        return f"divergence={self.divergence!r}, temperature={self.temperature}, reduction={self.reduction!r}"
