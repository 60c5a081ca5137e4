"""Every input check and every error message, in one place, for every package.

Messages say what is wrong, where (argument and index), and how to fix it.

One policy for numbers, whatever the package: a number is an ``int``, a ``float`` or a NumPy integer or
floating scalar (anything registered as :class:`numbers.Real`); a bool is never one. ``True`` and ``False``
(and ``numpy.bool_``) passed as a numeric argument are refused with a ``TypeError`` that says so; a value of
the right type but out of range is a ``ValueError``.

This module never imports torch at module level (``import kldiv`` must not load it): the checks of PyTorch
tensors import it inside the function, where the caller has it loaded already.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from . import _backend

# --- numbers: the one type policy -------------------------------------------------------------------


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _shown(value: Any) -> str:
    """``repr(value)`` when it is short and on one line, else its type, so a message stays on one line."""
    text = repr(value)
    return text if len(text) <= 80 and "\n" not in text else f"a {type(value).__name__}"


def _wrong_type(name: str, value: Any, expected: str, kind: str) -> TypeError:
    if _is_bool(value):
        return TypeError(
            f"{name} must be {expected}, got {value!r}; a bool is not accepted as a number, pass {name} as {kind}"
        )
    return TypeError(f"{name} must be {expected}, got {_shown(value)}")


def check_number(name: str, value: Any, expected: str = "a number") -> float:
    """``value`` as a float if it is a number (a bool is not); else a TypeError: ``name`` must be ``expected``."""
    if _is_bool(value) or not isinstance(value, Real):
        raise _wrong_type(name, value, expected, "an int or a float")
    return float(value)


def check_integer(name: str, value: Any, expected: str = "an integer") -> int:
    """``value`` as an int if it is an integer (a bool is not); else a TypeError: ``name`` must be ``expected``."""
    if _is_bool(value) or not isinstance(value, Integral):
        raise _wrong_type(name, value, expected, "an int")
    return int(value)


def check_integer_at_least(name: str, value: Any, minimum: int, expected: str | None = None) -> int:
    """An integer ``>= minimum``: TypeError for another type (a bool included), ValueError below ``minimum``."""
    expected = expected or f"an int >= {minimum}"
    number = check_integer(name, value, expected)
    if number < minimum:
        raise ValueError(f"{name} must be {expected}, got {_shown(value)}")
    return number


def check_flag(name: str, value: Any) -> bool:
    """A switch: exactly True or False (1, 0 and None are refused, so a misplaced positional number is caught)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_shown(value)}")
    return value


def check_choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {_shown(value)}; choose one of {', '.join(repr(o) for o in options)}")
    return value


def check_seed(name: str, seed: Any) -> Any:
    """A seed for ``numpy.random.default_rng``: None, an integer or whatever NumPy accepts, but never a bool."""
    if _is_bool(seed):
        raise _wrong_type(name, seed, "an integer or None", "an int")
    return seed


def check_nonnegative(name: str, value: Any, note: str = "") -> float:
    """A finite number ``>= 0``; ``note`` (such as ``" (0 turns the term off)"``) follows the requirement."""
    number = check_number(name, value, f"a number >= 0{note}")
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0{note}, got {_shown(value)}")
    return number


def check_finite_number(name: str, value: Any) -> float:
    number = check_number(name, value, "a finite number")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {_shown(value)}")
    return number


# --- core: kldiv.kl and the other measures ---------------------------------------------------------


def check_base(base: Any) -> float | None:
    """Return ``log(base)`` (the divisor that converts nats), or None for nats."""
    if base is None:
        return None
    number = check_number("base", base, "a number (2 for bits, e for nats) or None")
    if not (math.isfinite(number) and number > 0 and number != 1):
        raise ValueError(f"base must be a positive finite number other than 1 (2 for bits), got {_shown(base)}")
    return math.log(number)


def check_in_unit_interval(name: str, value: Any, strict: bool = False) -> float:
    """A number in [0, 1], or in (0, 1) with ``strict``."""
    interval = "(0, 1)" if strict else "[0, 1]"
    number = check_number(name, value, f"a number in {interval}")
    if not (0 < number < 1 if strict else 0 <= number <= 1):  # also rejects NaN
        raise ValueError(f"{name} must lie in {interval}, got {_shown(value)}")
    return number


def check_positive_integers(name: str, value: Any) -> tuple[int, ...]:
    """A non-empty tuple (or list) of integers >= 1, as ``top_k=(5, 10)``."""
    if not isinstance(value, tuple | list) or not value:
        raise TypeError(f"{name} must be a non-empty tuple of positive integers, got {_shown(value)}")
    return tuple(check_integer_at_least(name, k, 1, "a non-empty tuple of positive integers") for k in value)


def check_renyi_alpha(alpha: Any) -> float:
    number = check_number("alpha", alpha, "a number >= 0 (1 gives KL, inf gives log max p/q)")
    if not number >= 0:  # also rejects NaN
        raise ValueError(f"alpha must be >= 0 (1 gives KL, inf gives log max p/q), got {_shown(alpha)}")
    return number


