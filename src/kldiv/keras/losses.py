"""Keras 3 losses: exact KL divergence and its relatives, on every Keras backend (TensorFlow, JAX, PyTorch).

Keras's argument order, ``loss(y_true, y_pred)``: ``y_true`` is P (the target distribution, one-hot labels or a
teacher's probabilities) and ``y_pred`` is Q (the model's), so ``KLDivergence()(p, q)`` is KL(P‖Q), as
``keras.losses.KLDivergence`` computes it. Unlike Keras's, nothing is clipped: Keras clips both arguments to
[1e-7, 1] (keras-team/keras#19520), so a one-hot target or a zero probability of the model gives a number that
is not the KL; here ``0 log(0 / q) = 0`` exactly and ``p > 0`` where ``q = 0`` is ``+inf``.

Each loss returns one value per batch position (the divergence along ``axis``) to Keras, which applies
``sample_weight``, masks and ``reduction`` (``"sum_over_batch_size"`` by default, ``"sum"``, ``"mean"``, ``None``).
``from_logits=True`` means ``y_pred`` holds logits (Keras's convention); ``y_true`` is always probabilities, except in
:class:`Distillation`, where both are logits. Gradients are kldiv's exact vjp (:mod:`kldiv.grad`) on every backend.
"""

from __future__ import annotations

from typing import Any

from .. import _validate
from ._common import DIVERGENCES, divergence, keras, register

__all__ = ["KLDivergence", "ReverseKLDivergence", "JensenShannon", "CrossEntropy", "Distillation"]


class _DivergenceLoss(keras.losses.Loss):
    _divergence = "kl"
    _default_name = "kl_divergence"

    def __init__(self, from_logits: bool = False, temperature: float = 1.0, axis: int = -1, validate: bool = True,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None, dtype: Any = None) -> None:
        super().__init__(name=name or self._default_name, reduction=reduction, dtype=dtype)
        self.from_logits = _validate.check_flag("from_logits", from_logits)
        self.temperature = _validate.check_temperature(temperature)
        self.axis = _validate.check_integer("axis", axis)
        self.validate = _validate.check_flag("validate", validate)

    def _options(self) -> dict[str, Any]:
        return {}

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return divergence(self._divergence, y_true, y_pred, p_logits=False, q_logits=self.from_logits,
                          temperature=self.temperature, axis=self.axis, validate=self.validate, **self._options())

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "from_logits": self.from_logits, "temperature": self.temperature,
                "axis": self.axis, "validate": self.validate, "dtype": self.dtype}


@register("kldiv.losses")
class KLDivergence(_DivergenceLoss):
    """KL(P‖Q) = Σᵢ pᵢ log(pᵢ / qᵢ) with P = ``y_true``, Q = ``y_pred`` (or softmax(``y_pred``) with ``from_logits``).

    Exact at zeros (``0 log 0 = 0``; ``+inf`` where qᵢ = 0 < pᵢ), where ``keras.losses.KLDivergence`` clips both
    sides to [1e-7, 1] and agrees only where no probability is below 1e-7. Minimising it over Q is minimising the
    cross-entropy H(P, Q) (they differ by H(P), a constant of the targets).

    Args:
      from_logits: ``y_pred`` holds logits (a stable log-softmax; ``-inf`` is probability 0).
      temperature: T > 0 softens both sides (P ∝ p^(1/T), Q = softmax(y_pred / T)); 1 leaves them as they are.
        With T != 1 pass logits (``from_logits=True``): p^(1/T) has an infinite derivative at p = 0, so a zero
        probability in ``y_pred`` would give a NaN gradient.
      axis: the axis of the outcomes.
      validate: check that probabilities are non-negative and sum to 1 (skipped while tracing and while Keras
        probes shapes with stand-in tensors).
      reduction, name, dtype: as for every ``keras.losses.Loss``.

    References: Kullback and Leibler (1951), eq. 2.4; Hinton, Vinyals and Dean (2015) for the temperature.
    """

    _divergence, _default_name = "kl", "kl_divergence"


@register("kldiv.losses")
class ReverseKLDivergence(_DivergenceLoss):
    """KL(Q‖P) = Σᵢ qᵢ log(qᵢ / pᵢ), with P = ``y_true`` and Q = ``y_pred``: the mode-seeking direction.

    ``+inf`` where the model gives mass to an outcome the target rules out (pᵢ = 0 < qᵢ). Arguments as for
    :class:`KLDivergence`.
    """

    _divergence, _default_name = "reverse_kl", "reverse_kl_divergence"


