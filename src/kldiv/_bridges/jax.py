"""JAX bridge: the measures under ``jax.grad`` use their own vjp (``jax.custom_vjp``), so gradients are the
same exact formulas as :mod:`kldiv.grad` — no NaN from differentiating through ``where`` at zero probabilities."""

from __future__ import annotations

from typing import Any

import jax

from .. import _engine


def measure_function(measure: _engine.Measure, inputs: Any, names: Any, options: dict) -> Any:
    layouts = []

    @jax.custom_vjp
    def value(*xs):
        result = _engine.run(measure, xs, names, **options)
        return result.layout.values(result.values)

    def value_and_grads(*xs):
        result = _engine.run(measure, xs, names, grad=True, **options)
        layouts.append(result.layout)
        return result.layout.values(result.values), tuple(result.grads)

    def backward(grads, upstream):
        layout = layouts[-1]
        rows = upstream.reshape(layout.n_rows, 1)
        return tuple(layout.gradient(g * rows.astype(g.dtype), i) for i, g in enumerate(grads))

    value.defvjp(value_and_grads, backward)
    return value(*inputs)