def check_axis(axis: Any, ndim: int, name: str) -> int:
    axis = check_integer("axis", axis)
    if ndim == 0:
        raise ValueError(f"{name} is a scalar; it needs at least one axis holding the distribution (e.g. [0.1, 0.9])")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {name}, which has {ndim} dimension(s)")
    return axis % ndim


def check_shapes(names: tuple[str, ...], shapes: list[tuple[int, ...]], axis: int) -> tuple[tuple[int, ...], int]:
    """Check that distribution axes agree and batch axes broadcast; return (batch_shape, outcomes).

    ``shapes`` have the distribution axis moved last; messages name the axis as the inputs have it (``axis = -1``
    of 2-D inputs is axis 1), or as given where the inputs differ in dimensions.
    """
    sizes = [s[-1] for s in shapes]
    if isinstance(axis, int) and len({len(s) for s in shapes}) == 1 and shapes[0]:
        axis = axis % len(shapes[0])
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
    of a true distribution rounded to the dtype moves by at most ``eps / 2 * (1 + n * tiny)``, to which the
    check's own float32 pairwise sum adds at most ``log2(n) * 2**-24``. That is 4.9e-4 for float16 over few
    outcomes (1.5e-3 over 32000, whose probabilities are mostly subnormal) and 3.9e-3 for bfloat16, instead of
    ``sqrt(eps)``'s 3 % and 8.8 %, which let through inputs that are not distributions and give negative KL.
    Dividing by a sum in the half dtype rounds twice and may miss that bound; :func:`kldiv.normalize` divides in
    float32 and rounds once. A half-precision format whose ``smallest_normal`` is not given (float8) keeps
    ``sqrt(eps)``.
    """
    if eps <= 2.0**-23 or smallest_normal is None:
        return max(1e-6, math.sqrt(eps))
    return 0.5 * eps * (1 + outcomes * smallest_normal) + math.log2(max(outcomes, 2)) * 2.0**-24


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


# --- kldiv.nn: loss options and PyTorch tensors (torch is imported inside, never at module level) ----------

NN_DIVERGENCES = ("kl", "reverse_kl", "js", "generalized_jsd", "skew_kl", "skew_reverse_kl", "tvd")
NN_REDUCTIONS = ("mean", "sum", "none")
TOPK_TAILS = ("bucket", "renormalize")


def check_temperature(value: Any) -> float:
    number = check_number("temperature", value, "a positive number (1.0 leaves the logits as they are)")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(
            f"temperature must be a positive finite number (1.0 leaves the logits as they are), got {_shown(value)}"
        )
    return number


def check_no_torch_func(what: str, *tensors: Any, batched_ok: bool = False) -> None:
    """Refuse torch tensors held by ``torch.func`` transforms where ``what`` cannot run under them: its torch
    gradients are computed in its forward pass by an autograd Function, which the transforms cannot see
    through. With ``batched_ok``, values under ``vmap`` alone are allowed (no gradient is asked for)."""
    kind = _backend.torch_func_kind(*tensors)
    if kind is None or (kind == "vmap" and batched_ok):
        return
    if kind == "vmap":
        raise RuntimeError(
            f"{what} does not run under torch.func.vmap: call it on the batched tensors directly (it reduces "
            "over the last axis and keeps the leading ones)"
        )
    raise RuntimeError(
        f"{what} does not run under torch.func's gradient transforms (grad, vjp, jacrev, jacfwd, hessian): "
        "use torch.autograd (loss.backward(), torch.autograd.grad) or kldiv.grad, or JAX arrays, where jax.grad "
        "and jax.vmap compose with kldiv"
    )


def check_first_order(what: str) -> None:
    """Refuse ``create_graph=True`` in a torch backward whose gradient was computed in the forward pass: that
    gradient is not itself differentiable, and a second-order term built on it (a gradient penalty, a
    Hessian-vector product) would silently get no gradient. Autograd runs a backward with grad mode on exactly
    when a graph of the backward is asked for."""
    import torch

    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{what} has first derivatives only: its torch gradient is computed in the forward pass and is not "
            "itself differentiable, so backward/autograd.grad with create_graph=True cannot go through it; for "
            "second derivatives use JAX arrays (jax.hessian and jax.grad of jax.grad work through kldiv)"
        )


def check_float_tensor(name: str, x: Any) -> Any:
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; it must be a floating-point tensor (cast it with .float())")
    if x.ndim == 0:
        raise ValueError(f"{name} is a scalar; it needs a last axis holding the vocabulary, shape (..., V)")
    return x


def _is_integer_tensor(x: Any) -> bool:
    import torch

    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def check_same_device(reference: Any, **tensors: Any) -> None:
    import torch

    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.device != reference.device:
            raise ValueError(
                f"{name} is on {t.device} but the student's tensors are on {reference.device}; move it with .to(device)"
            )


def check_label_tensor(x: Any, name: str = "labels") -> Any:
    """An integer tensor of token ids (any shape)."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(x).__name__}")
    if not _is_integer_tensor(x):
        raise TypeError(
            f"{name} has dtype {x.dtype}; it must be an integer tensor of token ids (ignore_index where masked), "
            "e.g. labels.long()"
        )
    return x


