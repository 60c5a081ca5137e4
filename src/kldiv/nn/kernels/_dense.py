"""Dense teacher: a divergence between two (rows, V) logit sets, value and student gradient per chunk of rows.

``dense_rows`` is the reference (and the eager kernel): the measure's own ``value`` and ``vjp`` on
``_engine.canonical`` log-softmaxes, followed by ``_engine.log_softmax_vjp``. The compiled kernel is
``torch.compile`` of ``fast_rows``, the same formulas arranged so that Inductor needs few passes per row:
each exponential is taken once (Inductor keeps ``exp(x - max)`` for all its consumers), NaN/inf rows are
found from the row maxima instead of an extra pass, and KL (either order) uses its closed form over the
logits. Tests hold ``fast_rows`` to ``dense_rows``'s numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import array_api_compat.torch as xp
import torch

from ... import _engine
from ..._engine import Canon, Measure
from ...measures import KL
from . import _compile

# Elements per chunk. Eager: 2**18 float32 (1 MiB) per temporary stays in L2 between the ~20 ops of a chunk.
# Compiled: Inductor runs each of a chunk's 3-4 passes over all its rows before the next, so the chunk (both
# inputs and the kept exponentials, 4 x 1 MiB at 2**18) must stay in the two cores' L2; measured on the 2-core
# machine at (4096, 32000): 2**18 best, 2**20 ~10 % slower, 2**22 ~20-50 % slower (see benchmarks/RESULTS.md).
EAGER_CHUNK = 1 << 18
COMPILED_CHUNK = 1 << 18


@dataclass(frozen=True)
class Divergence:
    """A measure applied to (teacher, student) in a given argument order, with its fixed parameters."""

    measure: Measure
    student_first: bool  # True: D(student || teacher); False: D(teacher || student)
    params: tuple[tuple[str, float], ...] = ()

    def value_and_student_grad(self, student: Canon, teacher: Canon) -> tuple[Any, Any]:
        """Per-row value and its gradient with respect to the student's log-probabilities (unit upstream,
        up to a row constant times the student probabilities, which the log-softmax backward removes)."""
        params = dict(self.params)
        p, q = (student, teacher) if self.student_first else (teacher, student)
        value = self.measure.value(xp, p, q, **params)
        grads = self.measure.vjp(xp, p, q, value, True, **params)
        return value, grads[0 if self.student_first else 1]


def work_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision computes and accumulates in float32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def canonical_logits(x: Any) -> Canon:
    return _engine.canonical(xp, x, True, False, 0, None, 0.0)


def poison(value: Any, *cs: Canon) -> Any:
    """Make a row's value NaN where a log-softmax is NaN (a NaN or +inf logit, or no finite logit), which the
    measures' ``0 log 0`` convention could otherwise hide; adds exactly 0 elsewhere (sum(p) = 1)."""
    return value + 0.0 * sum(xp.sum(c.p, axis=-1) for c in cs)


def dense_rows(
    div: Divergence, student: Any, teacher: Any, inv_temperature: Any, grad_scale: Any, need_grad: bool
) -> tuple[Any, Any]:
    """Values (rows,) and, if ``need_grad``, ``grad_scale`` times d value / d student logits (rows, V)
    in the student's dtype. ``inv_temperature`` and ``grad_scale`` are 0-d tensors of the work dtype."""
    dtype = inv_temperature.dtype
    s = canonical_logits(student.to(dtype) * inv_temperature)
    t = canonical_logits(teacher.to(dtype) * inv_temperature)
    value, g = div.value_and_student_grad(s, t)
    value = poison(value, s, t)
    if not need_grad:
        return value, None
    g = _engine.log_softmax_vjp(xp, g, s) * (inv_temperature * grad_scale)
    return value, g.to(student.dtype)


def _logits_with_max(x: Any) -> tuple[Canon, Any]:
    """``_engine.canonical``'s stable log-softmax of logits ``x``, with the row constant m + log sum exp(x - m)
    (rows, 1) that it subtracts and the row max m (rows, 1)."""
    row_max = xp.max(x, axis=-1, keepdims=True)
    shifted = x - row_max
    e = xp.exp(shifted)
    total = xp.sum(e, axis=-1, keepdims=True)
    log_total = xp.log(total)
    return Canon(e / total, shifted - log_total), row_max + log_total, row_max


def fast_rows(
    div: Divergence, student: Any, teacher: Any, inv_temperature: Any, grad_scale: Any, need_grad: bool
) -> tuple[Any, Any]:
    """``dense_rows``'s values and gradient with fewer passes per row (the compiled kernel's source).

    A row is NaN where ``dense_rows`` poisons it: a non-finite row max (a NaN or +inf logit, or no finite one).
    KL(P || Q) over logits a (of P) and b (of Q) with row constants c_a, c_b (log p = a - c_a):
    value = sum_{p_i > 0} p_i (a_i - b_i) + c_b - c_a (sum p = 1). Its gradient in the student's logits is the
    measure's vjp followed by the log-softmax backward: with the student as Q, -p + q sum(p) = q - p; with the
    student as P, h - p sum(h) where h = p (log p - log q) and sum(h) = value, i.e. p (a - b + c_b - c_a - value).
    Every other measure: its own ``value``/``vjp`` on the same canonical form.
    """
    dtype = inv_temperature.dtype
    a_s = student.to(dtype) * inv_temperature
    a_t = teacher.to(dtype) * inv_temperature
    (s, c_s, m_s), (t, c_t, m_t) = _logits_with_max(a_s), _logits_with_max(a_t)
    bad = ~(torch.isfinite(m_s[:, 0]) & torch.isfinite(m_t[:, 0]))
    factor = inv_temperature * grad_scale
    if div.measure is not KL:
        value, g = div.value_and_student_grad(s, t)
        value = xp.where(bad, math.nan, value)
        if not need_grad:
            return value, None
        return value, (_engine.log_softmax_vjp(xp, g, s) * factor).to(student.dtype)
    if div.student_first:
        p, q, a, b, c_a, c_b = s, t, a_s, a_t, c_s, c_t
    else:
        p, q, a, b, c_a, c_b = t, s, a_t, a_s, c_t, c_s
    shift = c_b - c_a
    value = xp.sum(xp.where(p.p > 0, p.p * (a - b), 0.0), axis=-1) + shift[:, 0]
    value = xp.where(bad, math.nan, value)
    if not need_grad:
        return value, None
    if div.student_first:
        g = xp.where(p.p > 0, p.p * ((a - b) + (shift - value[:, None])), 0.0)
    else:
        g = q.p - p.p
    return value, (g * factor).to(student.dtype)


