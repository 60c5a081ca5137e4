"""Every input check and every error message, in one place.

Messages say what is wrong, where (argument and index), and how to fix it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_base(base: Any) -> float | None:
    """Return ``log(base)`` (the divisor that converts nats), or None for nats."""
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, int | float | np.integer | np.floating):
        raise TypeError(f"base must be a number (2 for bits, e for nats) or None, got {base!r}")
    if not (math.isfinite(base) and base > 0 and base != 1):
        raise ValueError(f"base must be a positive finite number other than 1 (2 for bits), got {base!r}")
    return math.log(base)


def check_in_unit_interval(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def check_renyi_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.integer | np.floating):
        raise TypeError(f"alpha must be a number >= 0 (1 gives KL, inf gives log max p/q), got {alpha!r}")
    if not alpha >= 0:  # also rejects NaN
        raise ValueError(f"alpha must be >= 0 (1 gives KL, inf gives log max p/q), got {alpha!r}")
    return float(alpha)


def check_axis(axis: Any, ndim: int, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    if ndim == 0:
        raise ValueError(f"{name} is a scalar; it needs at least one axis holding the distribution (e.g. [0.1, 0.9])")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {name}, which has {ndim} dimension(s)")
    return int(axis) % ndim


def check_shapes(names: tuple[str, ...], shapes: list[tuple[int, ...]], axis: int) -> tuple[tuple[int, ...], int]:
    """Check that distribution axes agree and batch axes broadcast; return (batch_shape, outcomes)."""
    sizes = [s[-1] for s in shapes]
    for name, size in zip(names, sizes, strict=True):
        if size == 0:
            raise ValueError(f"{name} has no outcomes along axis {axis} (size 0); a distribution needs at least one")
    if len(set(sizes)) > 1:
        detail = " and ".join(f"{n} has {s}" for n, s in zip(names, sizes, strict=True))
        raise ValueError(
            f"the distributions have different numbers of outcomes along axis {axis}: {detail}; "
            "they must describe the same outcomes"
        )
    try:
        batch = np.broadcast_shapes(*(s[:-1] for s in shapes))
    except ValueError:
        detail = " and ".join(f"{n} {s[:-1]}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(
            f"the batch shapes (all axes but axis {axis}) cannot be broadcast together: {detail}; "
            "batch axes must be equal or 1"
        ) from None
    return tuple(batch), sizes[0]


def check_upstream_shape(shape: tuple[int, ...], batch: tuple[int, ...]) -> None:
    try:
        ok = np.broadcast_shapes(shape, batch) == tuple(batch)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"upstream has shape {tuple(shape)} but the measure has batch shape {tuple(batch)}; "
            "upstream must broadcast to the batch shape (one weight per distribution)"
        )


def sum_tolerance(eps: float, outcomes: int = 1, smallest_normal: float | None = None) -> float:
    """How far a sum of probabilities stored with machine epsilon ``eps`` may stray from 1.

    float32 and float64 (``eps <= 2**-23``): ``max(1e-6, sqrt(eps))``, which accepts float64 data normalised in
    float32 (1.5e-8 would be too strict) and float32 data from any careful normalisation.

    Half precision (float16, bfloat16, given their ``smallest_normal`` ``tiny``): what rounding can produce and no
    more. Rounding to nearest moves a stored value by at most half an ulp: ``eps / 2`` of itself, or
    ``eps / 2 * tiny`` (half the spacing of the subnormals) below ``tiny``; over ``n = outcomes`` values the sum
    of a true distribution rounded to the dtype moves by at most ``eps / 2 * (1 + n * tiny)``. Normalising in
    the dtype (``x / x.sum()``, as :func:`kldiv.normalize` does) rounds the divisor once more, which doubles
    the bound, so the tolerance is ``1.25 * eps * (1 + n * tiny)``: two roundings, with a quarter to spare for
    their second-order term and the float32 summation of the check itself (``log2(n) * 2**-24`` for a pairwise
    sum, far smaller). That is 1.2e-3 for float16 over few outcomes (3.6e-3 over 32000, whose probabilities are
    mostly subnormal) and 9.8e-3 for bfloat16, instead of ``sqrt(eps)``'s 3 % and 8.8 %, which let through
    inputs that are not distributions and give negative KL. A half-precision format whose ``smallest_normal``
    is not given (float8) keeps ``sqrt(eps)``.
    """
    if eps <= 2.0**-23 or smallest_normal is None:
        return max(1e-6, math.sqrt(eps))
    return 1.25 * eps * (1 + outcomes * smallest_normal)


def _smallest_normal(xp: Any, eps: float) -> float | None:
    """The smallest normal number of the namespace's float16 or bfloat16, whichever has machine epsilon ``eps``
    (the two differ: 2**-10 and 2**-7); None for any other ``eps``. The caller knows the input dtype only by
    its epsilon, because the chunk it checks is already in the float32 compute dtype."""
    for name in ("float16", "bfloat16"):
        dtype = getattr(xp, name, None)
        if dtype is not None:
            info = xp.finfo(dtype)
            if float(info.eps) == eps:
                return float(info.smallest_normal)
    return None


class Locator:
    """Maps a (row, column) of the flattened, broadcast layout back to an index of the user's array."""

    def __init__(self, name: str, shape: tuple[int, ...], axis: int, batch: tuple[int, ...]):
        self.name, self.shape, self.axis, self.batch = name, tuple(shape), axis, batch

    def batch_position(self, row: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(row, self.batch)) if self.batch else ()

    def index(self, row: int, column: int) -> tuple[int, ...]:
        own_batch = self.shape[: self.axis] + self.shape[self.axis + 1 :]
        position = self.batch_position(row)[len(self.batch) - len(own_batch) :]
        position = tuple(0 if size == 1 else i for i, size in zip(position, own_batch, strict=True))
        return position[: self.axis] + (column,) + position[self.axis :]

    def where(self, row: int, column: int) -> str:
        return f"{self.name}[{', '.join(map(str, self.index(row, column)))}]"

    def at_batch(self, row: int) -> str:
        position = self.batch_position(row)
        return f" at batch position {position}" if position else ""


