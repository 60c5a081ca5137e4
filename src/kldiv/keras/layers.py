"""The VAE regulariser as a Keras layer: β · KL(q(z|x) ‖ N(0, I)) with free bits, β annealed by a callback."""

from __future__ import annotations

from typing import Any

from .. import _validate
from ..vae import free_bits, gaussian_kl
from ._common import keras, register

__all__ = ["GaussianKL"]


@register("kldiv")
class GaussianKL(keras.layers.Layer):
    r"""Adds the KL term of a Gaussian VAE to the model's losses and passes ``[mean, log_var]`` through unchanged.

    For an encoder q(z|x) = N(μ, diag e^v) and the prior N(0, I), the layer adds

        β · Σⱼ max(λ, (1/B) Σᵢ KLᵢⱼ),   KLᵢⱼ = ½ (e^{vᵢⱼ} − 1 − vᵢⱼ + μᵢⱼ²)

    (``free_bits_mode="batch"``; ``"sample"`` clamps each sample's KLᵢⱼ before the batch mean), with λ =
    ``free_bits`` nats per latent dimension: the batch-mean KL of a sample, summed over the latent dimensions,
    when λ = 0. The terms are :func:`kldiv.vae.gaussian_kl` and :func:`kldiv.vae.free_bits`, the definitions every
    kldiv VAE uses. β is a non-trainable variable (``layer.beta``), so :class:`kldiv.keras.KLAnnealing` can change
    it during ``model.fit`` without retracing.

    Usage: ``mean, log_var = GaussianKL(beta=1.0)([mean, log_var])``; the reconstruction loss goes to
    ``model.compile(loss=...)``, and Keras adds this layer's loss to it.

    Args:
      beta: the initial weight β >= 0 (1 is the ELBO; Higgins et al. 2017).
      free_bits: λ >= 0 in nats per latent dimension (Kingma et al. 2016, Appendix C.8); 0 turns it off.
      free_bits_mode: ``"batch"`` (the paper's) or ``"sample"``.

    References: Kingma and Welling (2014), Appendix B; Kingma et al. (2016), eq. 15.
    """

    def __init__(self, beta: float = 1.0, free_bits: float = 0.0, free_bits_mode: str = "batch", **kwargs: Any):
        super().__init__(**kwargs)
        initial = _validate.check_nonnegative("beta", beta)
        self.free_bits = _validate.check_nonnegative("free_bits", free_bits, " (0 turns free bits off)")
        self.free_bits_mode = _validate.check_choice("free_bits_mode", free_bits_mode, ("batch", "sample"))
        self.beta = self.add_weight(name="beta", shape=(), initializer=keras.initializers.Constant(initial),
                                    trainable=False)
        self._initial_beta = initial

    def call(self, inputs: Any) -> Any:
        mean, log_var = _validate.check_mean_log_var(inputs)
        per_dimension = gaussian_kl(mean, log_var, reduction="none")  # (batch, latent), nats
        term = free_bits(per_dimension, self.free_bits, mode=self.free_bits_mode)
        self.add_loss(keras.ops.cast(self.beta, term.dtype) * term)
        return [mean, log_var]

    def compute_output_spec(self, inputs: Any) -> Any:
        mean, log_var = inputs
        return [keras.KerasTensor(mean.shape, mean.dtype), keras.KerasTensor(log_var.shape, log_var.dtype)]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self._initial_beta, "free_bits": self.free_bits,
                "free_bits_mode": self.free_bits_mode}
