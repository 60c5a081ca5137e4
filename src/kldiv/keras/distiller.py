"""Knowledge distillation in ``model.fit``: a student trained on a frozen teacher's outputs, batch by batch."""

from __future__ import annotations

from typing import Any

from .. import _validate
from ._common import keras, register
from .losses import Distillation

__all__ = ["Distiller"]


@register("kldiv")
class Distiller(keras.Model):
    """A Keras model that trains ``student`` to match ``teacher`` (frozen) with an exact divergence.

    ``distiller(x)`` is ``student(x)``. In ``fit``/``evaluate`` its loss for a batch (x, y) is

        compiled_loss(y, student(x)) + distillation_weight · distillation_loss(teacher(x), student(x))

    where the compiled loss (``compile(loss=...)``, e.g. the cross-entropy with the true labels) is optional:
    compile without one and fit on ``x`` alone for pure distillation. The teacher runs in inference mode with its
    output's gradient stopped, and its weights are not trained. Works on every Keras backend.

    Args:
      student, teacher: Keras models with outputs of the same shape (logits for the default loss).
      distillation_loss: a loss taking (teacher_output, student_output); default
        ``kldiv.keras.losses.Distillation("kl")``, KL(teacher‖student) of the softmaxes.
      distillation_weight: the weight of the distillation term, >= 0.

    References: Hinton, Vinyals and Dean (2015), Distilling the knowledge in a neural network.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, distillation_loss: Any = None,
                 distillation_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.distillation_loss = Distillation("kl") if distillation_loss is None else distillation_loss
        self.distillation_weight = _validate.check_nonnegative("distillation_weight", distillation_weight)

    def call(self, x: Any, training: bool = False) -> Any:
        return self.student(x, training=training)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        teacher_out = keras.ops.stop_gradient(self.teacher(x, training=False))
        loss = self.distillation_weight * self.distillation_loss(teacher_out, y_pred, sample_weight=sample_weight)
        if getattr(self, "_compile_loss", None) is not None or self.losses:  # Keras's part: compiled and added losses
            loss = loss + super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        return loss

    def get_config(self) -> dict[str, Any]:
        serialize = keras.saving.serialize_keras_object
        return {**super().get_config(), "student": serialize(self.student), "teacher": serialize(self.teacher),
                "distillation_loss": serialize(self.distillation_loss),
                "distillation_weight": self.distillation_weight}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Distiller:
        config = dict(config)
        for key in ("student", "teacher", "distillation_loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