def check_labels(x: Any, batch: tuple[int, ...], what: str = "student_logits") -> Any:
    check_label_tensor(x)
    if tuple(x.shape) != batch:
        raise ValueError(
            f"labels has shape {tuple(x.shape)} but {what} has batch shape {batch} (all axes but the last); "
            "pass one label per position"
        )
    return x


def check_softcap(name: str, value: Any) -> float | None:
    """A soft-capping value: None (no cap) or a positive finite number."""
    if value is None:
        return None
    number = check_number(name, value, "a positive number or None")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number (the cap c of c * tanh(x / c)) or None, got {_shown(value)}")
    return number


def check_logit_scale(name: str, value: Any) -> float:
    """A logit scale: a positive finite number."""
    number = check_number(name, value, "a positive number")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number (it multiplies the logits), got {_shown(value)}")
    return number


def check_side_pair(name: str, value: Any, check: Any) -> tuple[Any, Any]:
    """One value for both sides, or a pair (student, teacher), each checked by ``check(name, v)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be one value for both sides or a pair (student, teacher), got {len(value)} values")
        return check(f"{name}[0] (student)", value[0]), check(f"{name}[1] (teacher)", value[1])
    one = check(name, value)
    return one, one


def check_process_group(group: Any) -> None:
    """A torch.distributed process group this process belongs to (the vocabulary-parallel losses, count_items)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "process_group was given but torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first (or pass process_group=None on one device)"
        )
    if not isinstance(group, dist.ProcessGroup) or dist.get_rank(group) < 0:
        raise ValueError(
            f"process_group must be a torch.distributed process group this process belongs to "
            f"(e.g. torch.distributed.group.WORLD or a new_group of the tensor-parallel ranks); got {group!r}"
        )


def check_vocab_size(student_v: int, teacher_v: int, vocab_size: Any, teacher_name: str = "teacher_logits") -> int:
    """The number of leading vocabulary entries compared: ``vocab_size``, or the common size when it is None."""
    if vocab_size is None:
        if student_v != teacher_v:
            raise ValueError(
                f"student_logits has {student_v} entries along the last axis but {teacher_name} has {teacher_v}; "
                f"if the vocabularies share their first tokens (padded embeddings), pass "
                f"vocab_size={min(student_v, teacher_v)} to truncate both"
            )
        return student_v
    size = check_integer("vocab_size", vocab_size, "an integer or None")
    if not 1 <= size <= min(student_v, teacher_v):
        raise ValueError(
            f"vocab_size={size} must lie in [1, {min(student_v, teacher_v)}] (the smaller of the student's "
            f"{student_v} and the teacher's {teacher_v} entries)"
        )
    return size


def check_num_items(value: Any, reduction: str) -> Any:
    """``num_items_in_batch``: None, or the count of items in the whole batch, a number >= 0 given as a number or
    a one-element tensor (read once: one device synchronisation). 0 is the count of an all-masked batch, whose
    loss is then exactly 0 (and an error if this batch keeps any position: see ``check_kept_items``)."""
    import torch

    if value is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"num_items_in_batch divides the summed loss by a global token count, which only applies with "
            f"reduction='mean'; got reduction={reduction!r}"
        )
    what = "a count >= 0 (items in the whole batch)"
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise ValueError(f"num_items_in_batch must be a single number, got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool:
            raise TypeError(
                f"num_items_in_batch must be {what}, got a bool tensor; pass the count as an integer tensor, an int "
                "or a float"
            )
        value = value.detach().reshape(()).to("cpu", torch.float64).item()
    number = check_number("num_items_in_batch", value, what)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"num_items_in_batch must be {what}, got {_shown(value)}")
    return number


def check_kept_items(num_items: float, kept: int) -> None:
    """A batch that keeps ``kept`` positions cannot belong to a global batch of 0 items."""
    if num_items == 0 and kept:
        raise ValueError(
            f"num_items_in_batch is 0 but this batch keeps {kept} positions (labels other than ignore_index); "
            "pass the number of kept items of the whole batch (kldiv.nn.count_items)"
        )


def check_batch_shapes(student: Any, other: Any, other_name: str) -> None:
    if tuple(student.shape[:-1]) != tuple(other.shape[:-1]):
        raise ValueError(
            f"student_logits has shape {tuple(student.shape)} but {other_name} has shape {tuple(other.shape)}; "
            "all axes but the last (batch, sequence) must be equal"
        )


