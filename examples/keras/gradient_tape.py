"""KL divergence forward and backward under tf.GradientTape, checked against kldiv.grad (TensorFlow backend).

The tutorial computation, done exactly: the KL between a target P and a model's softmax(logits), its gradient by
TensorFlow's autodiff through kldiv's custom gradient, the same inside tf.function, and what Keras's clipped
``keras.losses.KLDivergence`` gives where the target has zeros.

    python examples/keras/gradient_tape.py            # about a second after TensorFlow's import
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--outcomes", type=int, default=1000)
    parser.add_argument("--tiny", action="store_true", help="a small size, for the tests")
    args = parser.parse_args(argv)
    rows, outcomes = (8, 10) if args.tiny else (args.rows, args.outcomes)

    import tensorflow as tf

    import kldiv

    rng = np.random.default_rng(0)
    target = rng.dirichlet(np.full(outcomes, 0.3), rows)
    target[:, : outcomes // 4] = 0.0  # a quarter of the outcomes impossible under P
    target /= target.sum(-1, keepdims=True)
    logits = rng.normal(size=(rows, outcomes))
    p, x = tf.constant(target), tf.Variable(logits)

    with tf.GradientTape() as tape:
        q = tf.nn.softmax(x)  # the tutorial's model output: probabilities
        loss = tf.reduce_mean(kldiv.kl(p, q))
    grad_tape = tape.gradient(loss, x).numpy()

    # the backward pass by hand: dKL/dq from kldiv.grad, then the softmax's Jacobian-vector product
    q_np = tf.nn.softmax(logits).numpy()
    _, dq = kldiv.grad.kl(target, q_np, upstream=np.full(rows, 1.0 / rows))
    grad_manual = q_np * (dq - (dq * q_np).sum(-1, keepdims=True))
    closed_form = (q_np - target) / rows  # d/dx mean KL(P ‖ softmax(x)) = (softmax(x) - P) / rows

    @tf.function
    def step(p, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            # logits straight in (no softmax to underflow); from_logits is for both sides, and log P is P's logits
            loss = tf.reduce_mean(kldiv.kl(tf.math.log(p), x, from_logits=True))
        return loss, tape.gradient(loss, x)

    loss_graph, grad_graph = step(p, tf.constant(logits))
    with tf.GradientTape() as tape:
        keras_loss = tf.reduce_mean(tf.keras.losses.KLDivergence(reduction=None)(p, tf.nn.softmax(x)))
    grad_keras = tape.gradient(keras_loss, x).numpy()
    exact = float(np.mean([np.sum(r[r > 0] * np.log(r[r > 0] / s[r > 0])) for r, s in zip(target, q_np, strict=True)]))

    report = {
        "kl": float(loss),
        "kl_float64_direct_sum": exact,
        "kl_in_tf_function": float(loss_graph),
        "keras_clipped_kl": float(keras_loss),
        "max_grad_error_vs_kldiv_grad": float(np.abs(grad_tape - grad_manual).max()),
        "max_grad_error_vs_closed_form": float(np.abs(grad_tape - closed_form).max()),
        "max_grad_error_tf_function": float(np.abs(grad_graph.numpy() - closed_form).max()),
        "max_grad_error_keras_clipped": float(np.abs(grad_keras - closed_form).max()),
    }
    print(f"KL(P ‖ softmax(x)) over {rows} rows of {outcomes} outcomes, a quarter impossible under P:")
    print(f"  kldiv under GradientTape      {report['kl']:.12f}")
    print(f"  float64 direct sum            {report['kl_float64_direct_sum']:.12f}")
    print(f"  kldiv inside tf.function      {report['kl_in_tf_function']:.12f}")
    print(f"  keras.losses.KLDivergence     {report['keras_clipped_kl']:.12f}  (clips P's zeros to 1e-7)")
    print("gradient with respect to the logits, max |difference|:")
    print(f"  tape vs kldiv.grad + softmax backward   {report['max_grad_error_vs_kldiv_grad']:.2e}")
    print(f"  tape vs (softmax(x) - P) / rows         {report['max_grad_error_vs_closed_form']:.2e}")
    print(f"  tf.function (from logits) vs closed form {report['max_grad_error_tf_function']:.2e}")
    print(f"  keras.losses.KLDivergence vs closed form {report['max_grad_error_keras_clipped']:.2e}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
