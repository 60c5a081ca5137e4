"""A dense autoencoder on scikit-learn's digits, compiled with binary cross-entropy as in the Keras tutorials,
with and without a KL sparsity penalty on its code (Keras 3).

The sparse autoencoder (Ng, CS294A lecture notes, 2011, section 2.3) adds Σⱼ KL(ρ ‖ ρ̂ⱼ) to the loss: the KL
between Bernoulli(ρ), the target activation, and Bernoulli(ρ̂ⱼ), the mean activation of code unit j over the
batch. The penalty here is kldiv.kl on the stacked Bernoulli pairs [ρ, 1 − ρ] and [ρ̂ⱼ, 1 − ρ̂ⱼ], an activity
regulariser that works on every Keras backend. Prints the reconstruction error of both models, the sparse code's
mean activation against ρ, and the penalty against its closed form.

    python examples/keras/dense_autoencoder.py      # about a minute on 2 cores (KERAS_BACKEND: any)
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--code", type=int, default=32)
    parser.add_argument("--sparsity", type=float, default=0.05, help="ρ, the target mean activation")
    parser.add_argument("--weight", type=float, default=0.3, help="the penalty's weight")
    parser.add_argument("--tiny", action="store_true", help="a few steps, for the tests")
    args = parser.parse_args(argv)

    import keras
    from sklearn.datasets import load_digits

    import kldiv

    keras.utils.set_random_seed(0)
    x = (load_digits().data / 16.0).astype("float32")
    if args.tiny:
        x, args.epochs = x[:128], 2
    train, test = x[: int(0.85 * len(x))], x[int(0.85 * len(x)):]
    rho = args.sparsity

    class KLSparsity(keras.regularizers.Regularizer):
        """weight · Σⱼ KL(Bernoulli(ρ) ‖ Bernoulli(ρ̂ⱼ)), ρ̂ⱼ the batch mean of sigmoid activation j."""

        def __call__(self, activations):
            mean = keras.ops.mean(activations, axis=0)
            q = keras.ops.stack([mean, 1.0 - mean], axis=-1)  # (code, 2): Bernoulli(ρ̂ⱼ) per unit
            p = keras.ops.stack([keras.ops.full_like(mean, rho), keras.ops.full_like(mean, 1.0 - rho)], axis=-1)
            return args.weight * keras.ops.sum(kldiv.kl(p, q, validate=False))  # ρ̂ in (0, 1): sigmoid outputs

    def autoencoder(sparse: bool):
        inputs = keras.Input((64,))
        h = keras.layers.Dense(128, activation="relu")(inputs)
        code = keras.layers.Dense(args.code, activation="sigmoid", name="code",
                                  activity_regularizer=KLSparsity() if sparse else None)(h)
        h = keras.layers.Dense(128, activation="relu")(code)
        model = keras.Model(inputs, keras.layers.Dense(64, activation="sigmoid")(h))
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
        model.fit(train, train, epochs=args.epochs, batch_size=64, verbose=0)
        return model, keras.Model(inputs, code)

    report = {}
    for sparse in (False, True):
        model, encoder = autoencoder(sparse)
        key = "sparse" if sparse else "plain"
        codes = encoder.predict(test, verbose=0).astype(np.float64)
        report[f"{key}_test_bce"] = float(model.evaluate(test, test, verbose=0))
        report[f"{key}_mean_activation"] = float(codes.mean())
        mean = codes.mean(0)
        closed = np.sum(rho * np.log(rho / mean) + (1 - rho) * np.log((1 - rho) / (1 - mean)))
        report[f"{key}_penalty_kldiv"] = float(np.sum(kldiv.kl(np.stack([np.full_like(mean, rho), 1 - np.full_like(
            mean, rho)], -1), np.stack([mean, 1 - mean], -1))))
        report[f"{key}_penalty_closed_form"] = float(closed)

    print(f"dense autoencoder 64 -> 128 -> {args.code} -> 128 -> 64 on {len(train)} digits, {args.epochs} epochs, "
          f"binary cross-entropy, backend {keras.backend.backend()}")
    for key in ("plain", "sparse"):
        print(f"  {key:6s}: test BCE {report[f'{key}_test_bce']:.4f}/pixel, mean code activation "
              f"{report[f'{key}_mean_activation']:.3f} (ρ = {rho}), Σⱼ KL(ρ ‖ ρ̂ⱼ) = {report[f'{key}_penalty_kldiv']:.4f} "
              f"nats (closed form {report[f'{key}_penalty_closed_form']:.4f})")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
