"""Keras 3 metrics: streaming means of the exact divergences of :mod:`kldiv.keras.losses`.

Each metric is a ``keras.metrics.MeanMetricWrapper``: ``update_state(y_true, y_pred, sample_weight=None)`` adds the
per-sample divergences (weighted), ``result()`` is their (weighted) mean over everything seen since the last
``reset_state()`` — over an epoch in ``model.fit``. Same argument order and options as the losses: ``y_true`` is P.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import _validate
from ._common import divergence, keras, register

__all__ = ["KLDivergence", "ReverseKLDivergence", "JensenShannon", "CrossEntropy"]


def _per_sample(name: str, y_true: Any, y_pred: Any, *, from_logits: bool, temperature: float, axis: int,
                validate: bool, weight: float = 0.5) -> Any:
    return divergence(name, y_true, y_pred, p_logits=False, q_logits=from_logits, temperature=temperature, axis=axis,
                      validate=validate, weight=weight)


class _DivergenceMetric(keras.metrics.MeanMetricWrapper):
    _divergence = "kl"
    _default_name = "kl_divergence"

    def __init__(self, name: str | None = None, dtype: Any = None, from_logits: bool = False,
                 temperature: float = 1.0, axis: int = -1, validate: bool = True, **options: Any) -> None:
        self._options = {
            "from_logits": _validate.check_flag("from_logits", from_logits),
            "temperature": _validate.check_temperature(temperature),
            "axis": _validate.check_integer("axis", axis),
            "validate": _validate.check_flag("validate", validate),
            **options,
        }
        super().__init__(partial(_per_sample, self._divergence), name=name or self._default_name, dtype=dtype,
                         **self._options)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, **self._options}


@register("kldiv.metrics")
class KLDivergence(_DivergenceMetric):
    """Streaming mean of KL(P‖Q), P = ``y_true``, Q = ``y_pred`` (softmax of it with ``from_logits``); exact at zeros."""

    _divergence, _default_name = "kl", "kl_divergence"

    def __init__(self, name: str | None = None, dtype: Any = None, from_logits: bool = False,
                 temperature: float = 1.0, axis: int = -1, validate: bool = True) -> None:
        super().__init__(name, dtype, from_logits, temperature, axis, validate)


@register("kldiv.metrics")
class ReverseKLDivergence(_DivergenceMetric):
    """Streaming mean of KL(Q‖P), P = ``y_true``, Q = ``y_pred``."""

    _divergence, _default_name = "reverse_kl", "reverse_kl_divergence"

    def __init__(self, name: str | None = None, dtype: Any = None, from_logits: bool = False,
                 temperature: float = 1.0, axis: int = -1, validate: bool = True) -> None:
        super().__init__(name, dtype, from_logits, temperature, axis, validate)


@register("kldiv.metrics")
class JensenShannon(_DivergenceMetric):
    """Streaming mean of JS_w(P, Q), P = ``y_true`` with weight ``weight``, Q = ``y_pred``."""

    _divergence, _default_name = "js", "jensen_shannon"

    def __init__(self, name: str | None = None, dtype: Any = None, weight: float = 0.5, from_logits: bool = False,
                 temperature: float = 1.0, axis: int = -1, validate: bool = True) -> None:
        super().__init__(name, dtype, from_logits, temperature, axis, validate,
                         weight=_validate.check_in_unit_interval("weight", weight))


@register("kldiv.metrics")
class CrossEntropy(_DivergenceMetric):
    """Streaming mean of H(P, Q) = −Σ pᵢ log qᵢ, P = ``y_true``, Q = ``y_pred``; unclipped."""

    _divergence, _default_name = "cross_entropy", "cross_entropy"

    def __init__(self, name: str | None = None, dtype: Any = None, from_logits: bool = False,
                 temperature: float = 1.0, axis: int = -1, validate: bool = True) -> None:
        super().__init__(name, dtype, from_logits, temperature, axis, validate)
