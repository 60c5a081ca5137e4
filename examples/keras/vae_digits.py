"""A variational autoencoder on scikit-learn's 8x8 digits, with kldiv's exact Gaussian KL term (Keras 3).

Encoder -> (mean, log variance) -> kldiv.keras.GaussianKL (β · KL(q(z|x) ‖ N(0, I)), free bits) -> the
reparameterisation z = mean + exp(log_var / 2) · ε -> decoder. β is annealed from 0 to 1 by
kldiv.keras.KLAnnealing; the reconstruction term is the Bernoulli cross-entropy of the pixels. Prints the ELBO's
two terms, the KL per latent dimension and the active units, and saves PNGs of reconstructions and of samples
from the prior.

    python examples/keras/vae_digits.py --out vae-digits     # about a minute on 2 cores (KERAS_BACKEND: any)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the tutorials' backend; JAX and PyTorch work as well


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--latent", type=int, default=4)
    parser.add_argument("--free-bits", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=Path("vae-digits"))
    parser.add_argument("--tiny", action="store_true", help="a few steps, for the tests")
    args = parser.parse_args(argv)

    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    import kldiv
    from kldiv.keras import GaussianKL, KLAnnealing

    keras.utils.set_random_seed(0)
    x = (load_digits().data / 16.0).astype("float32")  # 1797 images, 64 pixels in [0, 1]
    if args.tiny:
        x, args.epochs = x[:128], 2
    train, test = x[: int(0.85 * len(x))], x[int(0.85 * len(x)):]
    batch = 64
    steps = args.epochs * -(-len(train) // batch)

    class Sampling(keras.layers.Layer):
        """z = mean + exp(log_var / 2) ε, ε ~ N(0, I): the reparameterisation trick (Kingma and Welling 2014)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed = keras.random.SeedGenerator(0)

        def call(self, inputs):
            mean, log_var = inputs
            return mean + keras.ops.exp(0.5 * log_var) * keras.random.normal(keras.ops.shape(mean), seed=self.seed)

    inputs = keras.Input((64,))
    h = keras.layers.Dense(128, activation="relu")(inputs)
    mean, log_var = keras.layers.Dense(args.latent)(h), keras.layers.Dense(args.latent)(h)
    mean, log_var = GaussianKL(beta=0.0, free_bits=args.free_bits, name="kl")([mean, log_var])
    encoder = keras.Model(inputs, [mean, log_var], name="encoder")
    decoder = keras.Sequential([keras.Input((args.latent,)), keras.layers.Dense(128, activation="relu"),
                                keras.layers.Dense(64)], name="decoder")  # Bernoulli logits of the pixels
    vae = keras.Model(inputs, decoder(Sampling()([mean, log_var])))

    def reconstruction(y_true, logits):  # −log p(x|z) summed over the pixels, per image
        return keras.ops.sum(keras.ops.binary_crossentropy(y_true, logits, from_logits=True), axis=-1)

    vae.compile(optimizer=keras.optimizers.Adam(2e-3), loss=reconstruction)
    annealing = KLAnnealing(kldiv.vae.LinearWarmup(steps // 3))
    history = vae.fit(train, train, epochs=args.epochs, batch_size=batch, verbose=0, callbacks=[annealing]).history

    m, v = (keras.ops.convert_to_numpy(t) for t in encoder.predict(test, verbose=0))
    kl_dims = kldiv.vae.kl_per_dimension(m, v)  # nats per latent dimension, averaged over the test images
    recon_logits = decoder.predict(m, verbose=0)
    recon = float(np.mean(np.sum(np.logaddexp(0, recon_logits) - test * recon_logits, -1)))
    report = {
        "train_loss_first_last": (history["loss"][0], history["loss"][-1]),
        "beta_last": annealing.beta,
        "test_reconstruction_nats": recon,
        "test_kl_nats": float(kl_dims.sum()),
        "test_negative_elbo_nats": recon + float(kl_dims.sum()),
        "kl_per_dimension": [round(float(k), 3) for k in kl_dims],
        "active_units": kldiv.vae.active_units(m),
    }

    args.out.mkdir(parents=True, exist_ok=True)
    shown = test[:10]
    pictures = 1 / (1 + np.exp(-decoder.predict(encoder.predict(shown, verbose=0)[0], verbose=0)))
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
    for i in range(10):
        axes[0, i].imshow(shown[i].reshape(8, 8), cmap="gray_r")
        axes[1, i].imshow(pictures[i].reshape(8, 8), cmap="gray_r")
    for a in axes.ravel():
        a.axis("off")
    fig.suptitle("test digits (top) and their reconstructions from the posterior mean (bottom)")
    fig.savefig(args.out / "reconstructions.png", dpi=80)
    samples = 1 / (1 + np.exp(-decoder.predict(np.random.default_rng(0).normal(size=(20, args.latent)), verbose=0)))
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
    for a, s in zip(axes.ravel(), samples, strict=True):
        a.imshow(s.reshape(8, 8), cmap="gray_r")
        a.axis("off")
    fig.suptitle("samples: z ~ N(0, I) through the decoder")
    fig.savefig(args.out / "samples.png", dpi=80)
    plt.close("all")
    report["pngs"] = [str(args.out / "reconstructions.png"), str(args.out / "samples.png")]

    print(f"VAE on {len(train)} digits, latent {args.latent}, {args.epochs} epochs, β annealed 0 -> 1 "
          f"(now {report['beta_last']:.2f}), free bits {args.free_bits} nats/dim, backend {keras.backend.backend()}")
    print(f"  training loss (reconstruction + β KL)  {report['train_loss_first_last'][0]:.2f} -> "
          f"{report['train_loss_first_last'][1]:.2f} nats/image")
    print(f"  test: reconstruction at the posterior mean {recon:.2f} + KL {report['test_kl_nats']:.2f} ≈ −ELBO "
          f"{report['test_negative_elbo_nats']:.2f} nats/image")
    print(f"  KL per latent dimension (nats) {report['kl_per_dimension']}; active units {report['active_units']}")
    print(f"  saved {report['pngs'][0]} and {report['pngs'][1]}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
