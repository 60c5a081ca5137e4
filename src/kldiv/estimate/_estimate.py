"""The one result type of every estimator: a value with its uncertainty, so nobody mistakes it for exact."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class DiscreteSampleWarning(UserWarning):
    """Samples for a density estimator (k-NN) are mostly exact duplicates: they look discrete, and the plug-in
    estimator on category counts is the one that applies."""


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
        bias: the estimator's estimated bias ``E[value] − truth`` where the estimator computes one (the k-NN
            estimator does; ``ci`` then already allows for it), else None.
    """

    value: Any
    stderr: float
    ci: tuple[float, float] | None
    n: int
    bias: float | None = None

    def __float__(self) -> float:
        return as_float(self.value)

    def __str__(self) -> str:
        text = f"{as_float(self.value):.6g} ± {self.stderr:.2g}"
        if self.bias is not None:
            text += f" (bias ≈ {self.bias:+.2g})"
        if self.ci is not None:
            text += f" [{self.ci[0]:.6g}, {self.ci[1]:.6g}]"
        return f"{text} (n={self.n})"


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