def _kernel(div: Divergence, need_grad: bool, fast: bool = False):
    rows = fast_rows if fast else dense_rows

    def kernel(student, teacher, inv_temperature, grad_scale):
        return rows(div, student, teacher, inv_temperature, grad_scale, need_grad)

    return kernel


def run_dense(
    div: Divergence,
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    temperature: float,
    rows: torch.Tensor | None,
    grad_scale: float | torch.Tensor,
    grad_out: torch.Tensor | None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Evaluate ``div`` on the selected rows of 2-D ``student``/``teacher`` (N, V), chunk by chunk.

    Returns the per-row values (N,) in the work dtype, 0 on rows not in ``rows`` (None: all rows); if
    ``grad_out`` (N, V) is given, writes ``grad_scale`` times the student gradient of each selected row into it
    (other rows are left as they are). No tensor larger than a chunk is allocated.
    """
    need_grad = grad_out is not None
    return run_chunks(
        ("dense", div, need_grad),
        lambda: _kernel(div, need_grad),
        [(student, 0.0), (teacher, 0.0)],
        student.shape[1],
        work_dtype(student.dtype, teacher.dtype),
        temperature=temperature,
        rows=rows,
        grad_scale=grad_scale,
        grad_out=grad_out,
        chunk_rows=chunk_rows,
        compiled_make=lambda: _kernel(div, need_grad, fast=True),
    )


def run_chunks(
    key: Any,
    make: Any,
    inputs: list[tuple[torch.Tensor, float]],
    width: int,
    dtype: torch.dtype,
    *,
    temperature: float,
    rows: torch.Tensor | None,
    grad_scale: float | torch.Tensor,
    grad_out: torch.Tensor | None,
    chunk_rows: int | None = None,
    compiled_make: Any = None,
) -> torch.Tensor:
    """The row-chunk loop shared by every kernel: ``make()(*chunks, inv_temperature, grad_scale)`` returns
    (values, grad or None) for a chunk of rows of each input; ``inputs`` pairs each 2-D input with the value
    that pads it up to the compiled chunk shape. ``width`` is the number of columns the kernel reads per row;
    ``chunk_rows`` fixes the compiled chunk shape (callers that split rows themselves pass one value for all
    their calls), otherwise it follows from ``width`` and the number of rows."""
    first = inputs[0][0]
    n, device = first.shape[0], first.device
    values = torch.zeros(n, dtype=dtype, device=device)
    n_sel = n if rows is None else int(rows.numel())
    if n_sel == 0:
        return values
    inv_t = torch.tensor(1.0 / temperature, dtype=dtype, device=device)
    scale = torch.as_tensor(grad_scale, dtype=dtype, device=device)
    compile_it = _compile.wanted(n_sel * width, device)
    step = max(1, (COMPILED_CHUNK if compile_it else EAGER_CHUNK) // width)
    step = min(step, n)  # the compiled shape depends only on (N, V), never on how many rows are masked
    if compile_it and chunk_rows is not None:
        step = chunk_rows
    key = (*key, *(x.dtype for x, _ in inputs), *(x.shape[1] for x, _ in inputs), dtype, step, device.type)
    eager = make()
    for lo in range(0, n_sel, step):
        hi = min(lo + step, n_sel)
        if rows is None:
            index, chunks = None, [x[lo:hi] for x, _ in inputs]
        else:
            index = rows[lo:hi]
            chunks = [x.index_select(0, index) for x, _ in inputs]
        if compile_it:
            if hi - lo < step:  # pad to the compiled shape with finite rows whose results are dropped
                chunks = [_pad(c, step, fill) for c, (_, fill) in zip(chunks, inputs, strict=True)]
            value, g = _compile.call(key, compiled_make or make, device, *chunks, inv_t, scale)
            value, g = value[: hi - lo], (g[: hi - lo] if g is not None else None)
        else:
            value, g = eager(*chunks, inv_t, scale)
        if index is None:
            values[lo:hi] = value
            if grad_out is not None:
                grad_out[lo:hi] = g
        else:
            values.index_copy_(0, index, value)
            if grad_out is not None:
                grad_out.index_copy_(0, index, g)
    return values


def _pad(x: torch.Tensor, rows: int, fill: float) -> torch.Tensor:
    out = x.new_full((rows, x.shape[1]), fill)
    out[: x.shape[0]] = x
    return out