@register("kldiv.losses")
class JensenShannon(_DivergenceLoss):
    """JS_w(P, Q) = w KL(P‖M) + (1 − w) KL(Q‖M), M = w P + (1 − w) Q, with P = ``y_true``, Q = ``y_pred``.

    Symmetric for w = ½, always finite, at most log 2 nats. ``weight`` is w; other arguments as for
    :class:`KLDivergence`.

    References: Lin (1991), Divergence measures based on the Shannon entropy, eq. 4.1.
    """

    _divergence, _default_name = "js", "jensen_shannon"

    def __init__(self, weight: float = 0.5, from_logits: bool = False, temperature: float = 1.0, axis: int = -1,
                 validate: bool = True, reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(from_logits, temperature, axis, validate, reduction, name, dtype)
        self.weight = _validate.check_in_unit_interval("weight", weight)

    def _options(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight": self.weight}


@register("kldiv.losses")
class CrossEntropy(_DivergenceLoss):
    """H(P, Q) = −Σᵢ pᵢ log qᵢ with P = ``y_true`` (one-hot or soft labels), Q = ``y_pred``: Keras's
    ``CategoricalCrossentropy`` without its clipping (``+inf`` where qᵢ = 0 < pᵢ; terms with pᵢ = 0 are 0).

    H(P, Q) = H(P) + KL(P‖Q). Arguments as for :class:`KLDivergence`; ``from_logits=True`` is the stable form.
    """

    _divergence, _default_name = "cross_entropy", "cross_entropy"


@register("kldiv.losses")
class Distillation(keras.losses.Loss):
    """A distillation loss between a teacher's and a student's logits, ``loss(teacher_logits, student_logits)``.

    With T the temperature, P_T = softmax(teacher / T) and S_T = softmax(student / T):

    - ``"kl"``: KL(P_T‖S_T), Hinton et al.'s soft-target loss (forward KL, mean-seeking);
    - ``"reverse_kl"``: KL(S_T‖P_T) (mode-seeking);
    - ``"js"``: JS_w(P_T, S_T) with ``weight`` w of the teacher;
    - ``"cross_entropy"``: H(P_T, S_T) (KL plus the teacher's entropy: the same gradient);
    - ``"tvd"``: the total variation distance.

    With ``scale_by_temperature_squared=True`` (the default) the value is multiplied by T², which keeps the
    gradients' size independent of T (Hinton et al. 2015, section 2). Use it in ``model.fit`` through
    :class:`kldiv.keras.Distiller` (the teacher runs on each batch), with precomputed teacher logits as ``y``, or
    as the ``loss`` of ``keras.distillation.LogitsDistillation`` (which divides by its own temperature first).

    References: Hinton, Vinyals and Dean (2015), Distilling the knowledge in a neural network, eq. 2.
    """

    def __init__(self, divergence: str = "kl", temperature: float = 1.0, scale_by_temperature_squared: bool = True,
                 weight: float = 0.5, axis: int = -1, validate: bool = True,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None, dtype: Any = None) -> None:
        super().__init__(name=name or f"distillation_{divergence}", reduction=reduction, dtype=dtype)
        self.divergence = _validate.check_choice("divergence", divergence, DIVERGENCES)
        self.temperature = _validate.check_temperature(temperature)
        self.scale_by_temperature_squared = _validate.check_flag(
            "scale_by_temperature_squared", scale_by_temperature_squared
        )
        self.weight = _validate.check_in_unit_interval("weight", weight)
        self.axis = _validate.check_integer("axis", axis)
        self.validate = _validate.check_flag("validate", validate)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        value = divergence(self.divergence, y_true, y_pred, p_logits=True, q_logits=True, temperature=self.temperature,
                           axis=self.axis, validate=self.validate, weight=self.weight,
                           names=("teacher_logits", "student_logits"))
        if self.scale_by_temperature_squared and self.temperature != 1.0:
            value = value * (self.temperature**2)
        return value

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "divergence": self.divergence, "temperature": self.temperature,
                "scale_by_temperature_squared": self.scale_by_temperature_squared, "weight": self.weight,
                "axis": self.axis, "validate": self.validate, "dtype": self.dtype}
