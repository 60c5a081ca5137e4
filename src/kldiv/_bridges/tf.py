"""TensorFlow bridge: the measures on ``tf.Tensor`` inputs, with their own vjp as the gradient.

TensorFlow tensors are computed by the NumPy engine (:func:`kldiv._engine.run`), so the values and gradients are
bit for bit those of NumPy inputs: eagerly through ``.numpy()``, inside ``tf.function`` graphs (Keras's
``model.fit``) through ``tf.numpy_function``, where validation is skipped as it is under ``jax.jit``. Under
``tf.GradientTape`` a ``tf.custom_gradient`` returns the measure's vjp (:mod:`kldiv.grad`'s formulas, exact at
zeros) times the upstream gradient; the backward pass evaluates it from the saved inputs.

Limits: XLA (``jit_compile=True``) cannot compile a NumPy call, which is a one-line error at trace time; the
gradient is not itself differentiable (to an outer tape it is a constant, so second derivatives through the bridge
are not available); the backward pass evaluates the vjp from the saved inputs, a second engine call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from .. import _backend, _engine, _validate


def _inside_xla() -> bool:
    try:  # TensorFlow has no public test for an XLA context; without these modules assume none
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - a future TensorFlow
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def _prepare(inputs: Sequence[Any], names: Sequence[str], options: dict) -> tuple[list[Any], bool]:
    """The inputs as floating tensors (bfloat16, which NumPy lacks, as float32), and whether they are symbolic."""
    like = next(x for x in inputs if tf.is_tensor(x))
    tensors = [_backend.to_array(x, n, tnp, like) for x, n in zip(inputs, names, strict=True)]
    tensors = [tf.cast(t, tf.float32) if t.dtype == tf.bfloat16 else t for t in tensors]
    symbolic = any(tf.is_symbolic_tensor(t) for t in tensors)
    if symbolic:
        if _inside_xla():
            raise _validate.tf_xla_unsupported()
        # what the engine would check on values, checked on the graph's static shapes and the options
        _validate.check_base(options.get("base"))
        if not isinstance(options.get("from_logits", False), bool):
            raise TypeError(f"from_logits must be True or False, got {options.get('from_logits')!r}")
    return tensors, symbolic


def _batch_shape(tensors: Sequence[Any], names: Sequence[str], axis: Any) -> tf.TensorShape:
    """The result's static shape in a graph: the broadcast batch shape, as far as the static shapes tell."""
    shapes = [t.shape for t in tensors]
    if any(s.rank is None for s in shapes):
        return tf.TensorShape(None)
    moved = []
    for s, n in zip(shapes, names, strict=True):
        ax = _validate.check_axis(axis, s.rank, n)
        dims = s.as_list()
        moved.append(tuple(dims[:ax] + dims[ax + 1:] + [dims[ax]]))
    if all(None not in m for m in moved):
        return tf.TensorShape(_validate.check_shapes(tuple(names), moved, axis)[0])
    batch = tf.TensorShape([])
    try:
        for m in moved:
            batch = tf.broadcast_static_shape(batch, tf.TensorShape(m[:-1]))
    except ValueError:
        return tf.TensorShape(None)  # the engine names the mismatch when the graph runs
    return batch


def _values(measure: _engine.Measure, arrays: Sequence[np.ndarray], names: Sequence[str], options: dict,
            dtype: np.dtype) -> np.ndarray:
    result = _engine.run(measure, arrays, names, **options)
    return np.asarray(result.layout.values(result.values), dtype=dtype)


def _grads(measure: _engine.Measure, arrays: Sequence[np.ndarray], upstream: np.ndarray | None,
           names: Sequence[str], options: dict) -> list[np.ndarray]:
    result = _engine.run(measure, arrays, names, grad=True, upstream=upstream, **options)
    grads = [result.layout.gradient(g, i) for i, g in enumerate(result.grads)]
    return [np.asarray(g, dtype=a.dtype) for g, a in zip(grads, arrays, strict=True)]


def _grads_tf(measure, xs, upstream, names, options):
    """The vjp as tensors of the inputs' dtypes and shapes; ``upstream`` None means ones."""
    quiet = {**options, "validate": False}  # the forward pass checked these inputs already (or could not)
    if not any(tf.is_symbolic_tensor(t) for t in (*xs, upstream) if t is not None):
        up = None if upstream is None else upstream.numpy()
        return [tf.constant(g) for g in _grads(measure, [x.numpy() for x in xs], up, names, quiet)]
    n = len(xs)

    def run(*arrays):
        up = None if upstream is None else arrays[n]
        return _grads(measure, arrays[:n], up, names, quiet)

    grads = tf.numpy_function(run, [*xs, *(() if upstream is None else (upstream,))], Tout=[x.dtype for x in xs],
                              stateful=False)
    for g, x in zip(grads, xs, strict=True):
        g.set_shape(x.shape)
    return list(grads)


def measure_function(measure: _engine.Measure, inputs: Sequence[Any], names: Sequence[str], options: dict) -> Any:
    """The measure's value as a ``tf.Tensor`` of the batch shape, differentiable under ``tf.GradientTape``."""
    given = [x.dtype if tf.is_tensor(x) else None for x in inputs]
    xs, symbolic = _prepare(inputs, names, options)
    dtype = np.result_type(*(x.dtype.as_numpy_dtype for x in xs))
    if symbolic:
        shape = _batch_shape(xs, names, options.get("axis", -1))
    graph_options = {**options, "validate": False} if symbolic else options

    @tf.custom_gradient
    def value(*ts):
        if symbolic:
            out = tf.numpy_function(lambda *a: _values(measure, a, names, graph_options, dtype), list(ts),
                                    Tout=tf.as_dtype(dtype), stateful=False)
            out.set_shape(shape)
        else:
            out = tf.constant(_values(measure, [t.numpy() for t in ts], names, options, dtype))

        def backward(upstream):
            return _grads_tf(measure, ts, upstream, names, options)

        return out, backward

    out = value(*xs)
    if tf.bfloat16 in given and all(g in (tf.bfloat16, None) for g in given):
        out = tf.cast(out, tf.bfloat16)  # bfloat16 in, bfloat16 out (computed in float32, like the other backends)
    return out


def gradients(measure: _engine.Measure, inputs: Sequence[Any], names: Sequence[str], options: dict) -> tuple:
    """:mod:`kldiv.grad` on tensors: one gradient per input, each a tensor of that input's shape and dtype."""
    upstream = options.pop("upstream", None)
    given = [x.dtype if tf.is_tensor(x) else None for x in inputs]
    xs, symbolic = _prepare(inputs, names, options)
    if symbolic:
        _batch_shape(xs, names, options.get("axis", -1))  # shape errors at trace time
    if upstream is not None:
        upstream = _backend.to_array(upstream, "upstream", tnp, xs[0])
        if not symbolic and not tf.is_symbolic_tensor(upstream):
            # the engine checks upstream's shape; eagerly it can run with validation as asked
            up = upstream.numpy()
            grads = _grads(measure, [x.numpy() for x in xs], up, names, options)
            return tuple(_like(tf.constant(g), d) for g, d in zip(grads, given, strict=True))
    elif not symbolic:
        grads = _grads(measure, [x.numpy() for x in xs], None, names, options)
        return tuple(_like(tf.constant(g), d) for g, d in zip(grads, given, strict=True))
    return tuple(_like(g, d) for g, d in zip(_grads_tf(measure, xs, upstream, names, options), given, strict=True))


def _like(g: Any, dtype: Any) -> Any:
    return tf.cast(g, tf.bfloat16) if dtype == tf.bfloat16 else g
