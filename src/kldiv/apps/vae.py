"""A VAE (or plain autoencoder) with an MLP encoder and decoder, trained on scikit-learn's digits or a ``.npy``.

Loss per sample (nats): ``reconstruction + KL term``, where the reconstruction is the negative log-likelihood
of ``x`` under the decoder (Bernoulli: binary cross-entropy on values in [0, 1]; Gaussian: one shared scale σ
set at each step to its maximum-likelihood value, the σ-VAE of Rybkin et al. 2021) and the KL term is ``kldiv.vae.gaussian_kl`` shaped by β, its schedule, free bits or a capacity
target (see :mod:`kldiv.vae`). ``model="ae"`` drops the KL term and the sampling (the seed material's
deterministic autoencoder).

Why the Gaussian scale is calibrated rather than learned by gradient: with pixels in [0, 1] and σ starting at 1,
−log p(x|z) = Σ (x − μ)²/2σ² + … barely depends on z (at most 0.5 nats per pixel), the KL term wins, the
encoder collapses to the prior and σ, learned slowly, never gets small enough to bring it back (KL 0.001 nats
after 5 epochs on the digits). With σ² = the batch's mean squared error the reconstruction term is weighted
as the data allow from the first step, and the same run keeps both latent dimensions in use.

:func:`diagnose` turns the held-out numbers into plain words about posterior collapse.

References:
  Rybkin, Daniilidis & Levine (2021), Simple and effective VAE training with calibrated decoders, Eq. 4.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import vae as kvae
from . import plots, runs
from .errors import CommandError
from .progress import Progress


@dataclass
class VAEConfig:
    """Every option of a VAE/AE run (saved as ``config.json``; ``--resume`` reads it back)."""

    data: str = "digits"
    model: str = "vae"
    likelihood: str = "bernoulli"
    latent: int = 2
    hidden: int = 256
    beta: float = 1.0
    free_bits: float = 0.0
    free_bits_mode: str = "batch"
    capacity: float | None = None
    schedule: str = "constant"
    warmup_steps: int | None = None
    cycles: int = 4
    ratio: float = 0.5
    ramp: str = "linear"
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    def validate(self) -> VAEConfig:
        checks = [
            (self.model in ("vae", "ae"), f"--model must be 'vae' or 'ae', got {self.model!r}"),
            (self.likelihood in ("bernoulli", "gaussian"), f"--likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}"),
            (self.latent >= 1, f"--latent must be >= 1, got {self.latent}"),
            (self.hidden >= 1, f"--hidden must be >= 1, got {self.hidden}"),
            (math.isfinite(self.beta) and self.beta >= 0, f"--beta must be a finite number >= 0, got {self.beta}"),
            (math.isfinite(self.free_bits) and self.free_bits >= 0, f"--free-bits must be a finite number >= 0 (nats per latent dimension), got {self.free_bits}"),
            (self.free_bits_mode in ("batch", "sample"), f"--free-bits-mode must be 'batch' or 'sample', got {self.free_bits_mode!r}"),
            (self.capacity is None or (math.isfinite(self.capacity) and self.capacity >= 0), f"--capacity must be a finite number >= 0 (nats), got {self.capacity}"),
            (self.capacity is None or self.free_bits == 0, "--capacity and --free-bits are two different KL objectives; give one of them"),
            (self.schedule in ("constant", "linear", "cyclical"), f"--schedule must be constant, linear or cyclical, got {self.schedule!r}"),
            (self.warmup_steps is None or self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}"),
            (self.cycles >= 1, f"--cycles must be >= 1, got {self.cycles}"),
            (0 < self.ratio <= 1, f"--ratio must be in (0, 1], got {self.ratio}"),
            (self.ramp in ("linear", "cosine", "sigmoid"), f"--ramp must be linear, cosine or sigmoid, got {self.ramp!r}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (math.isfinite(self.learning_rate) and self.learning_rate > 0, f"--learning-rate must be > 0, got {self.learning_rate}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CommandError(message)
        return self


# --- data -------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    train: torch.Tensor
    heldout: torch.Tensor
    heldout_labels: np.ndarray | None
    image_shape: tuple[int, int] | None
    name: str


def load_data(spec: str, likelihood: str, seed: int) -> Dataset:
    """``digits`` (scikit-learn's bundled 8×8 digits scaled to [0, 1]) or a ``.npy`` of shape (n, d) or (n, h, w)."""
    labels = None
    if spec == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.data.astype(np.float32) / 16.0
        labels = digits.target
        image_shape: tuple[int, int] | None = (8, 8)
    else:
        path = Path(spec)
        if path.suffix.lower() != ".npy":
            raise CommandError(f"--data must be 'digits' or a .npy file, got {spec!r}")
        if not path.exists():
            raise CommandError(f"--data: file {spec!r} does not exist")
        if not path.is_file():  # a folder, or a FIFO or device, whose reading could block forever
            raise CommandError(f"--data: {spec!r} is not a regular file; give a .npy file")
        try:
            array = np.load(path, allow_pickle=False)
        except MemoryError:
            raise CommandError(f"--data: {spec!r} declares an array too large for this machine's memory") from None
        except Exception as error:  # a damaged header raises whatever NumPy's header parser meets (tokenize, EOF)
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise CommandError(f"--data: cannot read {spec!r} as a .npy array ({detail})") from None
        if not isinstance(array, np.ndarray):  # np.load opens a zip archive (.npz, torch.save) as an NpzFile
            raise CommandError(f"--data: {spec!r} is a zip archive (.npz or torch.save), not a .npy array; "
                               "numpy.save one array")
        if array.dtype.kind not in "biuf":
            raise CommandError(f"--data: {spec!r} holds {array.dtype} values, not numbers")
        if array.ndim not in (2, 3):
            raise CommandError(
                f"--data: {spec!r} has shape {array.shape}; expected (samples, features) or (samples, height, width)"
            )
        if array.shape[0] < 2 or array.size == 0:
            raise CommandError(f"--data: {spec!r} has shape {array.shape}; need at least 2 samples and 1 feature")
        image_shape = tuple(array.shape[1:]) if array.ndim == 3 else None
        x = array.reshape(array.shape[0], -1).astype(np.float32)
        if image_shape is None and math.isqrt(x.shape[1]) ** 2 == x.shape[1]:
            side = math.isqrt(x.shape[1])
            image_shape = (side, side)
        if not np.all(np.isfinite(x)):
            raise CommandError(f"--data: {spec!r} contains NaN or infinite values")
        if likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            raise CommandError(
                f"--data: values of {spec!r} lie in [{x.min():g}, {x.max():g}]; the Bernoulli likelihood needs [0, 1] "
                "(rescale them or pass --likelihood gaussian)"
            )
    generator = np.random.default_rng(seed)
    order = generator.permutation(len(x))
    n_heldout = max(1, len(x) // 10)
    held, train = order[:n_heldout], order[n_heldout:]
    return Dataset(
        torch.from_numpy(x[train]),
        torch.from_numpy(x[held]),
        None if labels is None else labels[held],
        image_shape,
        spec,
    )


# --- models -----------------------------------------------------------------------------------------


class MLPVAE(nn.Module):
    """Encoder ``x → hidden → (mean, log_var)``, decoder ``z → hidden → x`` (logits or means)."""

    def __init__(self, features: int, latent: int, hidden: int, *, variational: bool = True, likelihood: str = "bernoulli"):
        super().__init__()
        self.variational = variational
        self.likelihood = likelihood
        self.encoder = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.to_mean = nn.Linear(hidden, latent)
        self.to_log_var = nn.Linear(hidden, latent) if variational else None
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, features)
        )
        # Gaussian likelihood: one log standard deviation shared by all pixels, calibrated in training (σ-VAE).
        if likelihood == "gaussian":
            self.register_buffer("log_scale", torch.zeros(()))
        else:
            self.log_scale = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.encoder(x)
        return self.to_mean(h), (self.to_log_var(h) if self.variational else None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def reconstruction_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−log p(x|z) per sample, summed over features (nats).

        Gaussian: ``Σ_d (x_d − μ_d)²/2σ² + log σ + ½ log 2π``; in training σ² is first set to the batch's mean
        squared error, its maximum-likelihood value (Rybkin et al. 2021, Eq. 4), and kept for evaluation.
        """
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(dim=1)
        if self.training:  # σ-VAE: the shared scale at its optimum for this batch
            with torch.no_grad():
                self.log_scale.copy_(0.5 * torch.log(torch.mean((x - out) ** 2).clamp_min(1e-6)))
        log_scale = self.log_scale
        return (0.5 * ((x - out) * torch.exp(-log_scale)) ** 2 + log_scale + 0.5 * math.log(2 * math.pi)).sum(dim=1)


def _schedule(config: VAEConfig, total_steps: int) -> Callable[[int], float]:
    if config.schedule == "constant":
        return kvae.ConstantSchedule(1.0)
    if config.schedule == "linear":
        warmup = config.warmup_steps if config.warmup_steps is not None else total_steps // 2
        return kvae.LinearWarmup(warmup, start=0.0, stop=1.0)
    return kvae.CyclicalSchedule(total_steps, n_cycles=config.cycles, ratio=config.ratio, ramp=config.ramp)


def _losses(model: MLPVAE, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    mean, log_var = model.encode(x)
    if not model.variational:
        z = mean
        return {"recon": model.reconstruction_nll(model.decode(z), x), "kl_elem": None, "mean": mean, "log_var": None}
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    z = mean + torch.exp(0.5 * log_var) * noise
    kl_elem = kvae.gaussian_kl(mean, log_var, reduction="none")  # (batch, latent), nats
    return {"recon": model.reconstruction_nll(model.decode(z), x), "kl_elem": kl_elem, "mean": mean, "log_var": log_var}


def _kl_objective(config: VAEConfig, kl_elem: torch.Tensor, weight: float, capacity: float) -> torch.Tensor:
    beta = config.beta * weight
    if config.capacity is not None:
        return kvae.capacity_kl(kl_elem.sum(dim=1).mean(), capacity, beta=beta)
    if config.free_bits > 0:
        return kvae.beta_kl(kvae.free_bits(kl_elem, config.free_bits, mode=config.free_bits_mode), beta)
    return kvae.beta_kl(kl_elem.sum(dim=1).mean(), beta)


@torch.no_grad()
def evaluate(model: MLPVAE, x: torch.Tensor, seed: int) -> dict[str, Any]:
    """Held-out reconstruction, KL, ELBO (nats per sample) and the collapse diagnostics."""
    model.eval()
    generator = torch.Generator().manual_seed(seed + 1)
    out = _losses(model, x, generator)
    model.train()
    recon = float(out["recon"].mean())
    result: dict[str, Any] = {"heldout_recon": recon}
    if out["kl_elem"] is None:
        result.update(heldout_kl=None, heldout_elbo=None, active_units=None, mutual_information=None)
        result["kl_per_dimension"] = None
        return result
    kl_dims = kvae.kl_per_dimension(out["mean"], out["log_var"])
    kl = float(kl_dims.sum())
    result.update(
        heldout_kl=kl,
        heldout_elbo=-(recon + kl),
        active_units=kvae.active_units(out["mean"]),
        mutual_information=kvae.mutual_information(out["mean"], out["log_var"], seed=seed),
        kl_per_dimension=[float(v) for v in kl_dims],
    )
    return result


# A latent dimension whose held-out KL is below this carries less than this many nats about the input
# (E_x KL(q(z_j|x) ‖ p(z_j)) ≥ I(x; z_j)): for practical purposes it is the prior, i.e. collapsed.
COLLAPSED_KL = 0.05


def diagnose(row: dict[str, Any]) -> list[str]:
    """Plain-words sentences on posterior collapse from a metrics row of :func:`evaluate` (empty for an AE).

    A dimension is *collapsed* when its held-out KL(q(z_j|x) ‖ N(0, 1)) is under :data:`COLLAPSED_KL` nats: the
    average KL from the prior bounds the information the code carries about the input, so such a dimension is
    noise the decoder has learned to ignore. Burda et al.'s active-unit count (variance of E[z_j|x] over x
    above 0.01) is reported beside it; it can call a dimension active whose posterior is still almost the prior
    (variance of the mean 0.012 and posterior variance 0.95 gave KL 0.016 nats), which the KL test does not.
    """
    kl_dims = row.get("kl_per_dimension")
    if not kl_dims:
        return []
    total, latent = row["heldout_kl"], len(kl_dims)
    collapsed = [j + 1 for j, value in enumerate(kl_dims) if value < COLLAPSED_KL]
    used = latent - len(collapsed)
    remedy = ("Remedies: train longer (--epochs), keep a KL floor (--free-bits 0.1), warm the KL weight up "
              "(--schedule linear or cyclical), or lower --beta.")
    burda = f"Burda et al.'s count of active units is {row['active_units']} of {latent}"
    if used == 0:
        return [
            f"Posterior collapse: the held-out KL is {total:.3f} nats over its {latent} latent dimension{'s' if latent > 1 else ''}, so the code "
            f"z carries at most {total:.3f} nats about an image; the encoder returns the prior for every input and "
            "the decoder draws the same average image whatever z is.",
            f"{burda}. {remedy}",
        ]
    if collapsed:
        names = ", ".join(str(j) for j in collapsed)
        values = ", ".join(f"{kl_dims[j - 1]:.3f}" for j in collapsed)
        return [
            f"Partial posterior collapse: latent dimension{'s' if len(collapsed) > 1 else ''} {names} carr"
            f"{'y' if len(collapsed) > 1 else 'ies'} {values} nats (under {COLLAPSED_KL} nats): "
            f"{'their posteriors are' if len(collapsed) > 1 else 'its posterior is'} the prior and the decoder ignores "
            f"{'them' if len(collapsed) > 1 else 'it'}; the model uses {used} of its {latent} dimensions.",
            f"{burda} (it counts any dimension whose posterior mean varies at all). {remedy}",
        ]
    who = {1: "the latent dimension carries", 2: "both latent dimensions carry"}.get(latent, f"all {latent} latent dimensions carry")
    low, high = min(kl_dims), max(kl_dims)
    spread = f"{low:.2f} nats" if latent == 1 else f"{low:.2f} to {high:.2f} nats each"
    return [
        f"No posterior collapse: {who} information "
        f"({spread}). The held-out KL, {total:.2f} nats, bounds the information the code holds about an image; "
        f"the estimated mutual information I(x; z) is {row['mutual_information']:.2f} nats. {burda}."
    ]


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}


def train(
    config: VAEConfig,
    folder: Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train, writing the run folder after every epoch; return the last metrics row.

    ``on_step(step)`` and ``on_epoch(epoch, row)`` are called after each optimiser step and after each saved
    epoch (tests raise ``KeyboardInterrupt`` from them). An interrupt leaves the folder at the last completed
    epoch with ``state.json`` saying ``interrupted``, and re-raises. ``resume`` continues the run in ``folder``
    (its options must equal ``config`` except ``epochs``); every input is validated, and the checkpoint verified
    and restored, before anything is written; each epoch's files are committed as one generation
    (:class:`kldiv.apps.runs.RunFolder`).
    """
    folder = Path(folder)
    config.validate()
    with runs.RunFolder(folder, resume=resume, force=force) as run:
        return _train(run, config, progress=progress, on_step=on_step, on_epoch=on_epoch)


