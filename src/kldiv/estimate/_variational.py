"""Variational lower bounds on KL(P ‖ Q) and on the Jensen–Shannon divergence, from samples, with a small PyTorch
critic: Donsker–Varadhan, NWJ, and the bound a GAN discriminator optimises."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _validate
from ._estimate import Estimate, normal_interval

BOUNDS = ("dv", "nwj", "js")
EVALUATIONS = 50  # validation checks per training run, for early stopping
PATIENCE = 10  # checks without a better validation score before training stops


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed where the tests run
        raise ImportError(
            "kldiv.estimate.variational trains a PyTorch critic; install the torch extra: "
            'pip install torch==2.13.0 && pip install "kldiv[torch]"'
        ) from None
    return torch


def critic(dimensions: int, hidden: int, layers: int) -> Any:
    """The critic ``T: R^d → R``: an MLP with ``layers`` hidden layers of ``hidden`` units and ELU activations
    (float32; the held-out evaluation is finished in float64)."""
    torch = _torch()
    blocks: list[Any] = []
    width = dimensions
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, hidden), torch.nn.ELU()]
        width = hidden
    blocks.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*blocks)


def variational_bound(t_p: Any, t_q: Any, bound: str = "js") -> Any:
    """The variational bound's value for a given critic: a 0-d tensor (differentiable) from the critic's outputs
    ``t_p`` at samples of P and ``t_q`` at samples of Q (1-D torch tensors), in nats.

    * ``"dv"``:  ``E_P[T] − log E_Q[e^T]`` (Donsker–Varadhan), with ``log E_Q[e^T]`` as a log-sum-exp;
    * ``"nwj"``: ``E_P[T] − E_Q[e^(T − 1)]`` (Nguyen–Wainwright–Jordan, the f-divergence dual of KL);
    * ``"js"``:  ``½ (E_P[log σ(T)] + E_Q[log(1 − σ(T))]) + log 2``, σ the logistic function: the GAN
      discriminator ``D = σ(T)``'s objective, ``max_D E_P[log D] + E_Q[log(1 − D)] = 2 JS(P, Q) − log 4``
      (Goodfellow et al. 2014, Theorem 1), so a discriminator's logits give its JS estimate and minimising
      ``−variational_bound(t_p, t_q, "js")`` is the discriminator's loss.

    Each is ≤ the divergence (KL(P ‖ Q) for dv and nwj, JS(P, Q) for js) in expectation, with equality at the
    optimal critic. Edge cases: ``log σ`` is evaluated as ``logsigmoid`` (no overflow at large logits).
    """
    torch = _torch()
    bound = _validate.check_choice("bound", bound, BOUNDS)
    if bound == "dv":
        return t_p.mean() - (torch.logsumexp(t_q, 0) - math.log(t_q.shape[0]))
    if bound == "nwj":
        return t_p.mean() - torch.exp(t_q - 1).mean()
    functional = torch.nn.functional
    return 0.5 * (functional.logsigmoid(t_p).mean() + functional.logsigmoid(-t_q).mean()) + math.log(2)


def _held_out(bound: str, t_p: np.ndarray, t_q: np.ndarray) -> tuple[float, float]:
    """The bound on held-out samples and its delta-method standard error (P's and Q's samples independent)."""
    n, m = len(t_p), len(t_q)
    if bound == "dv":
        shift = float(t_q.max())
        weights = np.exp(t_q - shift)
        mean_w = float(weights.mean())
        value = float(t_p.mean()) - (shift + math.log(mean_w))
        variance = np.var(t_p, ddof=1) / n + np.var(weights / mean_w, ddof=1) / m
    elif bound == "nwj":
        weights = np.exp(t_q - 1)
        value = float(t_p.mean() - weights.mean())
        variance = np.var(t_p, ddof=1) / n + np.var(weights, ddof=1) / m
    else:
        from scipy.special import log_expit

        a, b = log_expit(t_p), log_expit(-t_q)
        value = 0.5 * float(a.mean() + b.mean()) + math.log(2)
        variance = 0.25 * (np.var(a, ddof=1) / n + np.var(b, ddof=1) / m)
    return value, math.sqrt(float(variance))


def variational(
    x: Any,
    y: Any,
    *,
    bound: str = "dv",
    hidden: int = 64,
    layers: int = 2,
    steps: int = 1000,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    holdout: float = 0.5,
    ci: float | None = 0.95,
    seed: int | None = 0,
    base: float | None = None,
) -> Estimate:
    r"""A variational lower bound on KL(P ‖ Q) (``"dv"``, ``"nwj"``) or on JS(P, Q) (``"js"``) from samples
    ``x ~ P`` and ``y ~ Q``, maximised over a small neural critic ``T`` and evaluated on held-out samples.

    For every function T (Donsker and Varadhan 1983; Nguyen, Wainwright and Jordan 2010, eq. 13; Goodfellow et
    al. 2014, Theorem 1):

        KL(P ‖ Q) ≥ E_P[T] − log E_Q[e^T]                                   ("dv", tight at T = log dP/dQ + c)
        KL(P ‖ Q) ≥ E_P[T] − E_Q[e^(T − 1)]                                 ("nwj", tight at T = 1 + log dP/dQ)
        JS(P, Q)  ≥ ½ (E_P[log σ(T)] + E_Q[log(1 − σ(T))]) + log 2          ("js", tight at σ(T) = p / (p + q))

    where JS(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M), M = (P + Q)/2, in [0, log 2]; the third is the GAN
    discriminator's objective (D = σ(T)), which is why a trained discriminator estimates a JS divergence. DV is
    never below NWJ for the same T (log u ≤ u/e).

    The critic (an MLP, ``layers`` hidden layers of ``hidden`` ELU units, on inputs standardised with the training
    points) is trained with Adam, on one thread, on the first ``1 − holdout`` of each (shuffled) sample to
    maximise the bound, keeping the critic that scored best on a validation fifth of those training points
    (checked 50 times per run; training stops after 10 checks without improvement). Early stopping matters: a
    flexible critic overfits, its ``e^T`` exploding off the training points, and a late lucky validation score
    would select such a critic. The value is the bound evaluated on the held-out rest, so the critic never scores the points it was
    fitted or selected on, and the value is an honest estimate of a lower bound (training-set values overfit
    upwards). ``stderr`` is the held-out value's delta-method standard error
    and ``ci`` the normal interval around it: they cover the bound for this critic, and the true divergence lies
    at or above it (up to that noise; DV's held-out ``−log mean(e^T)`` is also biased slightly upwards, by
    Jensen's inequality, about ``Var_Q[e^T] / (2 m E_Q[e^T]²)``). How close the bound comes to the divergence
    depends on the critic's capacity, the steps and the sample size: measured against closed forms in
    benchmarks/RESULTS.md. Deterministic for a given ``seed``.

    Args:
        x: samples of P, shape ``(n, d)`` or ``(n,)``; NumPy, lists or torch tensors.
        y: samples of Q, shape ``(m, d)`` or ``(m,)``.
        bound: ``"dv"`` (Donsker–Varadhan), ``"nwj"`` or ``"js"``.
        hidden: hidden units per layer of the critic.
        layers: hidden layers of the critic.
        steps: Adam steps.
        batch_size: samples of each of P and Q per step (all of them when fewer).
        learning_rate: Adam learning rate.
        holdout: fraction of each sample kept out of training for the evaluation, in (0, 1).
        ci: confidence level of the interval (None for none).
        seed: seed of the shuffle, the critic's initialisation and the minibatches.
        base: logarithm base of the result (None for nats, 2 for bits).

    Returns:
        ``Estimate(value, stderr, ci, n)`` with ``n`` the held-out samples of P.

    References:
        M. D. Donsker and S. R. S. Varadhan, "Asymptotic evaluation of certain Markov process expectations for
        large time IV", Comm. Pure Appl. Math. 36, 1983.
        X. Nguyen, M. J. Wainwright and M. I. Jordan, "Estimating divergence functionals and the likelihood ratio
        by convex risk minimization", IEEE Trans. Inf. Theory 56(11), 2010.
        I. Goodfellow et al., "Generative adversarial nets", NeurIPS 2014.
        B. Poole et al., "On variational bounds of mutual information", ICML 2019 (the bounds side by side).
    """
    bound = _validate.check_choice("bound", bound, BOUNDS)
    hidden = _validate.check_integer_at_least("hidden", hidden, 1, "a positive integer (units per layer)")
    layers = _validate.check_integer_at_least("layers", layers, 1, "a positive integer (hidden layers)")
    steps = _validate.check_integer_at_least("steps", steps, 1, "a positive integer (optimiser steps)")
    batch_size = _validate.check_integer_at_least("batch_size", batch_size, 2, "an integer >= 2")
    learning_rate = _validate.check_finite_number("learning_rate", learning_rate)
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be a positive number such as 1e-3, got {learning_rate!r}")
    holdout = _validate.check_finite_number("holdout", holdout)
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction strictly between 0 and 1 (e.g. 0.5), got {holdout!r}")
    level = _validate.check_level(ci)
    divisor = _validate.check_base(base) or 1.0  # nats: 1
    seed = _validate.check_seed("seed", seed)
    xs, ys = _validate.check_points(x, "x"), _validate.check_points(y, "y")
    _validate.check_variational_samples(xs, ys, holdout)
    torch = _torch()

    rng = np.random.default_rng(seed)
    xs, ys = xs[rng.permutation(len(xs))], ys[rng.permutation(len(ys))]
    train_n, train_m = len(xs) - max(2, round(holdout * len(xs))), len(ys) - max(2, round(holdout * len(ys)))
    # Standardise with the training points only, so the held-out points stay unseen.
    train = np.concatenate([xs[:train_n], ys[:train_m]])
    centre, scale = train.mean(0), np.maximum(train.std(0), 1e-12)
    as_input = lambda a: torch.from_numpy(((a - centre) / scale).astype(np.float32))  # noqa: E731
    train_x, test_x = as_input(xs[:train_n]), as_input(xs[train_n:])
    train_y, test_y = as_input(ys[:train_m]), as_input(ys[train_m:])
    # A fifth of the training points is a validation set for early stopping: the held-out points only score.
    fit_n, fit_m = train_n - max(1, train_n // 5), train_m - max(1, train_m // 5)
    fit_x, check_x, fit_y, check_y = train_x[:fit_n], train_x[fit_n:], train_y[:fit_m], train_y[fit_m:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP: one thread is fastest, and immune to a busy machine
    try:
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            model = critic(xs.shape[1], hidden, layers)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        take_x, take_y = min(batch_size, fit_n), min(batch_size, fit_m)
        every = max(1, steps // EVALUATIONS)
        best, best_state, since = -math.inf, None, 0
        for step in range(1, steps + 1):
            batch_x = fit_x if take_x == fit_n else fit_x[torch.randperm(fit_n, generator=generator)[:take_x]]
            batch_y = fit_y if take_y == fit_m else fit_y[torch.randperm(fit_m, generator=generator)[:take_y]]
            objective = variational_bound(model(batch_x)[:, 0], model(batch_y)[:, 0], bound)
            optimizer.zero_grad(set_to_none=True)
            (-objective).backward()
            optimizer.step()
            if step % every == 0 or step == steps:
                with torch.no_grad():
                    score = float(variational_bound(model(check_x)[:, 0].double(), model(check_y)[:, 0].double(), bound))
                if score > best:
                    best, best_state, since = score, {k: v.clone() for k, v in model.state_dict().items()}, 0
                else:
                    since += 1
                    if since >= PATIENCE:
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
        with torch.no_grad():
            t_p = model(test_x)[:, 0].double().numpy()
            t_q = model(test_y)[:, 0].double().numpy()
    finally:
        torch.set_num_threads(threads)
    value, stderr = _held_out(bound, t_p, t_q)
    value, stderr = value / divisor, stderr / divisor
    return Estimate(value, stderr, normal_interval(value, stderr, level), len(t_p))
