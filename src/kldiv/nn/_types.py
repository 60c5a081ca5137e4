"""Public value types of kldiv.nn."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _checks


@dataclass(frozen=True)
class TopK:
    """A sparse teacher: its k most likely tokens at each position and their log-probabilities.

    This is what a teacher that stored only its top-k (DistillKit, vLLM ``logprobs=k``) provides. The
    log-probabilities are over the teacher's full vocabulary (``log_softmax`` then ``topk``), so at each
    position ``sum(exp(logprobs)) <= 1``; the rest, ``1 - sum(exp(logprobs))``, is the tail.

    Args:
      indices: integer tensor (..., k) of token ids, distinct within a position, in [0, V).
      logprobs: floating tensor (..., k), the teacher's log-probabilities of those tokens (``-inf`` allowed).
      tail: how the loss treats the tokens outside the top k; ``None`` uses the loss's ``tail`` argument
        (default ``"bucket"``). ``"bucket"``: one extra outcome holding the tail mass on each side (the
        student's is the mass it puts outside the teacher's top k). ``"renormalize"``: both sides restricted to
        the k tokens and renormalised over them.
    """

    indices: torch.Tensor
    logprobs: torch.Tensor
    tail: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.indices, torch.Tensor) or not isinstance(self.logprobs, torch.Tensor):
            raise TypeError(
                f"TopK needs torch tensors, got indices={type(self.indices).__name__}, "
                f"logprobs={type(self.logprobs).__name__}"
            )
        if self.indices.is_floating_point() or self.indices.is_complex() or self.indices.dtype == torch.bool:
            raise TypeError(f"TopK.indices has dtype {self.indices.dtype}; it must hold integer token ids (e.g. .long())")
        if not self.logprobs.is_floating_point():
            raise TypeError(f"TopK.logprobs has dtype {self.logprobs.dtype}; it must be a floating-point tensor")
        if self.indices.shape != self.logprobs.shape or self.indices.ndim == 0:
            raise ValueError(
                f"TopK.indices has shape {tuple(self.indices.shape)} and TopK.logprobs {tuple(self.logprobs.shape)}; "
                "they must have the same shape (..., k)"
            )
        if self.indices.shape[-1] == 0:
            raise ValueError("TopK has k = 0 tokens per position; keep at least one")
        if self.indices.device != self.logprobs.device:
            raise ValueError(
                f"TopK.indices is on {self.indices.device} but TopK.logprobs on {self.logprobs.device}; put both on one device"
            )
        if self.tail is not None:
            _checks.choice("tail", self.tail, _checks.TAILS)