def _train(
    run: runs.RunFolder, config: VAEConfig, *, progress: bool, on_step: Callable[[int], None] | None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    folder = run.path
    data = load_data(config.data, config.likelihood, config.seed)
    checkpoint = None
    if run.resume:
        runs.check_resume(run.saved_config(), dataclasses.asdict(config), changeable=("epochs",))
        checkpoint = run.load_checkpoint() if run.has_checkpoint else None
    fingerprint = runs.fingerprint(torch.cat([data.train, data.heldout]).numpy().tobytes())
    if checkpoint is not None and checkpoint.get("data_sha256", fingerprint) != fingerprint:
        raise CommandError(
            f"--data {config.data!r} is not the data this run was trained on (its content changed since the "
            "checkpoint); resume with the original data, or start a new run in another --out"
        )
    torch.manual_seed(config.seed)
    model = runs.build_model(
        lambda: MLPVAE(data.train.shape[1], config.latent, config.hidden, variational=config.model == "vae",
                       likelihood=config.likelihood),
        f"--latent {config.latent} --hidden {config.hidden}",
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    schedule = _schedule(config, total_steps)
    capacity = kvae.LinearWarmup(total_steps, start=0.0, stop=config.capacity) if config.capacity is not None else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        runs.restore(checkpoint, model, optimizer, generator, folder)
        history = checkpoint["history"]
        start_epoch = int(checkpoint.get("epoch", 0))
    with run.generation():
        runs.atomic_write_json(folder / "config.json", dataclasses.asdict(config))
        runs.atomic_write_json(folder / "state.json", {"status": "running", "epoch": start_epoch, "epochs": config.epochs})

    row: dict[str, Any] = history[-1] if history else {}
    try:
        with Progress(f"{config.model.upper()} epochs", config.epochs, start_epoch, enabled=progress) as bar:
            for epoch in range(start_epoch, config.epochs):
                started = time.perf_counter()
                order = torch.randperm(len(data.train), generator=generator)
                sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
                weight = 1.0
                for i in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + i
                    batch = data.train[order[i * config.batch_size : (i + 1) * config.batch_size]]
                    out = _losses(model, batch)
                    recon = out["recon"].mean()
                    loss = recon
                    if out["kl_elem"] is not None:
                        weight = schedule(step)
                        kl = out["kl_elem"].sum(dim=1).mean()
                        loss = recon + _kl_objective(config, out["kl_elem"], weight, capacity(step) if capacity else 0.0)
                        sums["kl"] += kl.item() * len(batch)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    if not math.isfinite(loss.item()):
                        raise CommandError(
                            f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}; lower --learning-rate"
                        )
                    sums["loss"] += loss.item() * len(batch)
                    sums["recon"] += recon.item() * len(batch)
                    if on_step is not None:
                        on_step(step)
                n = len(data.train)
                row = {
                    "epoch": epoch + 1,
                    "step": (epoch + 1) * steps_per_epoch,
                    "kl_weight": config.beta * weight if config.model == "vae" else None,
                    "capacity": capacity((epoch + 1) * steps_per_epoch - 1) if capacity else None,
                    "train_loss": sums["loss"] / n,
                    "train_recon": sums["recon"] / n,
                    "train_kl": sums["kl"] / n if config.model == "vae" else None,
                }
                row.update(evaluate(model, data.heldout, config.seed))
                row["seconds"] = time.perf_counter() - started
                history.append(row)
                with run.generation():
                    _save(folder, model, optimizer, generator, history, epoch + 1, config, fingerprint)
                stats = f"loss {row['train_loss']:.2f}  recon {row['heldout_recon']:.2f}"
                if row["heldout_kl"] is not None:
                    stats += f"  KL {row['heldout_kl']:.2f}  ELBO {row['heldout_elbo']:.2f}"
                bar.advance()
                bar.note(stats)
                if on_epoch is not None:
                    on_epoch(epoch + 1, row)
    except KeyboardInterrupt:
        with run.generation():
            runs.atomic_write_json(
                folder / "state.json", {"status": "interrupted", "epoch": len(history), "epochs": config.epochs}
            )
        raise
    with run.generation():
        write_plots(folder, model, data, history, config)
        runs.atomic_write_json(folder / "state.json", {"status": "finished", "epoch": len(history), "epochs": config.epochs})
    return row


def _save(folder: Path, model: MLPVAE, optimizer: Any, generator: torch.Generator, history: list, epoch: int,
          config: VAEConfig, fingerprint: str) -> None:
    runs.save_torch(
        folder / "checkpoint.pt",
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": _rng_state(generator), "history": history,
         "epoch": epoch, "data_sha256": fingerprint},
    )
    runs.save_weights(folder / "model.safetensors", model.state_dict())
    runs.write_metrics(folder, history)
    runs.atomic_write_json(folder / "state.json", {"status": "running", "epoch": epoch, "epochs": config.epochs})


