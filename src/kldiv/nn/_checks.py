"""Input checks for kldiv.nn: every message says what is wrong and how to fix it.

Numbers in [0, 1] reuse the core checks of :mod:`kldiv._validate`; these are the PyTorch-specific ones.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch

DIVERGENCES = ("kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd")
REDUCTIONS = ("mean", "sum", "none")
TAILS = ("bucket", "renormalize")


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(repr(o) for o in options)}")
    return value


def temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"temperature must be a positive number (1.0 leaves the logits as they are), got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"temperature must be a positive finite number (1.0 leaves the logits as they are), got {value!r}")
    return float(value)


def weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number >= 0 (0 turns the term off), got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0 (0 turns the term off), got {value!r}")
    return float(value)


def integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def float_tensor(name: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; it must be a floating-point tensor (cast it with .float())")
    if x.ndim == 0:
        raise ValueError(f"{name} is a scalar; it needs a last axis holding the vocabulary, shape (..., V)")
    return x


def same_device(reference: torch.Tensor, **tensors: Any) -> None:
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.device != reference.device:
            raise ValueError(
                f"{name} is on {t.device} but the student's tensors are on {reference.device}; move it with .to(device)"
            )


def labels(x: Any, batch: tuple[int, ...], what: str = "student_logits") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of token ids, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(
            f"labels has dtype {x.dtype}; it must be an integer tensor of token ids (ignore_index where masked), "
            "e.g. labels.long()"
        )
    if tuple(x.shape) != batch:
        raise ValueError(
            f"labels has shape {tuple(x.shape)} but {what} has batch shape {batch} (all axes but the last); "
            "pass one label per position"
        )
    return x


def vocab(student_v: int, teacher_v: int, vocab_size: Any, teacher_name: str = "teacher_logits") -> int:
    if vocab_size is None:
        if student_v != teacher_v:
            raise ValueError(
                f"student_logits has {student_v} entries along the last axis but {teacher_name} has {teacher_v}; "
                f"if the vocabularies share their first tokens (padded embeddings), pass "
                f"vocab_size={min(student_v, teacher_v)} to truncate both"
            )
        return student_v
    size = integer("vocab_size", vocab_size)
    if not 1 <= size <= min(student_v, teacher_v):
        raise ValueError(
            f"vocab_size={size} must lie in [1, {min(student_v, teacher_v)}] (the smaller of the student's "
            f"{student_v} and the teacher's {teacher_v} entries)"
        )
    return size


def num_items(value: Any, reduction: str) -> Any:
    if value is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"num_items_in_batch divides the summed loss by a global token count, which only applies with "
            f"reduction='mean'; got reduction={reduction!r}"
        )
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"num_items_in_batch must be a single positive number, got a tensor of shape {tuple(value.shape)}")
        return value.reshape(()).to(torch.float64)  # an integer count must not round the weight to float32
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"num_items_in_batch must be a positive number (tokens in the whole batch), got {value!r}")
    return float(value)


def batch_shapes(student: torch.Tensor, other: torch.Tensor, other_name: str) -> None:
    if tuple(student.shape[:-1]) != tuple(other.shape[:-1]):
        raise ValueError(
            f"student_logits has shape {tuple(student.shape)} but {other_name} has shape {tuple(other.shape)}; "
            "all axes but the last (batch, sequence) must be equal"
        )
