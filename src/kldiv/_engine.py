"""The one evaluation path every measure goes through.

user arrays -> backend -> validation -> canonical (probabilities, log-probabilities) -> measure (value, vjp)
-> upstream and units -> result in the user's layout.

Logits go through the measure's row form (:mod:`kldiv._rows`) where it has one, probabilities through its
reference form. The work runs over chunks of rows of the flattened batch, so temporaries stay in cache and
memory stays O(chunk x outcomes); NumPy chunks run on a small thread pool (its ufuncs release the GIL). This
module imports nothing above it: :mod:`kldiv._dispatch` and the autograd bridges call :func:`run`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _backend, _config, _rows, _validate


class Canon:
    """A distribution in canonical form: probabilities ``p`` and log-probabilities ``lp`` (``-inf`` at zero).

    Given probabilities only, ``lp`` is ``log(p)`` taken on first use: a measure that needs no log of each
    side on its own (KL reads log(p / q), one log where two would be) never pays for it."""

    __slots__ = ("p", "_lp", "_xp")

    def __init__(self, p: Any, lp: Any = None, xp: Any = None) -> None:
        self.p, self._lp, self._xp = p, lp, xp

    @property
    def lp(self) -> Any:
        if self._lp is None:
            self._lp = self._xp.log(self.p)
        return self._lp

    @property
    def has_lp(self) -> bool:
        """True when ``lp`` is already at hand (given logits, or taken once)."""
        return self._lp is not None


@dataclass(frozen=True)
class Measure:
    """A divergence defined once: ``value(xp, *canon, **params)`` reduces the last axis, and
    ``vjp(xp, *canon, value, logits, **params)`` returns one gradient per input for a unit upstream.

    With ``logits=False`` the gradients are partial derivatives with respect to the probabilities; with
    ``logits=True`` they are with respect to the log-probabilities, and may omit any term of the form
    ``c * p`` (a row constant times the probabilities), which the log-softmax backward removes exactly.

    The optional ``rows`` is the measure's row form (:class:`kldiv._rows.RowForm`), the same divergence over
    rows of logits, held equal to ``value``/``vjp`` by ``tests/core/test_row_form.py``.
    """

    name: str
    value: Callable[..., Any]
    vjp: Callable[..., tuple[Any, ...]]
    rows: _rows.RowForm | None = None


@dataclass
class Layout:
    """Where the flattened (rows, outcomes) view came from, to put results back in the user's shape."""

    xp: Any
    shapes: list[tuple[int, ...]]
    axes: list[int]
    batch: tuple[int, ...]
    outcomes: int
    rows: list[Any] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return math.prod(self.batch)

    def values(self, value_rows: Any) -> Any:
        return self.xp.reshape(value_rows, self.batch)

    def gradient(self, grad_rows: Any, i: int) -> Any:
        """Reshape a (rows, outcomes) gradient to input ``i``'s shape, summing over broadcast axes."""
        xp, shape = self.xp, self.shapes[i]
        full = xp.reshape(grad_rows, self.batch + (self.outcomes,))
        extra = len(self.batch) + 1 - len(shape)
        to = self.axes[i] + extra
        if to != full.ndim - 1:  # the outcomes back to the input's axis (a permutation: torch.func.vmap batches it)
            order = list(range(full.ndim - 1))
            order.insert(to, full.ndim - 1)
            full = xp.permute_dims(full, tuple(order))
        summed = tuple(range(extra)) + tuple(
            extra + d for d, size in enumerate(shape) if size == 1 and full.shape[extra + d] != 1
        )
        if summed:
            full = xp.sum(full, axis=summed, keepdims=True)
            full = xp.reshape(full, shape)
        return full


def prepare(inputs: Sequence[Any], names: Sequence[str], axis: int) -> tuple[Any, list[Any], Layout]:
    """Convert the inputs to one backend and lay them out as (rows, outcomes) views."""
    xp = _backend.namespace(*inputs)
    like = next((a for a in inputs if _backend._is_array(a) and not isinstance(a, np.ndarray)), None)
    arrays = [_backend.to_array(x, n, xp, like) for x, n in zip(inputs, names, strict=True)]
    axes = [_validate.check_axis(axis, a.ndim, n) for a, n in zip(arrays, names, strict=True)]
    moved = [a if ax == a.ndim - 1 else xp.permute_dims(a, (*(d for d in range(a.ndim) if d != ax), ax))
             for a, ax in zip(arrays, axes, strict=True)]
    batch, outcomes = _validate.check_shapes(tuple(names), [tuple(m.shape) for m in moved], axis)
    layout = Layout(xp, [tuple(a.shape) for a in arrays], axes, batch, outcomes)
    n_rows = layout.n_rows
    for m in moved:
        if tuple(m.shape) != batch + (outcomes,):
            m = xp.broadcast_to(m, batch + (outcomes,))
        layout.rows.append(xp.reshape(m, (n_rows, outcomes)))
    return xp, arrays, layout


