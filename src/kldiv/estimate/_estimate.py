"""The one result type of every estimator: a value with its uncertainty, so nobody mistakes it for exact."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Estimate:
    """An estimate of a divergence, in the units the estimator documents (nats unless ``base`` is given).

    Attributes:
        value: the point estimate (a float, or a 0-d torch tensor that keeps its autograd graph when the
            estimate came from reparameterised torch samples).
        stderr: its standard error (an approximation: each estimator's docstring says how it is obtained).
        ci: ``(low, high)``, a confidence interval at the level the estimator was asked for, or None when none
            was computed.
        n: the number of samples (draws from the first distribution) it rests on.
    """

    value: Any
    stderr: float
    ci: tuple[float, float] | None
    n: int

    def __float__(self) -> float:
        return as_float(self.value)

    def __str__(self) -> str:
        text = f"{as_float(self.value):.6g} ± {self.stderr:.2g}"
        if self.ci is not None:
            text += f" [{self.ci[0]:.6g}, {self.ci[1]:.6g}]"
        return f"{text} (n={self.n})"


def as_float64(x: Any, name: str, what: str) -> Any:
    """A float64 NumPy copy of ``x`` (torch tensors are detached first); ``what`` says what ``x`` should hold,
    for the ``TypeError`` on input that is not real numbers."""
    import numpy as np

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


def as_float(value: Any) -> float:
    """A Python float of a number or a 0-d array or tensor (detached from any autograd graph)."""
    return float(value.detach()) if hasattr(value, "detach") else float(value)


def normal_interval(value: float, stderr: float, level: float | None) -> tuple[float, float] | None:
    """The two-sided normal interval ``value ± z_{(1+level)/2} · stderr`` (None when ``level`` is None)."""
    if level is None:
        return None
    value = as_float(value)
    if math.isinf(value):
        return (value, value)
    if not math.isfinite(stderr):
        return (-math.inf, math.inf)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    return (value - z * stderr, value + z * stderr)


def check_level(ci: Any) -> float | None:
    """``ci`` is a confidence level strictly between 0 and 1 (e.g. 0.95), or None."""
    if ci is None:
        return None
    if isinstance(ci, bool) or not isinstance(ci, int | float):
        raise TypeError(f"ci must be a confidence level such as 0.95, or None, got {ci!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be a confidence level strictly between 0 and 1 (e.g. 0.95), got {ci!r}")
    return float(ci)


def check_base(base: Any) -> float:
    """The divisor that converts nats to the requested unit (1.0 for nats)."""
    from .._validate import check_base as _core_check_base

    log_base = _core_check_base(base)
    return 1.0 if log_base is None else log_base
