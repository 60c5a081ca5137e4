"""The row form: a divergence between rows of logits, as row reductions over max-shifted logits.

Every fast path (the engine's logits path, the ``kldiv.nn`` kernels eager and compiled, the fused linear loss,
the compare kernel, and later the Triton and vocabulary-parallel kernels) evaluates a divergence through its
measure's :class:`RowForm`, in three stages per row:

1. the row max ``m`` and the shifted logits ``x = logits - m`` (``-inf`` where the probability is 0);
2. the sum of exponentials ``z = sum exp(x)``, accumulated in float64, and ``p = exp(x) / z``;
3. the measure's row sums (``RowForm.sums``), accumulated in float64, then ``RowForm.finish`` combines them
   with the row constants ``log z`` in float64, and ``RowForm.grad`` gives the gradient in either side's logits.

Each stage's result per row is O(1) numbers, which is what a vocabulary-parallel kernel exchanges between ranks.
NaN propagates: a row holding NaN or +inf, or no finite logit, has ``z = NaN`` and so a NaN value, whatever
the selects inside the sums do. Support is decided from the shifted logits (``x == -inf`` means probability 0),
never from probabilities that underflowed.

This module imports nothing of kldiv: the measures (:mod:`kldiv.measures`) define their row forms with it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

INF = float("inf")


class Side(NamedTuple):
    """One distribution of a row form, given as logits."""

    x: Any  # logits minus the row max, in the work dtype; -inf where the probability is 0
    p: Any  # exp(x) / z, in the work dtype
    z: Any  # (rows, 1) sum of exp(x), float64 where the namespace has it
    log_z: Any  # (rows, 1) log z, same dtype as z
    # False when the block is known to hold finite logits only: the selects for -inf (probability 0) and NaN
    # are then no-ops, and the row forms skip them (only decided for eager CPU tensors; True elsewhere)
    edges: bool = True


@dataclass(frozen=True)
class RowForm:
    """A measure's row form: ``sums(xp, *sides, **params)`` returns the row sums (a tuple of (rows,) arrays, in
    ``wide`` accumulation); ``finish(xp, sums, *log_zs, **params)`` the values (rows,) from the sums and the
    sides' (rows,) ``log z``; ``grad(xp, sides, sums, i, **params)`` the gradient of the value in side ``i``'s
    logits (rows, V), in the work dtype, with ``sums`` as ``sums`` returned them."""

    sums: Callable[..., tuple[Any, ...]]
    finish: Callable[..., Any]
    grad: Callable[..., Any]


def wide(xp: Any, like: Any) -> Any:
    """The accumulation dtype: float64 where the namespace (and device) has it, else ``like``'s dtype."""
    if xp is np:
        return np.float64
    if "torch" in sys.modules and type(like).__module__.startswith("torch"):
        return like.dtype if like.device.type == "mps" else sys.modules["torch"].float64
    if "jax" in sys.modules and type(like).__module__.startswith("jax"):
        import jax

        return xp.float64 if jax.config.jax_enable_x64 else like.dtype
    return getattr(xp, "float64", like.dtype)


def row_sum(xp: Any, x: Any, keepdims: bool = False) -> Any:
    """Sum over the last axis, accumulated in the wide dtype."""
    return xp.sum(x, axis=-1, keepdims=keepdims, dtype=wide(xp, x))


def side(xp: Any, logits: Any) -> Side:
    """Stages 1 and 2 for one side: shift by the row max, float64 sum of exponentials, probabilities."""
    edges = True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(logits, torch.Tensor) and logits.device.type == "cpu" and not (
        torch.compiler.is_compiling()
    ):
        low, m = torch.aminmax(logits, dim=-1, keepdim=True)  # one pass for both
        edges = not bool(torch.isfinite(low).all() & torch.isfinite(m).all())
    else:
        m = xp.max(logits, axis=-1, keepdims=True)
    x = logits - m  # NaN everywhere for a NaN or all -inf row, NaN at a +inf logit
    e = xp.exp(x)
    z = row_sum(xp, e, keepdims=True)
    return Side(x, e * xp.astype(1.0 / z, e.dtype), z, xp.log(z), edges)


def log_ratio(xp: Any, a: Side, b: Side) -> Any:
    """``log b - log a`` per entry: the difference of the shifted logits minus that of the row constants (formed
    in float64), so it keeps its relative precision when the two rows are close."""
    return (b.x - a.x) - xp.astype(b.log_z - a.log_z, a.x.dtype)


def poison(xp: Any, value: Any, *log_zs: Any) -> Any:
    """``value`` made NaN on rows where a side's ``log z`` is NaN (adds exactly 0 elsewhere: log z is finite)."""
    return value + 0.0 * sum(log_zs)


def non_negative(xp: Any, value: Any) -> Any:
    """Clamp a divergence that is >= 0 by theorem at 0 from below (rounding can leave -1e-16); NaN stays NaN."""
    return xp.where(value < 0, xp.zeros_like(value), value)


def evaluate(form: RowForm, xp: Any, logits: tuple[Any, ...], params: dict, grad_sides: tuple[int, ...] = ()):
    """Values (rows,) in the wide dtype and the gradients in the logits of ``grad_sides``, for a unit upstream:
    the three stages on one block of rows, eagerly. (Compiled kernels call the same three functions.)"""
    sides = tuple(side(xp, x) for x in logits)
    sums = form.sums(xp, *sides, **params)
    value = form.finish(xp, sums, *(s.log_z[..., 0] for s in sides), **params)
    return value, [form.grad(xp, sides, sums, i, **params) for i in grad_sides]