def canonical(xp: Any, x: Any, from_logits: bool, check: bool, row0: int, loc: _validate.Locator, eps: float) -> Canon:
    """Probabilities and log-probabilities of a chunk; logits go through a stable log-softmax."""
    if from_logits:
        row_max = xp.max(x, axis=-1, keepdims=True)
        if check:
            _validate.check_logit_rows(xp, x, row_max, row0, loc)
        shifted = x - row_max
        e = xp.exp(shifted)
        total = xp.sum(e, axis=-1, keepdims=True)
        return Canon(e / total, shifted - xp.log(total))
    if check:
        _validate.check_probability_rows(xp, x, row0, loc, eps)
    return Canon(x, xp=xp)


def log_softmax_vjp(xp: Any, g: Any, c: Canon) -> Any:
    """Backward of log-softmax: g - softmax * sum(g), with its limits where the value is infinite: an infinite
    g_i stays g_i, and entries of probability 0 get 0 (not 0 * inf)."""
    total = xp.sum(g, axis=-1, keepdims=True)
    return xp.where(xp.isinf(g), g, g - xp.where(c.p == 0, 0.0, c.p * total))


@dataclass
class Result:
    layout: Layout
    values: Any  # (rows,)
    grads: list[Any] | None  # (rows, outcomes) per input, for a unit upstream


def run(
    measure: Measure,
    inputs: Sequence[Any],
    names: Sequence[str],
    *,
    axis: int = -1,
    from_logits: bool = False,
    base: float | None = None,
    validate: bool = True,
    params: dict[str, Any] | None = None,
    grad: bool = False,
    upstream: Any = None,
) -> Result:
    """Evaluate ``measure`` (and, if ``grad``, its vjp) over row chunks."""
    params = params or {}
    log_base = _validate.check_base(base)
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
    xp, arrays, layout = prepare(inputs, names, axis)
    out_dtype = _backend.result_dtype(xp, *(a.dtype for a in arrays))
    work_dtype = _backend.compute_dtype(xp, out_dtype)
    eps = [float(xp.finfo(a.dtype).eps) for a in arrays]
    check = validate and not any(_backend.is_tracing(a) for a in arrays)
    locators = [
        _validate.Locator(n, s, ax, layout.batch) for n, s, ax in zip(names, layout.shapes, layout.axes, strict=True)
    ]
    up_rows = None
    if grad and upstream is not None:
        upstream = _backend.to_array(upstream, "upstream", xp, arrays[0])
        _validate.check_upstream_shape(tuple(upstream.shape), layout.batch)
        up_rows = xp.reshape(xp.broadcast_to(upstream, layout.batch), (layout.n_rows,))
    scale = 1.0 / log_base if log_base else None

    form = measure.rows if from_logits else None  # logits take the row form where the measure has one
    grad_sides = tuple(range(len(layout.rows))) if grad else ()

    def chunk(lo: int, hi: int) -> tuple[Any, list[Any] | None]:
        xs = [_rows.cast(xp, r[lo:hi], work_dtype) for r in layout.rows]
        if form is not None:
            if check:
                for x, loc in zip(xs, locators, strict=True):
                    _validate.check_logit_rows(xp, x, xp.max(x, axis=-1, keepdims=True), lo, loc)
            value, grads = _rows.evaluate(form, xp, xs, params, grad_sides)
            value = xp.astype(value, work_dtype)
        else:
            cs = [canonical(xp, x, from_logits, check, lo, loc, e) for x, loc, e in zip(xs, locators, eps, strict=True)]
            value = measure.value(xp, *cs, **params)
            grads = None
            if grad:
                grads = list(measure.vjp(xp, *cs, value, from_logits, **params))
                if from_logits:
                    grads = [log_softmax_vjp(xp, g, c) for g, c in zip(grads, cs, strict=True)]
        if grad:
            if up_rows is not None:
                weight = xp.astype(up_rows[lo:hi], work_dtype)[:, None]
                grads = [g * weight for g in grads]
            if scale:
                grads = [g * scale for g in grads]
        if scale:
            value = value * scale
        return value, grads

    values, grads = _chunked(xp, layout, chunk, grad, out_dtype, arrays[0])
    return Result(layout, values, grads)


