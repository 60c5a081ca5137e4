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
# Compiled, measure-based kernels: Inductor runs each of a chunk's passes over all its rows before the next, so
# the chunk (both inputs and the kept exponentials, 4 x 1 MiB at 2**18) must stay in the two cores' L2; measured
# at (4096, 32000): 2**18 best, 2**20 ~10 % slower, 2**22 ~20-50 % slower (see benchmarks/RESULTS.md).
# Compiled KL kernel (one loop per row, see _compile): rows stay in cache whatever the chunk, and fewer, larger
# calls measured faster (107 rows per call 0.23 s, 256 rows 0.20 s, 512 rows 0.19 s at (4096, 32000)).
EAGER_CHUNK = 1 << 18
COMPILED_CHUNK = 1 << 18
ONE_LOOP_CHUNK = 1 << 23


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
    div: Divergence, student: Any, teacher: Any, inv_temperature: Any, grad_scale: Any, out: Any
) -> tuple[Any, ...]:
    """``dense_rows``'s values and gradient with fewer passes per row (the compiled kernel's source).

    Writes ``grad_scale`` times the student gradient into ``out`` (when given) and returns row results that
    :func:`finish_fast` turns into the values. KL (either order) returns only row reductions, so that Inductor
    runs all of a row's passes in one loop (see :mod:`._compile`); its chunks are ONE_LOOP_CHUNK elements.

    A row is NaN where ``dense_rows`` poisons it: a non-finite row max (a NaN or +inf logit, or no finite one).
    KL(P || Q) over logits a (of P) and b (of Q) with row constants c_a, c_b (log p = a - c_a, c = max + log z):
    value = S + c_b - c_a with S = sum_{p_i > 0} p_i (a_i - b_i) (sum p = 1). Its gradient in the student's logits
    is the measure's vjp followed by the log-softmax backward: with the student as Q, -p + q sum(p) = q - p; with
    the student as P, h - p sum(h) where h = p (log p - log q) and sum(h) = value, i.e. p (a - b - S).
    Every other measure: its own ``value``/``vjp`` on the same canonical form.
    """
    dtype = inv_temperature.dtype
    a_s = student.to(dtype) * inv_temperature
    a_t = teacher.to(dtype) * inv_temperature
    factor = inv_temperature * grad_scale
    if div.measure is not KL:
        (s, _, m_s), (t, _, m_t) = _logits_with_max(a_s), _logits_with_max(a_t)
        value, g = div.value_and_student_grad(s, t)
        value = xp.where(torch.isfinite(m_s[:, 0]) & torch.isfinite(m_t[:, 0]), value, math.nan)
        if out is not None:
            out.copy_(_engine.log_softmax_vjp(xp, g, s) * factor)
        return (value,)
    m_s, m_t = xp.max(a_s, axis=-1, keepdims=True), xp.max(a_t, axis=-1, keepdims=True)
    e_s, e_t = xp.exp(a_s - m_s), xp.exp(a_t - m_t)
    z_s, z_t = xp.sum(e_s, axis=-1, keepdims=True), xp.sum(e_t, axis=-1, keepdims=True)
    p_s, p_t = e_s * (1.0 / z_s), e_t * (1.0 / z_t)  # one division per row, not per logit
    p, q, a, b = (p_s, p_t, a_s, a_t) if div.student_first else (p_t, p_s, a_t, a_s)
    total = xp.sum(xp.where(p > 0, p * (a - b), 0.0), axis=-1, keepdims=True)
    if out is not None:
        g = xp.where(p > 0, p * ((a - b) - total), 0.0) if div.student_first else q - p
        out.copy_(g * factor)
    return total, m_s, z_s, m_t, z_t


def finish_fast(div: Divergence, pieces: tuple[Any, ...]) -> Any:
    """The values (rows,) from :func:`fast_rows`'s row results (eager: a few operations on short vectors; the
    row constants in float64, whose difference cancels against the sum)."""
    if len(pieces) == 1:
        return pieces[0]
    total, m_s, z_s, m_t, z_t = (x[:, 0].double() for x in pieces)
    c_s, c_t = m_s + xp.log(z_s), m_t + xp.log(z_t)
    value = total + ((c_t - c_s) if div.student_first else (c_s - c_t))
    return xp.where(torch.isfinite(m_s) & torch.isfinite(m_t), value, math.nan).to(pieces[0].dtype)


