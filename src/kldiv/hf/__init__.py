"""kldiv.hf: distillation with Hugging Face Transformers' ``Trainer``, on kldiv.nn's losses.

- :class:`DistillationTrainer`: a ``transformers.Trainer`` distilling a teacher (live, or offline top-k)
  into the model, fused by default (the logits are never materialised).
- :func:`distillation_loss_func`: the same loss as a ``compute_loss_func`` for a plain ``Trainer``.
- :func:`save_teacher_topk` / :class:`TeacherTopK`: a teacher's top-k log-probabilities in checksummed
  safetensors shards, and the reader that yields them as :class:`kldiv.nn.TopK` teachers.

Needs the ``hf`` extra (``pip install 'kldiv[hf]'``: transformers, accelerate); transformers is imported only
when the trainer is first used.
"""

from __future__ import annotations

from typing import Any

from .topk import TeacherTopK, save_teacher_topk

__all__ = ["DistillationLossFunc", "DistillationTrainer", "TeacherTopK", "distillation_loss_func",
           "save_teacher_topk"]

_LAZY = {"DistillationTrainer", "DistillationLossFunc", "distillation_loss_func"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'kldiv.hf' has no attribute {name!r}")
