"""Exact running means, variances and covariances of several per-token quantities at once.

Each chunk's mean and co-moment matrix are computed in float64 and merged with the pairwise update of
Chan, Golub and LeVeque (1979): for the union of sets A and B with delta = mean_B - mean_A,

    M_AB = M_A + M_B + delta delta^T n_A n_B / (n_A + n_B),

which is as accurate as a two-pass computation over all values while keeping O(d^2) memory.
"""

from __future__ import annotations

import math

import numpy as np

NON_FINITE = ("positive_infinite", "negative_infinite", "undefined")


class Moments:
    """Count, mean and co-moment matrix of d named per-token quantities.

    Infinite values (KL is +inf where the other model gives probability 0 to a reference outcome; a log-ratio of
    perplexities is -inf where only the reference gives the label probability 0) are counted per quantity and sign
    and left out of the sums: a quantity with some reports the mean of that sign's infinity and standard error +inf.
    NaN (inf - inf: both models give the label probability 0), or infinities of both signs, make the mean NaN.
    """

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self._column = {name: i for i, name in enumerate(names)}
        d = len(names)
        self.count = 0
        self.mean = np.zeros(d)
        self.comoment = np.zeros((d, d))
        self.positive_infinite = np.zeros(d, dtype=np.int64)
        self.negative_infinite = np.zeros(d, dtype=np.int64)
        self.undefined = np.zeros(d, dtype=np.int64)  # NaN values

    def update(self, values: np.ndarray) -> None:
        """Add rows of ``values`` (n, d)."""
        values = np.asarray(values, dtype=np.float64)
        n = values.shape[0]
        if n == 0:
            return
        finite = np.isfinite(values)
        if not finite.all():
            self.positive_infinite += np.isposinf(values).sum(axis=0)
            self.negative_infinite += np.isneginf(values).sum(axis=0)
            self.undefined += np.isnan(values).sum(axis=0)
            values = np.where(finite, values, 0.0)
        mean_b = values.mean(axis=0)
        centred = values - mean_b
        comoment_b = centred.T @ centred
        total = self.count + n
        delta = mean_b - self.mean
        self.comoment += comoment_b + np.outer(delta, delta) * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total

    def merge(self, other: Moments) -> None:
        """Add the values summarised by ``other`` (the same names): Chan et al.'s pairwise update, exact up to
        rounding, so any grouping of the same values gives the same moments."""
        if other.names != self.names:
            raise ValueError(f"cannot merge moments of {other.names} into moments of {self.names}")
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.comoment += other.comoment + np.outer(delta, delta) * (self.count * other.count / total)
        self.mean += delta * (other.count / total)
        self.positive_infinite += other.positive_infinite
        self.negative_infinite += other.negative_infinite
        self.undefined += other.undefined
        self.count = total

    def state(self) -> dict[str, np.ndarray]:
        """The moments as plain arrays (a copy): count, mean, comoment and the counts of non-finite values."""
        return {"count": np.array(self.count, dtype=np.int64), "mean": self.mean.copy(),
                "comoment": self.comoment.copy(), "positive_infinite": self.positive_infinite.copy(),
                "negative_infinite": self.negative_infinite.copy(), "undefined": self.undefined.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` (already checked for shapes and dtypes by the caller)."""
        self.count = int(state["count"])
        self.mean = np.array(state["mean"], dtype=np.float64)
        self.comoment = np.array(state["comoment"], dtype=np.float64)
        for key in NON_FINITE:
            setattr(self, key, np.array(state[key], dtype=np.int64))

    def _non_finite(self, i: int) -> float | None:
        """The mean forced by non-finite values of quantity i, or None if it has none."""
        up, down, nan = self.positive_infinite[i], self.negative_infinite[i], self.undefined[i]
        if nan or (up and down):
            return math.nan
        return math.inf if up else -math.inf if down else None

    def mean_of(self, name: str) -> float:
        i = self._column[name]
        forced = self._non_finite(i)
        return float(self.mean[i]) if forced is None else forced

    def variance_of(self, name: str) -> float:
        """Sample variance (divisor n - 1); 0 for a single value."""
        i = self._column[name]
        forced = self._non_finite(i)
        if forced is not None:
            return math.inf if not math.isnan(forced) else math.nan
        return float(max(self.comoment[i, i], 0.0) / (self.count - 1)) if self.count > 1 else 0.0

    def standard_error_of(self, name: str) -> float:
        """sqrt(sample variance / n): the standard error of the mean."""
        return math.sqrt(self.variance_of(name) / self.count) if self.count else math.nan

    def covariance_of(self, a: str, b: str) -> float:
        i, j = self._column[a], self._column[b]
        if self._non_finite(i) is not None or self._non_finite(j) is not None:
            return math.nan
        return float(self.comoment[i, j] / (self.count - 1)) if self.count > 1 else 0.0