def _kernel(div: Divergence, need_grad: bool, fast: bool = False):
    if fast:

        def kernel(student, teacher, inv_temperature, grad_scale, out):
            return fast_rows(div, student, teacher, inv_temperature, grad_scale, out)

        return kernel

    def kernel(student, teacher, inv_temperature, grad_scale, out):
        return into_out(*dense_rows(div, student, teacher, inv_temperature, grad_scale, need_grad), out)

    return kernel


def into_out(value: Any, g: Any, out: Any) -> tuple[Any]:
    """:func:`run_chunks`'s kernel protocol for a kernel that returns (values, gradient or None): the gradient
    is copied into ``out`` (None: no gradient wanted)."""
    if out is not None:
        out.copy_(g)
    return (value,)


def run_dense(
    div: Divergence,
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    temperature: float,
    rows: torch.Tensor | None,
    grad_scale: float | torch.Tensor,
    grad_out: torch.Tensor | None,
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
        [student, teacher],
        student.shape[1],
        work_dtype(student.dtype, teacher.dtype),
        temperature=temperature,
        rows=rows,
        grad_scale=grad_scale,
        grad_out=grad_out,
        compiled=(
            lambda: _kernel(div, need_grad, fast=True),
            lambda pieces: finish_fast(div, pieces),
            ONE_LOOP_CHUNK if div.measure is KL else COMPILED_CHUNK,
        ),
    )


def run_chunks(
    key: Any,
    make: Any,
    inputs: list[torch.Tensor],
    width: int,
    dtype: torch.dtype,
    *,
    temperature: float,
    rows: torch.Tensor | None,
    grad_scale: float | torch.Tensor,
    grad_out: torch.Tensor | None,
    compiled: tuple[Any, Any, int] | None = None,
) -> torch.Tensor:
    """The row-chunk loop shared by every kernel.

    ``make()(*chunks, inv_temperature, grad_scale, out)`` writes the chunk's gradient into ``out`` (None: no
    gradient) and returns a tuple whose first element is the chunk's values; ``compiled`` optionally gives the
    compiled kernel's own ``make``, the function that turns its returned tuple into the values, and its number
    of elements per chunk (default COMPILED_CHUNK). ``inputs`` are 2-D with one row per row of the result;
    ``width`` is the number of columns the kernel reads per row.
    The gradient is written straight into ``grad_out`` for consecutive rows, and through one chunk-sized buffer
    for selected rows (gathered; their values and gradients are scattered back).
    """
    n, device = inputs[0].shape[0], inputs[0].device
    values = torch.zeros(n, dtype=dtype, device=device)
    n_sel = n if rows is None else int(rows.numel())
    if n_sel == 0:
        return values
    inv_t = torch.tensor(1.0 / temperature, dtype=dtype, device=device)
    scale = torch.as_tensor(grad_scale, dtype=dtype, device=device)
    compile_it = _compile.wanted(n_sel * width, device)
    make_compiled, finish, elements = compiled or (make, lambda pieces: pieces[0], COMPILED_CHUNK)
    step = max(2, (elements if compile_it else EAGER_CHUNK) // width)
    key = (*key, *(x.dtype for x in inputs), *(x.shape[1] for x in inputs), dtype, device.type)
    eager = make()
    buffers = None  # chunk-sized copies of the inputs and the gradient, for selected rows
    for lo in range(0, n_sel, step):
        hi = min(lo + step, n_sel)
        if compile_it and hi - lo == 1:
            lo = hi - 2 if n_sel >= 2 else lo  # a 1-row block would compile again: overlap the row before
        size = hi - lo
        if rows is None:
            chunks = [x[lo:hi] for x in inputs]
            out = grad_out[lo:hi] if grad_out is not None else None
        else:
            if buffers is None:
                length = min(step, n_sel)
                buffers = [x.new_empty((length, x.shape[1])) for x in inputs]
                if grad_out is not None:
                    buffers.append(grad_out.new_empty((length, grad_out.shape[1])))
            used = [
                torch.index_select(x, 0, rows[lo:hi], out=b[:size])
                for b, x in zip(buffers[: len(inputs)], inputs, strict=True)
            ]
            if grad_out is not None:
                used.append(buffers[-1][:size])
            chunks, out = used[: len(inputs)], (used[-1] if grad_out is not None else None)
        if compile_it:
            value = finish(_compile.call(key, make_compiled, device, *chunks, inv_t, scale, out))
        else:
            value = eager(*chunks, inv_t, scale, out)[0]
        if rows is None:
            values[lo:hi] = value
        else:
            values.index_copy_(0, rows[lo:hi], value)
            if out is not None:
                grad_out.index_copy_(0, rows[lo:hi], out)
    return values