def check_topk(indices: Any, logprobs: Any, tail: Any) -> None:
    """The fields of a :class:`kldiv.nn.TopK`."""
    import torch

    if not isinstance(indices, torch.Tensor) or not isinstance(logprobs, torch.Tensor):
        raise TypeError(
            f"TopK needs torch tensors, got indices={type(indices).__name__}, logprobs={type(logprobs).__name__}"
        )
    if not _is_integer_tensor(indices):
        raise TypeError(f"TopK.indices has dtype {indices.dtype}; it must hold integer token ids (e.g. .long())")
    if not logprobs.is_floating_point():
        raise TypeError(f"TopK.logprobs has dtype {logprobs.dtype}; it must be a floating-point tensor")
    if indices.shape != logprobs.shape or indices.ndim == 0:
        raise ValueError(
            f"TopK.indices has shape {tuple(indices.shape)} and TopK.logprobs {tuple(logprobs.shape)}; "
            "they must have the same shape (..., k)"
        )
    if indices.shape[-1] == 0:
        raise ValueError("TopK has k = 0 tokens per position; keep at least one")
    if indices.device != logprobs.device:
        raise ValueError(f"TopK.indices is on {indices.device} but TopK.logprobs on {logprobs.device}; put both on one device")
    if tail is not None:
        check_choice("tail", tail, TOPK_TAILS)


def check_tail(topk_tail: str | None, tail: Any) -> str:
    """The tail mode of a TopK teacher: set on the TopK or by the loss's ``tail`` (default "bucket"), not both ways."""
    if tail is not None:
        check_choice("tail", tail, TOPK_TAILS)
    if topk_tail is not None and tail is not None and topk_tail != tail:
        raise ValueError(f"TopK.tail={topk_tail!r} conflicts with tail={tail!r}; set it in one place")
    return topk_tail or tail or "bucket"


def check_topk_size(k: int, vocab_size: int) -> None:
    if k > vocab_size:
        raise ValueError(f"TopK has k = {k} tokens per position, more than the vocabulary ({vocab_size})")


def torch_nonzero_first(mask: Any) -> tuple[int, ...]:
    """The index of the first True entry of a torch bool tensor (which has one)."""
    import torch

    return tuple(int(i) for i in torch.nonzero(mask)[0])


def check_topk_rows(idx: Any, lp: Any, rows: Any, vocab_size: int, tail: str) -> None:
    """The kept rows of a TopK teacher: token ids inside the vocabulary, and (for "bucket") log-probabilities
    whose probabilities sum to at most 1."""
    if rows is not None:
        idx, lp = idx.index_select(0, rows), lp.index_select(0, rows)
    if idx.numel() == 0:
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"TopK.indices holds token id {low if low < 0 else high}, outside the vocabulary [0, {vocab_size}); "
            "pass token ids of the student's vocabulary (or a larger vocab_size)"
        )
    ordered = idx.sort(dim=-1).values
    repeated = ordered[..., 1:] == ordered[..., :-1]
    if bool(repeated.any()):
        row, col = (int(i) for i in torch_nonzero_first(repeated))
        raise ValueError(
            f"TopK.indices repeats token id {int(ordered[row, col])} in kept row {row}; the k ids of a position must "
            "be distinct (as torch.topk returns them)"
        )
    high_lp = float(lp.max())  # NaN passes here: the loss reports it at its position
    if high_lp > 1e-3:  # beyond the rounding of a log_softmax's largest entry
        raise ValueError(
            f"TopK.logprobs holds {high_lp:.6g} > 0; they must be the teacher's log-probabilities (log_softmax over "
            "the full vocabulary, then topk), not raw logits"
        )
    if tail == "bucket":
        total = float(lp.float().logsumexp(dim=-1).max().exp())
        if total > 1 + 1e-3:
            raise ValueError(
                f"TopK.logprobs sum to {total:.6g} > 1 at some position after exp; they must be the teacher's "
                "log-probabilities (log_softmax over the full vocabulary, then topk), not raw logits"
            )


def check_fused_reduction(reduction: str) -> None:
    if reduction == "none":
        raise ValueError(
            "reduction='none' is not available for the fused linear loss (its weight gradient is summed over "
            "positions in forward); use 'mean' or 'sum', or DistillationLoss on materialised logits"
        )


