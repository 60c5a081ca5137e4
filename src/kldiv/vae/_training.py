"""The training side of a VAE's KL term: weighting, capacity, free bits, annealing schedules, diagnostics.

The KL term itself comes from :func:`kldiv.vae.gaussian_kl`; everything here shapes how that term enters the
loss (β, a capacity target, a free-bits floor, a weight that changes with the step) or measures what the
trained encoder does with its latent space (KL per dimension, active units, mutual information).

The loss helpers work on NumPy arrays, PyTorch tensors (differentiably) and, for :func:`free_bits`, JAX and
TensorFlow tensors too (what :class:`kldiv.keras.GaussianKL` passes it); the diagnostics accept
either and return NumPy / Python numbers, computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validate
from .._backend import namespace, to_array

__all__ = [
    "beta_kl",
    "capacity_kl",
    "free_bits",
    "ConstantSchedule",
    "LinearWarmup",
    "CyclicalSchedule",
    "kl_per_dimension",
    "active_units",
    "latent_variances",
    "mutual_information",
]


# --- helpers -------------------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


# --- weighting --------------------------------------------------------------------------------------


def beta_kl(kl: Any, beta: float = 1.0) -> Any:
    r"""The β-VAE KL term, :math:`\beta \cdot \mathrm{KL}(q(z|x) \| p(z))`.

    β = 1 is the ELBO; β > 1 trades reconstruction for a more factorised, more compressed code; β < 1 the
    reverse. The loss to minimise is ``reconstruction + beta_kl(kl, beta)``.

    Args:
      kl: the KL term (array or tensor, any shape), e.g. from :func:`kldiv.vae.gaussian_kl`.
      beta: the weight, ``>= 0``.

    Returns:
      ``beta * kl``, same type and shape as ``kl``.

    References:
      Higgins et al. (2017), β-VAE: Learning basic visual concepts with a constrained variational framework, Eq. 4.
    """
    return _validate.check_nonnegative("beta", beta) * kl


def capacity_kl(kl: Any, capacity: float, *, beta: float = 1.0) -> Any:
    r"""Capacity-controlled KL term, :math:`\beta \cdot |\mathrm{KL}(q(z|x) \| p(z)) - C|`.

    The encoder is pushed to carry exactly ``C`` nats, not as few as possible; increasing ``C`` from 0 during
    training (a :class:`LinearWarmup` from 0 to ``C_max``, called with the step) lets the code grow
    gradually. ``kl`` should be the per-sample KL summed over latent dimensions (or its batch mean).

    Args:
      kl: the KL term (array or tensor).
      capacity: the target ``C >= 0`` in nats, usually ``schedule(step)``.
      beta: the weight (γ in the paper), ``>= 0``; the paper uses large values such as 1000.

    Returns:
      ``beta * |kl - capacity|``, same type and shape as ``kl``.

    References:
      Burgess et al. (2018), Understanding disentangling in β-VAE, Eq. 8.
    """
    capacity = _validate.check_nonnegative("capacity", capacity)
    beta = _validate.check_nonnegative("beta", beta)
    return beta * abs(kl - capacity)


def free_bits(kl: Any, threshold: float, *, mode: str = "batch") -> Any:
    r"""The KL term with a floor of ``threshold`` nats per latent group ("free bits", KL clamping).

    ``kl`` holds the KL per sample and per group, shape ``(batch, groups)`` (a group is one latent
    dimension, or a sum of dimensions if you sum them first). Two semantics are in use:

    * ``mode="batch"`` — the paper's: the KL of each group is averaged over the batch, then clamped,
      :math:`\sum_j \max(\lambda, \frac{1}{B}\sum_i \mathrm{KL}_{ij})`. A group whose *average* KL is above
      λ is penalised in full, per sample; one below λ gets no gradient at all.
    * ``mode="sample"`` — the per-sample clamp many implementations use,
      :math:`\frac{1}{B}\sum_i \sum_j \max(\lambda, \mathrm{KL}_{ij})`: each sample's KL is only penalised
      where it exceeds λ. Always ``>=`` the batch form (Jensen: mean of max ≥ max of mean).

    Both return the batch-mean KL objective (a scalar) to add to the batch-mean reconstruction loss; with
    ``threshold=0`` and non-negative ``kl`` both equal the plain batch mean of the summed KL. Below the floor the
    gradient is zero, so the encoder is free to use up to λ nats per group without cost, which counters
    posterior collapse.

    Args:
      kl: KL per sample and group, shape ``(batch, groups)`` (array or tensor), non-negative.
      threshold: λ in nats, ``>= 0``.
      mode: ``"batch"`` (Kingma et al.) or ``"sample"``.

    Returns:
      A scalar (0-d array or tensor).

    References:
      Kingma et al. (2016), Improved variational inference with inverse autoregressive flow, Appendix C.8
      (Eq. 15).
    """
    threshold = _validate.check_nonnegative("threshold", threshold)
    _validate.check_free_bits_input(kl, mode)
    if _is_torch(kl):
        import torch

        if mode == "batch":
            return torch.clamp(kl.mean(dim=0), min=threshold).sum()
        return torch.clamp(kl, min=threshold).sum(dim=1).mean()
    xp = namespace(kl)  # NumPy, JAX, TensorFlow (inside Keras layers), any array API library
    kl = to_array(kl, "kl", xp)
    floor = xp.asarray(threshold, dtype=kl.dtype)
    if mode == "batch":
        return xp.sum(xp.maximum(xp.mean(kl, axis=0), floor))
    return xp.mean(xp.sum(xp.maximum(kl, floor), axis=1))


# --- schedules ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConstantSchedule:
    """The same weight at every step: ``schedule(t) = value``."""

    value: float = 1.0

    def __post_init__(self) -> None:
        _validate.check_finite_number("value", self.value)

    def __call__(self, step: int) -> float:
        _validate.check_step(step)
        return float(self.value)


@dataclass(frozen=True)
class LinearWarmup:
    r"""Linear KL annealing: ``start`` for ``delay`` steps, then linearly to ``stop`` over ``warmup_steps``.

    .. math:: w(t) = s_0 + (s_1 - s_0)\,\min\!\big(1, \max(0, t - d) / T_w\big)

    With ``warmup_steps=0`` the weight jumps to ``stop`` at ``t = delay``. Used for β (0 → 1, Bowman et al. 2016)
    and for the capacity ``C(t)`` of :func:`capacity_kl` (0 → C_max, Burgess et al. 2018).
    """

    warmup_steps: int
    start: float = 0.0
    stop: float = 1.0
    delay: int = 0

    def __post_init__(self) -> None:
        for name in ("warmup_steps", "delay"):
            _validate.check_integer_at_least(name, getattr(self, name), 0)
        _validate.check_finite_number("start", self.start)
        _validate.check_finite_number("stop", self.stop)

    def __call__(self, step: int) -> float:
        t = _validate.check_step(step) - self.delay
        if t <= 0:
            return float(self.start) if self.warmup_steps > 0 or t < 0 else float(self.stop)
        fraction = 1.0 if self.warmup_steps == 0 else min(1.0, t / self.warmup_steps)
        return float(self.start + (self.stop - self.start) * fraction)


def _ramp(kind: str, u: float) -> float:
    if kind == "linear":
        return u
    if kind == "cosine":
        return 0.5 - 0.5 * math.cos(math.pi * u)
    return 1.0 / (1.0 + math.exp(-(12.0 * u - 6.0)))


@dataclass(frozen=True)
class CyclicalSchedule:
    r"""Cyclical KL annealing (Fu et al. 2019): ``n_cycles`` repetitions of ramp-up-then-hold.

    The ``total_steps`` are split into ``n_cycles`` periods of length :math:`P = T / M`. Within a period, at
    :math:`\tau = (t \bmod P) / P`, the weight ramps from ``start`` to ``stop`` over the first fraction
    ``ratio`` of the period and then stays at ``stop``:

    .. math:: w(t) = s_0 + (s_1 - s_0)\, f(\tau / R) \text{ for } \tau \le R, \qquad w(t) = s_1 \text{ otherwise}

    with the ramp :math:`f(u) = u` (``"linear"``), :math:`\tfrac12 - \tfrac12\cos(\pi u)` (``"cosine"``) or
    :math:`1 / (1 + e^{-(12u - 6)})` (``"sigmoid"``, as in the paper's code; it runs from 0.0025 to 0.9975, not
    exactly 0 to 1, then jumps to 1 for the hold phase). Steps at or past ``total_steps`` give ``stop``.

    References:
      Fu et al. (2019), Cyclical annealing schedule: a simple approach to mitigating KL vanishing, Eq. 6.
    """

    total_steps: int
    n_cycles: int = 4
    ratio: float = 0.5
    ramp: str = "linear"
    start: float = 0.0
    stop: float = 1.0

    def __post_init__(self) -> None:
        for name in ("total_steps", "n_cycles"):
            _validate.check_integer_at_least(name, getattr(self, name), 1)
        _validate.check_cycle_ratio(self.ratio)
        _validate.check_ramp(self.ramp)
        _validate.check_finite_number("start", self.start)
        _validate.check_finite_number("stop", self.stop)

    def __call__(self, step: int) -> float:
        t = _validate.check_step(step)
        if t >= self.total_steps:
            return float(self.stop)
        period = self.total_steps / self.n_cycles
        tau = (t % period) / period
        u = tau / float(self.ratio)
        if u > 1.0:  # the hold phase is exactly ``stop``, also for the sigmoid ramp (as in the paper's code)
            return float(self.stop)
        return float(self.start + (self.stop - self.start) * _ramp(self.ramp, u))


# --- diagnostics ----------------------------------------------------------------------------------------


def kl_per_dimension(mean: Any, log_var: Any) -> np.ndarray:
    r"""Batch-averaged KL(q(z_j|x) ‖ N(0, 1)) for each latent dimension ``j``, in nats.

    .. math:: \mathrm{KL}_j = \frac{1}{B}\sum_i \tfrac12\big(\mu_{ij}^2 + \sigma_{ij}^2 - \log\sigma_{ij}^2 - 1\big)

    computed by :func:`kldiv.vae.gaussian_kl`. Dimensions with KL near 0 carry no information about ``x``
    (collapsed); the values sum to the batch-mean KL term.

    Args:
      mean, log_var: the encoder's outputs, shape ``(batch, latent)``.

    Returns:
      A float64 array of shape ``(latent,)``.
    """
    from ._gaussian import gaussian_kl

    mean = _validate.check_latent_batch(mean, "mean")
    log_var = _validate.check_latent_batch(log_var, "log_var")
    _validate.check_same_latent_shape(mean, log_var)
    per_element = np.asarray(gaussian_kl(mean, log_var, reduction="none"), dtype=np.float64)
    return per_element.mean(axis=0)


def latent_variances(mean: Any) -> np.ndarray:
    r"""The activity statistic :math:`A_u = \mathrm{Cov}_x(\mathbb{E}_{q(u|x)}[u])` of each latent dimension.

    The variance over the data (population variance, divisor ``B``) of the posterior mean. Returns shape
    ``(latent,)``.

    References:
      Burda et al. (2016), Importance weighted autoencoders, Section 5.2.
    """
    return _validate.check_latent_batch(mean, "mean").var(axis=0)


def active_units(mean: Any, *, threshold: float = 0.01) -> int:
    r"""Number of active latent units: dimensions with :math:`\mathrm{Cov}_x(\mathbb{E}_{q(u|x)}[u]) > 0.01`.

    A unit whose posterior mean does not move with the input is inactive (the decoder ignores it); a VAE
    with posterior collapse has few or none. ``mean`` should cover a good part of the data set (the
    statistic is a variance over ``x``).

    Args:
      mean: posterior means, shape ``(batch, latent)``.
      threshold: the activity threshold, 0.01 in the paper.

    Returns:
      The count, an ``int``.

    References:
      Burda et al. (2016), Importance weighted autoencoders, Section 5.2.
    """
    threshold = _validate.check_nonnegative("threshold", threshold)
    return int(np.sum(latent_variances(mean) > threshold))


def mutual_information(mean: Any, log_var: Any, *, seed: int | None = 0, samples: int = 1) -> float:
    r"""Estimate of the mutual information :math:`I_q(x; z)` between data and code under the aggregate posterior.

    .. math::

        I_q = \mathbb{E}_{x}\big[\mathbb{E}_{q(z|x)}[\log q(z|x)]\big] - \mathbb{E}_{q(z)}[\log q(z)],
        \qquad \log q(z) \approx \log \frac{1}{B}\sum_{i=1}^{B} q(z \mid x_i)

    The first term is the negative entropy of the diagonal Gaussians in closed form,
    :math:`-\frac{d}{2}\log 2\pi - \frac12\sum_j(1 + \log\sigma_j^2)`; the second uses ``samples`` draws
    :math:`z \sim q(z|x_i)` per data point and the batch as a sample of the aggregate posterior. The estimate is
    at most :math:`\log B`, so use a large batch (the whole held-out set). Equivalently
    :math:`I_q = \mathbb{E}_x[\mathrm{KL}(q(z|x)\|p(z))] - \mathrm{KL}(q(z)\|p(z))`.

    Args:
      mean, log_var: the encoder's outputs on a batch, shape ``(batch, latent)``.
      seed: seed of the draws (the estimate is random); ``None`` for fresh randomness.
      samples: draws per data point.

    Returns:
      The estimate in nats, a ``float``.

    References:
      He et al. (2019), Lagging inference networks and posterior collapse in variational autoencoders, Eq. 4
      and their ``calc_mi``; Hoffman & Johnson (2016), ELBO surgery.
    """
    mean = _validate.check_latent_batch(mean, "mean")
    log_var = _validate.check_latent_batch(log_var, "log_var")
    _validate.check_same_latent_shape(mean, log_var)
    samples = _validate.check_integer_at_least("samples", samples, 1)
    batch, dim = mean.shape
    rng = np.random.default_rng(_validate.check_seed("seed", seed))
    std = np.exp(0.5 * log_var)
    neg_entropy = float(np.mean(-0.5 * dim * math.log(2 * math.pi) - 0.5 * np.sum(1.0 + log_var, axis=1)))
    inv_var = np.exp(-log_var)  # (B, d)
    log_norm = -0.5 * (dim * math.log(2 * math.pi) + np.sum(log_var, axis=1))  # (B,)
    log_qz = []
    for _ in range(samples):
        z = mean + std * rng.standard_normal(mean.shape)  # one z per x_i
        # log q(z_k | x_i) for every pair (k, i), expanded so no (B, B, d) tensor is built.
        quad = (z**2) @ inv_var.T - 2.0 * z @ (mean * inv_var).T + np.sum(mean**2 * inv_var, axis=1)[None, :]
        log_density = -0.5 * quad + log_norm[None, :]
        top = log_density.max(axis=1, keepdims=True)
        log_qz.append(top[:, 0] + np.log(np.mean(np.exp(log_density - top), axis=1)))
    return neg_entropy - float(np.mean(np.concatenate(log_qz)))