def small_numpy(measure: Measure, inputs: Sequence[Any], options: dict[str, Any]) -> Any | None:
    """The value for small plain NumPy float32/float64 inputs of one shape along the last axis, without the
    general machinery (layout, chunks, threads, locators): the same checks and the same measure functions, at
    a fifth of the per-call cost. None wherever the general path is needed, which then also says what is wrong
    with an input that fails a check."""
    first = inputs[0]
    if type(first) is not np.ndarray:
        return None
    dtype, shape = first.dtype, first.shape
    limits = _LIMITS.get(dtype)
    if limits is None or not 0 < first.size <= _config.get_config().numpy_small:
        return None
    for x in inputs[1:]:
        if type(x) is not np.ndarray or x.dtype != dtype or x.shape != shape:
            return None
    get = options.get
    from_logits, base, axis, validate = get("from_logits", False), get("base"), get("axis", -1), get("validate", True)
    if type(axis) is not int or axis not in (-1, first.ndim - 1) or type(from_logits) is not bool or (
        type(validate) is not bool or (base is not None and not (type(base) in (int, float) and 1 < base < math.inf))
    ):
        return None  # the general path checks every argument and says what is wrong
    v = shape[-1]
    params = get("params") or {}
    quiet = False  # True where no operation below can divide by zero, overflow or meet NaN
    if from_logits:
        rows = np.array(inputs).reshape(len(inputs), -1, v)  # the inputs stacked: one call checks them all
        if validate and not np.isfinite(np.maximum.reduce(rows, axis=-1)).all():
            return None
    else:
        rows = inputs  # the measure reduces the last axis of any batch shape
        if validate:
            lowest = _probability_rows(inputs, v, limits[1])
            if lowest is None:
                return None
            quiet = lowest >= limits[0]  # every ratio of two normal probabilities is finite and positive
    if quiet:
        value = _small_value(measure, rows, from_logits, params)
    else:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            value = _small_value(measure, rows, from_logits, params)
    if base is not None:
        value = value * (1.0 / math.log(base))
    value = np.asarray(value, dtype=dtype)  # an array, 0-d for one row, as the general path's
    return value.reshape(shape[:-1]) if from_logits else value  # probabilities: in the inputs' batch shape already


def _probability_rows(inputs: Sequence[Any], v: int, tolerance: float) -> float | None:
    """The smallest value of the inputs (arrays of one shape and dtype) if each of their rows is non-negative,
    free of NaN and sums to 1 within ``tolerance``; None otherwise. A few values are checked as Python floats
    (one conversion per input, where the reductions are five calls of about a microsecond each), more as
    arrays, stacked."""
    if inputs[0].size <= 32:
        lowest = math.inf
        for x in inputs:
            for row in [x.tolist()] if x.ndim == 1 else x.reshape(-1, v).tolist():
                if not abs(sum(row) - 1) <= tolerance:  # NaN and inf fail here
                    return None
                lowest = min(lowest, *row)
        return lowest if lowest >= 0 else None
    rows = np.array(inputs).reshape(len(inputs), -1, v)
    deviation = np.add.reduce(rows, axis=-1)
    deviation -= 1
    lowest = float(np.minimum.reduce(rows, axis=None))
    if not (lowest >= 0 and np.maximum.reduce(np.abs(deviation), axis=None) <= tolerance):  # False for NaN too
        return None
    return lowest


def _small_value(measure: Measure, rows: Any, from_logits: bool, params: dict) -> Any:
    if from_logits and measure.rows is not None:
        return _rows.evaluate(measure.rows, np, rows, params)[0].astype(rows.dtype)  # as the general path
    if from_logits:
        return measure.value(np, *(canonical(np, x, True, False, 0, None, 0.0) for x in rows), **params)
    return measure.value(np, *[Canon(x, xp=np) for x in rows], **params)


# (smallest normal, sum-to-one tolerance) of the dtypes small_numpy takes; the tolerance of float32 and float64
# does not depend on the number of outcomes (see kldiv._validate.sum_tolerance)
_LIMITS = {np.dtype(t): (float(np.finfo(t).tiny), _validate.sum_tolerance(float(np.finfo(t).eps)))
           for t in (np.float32, np.float64)}


def _chunked(xp: Any, layout: Layout, chunk: Callable, grad: bool, out_dtype: Any, like: Any) -> tuple[Any, Any]:
    n, v = layout.n_rows, layout.outcomes
    n_inputs = len(layout.rows)
    is_numpy = xp is np
    config = _config.get_config()
    step = max(1, (config.numpy_chunk if is_numpy else config.array_chunk) // v)
    if n == 0:
        kw = {} if is_numpy else {"device": like.device}
        empty_grads = [xp.zeros((0, v), dtype=out_dtype, **kw) for _ in range(n_inputs)] if grad else None
        return xp.zeros((0,), dtype=out_dtype, **kw), empty_grads
    if n <= step or not (is_numpy or _backend.is_torch(like)) or _backend.is_tracing(like):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            value, grads = chunk(0, n)
        return xp.astype(value, out_dtype), [xp.astype(g, out_dtype) for g in grads] if grad else None

    kw = {} if is_numpy else {"device": like.device}  # only NumPy and torch reach here
    values = xp.empty((n,), dtype=out_dtype, **kw)
    grads = [xp.empty((n, v), dtype=out_dtype, **kw) for _ in range(n_inputs)] if grad else None

    def span(lo: int, hi: int) -> None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for a in range(lo, hi, step):
                b = min(a + step, hi)
                value, gs = chunk(a, b)
                values[a:b] = value
                if grad:
                    for out, g in zip(grads, gs, strict=True):
                        out[a:b] = g

    threads = config.threads if is_numpy and n * v >= 4 * config.numpy_chunk else 1
    per = -(-n // threads)
    _config.run_parallel([(lo, min(lo + per, n)) for lo in range(0, n, per)], span, threads)
    return values, grads
