"""The row form: a divergence between rows of logits, as row reductions over max-shifted logits.

Every fast path (the engine's logits path, the ``kldiv.nn`` kernels eager and compiled, the fused linear loss,
the compare kernel, and later the Triton and vocabulary-parallel kernels) evaluates a divergence through its
measure's :class:`RowForm`, in three stages per row:

1. the row max ``m`` and the shifted logits ``x = logits - m`` (``-inf`` where the probability is 0);
2. the sum of exponentials ``z = sum exp(x)``, accumulated in float64 (float32 for PyTorch: see
   :func:`row_sum`), and ``p = exp(x) / z``;
3. the measure's row sums (``RowForm.sums``), accumulated likewise, then ``RowForm.finish`` combines them
   with the row constants ``log z``, and ``RowForm.grad`` gives the gradient in either side's logits.

Each stage's result per row is O(1) numbers, which is what a vocabulary-parallel kernel exchanges between ranks.
NaN propagates: a row holding NaN or +inf, or no finite logit, has ``z = NaN`` and so a NaN value, whatever
the selects inside the sums do. Support is decided from the shifted logits (``x == -inf`` means probability 0),
never from probabilities that underflowed.

This module imports nothing of kldiv: the measures (:mod:`kldiv.measures`) define their row forms with it.
"""

from __future__ import annotations

import math
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
    # False when the block is known to be tame (see TAME_SPAN): every logit finite and every probability a
    # normal float, so the row forms use their select-free formulas (decided for NumPy arrays and eager CPU
    # tensors, where a select is a pass of its own; True elsewhere, unless side() was asked to be optimistic)
    edges: bool = True
    # With side(optimistic=True): the row minimum of x, (rows, 1), that is minus the row's span (NaN for a row
    # that is not finite). The row forms took the select-free formulas on every row, and :func:`tame_rows` tells
    # from it which rows they were exact on (the others must be evaluated again). A row reduction of x, taken in
    # the loop that sums exp(x), so that a compiled kernel returning it stays one loop per row
    bounds: Any = None


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


