"""kldiv.nn: PyTorch distillation losses built on the kldiv measures, memory-efficient on any device.

- :class:`DistillationLoss` / :func:`functional.distillation_loss`: KL, reverse KL, JSD, skew KL, skew reverse
  KL, TVD between teacher and student logits (or a :class:`TopK` sparse teacher), gradient computed in forward.
- :class:`FusedLinearDistillationLoss`: the same from hidden states and the LM head, one chunk of logits at a time.
- Both take ``process_group`` for a vocabulary sharded over tensor-parallel ranks; :func:`count_items` counts a
  global batch's items across data-parallel ranks and accumulation steps (``num_items_in_batch``).
"""

from . import functional
from ._shards import count_items
from ._types import TopK
from .fused_linear import FusedLinearDistillationLoss
from .losses import DistillationLoss

__all__ = ["DistillationLoss", "FusedLinearDistillationLoss", "TopK", "count_items", "functional"]