def check_matrix(name: str, x: Any) -> Any:
    x = check_float_tensor(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; it must be 2-D (flatten batch and sequence first)")
    return x


def check_bias(name: str, b: Any, v: int) -> None:
    if b is not None:
        b = check_float_tensor(name, b)
        if tuple(b.shape) != (v,):
            raise ValueError(f"{name} has shape {tuple(b.shape)}; it must be ({v},), one entry per vocabulary row")


def check_lm_head(hidden: Any, weight: Any) -> None:
    """The student's hidden states (N, H) and LM head (V, H) fit together."""
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"student_weight has shape {tuple(weight.shape)} but student_hidden has {hidden.shape[1]} features; "
            "the weight must be (V, H) with H = student_hidden.shape[1] (an nn.Linear's .weight)"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(f"student_hidden is {hidden.dtype} but student_weight is {weight.dtype}; use one dtype")


def check_accum_dtype(accum_dtype: Any) -> None:
    import torch

    if accum_dtype not in (torch.float32, torch.float64):
        raise TypeError(f"accum_dtype must be torch.float32 or torch.float64, got {accum_dtype!r}")


def check_one_teacher(teacher_hidden: Any, teacher_logits: Any) -> None:
    given = [name for name, x in (("teacher_hidden", teacher_hidden), ("teacher_logits", teacher_logits)) if x is not None]
    if len(given) != 1:
        raise ValueError(
            "pass exactly one teacher: teacher_hidden with teacher_weight, or teacher_logits (a tensor or a TopK); "
            f"got {' and '.join(given) if given else 'neither'}"
        )


def check_teacher_head(teacher_hidden: Any, teacher_weight: Any, n: int) -> tuple[Any, Any]:
    """The teacher's hidden states (N, H_t) and LM head (V_t, H_t)."""
    teacher_hidden = check_matrix("teacher_hidden", teacher_hidden)
    if teacher_weight is None:
        raise ValueError("teacher_hidden needs teacher_weight (V_t, H_t), the teacher's LM head")
    teacher_weight = check_matrix("teacher_weight", teacher_weight)
    if teacher_hidden.shape[0] != n or teacher_weight.shape[1] != teacher_hidden.shape[1]:
        raise ValueError(
            f"teacher_hidden has shape {tuple(teacher_hidden.shape)} and teacher_weight "
            f"{tuple(teacher_weight.shape)}; they need N = {n} rows and a shared feature size H_t"
        )
    return teacher_hidden, teacher_weight


def check_fused_topk(indices: Any, n: int) -> None:
    if indices.shape[0] != n or indices.ndim != 2:
        raise ValueError(f"TopK.indices has shape {tuple(indices.shape)}; it needs shape (N, k) with N = {n}")


def check_fused_teacher_logits(teacher_logits: Any, n: int) -> Any:
    teacher_logits = check_matrix("teacher_logits", teacher_logits)
    if teacher_logits.shape[0] != n:
        raise ValueError(f"teacher_logits has {teacher_logits.shape[0]} rows but student_hidden has {n}")
    return teacher_logits


def check_hard_label_weight(hard_label_weight: Any) -> float:
    """The weight >= 0 of the fused loss's cross-entropy term on the labels."""
    return check_nonnegative("hard_label_weight", hard_label_weight, " (0 turns the term off)")


def check_hard_labels(labels: Any, ignore_index: int, vocab_size: int) -> None:
    """The cross-entropy term (``hard_label_weight > 0``) needs labels, and the kept ones must be token ids of the
    vocabulary, [0, vocab_size)."""
    if labels is None:
        raise ValueError("hard_label_weight > 0 needs labels (the token ids whose cross-entropy is added)")
    kept = labels[labels != ignore_index]
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= vocab_size):
        raise ValueError(f"labels hold token ids outside [0, {vocab_size}); the cross-entropy needs ids of the vocabulary")


# --- kldiv.vae ------------------------------------------------------------------------------------

VAE_REDUCTIONS = ("none", "sum", "mean", "batchmean")
VAE_RAMPS = ("linear", "cosine", "sigmoid")


def check_vae_reduction(reduction: Any) -> str:
    if reduction not in VAE_REDUCTIONS:
        raise ValueError(
            f"reduction must be one of 'none' (per dimension), 'sum', 'mean' or 'batchmean' (sum / batch size), "
            f"got {_shown(reduction)}"
        )
    return reduction


def check_finite_array(x: Any, name: str) -> None:
    """Every entry of ``x`` (NumPy, torch or any array) is finite; the error names the first bad index."""
    from ._backend import is_tracing

    if is_tracing(x):
        return
    host = x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x)
    bad = ~np.isfinite(host)
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), host.shape)) if host.ndim else ()
        raise ValueError(f"{name}{list(index) if index else ''} = {host[index]}; it must be finite")


