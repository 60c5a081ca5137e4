"""kldiv.distributions: KL divergence between parametric distributions.

``kl(p, q)`` takes two ``torch.distributions`` objects or two SciPy frozen distributions and returns the
closed form of the most specific registered pair (see :func:`register`); without one it returns a Monte Carlo
:class:`~kldiv.estimate.Estimate` when ``samples`` is given. Gaussian mixtures also have closed-form
approximations and bounds (:func:`mixture_variational`, :func:`mixture_product`, :func:`mixture_bounds`).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .. import _validate
from ._mixture import mixture_bounds, mixture_product, mixture_variational
from ._registry import dispatch, register
from ._registry import registered_pairs as _registered_pairs

__all__ = ["kl", "register", "registered_pairs", "mixture_variational", "mixture_product", "mixture_bounds"]


def _library(d: Any) -> str | None:
    if "torch" in sys.modules:
        import torch.distributions as D

        if isinstance(d, D.Distribution):
            return "torch"
    module = type(d).__module__ or ""
    if module.startswith("scipy.stats"):
        return "scipy"
    return None


def registered_pairs(library: str | None = None) -> list[tuple[str, str]]:
    """Registered ``(P, Q)`` class-name pairs; ``library`` is ``"torch"``, ``"scipy"`` or None for all loaded.

    Torch pairs are loaded on first use with a torch distribution (or when ``library="torch"`` is asked for).
    """
    if library == "torch":
        from . import _torch  # noqa: F401

        return _registered_pairs("torch")
    if library == "scipy":
        from . import _scipy  # noqa: F401

        return _registered_pairs("kldiv.distributions._scipy")
    if library is not None:
        raise ValueError(f"library must be 'torch', 'scipy' or None, got {library!r}")
    from . import _scipy  # noqa: F401

    return _registered_pairs()


def _torch_interval(d: Any) -> tuple[float, float, bool] | None:
    """(low, high, discrete) of a univariate torch support, or None when it is not a simple interval."""
    from torch.distributions import constraints as c

    support = d.support
    while isinstance(support, c.independent):
        support = support.base_constraint
    discrete = bool(getattr(support, "is_discrete", False))
    low = getattr(support, "lower_bound", None)
    high = getattr(support, "upper_bound", None)
    if support is c.real:
        return (-math.inf, math.inf, False)
    if support in (c.positive, c.nonnegative):
        return (0.0, math.inf, False)
    if support is c.nonnegative_integer:
        return (0.0, math.inf, True)
    if support is c.boolean:
        return (0.0, 1.0, True)
    if low is None and high is None:
        return None
    try:
        low_f = float(low.min()) if hasattr(low, "min") else (-math.inf if low is None else float(low))
        high_f = float(high.max()) if hasattr(high, "max") else (math.inf if high is None else float(high))
    except (TypeError, RuntimeError):
        return None
    return (low_f, high_f, discrete)


def _support_mismatch(p: Any, q: Any) -> bool:
    """True when P surely gives mass where Q has none (disjoint kinds, or P's interval outside Q's)."""
    try:
        sp, sq = _torch_interval(p), _torch_interval(q)
    except (NotImplementedError, AttributeError):
        return False
    if sp is None or sq is None or len(p.event_shape) != len(q.event_shape):
        return False
    if sp[2] != sq[2]:
        return True  # a discrete and a continuous distribution are mutually singular
    return sp[0] < sq[0] or sp[1] > sq[1]


def kl(p: Any, q: Any, *, samples: int | None = None, seed: int | None = None) -> Any:
    r"""KL(P ‖ Q) = E_P[log p(X) − log q(X)] between two distributions of the same library.

    Dispatch: the most specific registered pair by class hierarchy (``@register(P, Q)``) gives a closed form.
    For torch it covers every pair ``torch.distributions.kl`` registers (same values, same gradients) plus
    VonMises–VonMises, Weibull–Weibull, LogNormal–LogNormal, Kumaraswamy–Beta (series), Independent(Normal) ↔
    MultivariateNormal, Independent with differing reinterpreted dims, Multinomial, NegativeBinomial, Binomial
    with unequal counts and cross-family counting pairs (Poisson, Geometric, NegativeBinomial, Binomial,
    Bernoulli; exact or converged series). SciPy frozen distributions (norm, lognorm, gamma, expon, chi2, beta,
    uniform, laplace, vonmises, weibull_min, cauchy, gumbel_r, halfnorm, multivariate_normal, dirichlet,
    multinomial, poisson, bernoulli, binom, geom, nbinom and any discrete pair by series) have their own table.
    When P's support reaches outside Q's (or one is discrete and the other continuous) the result is +inf.

    Without a closed form (mixtures, StudentT, …) and with ``samples`` given, the result is a Monte Carlo
    :class:`~kldiv.estimate.Estimate` from ``samples`` draws of P (reparameterised when P has ``rsample``, so
    torch values stay differentiable): ``value`` is the mean of ``log p − log q``, ``stderr`` its standard error.

    Args:
        p: the first distribution, P (``torch.distributions.Distribution`` or SciPy frozen distribution).
        q: the second distribution, Q, from the same library.
        samples: number of Monte Carlo draws used only when no closed form exists (None: raise instead).
        seed: seed of those draws.

    Returns:
        The closed form in nats (a tensor of the broadcast batch shape for torch, a float or NumPy array for
        SciPy), or an ``Estimate`` when Monte Carlo was used.

    Raises:
        TypeError: inputs are not distributions, or come from different libraries.
        NotImplementedError: no closed form and ``samples`` is None (the message lists the registered pairs).

    References:
        Closed forms: see each registered function's docstring; PyTorch ``torch/distributions/kl.py``.
    """
    lib_p, lib_q = _library(p), _library(q)
    for name, d, lib in (("p", p, lib_p), ("q", q, lib_q)):
        if lib is None:
            raise TypeError(
                f"{name} is a {type(d).__name__}, not a distribution; pass a torch.distributions object or a SciPy "
                "frozen distribution such as scipy.stats.norm(0, 1)"
            )
    if lib_p != lib_q:
        raise TypeError(
            f"p is a {lib_p} distribution but q is a {lib_q} one; pass two distributions from the same library"
        )
    if samples is not None:
        samples = _validate.check_integer_at_least("samples", samples, 2, "an integer >= 2 (the number of Monte Carlo draws)")
    _validate.check_seed("seed", seed)
    if lib_p == "torch":
        from . import _torch  # noqa: F401  (registers the torch pairs)

        left, right = p, q
    else:
        from ._scipy import from_scipy

        left, right = from_scipy(p), from_scipy(q)
    fn = dispatch(type(left), type(right))
    reason = ""
    if fn is not None:
        try:
            value = fn(left, right)
        except NotImplementedError as error:
            reason = f" ({error})" if str(error) else ""
        else:
            if lib_p == "scipy":
                import numpy as np

                value = np.asarray(value, dtype=np.float64)
                if value.ndim == 0 or (value.size == 1 and not np.ndim(p.mean()) and not np.ndim(q.mean())):
                    return float(value.reshape(()))
                return value
            return value
    if lib_p == "torch" and _support_mismatch(p, q):
        import torch

        shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
        return torch.full(shape, math.inf, dtype=torch.get_default_dtype())
    if samples is None:
        prefix = "torch" if lib_p == "torch" else "kldiv.distributions._scipy"
        mine = [f"{a}-{b}" for a, b in _registered_pairs(prefix) if a in {c.__name__ for c in type(left).__mro__}]
        listing = ", ".join(mine) if mine else "none"
        raise NotImplementedError(
            f"no closed form for KL({type(left).__name__} || {type(right).__name__}){reason}; registered pairs with "
            f"{type(left).__name__} first: {listing}. Pass samples=10000 for a Monte Carlo Estimate, or register one "
            "with @kldiv.distributions.register (kldiv.distributions.registered_pairs() lists all)"
        )
    from ._montecarlo import scipy_monte_carlo, torch_monte_carlo

    if lib_p == "torch":
        return torch_monte_carlo(p, q, samples, seed)
    return scipy_monte_carlo(left, right, samples, seed)
