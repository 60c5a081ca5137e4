"""kldiv for Keras 3 (every backend: TensorFlow, JAX, PyTorch): exact KL losses, metrics, a distillation model
and the VAE regulariser, all computed by kldiv's measures (one definition, exact gradients).

    >>> from kldiv.keras import losses
    >>> model.compile(optimizer="adam", loss=losses.KLDivergence())        # KL(y_true ‖ y_pred), unclipped

- :mod:`kldiv.keras.losses`: ``KLDivergence``, ``ReverseKLDivergence``, ``JensenShannon``, ``CrossEntropy``
  (Keras's ``(y_true, y_pred)`` order, y_true is P; ``from_logits``, ``temperature``, ``reduction``) and
  ``Distillation`` (teacher and student logits).
- :mod:`kldiv.keras.metrics`: the same divergences as streaming means.
- :class:`Distiller`: ``model.fit`` for a student against a frozen teacher.
- :class:`GaussianKL` and :class:`KLAnnealing`: the VAE's β-weighted KL term with free bits, and its schedule.

Install with ``pip install 'kldiv[keras]'`` (Keras, and tensorflow-cpu for the TensorFlow backend). On the
TensorFlow backend the divergences run through NumPy (``tf.numpy_function``), so XLA is not supported: Keras does
not use it on CPU-only machines; elsewhere pass ``jit_compile=False`` to ``compile``.
"""

from __future__ import annotations

from . import losses, metrics
from .callbacks import KLAnnealing
from .distiller import Distiller
from .layers import GaussianKL

__all__ = ["losses", "metrics", "Distiller", "GaussianKL", "KLAnnealing"]
