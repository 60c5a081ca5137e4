"""torch.autograd bridge: a measure's value with its vjp as the backward pass.

The forward pass computes the value and the gradient for a unit upstream together, chunk by chunk over
rows (no softmax or elementwise tensors are saved); backward only scales the saved gradient by the
upstream gradient and sums it over broadcast axes.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _engine, _validate


class _MeasureFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, measure, names, options, *inputs):
        result = _engine.run(measure, [x.detach() for x in inputs], names, grad=True, **options)
        result.layout.rows = []  # the inputs' views are not needed for backward
        ctx.layout = result.layout
        ctx.save_for_backward(*result.grads)
        return result.layout.values(result.values)

    @staticmethod
    def backward(ctx, upstream):
        _validate.check_first_order("kldiv's measure")
        layout = ctx.layout
        rows = torch.reshape(torch.broadcast_to(upstream, layout.batch), (layout.n_rows, 1))
        grads = []
        for i, g in enumerate(ctx.saved_tensors):
            needed = ctx.needs_input_grad[3 + i]
            grads.append(layout.gradient(g * rows.to(g.dtype), i) if needed else None)
        return (None, None, None, *grads)


def measure_function(measure: _engine.Measure, inputs: Any, names: Any, options: dict) -> torch.Tensor:
    tensors = [x if isinstance(x, torch.Tensor) else None for x in inputs]
    like = next(t for t in tensors if t is not None)
    inputs = [t if t is not None else torch.as_tensor(x, device=like.device) for t, x in zip(tensors, inputs, strict=True)]
    return _MeasureFunction.apply(measure, tuple(names), options, *inputs)