def check_latent_batch(x: Any, name: str) -> np.ndarray:
    """Encoder outputs as a finite float64 array of shape (batch, latent)."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().double().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, latent), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one sample and one latent dimension")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def check_same_latent_shape(mean: np.ndarray, log_var: np.ndarray) -> None:
    if mean.shape != log_var.shape:
        raise ValueError(f"mean and log_var must have the same shape, got {mean.shape} and {log_var.shape}")


def check_free_bits_input(kl: Any, mode: Any) -> None:
    if mode not in ("batch", "sample"):
        raise ValueError(f"mode must be 'batch' or 'sample', got {_shown(mode)}")
    if len(kl.shape) != 2:
        raise ValueError(f"kl must have shape (batch, groups), got shape {tuple(kl.shape)}")
    if kl.shape[0] == 0:
        raise ValueError("kl is empty: the batch has no samples")


def check_step(step: Any) -> int:
    number = check_integer("step", step, "an int >= 0 (the training step)")
    if number < 0:
        raise ValueError(f"step must be >= 0, got {_shown(step)}")
    return number


def check_cycle_ratio(ratio: Any) -> float:
    number = check_number("ratio", ratio, "a number in (0, 1]")
    if not 0.0 < number <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {_shown(ratio)}")
    return number


def check_ramp(ramp: Any) -> str:
    if ramp not in VAE_RAMPS:
        raise ValueError(f"ramp must be one of {', '.join(VAE_RAMPS)}, got {_shown(ramp)}")
    return ramp


# --- kldiv.estimate --------------------------------------------------------------------------------


def check_real_array(x: Any, name: str, what: str) -> np.ndarray:
    """A float64 NumPy copy of ``x`` (torch tensors are detached first); ``what`` says what ``x`` should hold,
    for the ``TypeError`` on input that is not real numbers."""
    _backend.check_not_masked(x, name)
    if hasattr(x, "detach"):  # torch: the estimators work on a NumPy copy
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
        x = x.numpy()
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} could not be read as an array of numbers ({error}); pass {what}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {array.dtype}; pass {what}")
    return array.astype(np.float64)


def check_points(x: Any, name: str) -> np.ndarray:
    """Samples as a finite float64 array of shape ``(n, d)``; a 1-D array is n points in one dimension."""
    array = check_real_array(x, name, "numbers, one row per sample: an (n, d) array")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"{name} has shape {array.shape}; pass an (n, d) array of n samples in d dimensions (or a 1-D array)"
        )
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        what = "NaN" if np.isnan(array[row]).any() else "inf"
        raise ValueError(f"{name} row {row} contains {what}; remove or impute such rows before estimating")
    return array


def check_counts(x: Any, name: str) -> np.ndarray:
    """Category counts: a 1-D float64 array of finite, non-negative numbers with a positive sum."""
    array = check_real_array(x, name, "counts (non-negative numbers), one per category")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one count per category), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; give one count per category")
    bad = ~np.isfinite(array) | (array < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {array[i]}; counts must be finite and >= 0")
    if array.sum() <= 0:
        raise ValueError(f"{name} sums to 0; at least one category needs a positive count")
    return array


def _is_torch_tensor(x: Any) -> bool:
    import sys

    if "torch" not in sys.modules:  # a tensor implies torch is loaded: never import it here
        return False
    import torch

    return isinstance(x, torch.Tensor)


def _log_density_samples(x: Any, name: str) -> Any:
    """A torch tensor stays one (float, keeping its graph); anything else becomes a float64 NumPy array."""
    if _is_torch_tensor(x):
        import torch

        integer = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
        if x.is_complex() or not (x.is_floating_point() or x.dtype in integer):
            raise TypeError(f"{name} has dtype {x.dtype}; pass real log-densities")
        return x if x.is_floating_point() else x.double()
    return check_real_array(x, name, "real log-densities (numbers)")


def check_log_densities(log_p: Any, log_q: Any) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The inputs of :func:`kldiv.estimate.mc`: 1-D log-densities at the same n >= 2 samples of P, log_p finite,
    log_q finite or -inf. Returns them (torch tensors kept) and their float64 NumPy copies."""
    lp, lq = _log_density_samples(log_p, "log_p"), _log_density_samples(log_q, "log_q")
    if _is_torch_tensor(lp) != _is_torch_tensor(lq):
        raise TypeError("log_p and log_q come from different array libraries; pass two torch tensors or two arrays")
    if tuple(lp.shape) != tuple(lq.shape):
        raise ValueError(
            f"log_p has shape {tuple(lp.shape)} but log_q has shape {tuple(lq.shape)}; "
            "give both log-densities at the same samples"
        )
    if len(lp.shape) != 1:
        raise ValueError(f"log_p and log_q must be 1-D (one value per sample), got shape {tuple(lp.shape)}")
    if lp.shape[0] < 2:
        raise ValueError(f"mc needs at least 2 samples to estimate a standard error, got {int(lp.shape[0])}")
    host_p = lp.detach().cpu().double().numpy() if _is_torch_tensor(lp) else lp
    host_q = lq.detach().cpu().double().numpy() if _is_torch_tensor(lq) else lq
    for name, host in (("log_p", host_p), ("log_q", host_q)):
        if np.isnan(host).any():
            raise ValueError(f"{name}[{int(np.argmax(np.isnan(host)))}] is NaN; log-densities must be numbers")
    if not np.isfinite(host_p).all():
        i = int(np.argmax(~np.isfinite(host_p)))
        raise ValueError(
            f"log_p[{i}] = {host_p[i]}; samples must be drawn from P, so their log-density under P must be finite"
        )
    if np.isposinf(host_q).any():
        i = int(np.argmax(np.isposinf(host_q)))
        raise ValueError(f"log_q[{i}] is +inf; a log-density must be finite or -inf")
    return lp, lq, host_p, host_q