def cast(xp: Any, x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype``: ``x`` itself where it already is (no call at all, which on small NumPy blocks is a
    measurable share of a row form's time)."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def row_sum(xp: Any, x: Any, keepdims: bool = False) -> Any:
    """Sum over the last axis: accumulated in float64 for NumPy (and JAX with x64), in float32 for PyTorch
    tensors below float64.

    PyTorch's sums are blocked (cascaded on CPU, tree reductions in compiled and GPU code), so a float32 sum stays
    near one rounding of its result, while a float64 sum of float32 data converts the whole block first (eagerly, a
    temporary twice its size that costs more than the rest of a KL row form) or halves the vector width (compiled,
    2x slower at (4096, 32000)). The row forms are built to need no more: KL's and JS's terms are non-negative and
    insensitive to the rounding of z. Measured on near-identical float32 rows, the median relative error of every
    row form stays under 1.5e-6 (2e-7 for KL).
    """
    if isinstance(x, np.ndarray):  # the ufunc's own reduce: a third of np.sum's cost on small blocks
        return np.add.reduce(x, axis=-1, keepdims=keepdims, dtype=np.float64)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor) and x.dtype != torch.float64:
        return torch.sum(x, dim=-1, keepdim=keepdims, dtype=torch.float32)
    return xp.sum(x, axis=-1, keepdims=keepdims, dtype=wide(xp, x))


# A side is tame when max - min of each row's logits is at most TAME_SPAN - log V (V the row length). Then every
# probability is e^x / z >= e^-TAME_SPAN, a normal float32, and the log-ratio r = log(q / p) of two tame sides
# lies within +-TAME_SPAN, where e^r does not overflow float32 (e^88.7): the row forms' select-free formulas
# (expm1, log1p and clamps only) are exact there without the branches that guard overflow and underflow.
TAME_SPAN = 86.0


def tame_limit(v: int) -> float:
    """The largest row span (max - min of its logits) of a tame side with ``v`` outcomes."""
    return TAME_SPAN - math.log(max(v, 1))


def side(xp: Any, logits: Any, optimistic: bool = False, scale: Any = 1.0) -> Side:
    """Stages 1 and 2 for one side of logits ``logits * scale`` (``scale`` > 0, a number or a 0-d array, such
    as the inverse of a distillation temperature): shift by the row max, the sum of exponentials, probabilities.

    The max is taken of ``logits`` and then scaled: rounding is monotone, so that is the max of the scaled logits
    exactly, and Inductor does not rewrite it (it matches ``max(logits * scale)`` to a softmax pattern that checks
    the sign of the scale and every logit's finiteness: two more passes over the row).

    For NumPy arrays and eager CPU tensors the block's tameness is decided here, and the row forms pick their
    formulas from it. Where a value cannot be inspected (compiled code), ``optimistic`` takes the select-free
    formulas for every row and keeps the row minimum of the shifted logits in ``Side.bounds`` for
    :func:`tame_rows` (one more reduction in the loop that sums the exponentials)."""
    edges, bounds = True, None
    torch = sys.modules.get("torch")
    if isinstance(logits, np.ndarray):
        m = np.maximum.reduce(logits, axis=-1, keepdims=True)  # the ufunc's reduce: np.max costs 3x more per call
    else:
        m = xp.max(logits, axis=-1, keepdims=True)
    if not (isinstance(scale, float) and scale == 1.0):
        logits, m = logits * scale, m * scale
    x = logits - m  # NaN everywhere for a NaN or all -inf row, NaN at a +inf logit
    # the largest row span is -min(x) over the block: one reduction of the whole block (NaN or -inf where a row
    # is not finite, which fails the comparison)
    if isinstance(logits, np.ndarray) and logits.size > 0:
        edges = not np.minimum.reduce(x, axis=None) >= -tame_limit(logits.shape[-1])
    elif (torch is not None and isinstance(logits, torch.Tensor) and logits.device.type == "cpu" and logits.numel()
          and not torch.compiler.is_compiling() and not torch._C._functorch.is_functorch_wrapped_tensor(logits)):
        edges = not float(torch.amin(x)) >= -tame_limit(logits.shape[-1])
    elif optimistic:
        bounds, edges = xp.min(x, axis=-1, keepdims=True), False
    p = xp.exp(x)
    z = row_sum(xp, p, keepdims=True)
    if torch is not None and isinstance(p, torch.Tensor) and not torch.compiler.is_compiling():
        p.div_(z.to(p.dtype))  # one operation where 1 / z, its cast and the product are three
    else:  # compiled: a product, as the division by a row value is not hoisted out of the loop
        p *= cast(xp, 1.0 / z, p.dtype)  # in place where the namespace allows: one (rows, V) temporary less
    return Side(x, p, z, xp.log(z), edges, bounds)


def log_ratio(xp: Any, a: Side, b: Side) -> Any:
    """``log b - log a`` per entry: the difference of the shifted logits minus that of the row constants (formed
    in float64), so it keeps its relative precision when the two rows are close."""
    r = b.x - a.x
    if compiling(r):
        # log(z_b / z_a) written elementwise (``+ 0 * b.x``, which Inductor folds back to the row value). A log
        # of a row value broadcast over the row is stored by Inductor in a loop of its own, which splits the
        # kernel's one loop per row into six passes over memory (1.6x the time at (4096, 32000)); as part of an
        # elementwise expression it stays in the row loop, evaluated once per vector, and libm's log is cheap
        # there (an atanh, the form before this one, took a third of KL's time: Inductor keeps errno semantics,
        # so the C++ compiler hoists neither). The ratio's rounding (6e-8 absolute in r) is below that of the
        # shifted logits' difference, and KL's terms do not feel a shift of r to first order (sum q = sum p)
        r -= xp.log(xp.astype(b.z / a.z, a.x.dtype) + 0 * b.x)
        return r
    r -= cast(xp, b.log_z - a.log_z, a.x.dtype)
    return r


def sign_of_finite(xp: Any, x: Any) -> Any:
    """``sign(x)`` for x without NaN: PyTorch's own (array-api-compat's adds two passes that restore NaN)."""
    torch = sys.modules.get("torch")
    return torch.sign(x) if torch is not None and isinstance(x, torch.Tensor) else xp.sign(x)


def sign(xp: Any, x: Any) -> Any:
    """``sign(x)``, NaN where x is NaN. For PyTorch (whose sign gives 0 at NaN) one select, which torch.func.vmap
    batches (array-api-compat's boolean-mask assignment it cannot)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch.where(torch.isnan(x), x, torch.sign(x))
    return xp.sign(x)


def poison(xp: Any, value: Any, *log_zs: Any) -> Any:
    """``value`` made NaN on rows where a side's ``log z`` is NaN (adds exactly 0 elsewhere: log z is finite)."""
    total = log_zs[0]
    for log_z in log_zs[1:]:
        total = total + log_z
    return value + 0.0 * total


def non_negative(xp: Any, value: Any) -> Any:
    """Clamp a divergence that is >= 0 by theorem at 0 from below (rounding can leave -1e-16); NaN stays NaN
    (NumPy's maximum and PyTorch's clamp propagate it: one operation where a select takes three)."""
    if isinstance(value, np.generic):  # a NumPy scalar (one row): compared in Python, a ufunc costs a microsecond
        return value if not value < 0 else value.dtype.type(0)
    if isinstance(value, np.ndarray):
        return np.maximum(value, 0.0)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return torch.clamp_min(value, 0.0)
    return xp.where(value < 0, xp.zeros_like(value), value)


def compiling(x: Any) -> bool:
    """True while ``torch.compile`` traces ``x``'s computation: a row form picks there the formula that stays exact
    when expm1 is lowered to a less exact one. False at once for NumPy arrays."""
    if isinstance(x, np.ndarray):
        return False
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


def bounds(*sides: Side) -> tuple[Any, ...] | None:
    """The sides' row bounds and lengths, ((min of x, V), ...), for :func:`tame_rows`; None when no side was
    made with ``optimistic`` (every row is then exact)."""
    found = tuple((s.bounds, s.x.shape[-1]) for s in sides if s.bounds is not None)
    return found or None


def _series(table: dict[int, tuple[float, ...]], x: Any) -> Any:
    """The polynomial ``table[item size]`` (coefficients highest first) at ``x``, by Horner's rule."""
    coefficients = table[8 if x.dtype.itemsize >= 8 else 4]
    h = coefficients[0]
    for coefficient in coefficients[1:]:
        h = h * x + coefficient
    return h


# e^r - 1 - r = r^2 sum_k r^k / (k + 2)!, highest coefficient first, truncated (for |r| <= 1/2) after r^8 / 8!
# for float32 (relative error under 4e-8) and after r^16 / 16! for float64 (under 1e-17), by item size
_EXCESS_SERIES = {size: tuple(1.0 / math.factorial(k + 2) for k in range(last, -1, -1)) for size, last in ((4, 6), (8, 14))}


def weighted_excess(xp: Any, r: Any, p: Any, q: Any) -> Any:
    """``p (e^r - 1 - r)`` for ``q = p e^r`` (two normal floats and their finite log-ratio), from arithmetic
    only: the series on |r| <= 1/2, where ``q - p (1 + r)`` would cancel, and that difference beyond, where the
    value is at least 0.1 p. Compiled code uses it: Inductor's expm1 is exact only to ~1e-7 absolute near 0 and,
    with log1p, is a scalar loop on CPU; this needs no exp either."""
    c = xp.clip(r, min=-0.5, max=0.5)
    return xp.where(xp.abs(r) <= 0.5, p * (c * c * _series(_EXCESS_SERIES, c)), q - p * (1 + r))


# e^r - 1 = r sum_k r^k / (k + 1)!, highest coefficient first, truncated (for |r| <= 1/2) after r^9 / 9! for
# float32 (relative error under 1e-9) and after r^17 / 17! for float64 (under 1e-17), by item size
_EXPM1_SERIES = {size: tuple(1.0 / math.factorial(k + 1) for k in range(last, -1, -1)) for size, last in ((4, 8), (8, 16))}


def tame_expm1(xp: Any, r: Any, ratio: Any) -> Any:
    """``e^r - 1`` for finite r, given ``ratio`` = e^r to rounding (such as q / p of two normal floats), from
    arithmetic only: the series on |r| <= 1/2 (exact where ratio - 1 would cancel) and ratio - 1 beyond, where
    it is at least 0.39 in magnitude. Compiled code uses it: Inductor's expm1 and log1p are scalar loops on CPU."""
    c = xp.clip(r, min=-0.5, max=0.5)
    return xp.where(xp.abs(r) <= 0.5, c * _series(_EXPM1_SERIES, c), ratio - 1)


# y - log1p(y) = y^2 sum_k (-y)^k / (k + 2), highest coefficient first, truncated (for |y| <= 1/8) after y^9 for
# float32 (relative error under 2e-8) and after y^20 for float64 (under 1e-17), by item size; on |y| <= 1/4 (for
# tame_log1p) after y^14 (float32, under 3e-9) and after y^28 (float64, under 4e-18)
_LOG1P_SERIES = {size: tuple((-1.0) ** k / (k + 2) for k in range(last, -1, -1)) for size, last in ((4, 7), (8, 18))}
_LOG1P_WIDE_SERIES = {size: tuple((-1.0) ** k / (k + 2) for k in range(last, -1, -1)) for size, last in ((4, 12), (8, 26))}


def tame_log1p(xp: Any, y: Any) -> tuple[Any, Any]:
    """``(log1p(y), y - log1p(y))`` for y > -1 from log and arithmetic only (compiled code: see
    :func:`tame_expm1`): the series of ``y - log1p(y)`` on |y| <= 1/4, and ``log(1 + y)`` beyond, where 1 + y
    is at least 1/4 away from 1 (2e-6 relative error at worst in y - log1p(y) there, at |y| = 1/4)."""
    small = xp.clip(y, min=-0.25, max=0.25)
    series = small * small * _series(_LOG1P_WIDE_SERIES, small)
    log = xp.log(1 + y)
    near = xp.abs(y) <= 0.25
    return xp.where(near, y - series, log), xp.where(near, series, y - log)


def log1p_excess(xp: Any, y: Any) -> Any:
    """``y - log1p(y)`` for y >= -1, exact to rounding: the series for |y| <= 1/8, where the difference of y and
    its log1p would keep only |y| / 2 of the digits (it is ~y^2 / 2), and the difference beyond."""
    small = xp.clip(y, min=-0.125, max=0.125)
    return xp.where(xp.abs(y) <= 0.125, small * small * _series(_LOG1P_SERIES, small), y - xp.log1p(y))


def tame_rows(found: tuple[Any, ...] | None) -> Any:
    """(rows,) bool from :func:`bounds`: the rows tame on every side (NaN or infinite bounds are not); None
    when every row is exact."""
    if found is None:
        return None
    mask = None
    for low, v in found:
        tame = low[..., 0] >= -tame_limit(v)
        mask = tame if mask is None else mask & tame
    return mask


def shared_sides(xp: Any, blocks: tuple[Any, ...], across: Any) -> tuple[Side, ...]:
    """Stages 1 and 2 for sides whose rows are split along the last axis over several processes (a vocabulary
    sharded over a tensor-parallel group): ``blocks`` are this process's slices.

    ``across`` combines (rows, k) arrays over the processes in place: ``across.max(a)`` and ``across.sum(a)``
    return the elementwise max and sum, and ``across.width`` is the full row length. Two exchanges serve all the
    sides together: per row and side the max, minus the min and a NaN flag (max; NaN is carried by the flag, as
    a max across processes need not propagate it), then the sum of exponentials (sum, in float64). Every process
    gets the same row constants and the same tameness, so the row forms pick the same formulas everywhere; their
    sums are then combined with :func:`shared_sums`. A slice may be empty."""
    stats = []
    for b in blocks:
        if b.shape[-1]:
            stats += [xp.max(b, axis=-1), -xp.min(b, axis=-1), xp.astype(xp.any(xp.isnan(b), axis=-1), b.dtype)]
        else:  # nothing of these rows here: -inf max, -inf minus min, no NaN (as zeros of b's kind)
            zero = xp.sum(b, axis=-1)
            stats += [zero - INF, zero - INF, zero]
    stats = across.max(xp.stack(stats, axis=-1))
    shifted, sums, tame = [], [], True
    for j, b in enumerate(blocks):
        high, low, nan = stats[:, 3 * j : 3 * j + 1], stats[:, 3 * j + 1 : 3 * j + 2], stats[:, 3 * j + 2 : 3 * j + 3]
        m = xp.where(nan > 0, xp.full_like(high, math.nan), high)
        tame = tame and bool(xp.all((m + low) <= tame_limit(across.width)))
        x = b - m
        p = xp.exp(x)
        shifted.append((x, p))
        sums.append(xp.astype(row_sum(xp, p), wide(xp, b)))
    z = across.sum(xp.stack(sums, axis=-1))
    found = []
    for j, (x, p) in enumerate(shifted):
        zj = z[:, j : j + 1]
        p *= cast(xp, 1.0 / zj, p.dtype)
        found.append(Side(x, p, zj, xp.log(zj), not tame, None))
    return tuple(found)


def shared_sums(xp: Any, sums: tuple[Any, ...], across: Any) -> tuple[Any, ...]:
    """A row form's sums over the slices of :func:`shared_sides`, combined across the processes in float64 (one
    exchange of len(sums) numbers per row), each returned in its own dtype."""
    total = across.sum(xp.stack([xp.astype(s, wide(xp, s)) for s in sums], axis=-1))
    return tuple(xp.astype(total[:, j], s.dtype) for j, s in enumerate(sums))


def stacked_sides(xp: Any, block: Any) -> tuple[Side, ...]:
    """Stages 1 and 2 for sides of one shape stacked on a leading axis, ``block[i]`` being side i: one
    :func:`side` serves them all, which halves the array operations of a small block (where each costs more
    than its arithmetic). The sides share their tameness."""
    x, p, z, log_z, edges, _ = side(xp, block)
    return tuple([Side(x[i], p[i], z[i], log_z[i], edges) for i in range(block.shape[0])])


def evaluate(form: RowForm, xp: Any, logits: Any, params: dict, grad_sides: tuple[int, ...] = (),
             across: Any = None):
    """Values (rows,) in the wide dtype and the gradients in the logits of ``grad_sides``, for a unit upstream:
    the three stages on one block of rows, eagerly. (Compiled kernels call the same three functions.)
    ``logits`` is a tuple of the sides' blocks, or one array with the sides stacked on its leading axis (see
    :func:`stacked_sides`). With ``across``, the blocks are slices of rows split over processes (see
    :func:`shared_sides`)."""
    if across is None:
        sides = stacked_sides(xp, logits) if hasattr(logits, "shape") else tuple(side(xp, x) for x in logits)
        sums = form.sums(xp, *sides, **params)
    else:
        sides = shared_sides(xp, logits, across)
        sums = shared_sums(xp, form.sums(xp, *sides, **params), across)
    value = form.finish(xp, sums, *(s.log_z[..., 0] for s in sides), **params)
    return value, [form.grad(xp, sides, sums, i, **params) for i in grad_sides]
