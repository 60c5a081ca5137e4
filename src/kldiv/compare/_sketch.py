"""Bounded-memory percentiles: exact while the values fit, then a relative-error sketch.

The sketch is the logarithmic-bucket histogram of DDSketch (Masson, Rim and Lee, 2019): a positive value
x falls in bucket i = ceil(log_gamma x) with gamma = (1 + a) / (1 - a), and every value of bucket i lies
in (gamma^(i-1), gamma^i]. Representing the bucket by 2 gamma^i / (gamma + 1) puts each order statistic
within relative error ``a`` of its true value. Negative values use a mirrored histogram; values with
|x| < ``TINY`` count as zero.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _validate

TINY = 1e-30  # |x| below this is stored as 0: an absolute error of at most 1e-30
HUGE = 1e30  # |x| above this (and inf) is stored in an overflow bucket, answered by the exact extremes


class QuantileSketch:
    """Streaming percentiles in O(1) memory in the number of values.

    While at most ``exact_limit`` values have been seen they are kept and percentiles are exact
    (``numpy.percentile`` with linear interpolation). Beyond that they move into a histogram with
    ``2 log(HUGE / TINY) / log(gamma)`` buckets (1.1 MB for ``relative_accuracy=1e-3``), and a percentile at
    fractional rank r = q (n - 1) / 100 satisfies

        |estimate - exact| <= relative_accuracy * max(|x_floor(r)|, |x_ceil(r)|) + TINY,

    where x_k is the k-th smallest value: each order statistic is within relative error ``a`` and the linear
    interpolation between two of them keeps that bound. The minimum and maximum are always exact.

    Args:
      relative_accuracy: a in (0, 1), the relative error of each order statistic once sketched.
      exact_limit: how many values are kept exactly before switching to the sketch.

    References:
      Masson, Rim and Lee (2019), DDSketch: a fast and fully-mergeable quantile sketch with relative-error
      guarantees, VLDB 12(12), Algorithm 1 and Proposition 3.
    """

    def __init__(self, relative_accuracy: float = 1e-3, exact_limit: int = 1 << 16):
        self.relative_accuracy = _validate.check_in_unit_interval("relative_accuracy", relative_accuracy, strict=True)
        self.exact_limit = _validate.check_integer_at_least("exact_limit", exact_limit, 0)
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        self._offset = math.floor(math.log(TINY) / self._log_gamma)
        self._size = math.ceil(math.log(HUGE) / self._log_gamma) - self._offset + 1
        self.count = 0
        self.minimum = math.inf
        self.maximum = -math.inf
        self._exact: list[np.ndarray] | None = []
        self._positive: np.ndarray | None = None
        self._negative: np.ndarray | None = None
        self._zeros = 0
        self._over = [0, 0]  # values below -HUGE, above HUGE

    @property
    def exact(self) -> bool:
        """True while every value is kept and percentiles are exact."""
        return self._exact is not None

    @property
    def error(self) -> float:
        """The relative error bound of percentiles now: 0 while exact."""
        return 0.0 if self.exact else self.relative_accuracy

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        if np.isnan(values).any():
            raise ValueError("a per-token value is NaN; check the logits for NaN before comparing")
        self.count += values.size
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        if self._exact is not None:
            self._exact.append(values.copy())
            if self.count > self.exact_limit:
                self._to_histogram()
            return
        self._add(values)

    def _to_histogram(self) -> None:
        """Move the exact values into the histogram (what ``update`` does once they exceed ``exact_limit``)."""
        if self._exact is None:
            return
        stored = np.concatenate(self._exact) if self._exact else np.zeros(0)
        self._exact = None
        self._positive = np.zeros(self._size, dtype=np.int64)
        self._negative = np.zeros(self._size, dtype=np.int64)
        self._add(stored)

    def merge(self, other: QuantileSketch) -> None:
        """Add every value ``other`` has seen, as if they had been passed to :meth:`update`.

        Exact while the two together hold at most ``exact_limit`` values; beyond that both sides' values sit in
        the same deterministic buckets, so the merged histogram equals the one a single sketch of all the values
        builds, whatever the grouping (merging is associative and commutative) and the error bound is kept.
        """
        if (other.relative_accuracy, other.exact_limit) != (self.relative_accuracy, self.exact_limit):
            raise ValueError(
                f"cannot merge a sketch with relative_accuracy={other.relative_accuracy}, exact_limit="
                f"{other.exact_limit} into one with relative_accuracy={self.relative_accuracy}, exact_limit="
                f"{self.exact_limit}; create both with the same settings"
            )
        if other.count == 0:
            return
        if self.count + other.count <= self.exact_limit and self.exact and other.exact:
            self._exact.extend(part.copy() for part in other._exact)
        else:
            self._to_histogram()
            if other.exact:
                self._add(np.concatenate(other._exact))
            else:
                self._positive += other._positive
                self._negative += other._negative
                self._zeros += other._zeros
                self._over = [self._over[0] + other._over[0], self._over[1] + other._over[1]]
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def state(self) -> dict[str, np.ndarray]:
        """The sketch as plain arrays: the exact values while exact, else the bucket counts (empty arrays stand
        for the other form, so the keys, dtypes and ranks never change)."""
        exact = self._exact is not None
        empty = np.zeros(0, dtype=np.int64)
        return {
            "relative_accuracy": np.array(self.relative_accuracy),
            "exact_limit": np.array(self.exact_limit, dtype=np.int64),
            "count": np.array(self.count, dtype=np.int64),
            "minimum": np.array(self.minimum),
            "maximum": np.array(self.maximum),
            "exact": np.array(exact, dtype=np.int64),
            "values": (np.concatenate(self._exact) if self._exact else np.zeros(0)) if exact else np.zeros(0),
            "positive": empty if exact else self._positive.copy(),
            "negative": empty if exact else self._negative.copy(),
            "zeros": np.array(self._zeros, dtype=np.int64),
            "over": np.array(self._over, dtype=np.int64),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` of a sketch with the same settings (checked by the caller)."""
        self.count = int(state["count"])
        self.minimum, self.maximum = float(state["minimum"]), float(state["maximum"])
        if int(state["exact"]):
            values = np.array(state["values"], dtype=np.float64)
            self._exact = [values] if values.size else []
            self._positive = self._negative = None
        else:
            self._exact = None
            self._positive = np.array(state["positive"], dtype=np.int64)
            self._negative = np.array(state["negative"], dtype=np.int64)
        self._zeros = int(state["zeros"])
        self._over = [int(v) for v in state["over"]]

    def _index(self, magnitude: np.ndarray) -> np.ndarray:
        index = np.ceil(np.log(magnitude) / self._log_gamma).astype(np.int64) - self._offset
        return np.clip(index, 0, self._size - 1)

    def _add(self, values: np.ndarray) -> None:
        magnitude = np.abs(values)
        small = magnitude < TINY
        large = magnitude > HUGE
        self._zeros += int(small.sum())
        self._over[0] += int((large & (values < 0)).sum())
        self._over[1] += int((large & (values > 0)).sum())
        keep = ~(small | large)
        for store, sign in ((self._positive, values > 0), (self._negative, values < 0)):
            chosen = magnitude[keep & sign]
            if chosen.size:
                store += np.bincount(self._index(chosen), minlength=self._size)

    def weighted_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) describing the distribution: the values themselves while exact, else the bucket
        representatives with their counts (for histograms)."""
        if self._exact is not None:
            values = np.concatenate(self._exact) if self._exact else np.zeros(0)
            return values, np.ones_like(values)
        representative = 2 * self.gamma ** (np.arange(self._size) + self._offset) / (self.gamma + 1)
        values = np.concatenate(([self.minimum], -representative[::-1], [0.0], representative, [self.maximum]))
        counts = np.concatenate(([self._over[0]], self._negative[::-1], [self._zeros], self._positive, [self._over[1]]))
        keep = counts > 0
        return values[keep], counts[keep].astype(np.float64)

    def percentiles(self, q: np.ndarray | list[float]) -> np.ndarray:
        """Percentiles ``q`` (in [0, 100]) of all values seen; NumPy's linear interpolation when exact."""
        q = np.asarray(q, dtype=np.float64)
        if self.count == 0:
            raise ValueError("no values yet: call update() with at least one token before asking for percentiles")
        if self._exact is not None:
            return np.percentile(np.concatenate(self._exact), q)
        rank = q / 100 * (self.count - 1)
        lo, hi = np.floor(rank).astype(np.int64), np.ceil(rank).astype(np.int64)
        fraction = rank - lo
        return (1 - fraction) * self._order_statistic(lo) + fraction * self._order_statistic(hi)

    def _order_statistic(self, k: np.ndarray) -> np.ndarray:
        """Estimates of the k-th smallest values (0-based), clamped to the exact extremes."""
        representative = 2 * self.gamma ** (np.arange(self._size) + self._offset) / (self.gamma + 1)
        counts = np.concatenate(
            ([self._over[0]], self._negative[::-1], [self._zeros], self._positive, [self._over[1]])
        )
        values = np.concatenate(([self.minimum], -representative[::-1], [0.0], representative, [self.maximum]))
        cumulative = np.cumsum(counts)
        where = np.searchsorted(cumulative, k, side="right")
        estimate = values[np.minimum(where, values.size - 1)]
        estimate = np.where(k == 0, self.minimum, estimate)
        estimate = np.where(k == self.count - 1, self.maximum, estimate)
        return np.clip(estimate, self.minimum, self.maximum)