def check_knn_samples(xs: np.ndarray, ys: np.ndarray, k: int) -> None:
    """x (n, d) and y (m, d) live in one space and hold enough points for the k-th neighbour: n >= k + 1, m >= k."""
    n, m = len(xs), len(ys)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(
            f"x has {xs.shape[1]} dimension(s) per sample but y has {ys.shape[1]}; both samples must live in the same space"
        )
    if n < k + 1:
        raise ValueError(f"x has {n} point(s) but k={k} needs at least k+1 = {k + 1}; give more samples or a smaller k")
    if m < k:
        raise ValueError(f"y has {m} point(s) but k={k} needs at least k; give more samples or a smaller k")


def knn_ties_message(tied: int, n: int, discrete_share: float) -> str:
    """The k-NN estimator's warning about points of x with neighbours at distance 0; above ``discrete_share``
    of the points the samples look discrete, and the message points to the plug-in estimator."""
    if tied > discrete_share * n:
        return (
            f"{tied} of {n} points of x ({tied / n:.0%}) have exact duplicates: the samples look discrete, and the "
            "k-NN estimator assumes densities, so its value is not meaningful; count categories and use "
            "kldiv.estimate.plugin (on the command line: kldiv estimate --discrete)"
        )
    return (
        f"{tied} point(s) of x had duplicate neighbours at distance 0; k was raised past each tie group "
        "for those points (see kldiv.estimate.knn)"
    )


def check_variational_samples(xs: np.ndarray, ys: np.ndarray, holdout: float) -> None:
    """x (n, d) and y (m, d) live in one space, and both the training part and the held-out part (``holdout``)
    of each sample hold at least 2 points."""
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(
            f"x has {xs.shape[1]} dimension(s) per sample but y has {ys.shape[1]}; both samples must live in the same space"
        )
    for name, size in (("x", len(xs)), ("y", len(ys))):
        kept = max(2, round(holdout * size))
        if size - kept < 4:
            raise ValueError(
                f"{name} has {size} point(s): too few to train the critic on {1 - holdout:.0%} and evaluate it on the "
                f"other {holdout:.0%} (the held-out part needs 2, the training part 4); give more samples"
            )


def check_same_categories(counts_p: np.ndarray, counts_q: np.ndarray) -> None:
    if counts_p.shape != counts_q.shape:
        raise ValueError(
            f"counts_p has {counts_p.size} categories but counts_q has {counts_q.size}; give counts over the same "
            "categories"
        )


def check_level(ci: Any) -> float | None:
    """``ci`` is a confidence level strictly between 0 and 1 (e.g. 0.95), or None."""
    if ci is None:
        return None
    number = check_number("ci", ci, "a confidence level such as 0.95, or None")
    if not 0 < number < 1:
        raise ValueError(f"ci must be a confidence level strictly between 0 and 1 (e.g. 0.95), got {_shown(ci)}")
    return number


def check_pseudo_count(correction: Any) -> float:
    """The pseudo-count of :func:`kldiv.estimate.plugin`: 0 for "miller-madow" and "none", else a positive number."""
    if isinstance(correction, str):
        if correction not in ("miller-madow", "none"):
            raise ValueError(
                f"correction must be 'miller-madow', 'none' or a positive pseudo-count, got {_shown(correction)}"
            )
        return 0.0
    number = check_number("correction", correction, "'miller-madow', 'none' or a positive pseudo-count")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"a pseudo-count correction must be a positive finite number (e.g. 0.5), got {_shown(correction)}")
    return number


def check_mc_estimator(estimator: Any) -> str:
    if estimator not in ("k1", "k2", "k3"):
        raise ValueError(f"estimator must be one of 'k1', 'k2', 'k3', got {_shown(estimator)}")
    return estimator


def check_workers(workers: Any) -> int:
    """The thread count handed to SciPy's KD-tree queries (its own rules for the value: -1 uses all cores)."""
    return check_integer("workers", workers, "an integer (-1: all cores)")


# --- TensorFlow and Keras ---------------------------------------------------------------------------------


def tf_xla_unsupported() -> RuntimeError:
    return RuntimeError(
        "kldiv computes TensorFlow tensors with NumPy (tf.numpy_function), which XLA cannot compile; "
        "use tf.function(jit_compile=False), or model.compile(..., jit_compile=False) in Keras"
    )


def check_not_tf(what: str, *arrays: Any) -> None:
    """``what`` has no TensorFlow path: say so instead of silently returning NumPy arrays."""
    from ._backend import is_tf

    if is_tf(*arrays):
        raise TypeError(
            f"{what} does not take TensorFlow tensors (the measures and kldiv.grad do); pass x.numpy() instead"
        )


def check_mean_log_var(inputs: Any) -> tuple[Any, Any]:
    if not isinstance(inputs, list | tuple) or len(inputs) != 2:
        raise TypeError(f"GaussianKL takes [mean, log_var] (two tensors of shape (batch, latent)), got {_shown(inputs)}")
    mean, log_var = inputs
    if tuple(mean.shape) != tuple(log_var.shape) or len(mean.shape) != 2:
        raise ValueError(
            f"GaussianKL needs mean and log_var of one shape (batch, latent), got {tuple(mean.shape)} and "
            f"{tuple(log_var.shape)}"
        )
    return mean, log_var


