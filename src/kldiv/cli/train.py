"""``kldiv train vae`` / ``kldiv train lm`` / ``kldiv train gan``: the applications' training runs (torch is imported
inside the commands)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import typer

from ._runs import run_options

train_app = typer.Typer(
    help="Train a VAE/autoencoder on the bundled digits, a character GRU on the Python standard library, or a 2-D GAN.",
    no_args_is_help=True,
)

RESUME_HELP = (
    "continue the run in --out from its last completed epoch/checkpoint with its saved options (a run stopped "
    "before its first checkpoint starts again); only --epochs/--steps may change"
)


def _interrupted(folder: Path, what: str) -> None:
    import sys

    print(f"kldiv: interrupted; {str(folder)!r} holds the last completed {what}; continue with --resume", file=sys.stderr)
    raise SystemExit(130)


@train_app.command("vae")
def train_vae(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="'digits' (scikit-learn's bundled 8×8 digits) or a .npy of shape (n, d) or (n, h, w)")] = "digits",
    model: Annotated[str, typer.Option(help="vae, or ae for the deterministic autoencoder")] = "vae",
    likelihood: Annotated[str, typer.Option(help="bernoulli (data in [0, 1]) or gaussian")] = "bernoulli",
    latent: Annotated[int, typer.Option(help="latent dimensions")] = 2,
    hidden: Annotated[int, typer.Option(help="hidden units of the MLPs")] = 256,
    beta: Annotated[float, typer.Option(help="weight β of the KL term")] = 1.0,
    free_bits: Annotated[float, typer.Option(help="free bits λ: KL floor in nats per latent dimension (0: off)")] = 0.0,
    free_bits_mode: Annotated[str, typer.Option(help="batch (Kingma et al.: clamp the batch-mean KL) or sample (clamp per sample)")] = "batch",
    capacity: Annotated[float | None, typer.Option(help="capacity C_max in nats: loss β·|KL − C(t)|, C rising linearly from 0")] = None,
    schedule: Annotated[str, typer.Option(help="KL weight schedule: constant, linear (warm-up) or cyclical")] = "constant",
    warmup_steps: Annotated[int | None, typer.Option(help="linear schedule: steps of the warm-up (default: half the run)")] = None,
    cycles: Annotated[int, typer.Option(help="cyclical schedule: number of cycles")] = 4,
    ratio: Annotated[float, typer.Option(help="cyclical schedule: fraction of each cycle spent ramping up")] = 0.5,
    ramp: Annotated[str, typer.Option(help="cyclical schedule: linear, cosine or sigmoid ramp")] = "linear",
    epochs: Annotated[int, typer.Option(help="passes over the training data (with --resume: the saved value unless given)")] = 30,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 64,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    seed: Annotated[int, typer.Option(help="random seed (data split, initialisation, sampling)")] = 0,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/vae"),
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_HELP)] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite a non-empty --out")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train a VAE (or --model ae) with β, free bits, capacity and KL schedules; write metrics, plots and weights."""
    from ..apps import vae

    fields = tuple(f.name for f in dataclasses.fields(vae.VAEConfig))
    config = vae.VAEConfig(**run_options(ctx, fields, out, resume)).validate()
    try:
        row = vae.train(config, out, resume=resume, force=force, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(out, "epoch")
    _summary(out, row)


def _summary(folder: Path, row: dict) -> None:
    from rich.console import Console

    console = Console()
    parts = [f"held-out reconstruction {row['heldout_recon']:.3f}"]
    if row.get("heldout_kl") is not None:
        parts += [
            f"KL {row['heldout_kl']:.3f}", f"ELBO {row['heldout_elbo']:.3f} nats",
            f"active units {row['active_units']}", f"MI {row['mutual_information']:.3f} nats",
        ]
    console.print(", ".join(parts))
    from ..apps.vae import diagnose

    for sentence in diagnose(row):  # posterior collapse, in plain words
        console.print(sentence, highlight=False)
    console.print(f"run folder: {folder}")


@train_app.command("lm")
def train_lm(
    ctx: typer.Context,
    text: Annotated[str | None, typer.Option(help="UTF-8 text file (default: the running Python's standard library source)")] = None,
    max_chars: Annotated[int, typer.Option(help="corpus cap in characters")] = 1_000_000,
    embed: Annotated[int, typer.Option(help="embedding size")] = 64,
    hidden: Annotated[int, typer.Option(help="GRU hidden size")] = 256,
    layers: Annotated[int, typer.Option(help="GRU layers")] = 1,
    seq_len: Annotated[int, typer.Option(help="characters per training window")] = 64,
    batch_size: Annotated[int, typer.Option(help="windows per step")] = 32,
    steps: Annotated[int, typer.Option(help="optimiser steps: about 1 min on 2 idle cores (0.05 s a step; more on a "
                                            "busy machine), and the run prints its own estimate after 10 steps "
                                            "(with --resume: the saved value unless given)")] = 1000,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-3,
    eval_every: Annotated[int, typer.Option(help="evaluate and checkpoint every N steps")] = 100,
    eval_chars: Annotated[int, typer.Option(help="held-out characters used for evaluation")] = 20_000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/lm"),
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_HELP)] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite a non-empty --out")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train a character-level GRU language model (next-character cross-entropy); report held-out perplexity."""
    from ..apps import charlm

    fields = tuple(f.name for f in dataclasses.fields(charlm.LMConfig))
    config = charlm.LMConfig(**run_options(ctx, fields, out, resume)).validate()
    try:
        report = charlm.train(config, out, resume=resume, force=force, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(out, "checkpoint")
    from rich.console import Console

    console = Console()
    console.print(
        f"held-out perplexity {report['heldout_perplexity']:.3f} ({report['bits_per_char']:.3f} bits/char), "
        f"{report['parameters']:,} parameters, vocabulary {report['vocab_size']}"
    )
    console.print("sample:", markup=False)
    console.print(report["samples"][0], markup=False, highlight=False)
    console.print(f"run folder: {out}")


@train_app.command("gan")
def train_gan(
    modes: Annotated[int, typer.Option(help="Gaussians on the data's ring")] = 8,
    radius: Annotated[float, typer.Option(help="radius of the ring")] = 2.0,
    spread: Annotated[float, typer.Option(help="standard deviation of each data Gaussian")] = 0.2,
    components: Annotated[int, typer.Option(help="Gaussians in the generator's mixture")] = 16,
    hidden: Annotated[int, typer.Option(help="hidden units of the discriminator")] = 64,
    steps: Annotated[int, typer.Option(help="training steps (one discriminator and one generator update each)")] = 2000,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 256,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate of both networks")] = 2e-3,
    eval_every: Annotated[int, typer.Option(help="evaluate the true and estimated JS every N steps")] = 100,
    fresh_critic: Annotated[bool, typer.Option(help="also train a fresh critic (kldiv.estimate.variational) every --fresh-every steps")] = True,
    fresh_every: Annotated[int, typer.Option(help="steps between fresh-critic bounds")] = 500,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    out: Annotated[Path, typer.Option(help="run folder")] = Path("runs/gan"),
    force: Annotated[bool, typer.Option("--force", help="overwrite a non-empty --out")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train a small GAN on a 2-D ring of Gaussians; plot the discriminator's JS estimate against the true JS."""
    from ..apps import gan, runs

    config = gan.GANConfig(
        modes=modes, radius=radius, spread=spread, components=components, hidden=hidden, steps=steps,
        batch_size=batch_size, learning_rate=learning_rate, eval_every=eval_every, fresh_critic=fresh_critic,
        fresh_every=fresh_every, seed=seed,
    ).validate()
    runs.prepare_folder(out, resume=False, force=force)
    try:
        report = gan.train(config, out, progress=not quiet)
    except KeyboardInterrupt:
        import sys

        print(f"kldiv: interrupted; a GAN run takes seconds: start it again (with --force) into {str(out)!r}",
              file=sys.stderr)
        raise SystemExit(130) from None
    from rich.console import Console

    console = Console()
    console.print(
        f"after {config.steps} steps: true JS(data, generator) {report['true_js']:.4f} nats, training "
        f"discriminator's estimate {report['discriminator_js']:.4f}"
        + (f", fresh critic's bound {report['fresh_critic_js']:.4f}" if "fresh_critic_js" in report else "")
        + f" (log 2 = {math.log(2):.4f} is disjoint supports); {report['seconds']:.0f} s"
    )
    console.print(f"run folder: {out} (js.png, samples.png, metrics.csv)")


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
