"""What every kldiv.keras object shares: the Keras import, the per-sample divergences over backend tensors, and
the test for Keras's shape probing."""

from __future__ import annotations

from typing import Any

try:
    import keras
except ImportError as error:  # pragma: no cover - exercised where keras is missing
    raise ImportError(
        "kldiv.keras needs Keras 3: pip install 'kldiv[keras]' (keras, and tensorflow-cpu for the TensorFlow backend)"
    ) from error

import numpy as np

from .. import _backend, _engine, _validate
from ..measures import cross_entropy, js, kl, tvd

if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover - Keras 2
    raise ImportError(f"kldiv.keras needs Keras 3 (found {keras.__version__}): pip install 'keras>=3'")

def register(package: str) -> Any:
    """Keras serialisation under ``package`` (``kldiv.losses`` and ``kldiv.metrics`` share class names)."""
    return keras.saving.register_keras_serializable(package=package)

DIVERGENCES = ("kl", "reverse_kl", "js", "cross_entropy", "tvd")


def probing() -> bool:
    """True while Keras infers output shapes by running the function on stand-in tensors (all ones, or torch's
    ``meta`` device): their values are not data, so they are not validated."""
    try:
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    except ImportError:  # pragma: no cover - a Keras that moved it: meta tensors are still recognised as tracing
        return False
    return bool(in_symbolic_scope())


def check_probabilities(x: Any, name: str, axis: int) -> None:
    """``x`` (a backend tensor with values) holds distributions along ``axis``: the core's check and message,
    naming Keras's argument (``y_true``/``y_pred``)."""
    host = _validate._host(None, x)
    _, arrays, layout = _engine.prepare((host,), (name,), axis)
    locator = _validate.Locator(name, layout.shapes[0], layout.axes[0], layout.batch)
    with np.errstate(invalid="ignore"):
        _validate.check_probability_rows(np, layout.rows[0], 0, locator, float(np.finfo(arrays[0].dtype).eps))


def _log(x: Any) -> Any:
    return keras.ops.log(x)  # log 0 = -inf: a zero probability stays an impossible outcome, exactly


def divergence(name: str, p: Any, q: Any, *, p_logits: bool, q_logits: bool, temperature: float = 1.0,
               axis: int = -1, validate: bool = True, weight: float = 0.5,
               names: tuple[str, str] = ("y_true", "y_pred")) -> Any:
    """The divergence ``name`` between P and Q along ``axis``, one value per batch position, on the backend's
    tensors (TensorFlow, JAX or PyTorch), differentiable by each backend through kldiv's bridges.

    Probabilities are taken as they are (validated unless ``validate=False``, or while Keras probes); logits
    through a stable log-softmax. With ``temperature`` T both sides are softened, P_T ∝ exp(x / T) for logits x
    and ∝ p^(1/T) for probabilities p (log p / T as logits; zeros stay zeros). Where one side is logits and the
    other probabilities, the probabilities enter as the logits log p, after their validation.

    ``name``: ``"kl"`` KL(P‖Q), ``"reverse_kl"`` KL(Q‖P), ``"js"`` JS_w(P, Q) with weight w of P, ``"cross_entropy"``
    H(P, Q), ``"tvd"`` the total variation distance.
    """
    if probing():
        # Keras is inferring the output's shape and dtype on stand-in tensors (JAX's have symbolic batch sizes the
        # engine cannot lay out): the batch-shaped zeros of the result's dtype say all it needs
        return keras.ops.sum(p * q, axis=axis) * 0
    check = validate and not (_backend.is_tracing(p) or _backend.is_tracing(q))
    if check:  # probabilities are checked as what they are, under Keras's names, before any becomes logits
        for x, is_logits, label in ((p, p_logits, names[0]), (q, q_logits, names[1])):
            if not is_logits:
                check_probabilities(x, label, axis)
    both_logits = p_logits or q_logits or temperature != 1.0
    if both_logits:
        p = p if p_logits else _log(p)
        q = q if q_logits else _log(q)
        if temperature != 1.0:
            p, q = p / temperature, q / temperature
    options = {"axis": axis, "from_logits": both_logits, "validate": check and (p_logits or q_logits)}
    if name == "kl":
        return kl(p, q, **options)
    if name == "reverse_kl":
        return kl(q, p, **options)
    if name == "js":
        return js(p, q, weight=weight, **options)
    if name == "cross_entropy":
        return cross_entropy(p, q, **options)
    if name == "tvd":
        return tvd(p, q, **options)
    _validate.check_choice("divergence", name, DIVERGENCES)
    raise AssertionError(name)  # pragma: no cover - check_choice raised