def check_schedule(schedule: Any) -> Any:
    if not callable(schedule):
        raise TypeError(
            f"schedule must be a callable from the step to beta (e.g. kldiv.vae.LinearWarmup(1000)), got {_shown(schedule)}"
        )
    return schedule


def no_gaussian_kl_layer() -> str:
    return "KLAnnealing found no kldiv.keras.GaussianKL layer in the model; add one, or pass layers=[...]"


# ---- kldiv.hf: the Hugging Face Trainer integration ----

HF_EXTRA_HINT = "install the extra: pip install 'kldiv[hf]' (transformers and accelerate)"


def hf_missing(module: str) -> ImportError:
    return ImportError(f"kldiv.hf needs {module}, which is not installed; {HF_EXTRA_HINT}")


def check_one_teacher_source(teacher_model: Any, teacher_topk: Any) -> None:
    """DistillationTrainer takes a live teacher or an offline top-k file, exactly one."""
    if teacher_model is None and teacher_topk is None:
        raise ValueError("DistillationTrainer needs a teacher: pass teacher_model=<a model> or "
                         "teacher_topk=kldiv.hf.TeacherTopK(<folder written by save_teacher_topk>)")
    if teacher_model is not None and teacher_topk is not None:
        raise ValueError("pass teacher_model or teacher_topk, not both (teacher_topk replaces the live teacher)")


def check_output_embeddings(name: str, head: Any) -> Any:
    """The LM head the fused loss multiplies by: a module with a (V, H) weight."""
    import torch

    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise ValueError(f"{name}.get_output_embeddings() returned {type(head).__name__}, not a linear LM head with a "
                         "(V, H) weight; use fused=False to distil from the model's logits")
    return head


def check_hidden_matches_logits(name: str, ok: bool) -> None:
    if not ok:
        raise ValueError(f"{name}'s last hidden state times its output embeddings does not give its logits (the "
                         "model transforms its logits in a way kldiv.hf does not read from the config); "
                         "use fused=False")


def check_has_labels(labels: Any) -> None:
    if labels is None:
        raise ValueError("the batch has no 'labels'; distillation needs them to know which positions count "
                         "(-100 for ignored ones): use e.g. DataCollatorForLanguageModeling(tokenizer, mlm=False)")


def check_captured_inputs(inputs: Any) -> None:
    if inputs is None:
        raise ValueError("distillation_loss_func has not seen the student's inputs (Trainer's compute_loss_func gets "
                         "no input_ids): create it with student_model=<the model you pass to Trainer>")


def check_topk_k(k: Any, vocab: int) -> int:
    k = check_integer("k", k, "a positive integer (tokens kept per position)")
    if not 1 <= k <= vocab:
        raise ValueError(f"k must be between 1 and the teacher's vocabulary size {vocab}, got {k}")
    return k


def check_new_folder(path: Any) -> None:
    """save_teacher_topk writes into a new or empty folder and never overwrites files."""
    import os

    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise FileExistsError(f"{path} already exists and is not an empty folder; save_teacher_topk never overwrites "
                              "files: choose a new folder or remove the old one yourself")


def check_example_ids(index: int, input_ids: Any) -> None:
    if input_ids is None:
        raise ValueError(f"dataset item {index} has no 'input_ids'; save_teacher_topk needs tokenised examples")


def check_topk_manifest(path: Any, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != "kldiv-teacher-topk":
        raise ValueError(f"{path} is not a teacher top-k folder written by kldiv.hf.save_teacher_topk "
                         "(its manifest.json is missing the format tag)")


def check_shard_digest(file: Any, expected: str, actual: str) -> None:
    if expected != actual:
        raise ValueError(f"{file} is corrupt: its SHA-256 is {actual[:12]}... but the manifest says {expected[:12]}...; "
                         "write the teacher's top-k again with save_teacher_topk")


def check_topk_alignment(index: int, same: bool) -> None:
    if not same:
        raise ValueError(f"training example {index} has other input_ids than the teacher top-k file's example {index}; "
                         "pass the same dataset, in the same order, that save_teacher_topk was given")


def check_topk_length(dataset_len: int, topk_len: int) -> None:
    if dataset_len != topk_len:
        raise ValueError(f"the training dataset has {dataset_len} examples but the teacher top-k file {topk_len}; "
                         "pass the dataset save_teacher_topk was given")


def check_teacher_keys(present: bool) -> None:
    if not present:
        raise ValueError("this batch has no teacher top-k: teacher_topk covers the training dataset only; evaluate with "
                         "a live teacher (teacher_model=...) or pass prediction_loss_only data from the same file")


def check_right_padded(same: bool) -> None:
    if not same:
        raise ValueError("with teacher_topk the collator must pad on the right (tokenizer.padding_side = 'right') "
                         "and keep each example's input_ids unchanged")
