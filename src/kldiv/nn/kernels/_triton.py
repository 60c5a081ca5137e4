"""Triton kernels for the logits-level losses with a dense teacher: one program per row, three passes over its
vocabulary blocks.

1. The row max and sum of exponentials of both sides, online (the running sum rescaled as the max grows).
2. The measure's row sums (:class:`kldiv._rows.RowForm` ``sums``: the same quantities, so the row form's own
   ``finish`` turns them into values), as non-negative terms without cancellation, written with exp, log and
   arithmetic only (Triton has no expm1 or log1p of its own): e^r - 1 - r as the series of
   :func:`kldiv._rows.weighted_excess` on r clamped to [-1/2, 1/2] plus ``(e^r - e^c) - (r - c)``, exactly 0
   inside the clamp, and y - log(1 + y) by the same construction.
3. With a gradient: the row form's ``grad`` in the student's logits, times the loss's scale, stored in place.
   Forward KL's (q - p, the student second) needs no row sum and is stored during pass 2: two passes.

Every edge is decided per entry inside the kernel (selects cost nothing on a GPU): impossible outcomes on either
side or both, probabilities that underflow, log-ratios where e^r would overflow; NaN or +inf logits give a NaN
value. So no row is evaluated twice and nothing waits for the device. Rows masked by ``ignore_index`` are never
read: the kernel gets the indices of the kept rows. Accumulation is float32.

The kernels are built on first use: ``triton.jit`` decides when it decorates whether ``TRITON_INTERPRET=1``
makes them run on CPU tensors through Triton's interpreter, which is how the test suite checks them.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import array_api_compat.torch as xp
import torch

from ... import _config
from ...measures import JS, KL, SKEW_KL, TVD

_IDS = {KL.name: 0, JS.name: 1, SKEW_KL.name: 2, TVD.name: 3}
_SUMS = {0: 1, 1: 2, 2: 2, 3: 3}  # row sums per measure, as its row form returns them


def available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def wanted(x: torch.Tensor, measure: Any, params: dict) -> bool:
    """Whether ``x``'s loss runs on the Triton kernel under the configuration (``kernel``): not for float64, nor
    for a degenerate parameter whose row form is 0 (JS at weight 0 or 1, skew KL at alpha 1), which the eager
    kernels give at no cost."""
    choice = _config.get_config().kernel
    if choice in ("eager", "compiled"):
        return False
    if choice == "auto" and not (x.device.type == "cuda" and available()):
        return False
    if not available():
        raise RuntimeError("kernel='triton' needs Triton: pip install triton (or set KLDIV_KERNEL=auto)")
    if x.device.type != "cuda" and not _interpreting():
        raise RuntimeError(
            f"kernel='triton' runs {x.device.type} tensors only through Triton's interpreter: set TRITON_INTERPRET=1 "
            "before Python starts, or use CUDA tensors, or KLDIV_KERNEL=auto"
        )
    return x.dtype != torch.float64 and _kind(measure, params) is not None


@functools.cache
def _kernel(interpret: bool) -> Any:
    """The jit kernel, built once per interpreter setting (a module imported on first use)."""
    from . import _triton_rows

    return _triton_rows.dense


def _weight(params: dict) -> float:
    """The kernel's parameter w: JS's weight or skew KL's alpha (0 for the others)."""
    return float(params.get("weight", params.get("alpha", 0.0)))


def _kind(measure: Any, params: dict) -> int | None:
    """The kernel's measure id (skew KL at alpha 0 is KL); None where :func:`wanted` declines."""
    name, w = measure.name, _weight(params)
    if name == SKEW_KL.name and w == 0.0:
        return _IDS[KL.name]
    if (name == JS.name and w in (0.0, 1.0)) or (name == SKEW_KL.name and w == 1.0):
        return None
    return _IDS[name]


def run_dense(
    measure: Any, params: dict, student_first: bool, student: torch.Tensor, teacher: torch.Tensor, *,
    temperature: float, rows: torch.Tensor | None, grad_scale: Any, grad_out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense kernel on the selected rows of (N, V) logits (:func:`wanted` must hold): (selected row indices,
    their values in float32), ``grad_scale`` times the student's gradient written into ``grad_out``'s rows.
    Nothing here waits for the device: the scale is read by the kernel."""
    kind, w = _kind(measure, params), _weight(params)
    n, v = student.shape
    device = student.device
    selected = rows if rows is not None else torch.arange(n, device=device)
    count = int(selected.numel())
    out = torch.zeros(count, 8, dtype=torch.float32, device=device)
    p, q = (student, teacher) if student_first else (teacher, student)
    if count:
        grad = grad_out if grad_out is not None else out  # a placeholder pointer when there is no gradient
        scale = torch.as_tensor(grad_scale, dtype=torch.float32, device=device).reshape(1)
        block = min(triton_block(v), 1 << 12)
        _kernel(_interpreting())[(count,)](
            p, q, p.stride(0), q.stride(0), selected, grad, grad.stride(0), out, v, 1.0 / temperature, scale, w,
            MEASURE=kind, STUDENT=0 if student_first else 1, GRAD=grad_out is not None, BLOCK=block,
            EARLY_GRAD=grad_out is not None and kind == 0 and not student_first,
        )
    k = _SUMS[kind]
    sums = tuple(out[:, j].double() for j in range(k))
    log_z_p, log_z_q = torch.log(out[:, 3].double()), torch.log(out[:, 4].double())
    form = (KL if kind == 0 else measure).rows
    values = form.finish(xp, sums, log_z_p, log_z_q, **({} if kind == 0 else params))
    return selected, values.to(torch.float32)


def triton_block(v: int) -> int:
    """Vocabulary block per program step: the next power of two of ``v``, from 16 up."""
    return max(16, 1 << max(0, (v - 1).bit_length()))
