"""Public value types of kldiv.nn."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _validate


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
        _validate.check_topk(self.indices, self.logprobs, self.tail)