@torch.no_grad()
def write_plots(folder: Path, model: MLPVAE, data: Dataset, history: list[dict[str, Any]], config: VAEConfig) -> list[str]:
    """Loss curves, KL per dimension, reconstructions, prior samples and the 2-D latent map (PNG)."""
    model.eval()
    written = []
    epochs = [r["epoch"] for r in history]
    series = {"train loss": [r["train_loss"] for r in history], "held-out reconstruction": [r["heldout_recon"] for r in history]}
    if config.model == "vae":  # the KL term is a few nats beside tens of reconstruction nats: its own panel
        series["held-out −ELBO"] = [-r["heldout_elbo"] for r in history]
        kl_series = {"held-out KL": [r["heldout_kl"] for r in history], "train KL": [r["train_kl"] for r in history]}
        plots.panels(folder / "loss.png", epochs, [
            {"series": series, "xlabel": "epoch", "ylabel": "nats per sample", "title": "reconstruction and −ELBO"},
            {"series": kl_series, "xlabel": "epoch", "ylabel": "nats per sample", "title": "KL(q(z|x) ‖ N(0, I))"},
        ], title="VAE training")
    else:
        plots.curves(folder / "loss.png", epochs, series, xlabel="epoch", ylabel="nats per sample", title="AE training")
    written.append("loss.png")
    if config.model == "vae" and history and history[-1].get("kl_per_dimension"):
        plots.bars(
            folder / "kl_per_dimension.png", history[-1]["kl_per_dimension"], xlabel="latent dimension", ylabel="KL (nats)",
            title="KL(q(z_j|x) ‖ N(0,1)) per dimension, held-out", threshold=config.free_bits or None,
        )
        written.append("kl_per_dimension.png")
    mean, _ = model.encode(data.heldout)
    if data.image_shape is not None:
        n = min(10, len(data.heldout))
        originals = data.heldout[:n].numpy().reshape(n, *data.image_shape)
        recon = model.mean_image(mean[:n]).numpy().reshape(n, *data.image_shape)
        plots.image_grid(folder / "reconstructions.png", np.concatenate([originals, recon]), rows=2, title="held-out (top) and reconstructions (bottom)")
        generator = torch.Generator().manual_seed(config.seed)
        z = torch.randn((20, config.latent), generator=generator)
        samples = model.mean_image(z).numpy().reshape(20, *data.image_shape)
        plots.image_grid(folder / "samples.png", samples, rows=2, title="decoded z ~ N(0, I)")
        written += ["reconstructions.png", "samples.png"]
    points = mean.numpy().astype(np.float64)
    if points.shape[1] == 1:
        points = np.concatenate([points, np.zeros_like(points)], axis=1)
        axes = ("z₁", "")
    elif points.shape[1] == 2:
        axes = ("z₁", "z₂")
    else:  # principal components of the posterior means
        centred = points - points.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        points = centred @ vt[:2].T
        axes = ("PC 1 of E[z|x]", "PC 2 of E[z|x]")
    plots.scatter(folder / "latent_map.png", points, data.heldout_labels, title="held-out posterior means", xlabel=axes[0], ylabel=axes[1])
    written.append("latent_map.png")
    model.train()
    return written
