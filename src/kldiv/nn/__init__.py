"""kldiv.nn: PyTorch distillation losses built on the kldiv measures, memory-efficient on any device.

- :class:`DistillationLoss` / :func:`functional.distillation_loss`: KL, reverse KL, JSD, skew KL, skew reverse
  KL, TVD between teacher and student logits (or a :class:`TopK` sparse teacher), gradient computed in forward.
- :class:`FusedLinearDistillationLoss`: the same from hidden states and the LM head, one chunk of logits at a time.
"""

from . import functional
from ._types import TopK
from .fused_linear import FusedLinearDistillationLoss
from .losses import DistillationLoss

__all__ = ["DistillationLoss", "FusedLinearDistillationLoss", "TopK", "functional"]
