"""A small GAN on a 2-D ring of Gaussians, whose discriminator's Jensen–Shannon estimate is plotted against the
true JS divergence between the data and the generator.

Why the true JS is computable: the generator is a reparameterised mixture of ``components`` Gaussians (learned
means and scales, equal weights): a sample is ``μ_c + σ_c ⊙ ε`` with ``c`` uniform and ``ε ~ N(0, I)``, so it
is trained by back-propagating through its samples like any GAN generator, yet its density is known in closed
form. The data density (a ring of ``modes`` Gaussians) is known too, and

    JS(P_data, P_G) = ½ ∫ p log(2p / (p + g)) + ½ ∫ g log(2g / (p + g))

is integrated numerically on a 2-D grid (``GRID`` points a side, covering every component to 8 standard
deviations; the grid's mass of each density is reported, ≈ 1). Nothing here is an estimate except what the
plots call one:

* the **discriminator's estimate**: ``kldiv.estimate.variational_bound(D(x), D(G(z)), "js")`` on fresh
  samples, the value the discriminator's loss is the negative of (Goodfellow et al. 2014, Theorem 1: at the
  optimal discriminator it equals the JS divergence; a discriminator trained alongside the generator lags it);
* with ``fresh_critic``, every ``fresh_every`` steps, a **fresh critic's bound**:
  ``kldiv.estimate.variational(data, generated, bound="js")``, a new discriminator trained (1000 steps, early
  stopping) on the current generator and evaluated on held-out samples.

The generator is trained with the non-saturating loss ``−E log D(G(z))`` (Goodfellow et al. 2014, Sec. 3).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..estimate import variational, variational_bound
from . import plots, runs
from .errors import CommandError

GRID = 400  # points per side of the integration grid for the true JS


@dataclass
class GANConfig:
    """Every option of a GAN run (saved as ``config.json``)."""

    modes: int = 8
    radius: float = 2.0
    spread: float = 0.2
    components: int = 16
    hidden: int = 64
    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 2e-3
    eval_every: int = 100
    eval_samples: int = 4096
    fresh_critic: bool = True
    fresh_every: int = 500
    seed: int = 0

    def validate(self) -> GANConfig:
        checks = [
            (self.modes >= 1, f"--modes must be >= 1, got {self.modes}"),
            (math.isfinite(self.radius) and self.radius >= 0, f"--radius must be a finite number >= 0, got {self.radius}"),
            (math.isfinite(self.spread) and self.spread > 0, f"--spread must be a finite number > 0, got {self.spread}"),
            (self.components >= 1, f"--components must be >= 1, got {self.components}"),
            (self.hidden >= 1, f"--hidden must be >= 1, got {self.hidden}"),
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2, got {self.batch_size}"),
            (math.isfinite(self.learning_rate) and self.learning_rate > 0, f"--learning-rate must be > 0, got {self.learning_rate}"),
            (self.eval_every >= 1, f"--eval-every must be >= 1, got {self.eval_every}"),
            (self.eval_samples >= 100, f"--eval-samples must be >= 100, got {self.eval_samples}"),
            (self.fresh_every >= 1, f"--fresh-every must be >= 1, got {self.fresh_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CommandError(message)
        return self


class MixtureGenerator(nn.Module):
    """``G(c, ε) = μ_c + exp(log σ_c) ⊙ ε``: a mixture of Gaussians with equal weights, sampled by
    reparameterisation, with an exact density."""

    def __init__(self, components: int, scale: float):
        super().__init__()
        self.means = nn.Parameter(torch.randn(components, 2) * scale)
        self.log_scales = nn.Parameter(torch.full((components, 2), math.log(scale)))

    def forward(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        c = torch.randint(len(self.means), (n,), generator=generator)
        eps = torch.randn(n, 2, generator=generator)
        return self.means[c] + self.log_scales.exp()[c] * eps

    def log_density(self, points: np.ndarray) -> np.ndarray:
        """log g at ``points`` (float64)."""
        means = self.means.detach().double().numpy()
        scales = self.log_scales.detach().double().exp().numpy()
        return mixture_log_density(points, means, scales)


def mixture_log_density(points: np.ndarray, means: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Log-density of the equal-weight mixture of axis-aligned Gaussians N(means[j], diag(scales[j]²))."""
    from scipy.special import logsumexp

    z = (points[:, None, :] - means[None]) / scales[None]
    log_components = -0.5 * (z * z).sum(-1) - np.log(scales).sum(-1)[None] - math.log(2 * math.pi)
    return logsumexp(log_components, axis=1) - math.log(len(means))


def ring(config: GANConfig) -> tuple[np.ndarray, np.ndarray]:
    """Means and scales of the data: ``modes`` Gaussians of standard deviation ``spread`` on a circle."""
    angles = 2 * math.pi * np.arange(config.modes) / config.modes
    means = config.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return means, np.full_like(means, config.spread)