def _first(mask: np.ndarray) -> tuple[int, int]:
    flat = int(np.argmax(mask.reshape(-1)))
    return divmod(flat, mask.shape[-1])


def _host(xp: Any, x: Any) -> np.ndarray:
    """A NumPy copy of a (small or error-path) array from any backend."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch: half precision has no NumPy twin for bfloat16
        x = x.detach()
        if x.dtype.itemsize < 4:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def check_probability_rows(xp: Any, chunk: Any, row0: int, loc: Locator, eps: float) -> None:
    """Probabilities must be non-negative, not NaN, and sum to 1 along the distribution axis, within
    :func:`sum_tolerance` of the input dtype (``eps`` is its machine epsilon; ``chunk`` may be in a wider dtype)."""
    smallest = float(xp.min(chunk))
    if not smallest >= 0:  # NaN fails this too
        host = _host(xp, chunk)
        bad = np.isnan(host) | (host < 0)
        r, c = _first(bad)
        value = host[r, c]
        what = "is NaN" if np.isnan(value) else f"= {_fmt(value)} is negative"
        raise ValueError(
            f"{loc.where(row0 + r, c)} {what}; probabilities must lie in [0, 1] "
            "(pass from_logits=True if these are logits or log-probabilities)"
        )
    sums = xp.sum(chunk, axis=-1)
    tolerance = sum_tolerance(eps, chunk.shape[-1], _smallest_normal(xp, eps))
    if not float(xp.max(xp.abs(sums - 1))) <= tolerance:
        host_sums = _host(xp, sums)
        r = int(np.argmax(~(np.abs(host_sums - 1) <= tolerance)))
        host_row = _host(xp, chunk[r])
        if np.isinf(host_row).any():
            c = int(np.argmax(np.isinf(host_row)))
            raise ValueError(f"{loc.where(row0 + r, c)} is inf; probabilities must lie in [0, 1]")
        raise ValueError(
            f"{loc.name} does not sum to 1 along axis {loc.axis}{loc.at_batch(row0 + r)}: the sum is "
            f"{_fmt(host_sums[r])} (tolerance {tolerance:.1g}); normalise it with kldiv.normalize({loc.name}), "
            "or pass from_logits=True if these are logits"
        )


def check_logit_rows(xp: Any, chunk: Any, row_max: Any, row0: int, loc: Locator) -> None:
    """Logits may be any finite number or -inf (probability zero); each row needs one finite logit."""
    lo, hi = float(xp.min(row_max)), float(xp.max(row_max))
    if math.isfinite(lo) and math.isfinite(hi):
        return
    host = _host(xp, chunk)
    if np.isnan(host).any() or np.isposinf(host).any():
        r, c = _first(np.isnan(host) | np.isposinf(host))
        what = "NaN" if np.isnan(host[r, c]) else "+inf"
        raise ValueError(
            f"{loc.where(row0 + r, c)} is {what}, which is not a valid logit; logits must be finite or -inf "
            "(probability zero)"
        )
    r = int(np.argmax(np.isneginf(host).all(axis=-1)))
    raise ValueError(
        f"every logit of {loc.name}{loc.at_batch(row0 + r) or ''} is -inf, so it gives no outcome any probability; "
        "a distribution needs at least one finite logit"
    )


def check_normalizable(xp: Any, chunk: Any, row0: int, loc: Locator) -> None:
    """For ``normalize``: non-negative, finite weights with a positive sum in every row."""
    host = _host(xp, chunk)
    bad = ~np.isfinite(host) | (host < 0)
    if bad.any():
        r, c = _first(bad)
        raise ValueError(
            f"{loc.where(row0 + r, c)} = {_fmt(host[r, c])}; weights to normalise must be finite and >= 0 "
            "(use a softmax for logits)"
        )
    sums = host.sum(axis=-1)
    if (sums <= 0).any():
        r = int(np.argmax(sums <= 0))
        raise ValueError(f"{loc.name} sums to 0 along axis {loc.axis}{loc.at_batch(row0 + r)}, so it cannot be normalised")
