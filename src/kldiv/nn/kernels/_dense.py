"""Dense teacher: a divergence between two (rows, V) logit sets, value and student gradient per chunk of rows.

The kernel is the measure's row form (:mod:`kldiv._rows`) on a chunk: both sides shifted by their row max, their
sums of exponentials in float64, the measure's row sums, and the gradient in the student's logits written into
the caller's buffer. It returns row reductions only, and :func:`finish` (eager, on (rows,) vectors) combines
them with the row constants in float64. The same Python function runs eagerly and under ``torch.compile`` (see
:mod:`kldiv._compile`), so the compiled numbers are the eager ones up to rounding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch

from ... import _compile, _config, _rows
from ..._engine import Measure
from . import _triton


@dataclass(frozen=True)
class Divergence:
    """A measure applied to (teacher, student) in a given argument order, with its fixed parameters."""

    measure: Measure
    student_first: bool  # True: D(student || teacher); False: D(teacher || student)
    params: tuple[tuple[str, float], ...] = ()

    @property
    def student(self) -> int:
        """The student's position among the measure's arguments."""
        return 0 if self.student_first else 1

    def ordered(self, student: Any, teacher: Any) -> tuple[Any, Any]:
        return (student, teacher) if self.student_first else (teacher, student)

    def reductions(self, student: _rows.Side, teacher: _rows.Side, factor: Any, out: Any,
                   shards: Any = None) -> tuple[Any, ...]:
        """The row form's sums and both sides' z (in the measure's order); ``factor`` times the student gradient
        written into ``out`` (None: no gradient). With ``shards`` the sides are vocabulary slices and the sums
        are combined across the group before the gradient uses them."""
        form, params = self.measure.rows, dict(self.params)
        sides = self.ordered(student, teacher)
        sums = form.sums(xp, *sides, **params)
        if shards is not None:
            sums = _rows.shared_sums(xp, sums, shards)
        if out is not None:
            grad = form.grad(xp, sides, sums, self.student, **params)
            if torch.compiler.is_compiling():
                out.copy_(grad * factor)
            else:
                torch.mul(grad, factor, out=out)  # one pass, no temporary
        return (*sums, sides[0].z, sides[1].z)

    def finish(self, pieces: tuple[Any, ...]) -> Any:
        """The values (rows,) in float64 from :meth:`reductions`' row results."""
        *sums, z_0, z_1 = pieces
        return self.measure.rows.finish(xp, tuple(sums), xp.log(z_0[:, 0]), xp.log(z_1[:, 0]), **dict(self.params))


def work_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precision computes and accumulates in float32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


@dataclass(frozen=True)
class Squash:
    """A model's final transform of its logits, applied before temperature: ``cap * tanh(scale * x / cap)``
    (final-logit soft-capping, Gemma 2) or, without a cap, ``scale * x`` (a logit scale, Cohere)."""

    scale: float = 1.0
    cap: float | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.cap is None:
            return x * self.scale
        return torch.tanh(x * (self.scale / self.cap)) * self.cap

    def chain(self, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``grad`` (in the transformed logits) times the transform's slope at ``x``, in place: the gradient in
        the raw logits. The slope ``scale / cosh(u)**2`` with ``u = scale * x / cap`` is taken from x itself
        (``1 - tanh(u)**2`` cancels where tanh is near 1); it is 0 where cosh overflows."""
        if self.cap is None:
            return grad.mul_(self.scale)
        return grad.mul_(self.scale / torch.cosh(x * (self.scale / self.cap)).square())


def squashed(squash: Squash | None, x: torch.Tensor) -> torch.Tensor:
    return x if squash is None else squash(x)


def scaled(x: torch.Tensor, inv_temperature: float | torch.Tensor) -> torch.Tensor:
    """``x`` divided by the temperature: a number eagerly (1.0 costs no pass over ``x``), a 0-d tensor in
    compiled kernels (so that its value is not traced into the code)."""
    return x if isinstance(inv_temperature, float) and inv_temperature == 1.0 else x * inv_temperature


def _dense_kernel(div: Divergence, shards: Any = None, squash: tuple[Squash | None, Squash | None] = (None, None),
                  optimistic: bool = False):
    def kernel(student, teacher, inv_temperature, grad_scale, out):
        dtype = work_dtype(student.dtype, teacher.dtype)
        y_s, y_t = squashed(squash[0], student.to(dtype)), squashed(squash[1], teacher.to(dtype))
        if shards is not None:  # vocabulary slices: row constants and sums combined across the group
            s, t = _rows.shared_sides(xp, (scaled(y_s, inv_temperature), scaled(y_t, inv_temperature)), shards)
            found = div.reductions(s, t, inv_temperature * grad_scale, out, shards), None
        else:  # the temperature is applied in side(), after the row max
            s, t = _rows.side(xp, y_s, optimistic, inv_temperature), _rows.side(xp, y_t, optimistic, inv_temperature)
            found = div.reductions(s, t, inv_temperature * grad_scale, out), _rows.bounds(s, t)
        if out is not None and squash[0] is not None:
            squash[0].chain(out, student.to(dtype))
        return found

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
    shards: Any = None,
    squash: tuple[Squash | None, Squash | None] = (None, None),
) -> torch.Tensor:
    """Evaluate ``div`` on the selected rows of 2-D ``student``/``teacher`` (N, V), chunk by chunk.

    Returns the per-row values (N,) in the work dtype, 0 on rows not in ``rows`` (None: all rows); if
    ``grad_out`` (N, V) is given, writes ``grad_scale`` times the student gradient of each selected row into it
    (other rows are left as they are). No tensor larger than a chunk is allocated. The Triton kernel runs it
    where the configuration's ``kernel`` says so (see :mod:`kldiv.nn.kernels._triton`).

    With ``shards`` (:class:`kldiv.nn._shards.Shards`) the columns are this rank's vocabulary slice: every rank of
    the group runs the same chunks (sized by the whole vocabulary) eagerly and gets the same values, and the
    gradient of its own slice. ``squash`` transforms (student's, teacher's) logits first (:class:`Squash`);
    the gradient is in the raw logits.
    """
    chunks = functools.partial(
        run_chunks,
        ("dense", div, grad_out is not None, squash),
        functools.partial(_dense_kernel, div, shards, squash),
        div.finish,
        [student, teacher],
        student.shape[1] if shards is None else shards.width,
        work_dtype(student.dtype, teacher.dtype),
        temperature=temperature,
        grad_scale=grad_scale,
        grad_out=grad_out,
        compilable=shards is None,
    )
    params = dict(div.params)
    if shards is not None or squash != (None, None) or not _triton.wanted(student, div.measure, params):
        return chunks(rows=rows)
    selected, chosen = _triton.run_dense(div.measure, params, div.student_first, student, teacher,
                                         temperature=temperature, rows=rows, grad_scale=grad_scale, grad_out=grad_out)
    values = torch.zeros(student.shape[0], dtype=work_dtype(student.dtype, teacher.dtype), device=student.device)
    values[selected] = chosen.to(values.dtype)
    return values


def small(x: torch.Tensor, shards: Any = None, squash: tuple[Squash | None, Squash | None] = (None, None)) -> bool:
    """Whether a dense call on ``x`` (N, V) may take :func:`small_dense`: eager CPU work of at most
    ``Config.nn_small`` logits per side, on the whole vocabulary (no ``shards``) and the logits as given (no
    ``squash``), with no kernel or compilation asked for by the configuration."""
    config = _config.get_config()
    return (
        shards is None and squash == (None, None) and x.is_cpu and x.numel() <= config.nn_small
        and config.kernel in ("auto", "eager") and config.compile != "always" and not torch.compiler.is_compiling()
    )


def small_dense(div: Divergence, student: torch.Tensor, teacher: torch.Tensor, *, temperature: float,
                rows: torch.Tensor | None, grad_scale: float | torch.Tensor, grad_out: torch.Tensor | None) -> Any:
    """:func:`run_dense` for a small CPU call (see :func:`small`), returning the values (N,) as a float64 NumPy
    array: the row form on both sides at once (stacked), in float64 NumPy. An operation on a few thousand
    values costs about 1 us there against about 3 us for a tensor operation, and the call is two dozen of
    them where the chunk loop would be three dozen tensor operations."""
    pair = div.ordered(student, teacher)
    if rows is not None:
        pair = [x[rows] for x in pair]
    block = np.array([x.numpy() if x.dtype in _NUMPY_DTYPES else x.double().numpy() for x in pair], np.float64)
    if temperature != 1.0:
        block *= 1.0 / temperature
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # NaN and inf rows: the row form's selects
        value, grads = _rows.evaluate(div.measure.rows, np, block, dict(div.params),
                                      (div.student,) if grad_out is not None else ())
    if grad_out is not None:
        factor = float(grad_scale) / temperature
        if rows is None and grad_out.dtype in _NUMPY_DTYPES:
            np.multiply(grads[0], factor, out=grad_out.numpy(), casting="same_kind")
        elif rows is None:
            grad_out.copy_(torch.from_numpy(grads[0] * factor))
        else:
            grad_out[rows] = torch.from_numpy(grads[0] * factor).to(grad_out.dtype)
    if rows is None:
        return value
    values = np.zeros(student.shape[0])
    values[rows.numpy()] = value
    return values


_NUMPY_DTYPES = (torch.float32, torch.float64)


def redo_untamed(values: torch.Tensor, again: torch.Tensor, chunks: Any) -> torch.Tensor:
    """``values`` with the rows ``again`` (which a kernel's select-free formulas did not evaluate exactly)
    replaced by ``chunks(rows=again, compilable=False)``: the eager kernel, with the guarded formulas."""
    if again.numel():
        fixed = chunks(rows=again, compilable=False)
        values[again] = fixed[again]
    return values


def run_chunks(
    key: Any,
    make: Any,
    finish: Any,
    inputs: list[torch.Tensor],
    width: int,
    dtype: torch.dtype,
    *,
    temperature: float,
    rows: torch.Tensor | None,
    grad_scale: float | torch.Tensor,
    grad_out: torch.Tensor | None,
    compilable: bool = True,
) -> torch.Tensor:
    """The row-chunk loop shared by every kernel.

    ``make(optimistic)(*chunks, inv_temperature, grad_scale, out)`` writes the chunk's gradient into ``out``
    (None: no gradient; the two scales are numbers eagerly and 0-d tensors of the work dtype compiled) and
    returns row reductions, which ``finish`` turns into the chunk's values, and a (rows,) mask of the rows it
    evaluated exactly (None: all). Compiled kernels (``make(True)``) take the row forms' select-free formulas for
    every row (:func:`kldiv._rows.side` with ``optimistic``); the rows they mark as not tame (an impossible outcome, a
    NaN, a probability below the float32 normal range) are evaluated again eagerly, where the guarded formulas
    apply, and their values and gradients replaced. ``inputs`` are 2-D
    with one row per row of the result; ``width`` is the number of columns the kernel reads per row (for
    vocabulary slices, the whole vocabulary's: every rank of the group must run the same chunks). With
    ``compilable`` the kernel runs compiled where the configuration says compilation pays.
    The gradient is written straight into ``grad_out`` for consecutive rows, and through one chunk-sized buffer
    for selected rows (gathered; their values and gradients are scattered back).
    """
    n, device = inputs[0].shape[0], inputs[0].device
    n_sel = n if rows is None else int(rows.numel())
    if n_sel == 0:
        return torch.zeros(n, dtype=dtype, device=device)
    config = _config.get_config()
    key = (*key, *(x.dtype for x in inputs), *(x.shape[1] for x in inputs), dtype, device.type, temperature == 1.0)
    compile_it = compilable and _compile.wanted(n_sel * width, device, key)
    step = max(2, (config.compiled_chunk if compile_it else config.eager_chunk) // width)
    if compile_it:  # temperature 1 compiles without the product (a kernel of its own: see the key above)
        inv_t = 1.0 if temperature == 1.0 else torch.tensor(1.0 / temperature, dtype=dtype, device=device)
        scale = torch.as_tensor(grad_scale, dtype=dtype, device=device)
    else:  # eagerly numbers: no tensor to make, and none to read back for temperature 1
        inv_t, scale = 1.0 / temperature, grad_scale if isinstance(grad_scale, torch.Tensor) else float(grad_scale)
    values = None if rows is None and n_sel <= step else torch.zeros(n, dtype=dtype, device=device)
    # the compiled kernel is optimistic; the eager one never is, so that inside a caller's torch.compile (which
    # traces it) it takes the guarded formulas on every row and leaves none to evaluate again
    optimistic, eager = functools.partial(make, True), make(False)
    buffers = None  # chunk-sized copies of the inputs and the gradient, for selected rows
    redo: list[torch.Tensor] = []  # rows a compiled chunk did not evaluate exactly
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
            pieces, bounds = _compile.call(key, optimistic, *chunks, inv_t, scale, out)
        else:
            pieces, bounds = eager(*chunks, inv_t, scale, out)
        exact = _rows.tame_rows(bounds)
        if exact is not None and not bool(exact.all()):
            where = torch.nonzero(~exact)[:, 0] + lo
            redo.append(where if rows is None else rows[where])
        value = finish(pieces)
        if values is None:  # the whole call in one chunk: its values are the result
            values = value.to(dtype)
        elif rows is None:
            values[lo:hi] = value
        else:
            values.index_copy_(0, rows[lo:hi], value.to(dtype))
            if out is not None:
                grad_out.index_copy_(0, rows[lo:hi], out)
    if redo:
        again = torch.unique(torch.cat(redo))  # unique: an overlapped 1-row block may list a row twice
        chunks = functools.partial(run_chunks, key, make, finish, inputs, width, dtype, temperature=temperature,
                                   grad_scale=grad_scale, grad_out=grad_out)
        return redo_untamed(values, again, chunks)
    return values