def sample_data(config: GANConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    means, scales = (torch.from_numpy(a).float() for a in ring(config))
    c = torch.randint(config.modes, (n,), generator=generator)
    return means[c] + scales[c] * torch.randn(n, 2, generator=generator)


def true_js(config: GANConfig, model: MixtureGenerator) -> tuple[float, float, float]:
    """JS(P_data, P_G) in nats by the midpoint rule on a grid covering both densities to 8 standard deviations;
    also the grid mass of each density (1 up to the rule's error)."""
    data_means, data_scales = ring(config)
    gen_means = model.means.detach().double().numpy()
    gen_scales = model.log_scales.detach().double().exp().numpy()
    low = np.minimum((data_means - 8 * data_scales).min(0), (gen_means - 8 * gen_scales).min(0))
    high = np.maximum((data_means + 8 * data_scales).max(0), (gen_means + 8 * gen_scales).max(0))
    edges = [np.linspace(low[i], high[i], GRID + 1) for i in range(2)]
    centres = [(e[1:] + e[:-1]) / 2 for e in edges]
    cell = float(np.prod([e[1] - e[0] for e in edges]))
    points = np.stack(np.meshgrid(*centres, indexing="ij"), axis=-1).reshape(-1, 2)
    log_p = mixture_log_density(points, data_means, data_scales)
    log_g = mixture_log_density(points, gen_means, gen_scales)
    log_m = np.logaddexp(log_p, log_g) - math.log(2)
    p, g = np.exp(log_p), np.exp(log_g)
    value = 0.5 * cell * float(np.sum(p * (log_p - log_m)) + np.sum(g * (log_g - log_m)))
    return min(max(value, 0.0), math.log(2)), cell * float(p.sum()), cell * float(g.sum())


def discriminator(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, 1))


def train(config: GANConfig, folder: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train the GAN, evaluating every ``eval_every`` steps; write ``config.json``, ``metrics.csv``/``.json``,
    ``js.png``, ``samples.png``, ``model.safetensors`` and ``state.json`` into ``folder``; return the summary
    (the last metrics row plus the run's seconds). The folder is expected to be prepared by the caller
    (``runs.prepare_folder``, which refuses a non-empty one)."""
    folder = Path(folder)
    config.validate()
    folder.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(folder / "config.json", dataclasses.asdict(config))
    runs.atomic_write_json(folder / "state.json", {"status": "running", "step": 0, "steps": config.steps})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # networks of a few thousand weights: one thread is fastest, and immune to a busy machine
    try:
        return _train(config, folder, progress)
    finally:
        torch.set_num_threads(threads)


def _train(config: GANConfig, folder: Path, progress: bool) -> dict[str, Any]:
    started = time.perf_counter()
    stream = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = MixtureGenerator(config.components, scale=max(config.radius, config.spread) / 2)
        critic = discriminator(config.hidden)
    opt_g = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=config.learning_rate, betas=(0.5, 0.999))
    history: list[dict[str, Any]] = []

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]GAN steps"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                   TimeRemainingColumn(), disable=not progress)
    with bar:
        task = bar.add_task("GAN", total=config.steps, stats="")
        for step in range(config.steps + 1):
            if step % config.eval_every == 0 or step == config.steps:
                row = evaluate(config, model, critic, step, stream)
                history.append(row)
                bar.update(task, stats=f"true JS {row['true_js']:.3f}, discriminator {row['discriminator_js']:.3f}")
            if step == config.steps:
                break
            real = sample_data(config, config.batch_size, stream)
            fake = model(config.batch_size, stream)
            d_loss = -variational_bound(critic(real)[:, 0], critic(fake.detach())[:, 0], "js")
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = -torch.nn.functional.logsigmoid(critic(model(config.batch_size, stream))[:, 0]).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            bar.advance(task)
    seconds = time.perf_counter() - started
    runs.write_metrics(folder, history)
    runs.save_weights(folder / "model.safetensors", {**{f"generator.{k}": v for k, v in model.state_dict().items()},
                                                     **{f"discriminator.{k}": v for k, v in critic.state_dict().items()}})
    write_plots(folder, config, model, history, stream)
    runs.atomic_write_json(folder / "state.json", {"status": "finished", "step": config.steps, "steps": config.steps})
    return {**history[-1], "seconds": seconds}


def evaluate(config: GANConfig, model: MixtureGenerator, critic: nn.Module, step: int, stream: torch.Generator) -> dict:
    """One metrics row: the true JS, the training discriminator's estimate on fresh samples, and (with
    ``fresh_critic``) a fresh critic's held-out bound."""
    with torch.no_grad():
        real = sample_data(config, config.eval_samples, stream)
        fake = model(config.eval_samples, stream)
        estimate = float(variational_bound(critic(real)[:, 0].double(), critic(fake)[:, 0].double(), "js"))
    truth, data_mass, generator_mass = true_js(config, model)
    row = {"step": step, "true_js": truth, "discriminator_js": estimate, "grid_mass_data": data_mass,
           "grid_mass_generator": generator_mass}
    if config.fresh_critic and (step % config.fresh_every == 0 or step == config.steps):
        bound = variational(real.double().numpy(), fake.double().numpy(), bound="js", learning_rate=3e-3,
                            seed=config.seed + step)  # the JS bound is stable at a higher rate (DV is not)
        row.update(fresh_critic_js=bound.value, fresh_critic_stderr=bound.stderr)
    return row


def write_plots(folder: Path, config: GANConfig, model: MixtureGenerator, history: list[dict], stream: torch.Generator) -> None:
    steps = [row["step"] for row in history]
    series = {"true JS (numerical integration)": [row["true_js"] for row in history],
              "training discriminator's estimate": [row["discriminator_js"] for row in history]}
    if config.fresh_critic:
        series["fresh critic's bound (held out)"] = [row.get("fresh_critic_js") for row in history]
    series["log 2 (disjoint supports)"] = [math.log(2)] * len(history)
    plots.curves(folder / "js.png", steps, series, xlabel="training step", ylabel="JS(data, generator) [nats]",
                 title="Jensen–Shannon divergence: truth vs the discriminator")
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    with torch.no_grad():
        real = sample_data(config, 2000, stream).numpy()
        fake = model(2000, stream).numpy()
    ax.scatter(real[:, 0], real[:, 1], s=3, alpha=0.4, label="data")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, alpha=0.4, label="generator")
    ax.set(title=f"samples after {config.steps} steps (true JS {history[-1]['true_js']:.3f} nats)", aspect="equal")
    ax.legend(loc="upper right")
    plots._save(fig, folder / "samples.png")
