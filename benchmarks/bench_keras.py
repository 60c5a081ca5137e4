"""Keras and TensorFlow: the cost of kldiv's exact KL on TensorFlow tensors, beside Keras's own (clipped) KL.

    python benchmarks/bench_keras.py                       # (256, 1000) float32, as a Keras classifier's batch
    python benchmarks/bench_keras.py --rows 64 --outcomes 32000

One process, the same arrays, best of --repeat runs of --number calls each:
  - value and gradient under tf.GradientTape inside tf.function (what model.fit runs): kldiv.keras.losses.KLDivergence
    (TensorFlow tensors through tf.numpy_function into kldiv's NumPy engine) beside keras.losses.KLDivergence;
  - the floor: kldiv's NumPy engine alone on the same arrays (value, then the vjp), which the TensorFlow path adds
    its copies and its graph call to.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kldiv  # noqa: E402
from kldiv.keras import losses  # noqa: E402


def best(f, repeat, number):
    f()  # trace and warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            f()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--outcomes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(args.outcomes), args.rows).astype(np.float32)
    q = rng.dirichlet(np.ones(args.outcomes), args.rows).astype(np.float32)
    tp, tq = tf.constant(p), tf.constant(q)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} cores, "
          f"({args.rows}, {args.outcomes}) float32")

    def step(loss):
        @tf.function
        def run(a, b):
            with tf.GradientTape() as tape:
                tape.watch(b)
                value = loss(a, b)
            return value, tape.gradient(value, b)

        return lambda: [t.numpy() for t in run(tp, tq)]

    ours = best(step(losses.KLDivergence()), args.repeat, args.number)
    keras_kl = best(step(keras.losses.KLDivergence()), args.repeat, args.number)

    def floor():
        kldiv.kl(p, q, validate=False)
        kldiv.grad.kl(p, q, validate=False)

    engine = best(floor, args.repeat, args.number)
    rows = [("kldiv.keras.losses.KLDivergence, value + gradient in tf.function", ours),
            ("anchor: keras.losses.KLDivergence (clipped), same", keras_kl),
            ("floor: kldiv's NumPy engine, value + vjp, same arrays", engine)]
    for name, t in rows:
        print(f"{name:70s} {t * 1e3:8.3f} ms  ({t / keras_kl:.2f} x Keras)")


if __name__ == "__main__":
    main()
