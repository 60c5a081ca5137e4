"""Which backend runs a measure: the NumPy/array engine, or an autograd bridge around it.

PyTorch tensors that require grad go through a ``torch.autograd.Function`` whose backward is the measure's vjp
(:mod:`kldiv._bridges.torch`); JAX arrays through a ``jax.custom_vjp`` with the same vjp
(:mod:`kldiv._bridges.jax`); TensorFlow tensors through NumPy with a ``tf.custom_gradient``
(:mod:`kldiv._bridges.tf`); everything else straight to :func:`kldiv._engine.run`. The bridges are imported
only when their framework's arrays arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _backend, _engine, _validate


def forward(measure: _engine.Measure, inputs: Sequence[Any], names: Sequence[str], **options: Any) -> Any:
    """Public forward: the measure's value in the batch shape and the inputs' backend."""
    small = _engine.small_numpy(measure, inputs, options)
    if small is not None:
        return small
    _backend.namespace(*inputs)  # mixed libraries fail here, before any bridge sees them
    _validate.check_no_torch_func("kldiv.kl and the other measures", *inputs, batched_ok=True)  # vmap: the engine, traced
    if _backend.is_tf(*inputs):
        from ._bridges.tf import measure_function

        return measure_function(measure, inputs, names, options)
    if _backend.needs_torch_autograd(*inputs):
        from ._bridges.torch import measure_function

        return measure_function(measure, inputs, names, options)
    if _backend.is_jax(*inputs):
        from ._bridges.jax import measure_function

        return measure_function(measure, inputs, names, options)
    result = _engine.run(measure, inputs, names, **options)
    return result.layout.values(result.values)


def gradients(measure: _engine.Measure, inputs: Sequence[Any], names: Sequence[str], **options: Any) -> tuple[Any, ...]:
    """Public vjp: one gradient per input, each in that input's shape."""
    if _backend.is_tf(*inputs, options.get("upstream")):
        _backend.namespace(*inputs, options.get("upstream"))
        from ._bridges.tf import gradients

        return gradients(measure, inputs, names, options)
    _validate.check_no_torch_func("kldiv.grad", *inputs, options.get("upstream"), batched_ok=True)
    inputs = [x.detach() if _backend.is_torch(x) else x for x in inputs]
    result = _engine.run(measure, inputs, names, grad=True, **options)
    return tuple(result.layout.gradient(g, i) for i, g in enumerate(result.grads))
