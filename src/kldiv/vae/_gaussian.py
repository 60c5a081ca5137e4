"""The Gaussian KL term of a VAE, KL(N(μ, diag σ²) ‖ N(μ₀, diag σ₀²)), and its full-covariance variant."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validate
from .._backend import namespace, to_array


def _reduce(xp: Any, value: Any, reduction: str) -> Any:
    if reduction == "none":
        return value
    if reduction == "sum":
        return xp.sum(value)
    if reduction == "mean":
        return xp.mean(value)
    batch = value.shape[0] if value.ndim > 1 else 1
    return xp.sum(value) / batch


def gaussian_kl(
    mean: Any,
    log_var: Any,
    *,
    prior_mean: Any = 0.0,
    prior_log_var: Any = 0.0,
    reduction: str = "sum",
) -> Any:
    r"""KL(N(μ, diag e^{v}) ‖ N(μ₀, diag e^{v₀})), the KL term of a Gaussian VAE, per latent dimension:

        ½ [ (e^{v − v₀} − 1 − (v − v₀)) + (μ − μ₀)² e^{−v₀} ]

    ``e^{d} − 1 − d`` is evaluated as ``expm1(d) − d``, so it stays exact for |d| ≪ 1 and never goes negative or
    NaN for large |log_var| (for ``d → −∞`` it grows like |d|; for very large ``d`` it overflows to +inf, the true
    value's limit). With the default standard-normal prior this is the familiar
    ``−½ (1 + v − μ² − e^{v})`` of Kingma and Welling (2014, Appendix B).

    Args:
        mean: μ, any shape (``(batch, latent)`` in a VAE); NumPy, torch (differentiable) or any array API library.
        log_var: v = log σ², broadcastable with ``mean``.
        prior_mean: μ₀ (scalar or broadcastable array).
        prior_log_var: v₀ = log σ₀².
        reduction: ``"none"`` (per dimension, the broadcast shape), ``"sum"``, ``"mean"`` (over all elements) or
            ``"batchmean"`` (sum divided by the size of the first axis: the per-example KL of a batch).

    Returns:
        The KL in nats, reduced as asked.

    References:
        D. P. Kingma and M. Welling, "Auto-encoding variational Bayes", ICLR 2014, Appendix B.
    """
    reduction = _validate.check_vae_reduction(reduction)
    xp = namespace(mean, log_var, prior_mean, prior_log_var)
    arrays = []
    like = mean if not isinstance(mean, list | tuple | float | int) else None
    for name, value in (("mean", mean), ("log_var", log_var), ("prior_mean", prior_mean), ("prior_log_var", prior_log_var)):
        array = to_array(value, name, xp, like=like)
        _validate.check_finite_array(array, name)
        arrays.append(array)
    mu, v, mu0, v0 = arrays
    def static(x: Any) -> tuple[int, ...]:  # a graph's unknown sizes (None) broadcast with anything
        return tuple(1 if d is None else d for d in x.shape)

    try:
        shape = np.broadcast_shapes(static(mu), static(v), static(mu0), static(v0))
    except ValueError:
        raise ValueError(
            f"mean {tuple(mu.shape)}, log_var {tuple(v.shape)}, prior_mean {tuple(mu0.shape)} and prior_log_var "
            f"{tuple(v0.shape)} cannot be broadcast together"
        ) from None
    del shape
    d = v - v0
    value = 0.5 * ((xp.expm1(d) - d) + (mu - mu0) ** 2 * xp.exp(-v0))
    return _reduce(xp, value, reduction)


def gaussian_kl_full(
    mean: Any,
    scale_tril: Any,
    *,
    prior_mean: Any = 0.0,
    prior_scale_tril: Any = None,
    reduction: str = "sum",
) -> Any:
    r"""KL(N(μ, L Lᵀ) ‖ N(μ₀, L₀ L₀ᵀ)) for full covariances given by lower Cholesky factors:

        ½ [ ‖L₀⁻¹ L‖²_F + ‖L₀⁻¹ (μ − μ₀)‖² − d + 2 Σ log|diag L₀| − 2 Σ log|diag L| ]

    Triangular solves, no inverse or determinant, so it is stable for ill-conditioned covariances.

    Args:
        mean: μ, shape ``(..., d)``.
        scale_tril: L, shape ``(..., d, d)``, lower triangular with non-zero diagonal.
        prior_mean: μ₀ (broadcastable to ``mean``).
        prior_scale_tril: L₀, shape ``(..., d, d)``; None for the identity (standard-normal prior).
        reduction: ``"none"`` (one value per distribution, shape ``(...)``), ``"sum"``, ``"mean"``, ``"batchmean"``.

    Returns:
        The KL in nats, reduced as asked (NumPy or torch like the inputs; differentiable for torch).

    References:
        Standard Gaussian KL, e.g. Rasmussen and Williams, "Gaussian Processes for Machine Learning", 2006, A.5.
    """
    reduction = _validate.check_vae_reduction(reduction)
    is_torch = hasattr(mean, "detach") or hasattr(scale_tril, "detach")
    if is_torch:
        import torch

        mu = torch.as_tensor(mean)
        lower = torch.as_tensor(scale_tril, dtype=mu.dtype, device=mu.device)
        mu0 = torch.as_tensor(prior_mean, dtype=mu.dtype, device=mu.device)
        d = mu.shape[-1]
        lower0 = torch.eye(d, dtype=mu.dtype, device=mu.device) if prior_scale_tril is None else torch.as_tensor(
            prior_scale_tril, dtype=mu.dtype, device=mu.device
        )
    else:
        mu = np.asarray(mean, dtype=np.float64)
        lower = np.asarray(scale_tril, dtype=np.float64)
        mu0 = np.asarray(prior_mean, dtype=np.float64)
        d = mu.shape[-1]
        lower0 = np.eye(d) if prior_scale_tril is None else np.asarray(prior_scale_tril, dtype=np.float64)
    if tuple(lower.shape[-2:]) != (d, d) or tuple(lower0.shape[-2:]) != (d, d):
        raise ValueError(
            f"scale_tril {tuple(lower.shape)} and prior_scale_tril {tuple(lower0.shape)} must end in ({d}, {d}) to "
            f"match mean's last axis of size {d}"
        )
    for name, x in (("mean", mu), ("scale_tril", lower), ("prior_mean", mu0), ("prior_scale_tril", lower0)):
        _validate.check_finite_array(x, name)
    diag = lower.diagonal(0, -2, -1) if is_torch else np.diagonal(lower, 0, -2, -1)
    diag0 = lower0.diagonal(0, -2, -1) if is_torch else np.diagonal(lower0, 0, -2, -1)
    if (diag == 0).any() or (diag0 == 0).any():
        raise ValueError("a Cholesky factor has a zero on its diagonal, so its covariance is singular; add jitter")
    delta = mu - mu0
    if is_torch:
        batch = torch.broadcast_shapes(lower.shape[:-2], lower0.shape[:-2], delta.shape[:-1])
        lower0_b = lower0.expand(batch + (d, d))
        solved = torch.linalg.solve_triangular(lower0_b, lower.expand(batch + (d, d)), upper=False)
        maha = torch.linalg.solve_triangular(lower0_b, delta.expand(batch + (d,)).unsqueeze(-1), upper=False)
        value = 0.5 * (
            solved.pow(2).sum((-2, -1)) + maha.pow(2).sum((-2, -1)) - d
            + 2 * diag0.abs().log().sum(-1) - 2 * diag.abs().log().sum(-1)
        )
        return _reduce(torch, value, reduction)
    batch = np.broadcast_shapes(lower.shape[:-2], lower0.shape[:-2], delta.shape[:-1])
    lower0_b = np.broadcast_to(lower0, batch + (d, d))
    solved = np.linalg.solve(lower0_b, np.broadcast_to(lower, batch + (d, d)))
    maha = np.linalg.solve(lower0_b, np.broadcast_to(delta, batch + (d,))[..., None])
    value = 0.5 * (
        (solved**2).sum((-2, -1)) + (maha**2).sum((-2, -1)) - d
        + 2 * np.log(np.abs(diag0)).sum(-1) - 2 * np.log(np.abs(diag)).sum(-1)
    )
    return _reduce(np, value, reduction) if reduction != "none" else value


