"""``kldiv distill``: a smaller character GRU learns from a ``kldiv train lm`` teacher with ``kldiv.nn.DistillationLoss``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ._runs import run_options
from .train import RESUME_HELP


def distill(
    ctx: typer.Context,
    teacher: Annotated[Path, typer.Option(help="run folder of `kldiv train lm` (the teacher)")] = Path("runs/lm"),
    divergence: Annotated[str, typer.Option(help="kl, reverse_kl, js, skew_kl, skew_reverse_kl or tvd")] = "kl",
    temperature: Annotated[float, typer.Option(help="softmax temperature T of both models (loss scaled by T²)")] = 1.0,
    hard_label_weight: Annotated[float, typer.Option(help="weight w of the next-character cross-entropy; 1 = from scratch, no teacher")] = 0.0,
    top_k: Annotated[int | None, typer.Option(help="keep only the teacher's top-k log-probabilities (kldiv.nn.TopK, tail bucket)")] = None,
    beta: Annotated[float, typer.Option(help="js: mixture weight of the teacher")] = 0.5,
    alpha: Annotated[float, typer.Option(help="skew_kl / skew_reverse_kl: skew α")] = 0.1,
    embed: Annotated[int, typer.Option(help="student embedding size")] = 32,
    hidden: Annotated[int, typer.Option(help="student GRU hidden size")] = 64,
    layers: Annotated[int, typer.Option(help="student GRU layers")] = 1,
    seq_len: Annotated[int, typer.Option(help="characters per training window")] = 64,
    batch_size: Annotated[int, typer.Option(help="windows per step")] = 32,
    steps: Annotated[int, typer.Option(help="optimiser steps (with --resume: the saved value unless given)")] = 500,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-3,
    eval_every: Annotated[int, typer.Option(help="evaluate and checkpoint every N steps")] = 100,
    eval_chars: Annotated[int, typer.Option(help="held-out characters used for evaluation")] = 20_000,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    out: Annotated[Path, typer.Option(help="run folder of the student")] = Path("runs/distill"),
    resume: Annotated[bool, typer.Option("--resume", help=RESUME_HELP)] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite a non-empty --out")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Distil a trained character GRU into a smaller student; report perplexity, KL to the teacher, agreement."""
    from ..apps import distill as app

    fields = tuple(f.name for f in dataclasses.fields(app.DistillConfig))
    config = app.DistillConfig(**run_options(ctx, fields, out, resume)).validate()
    try:
        report = app.distill(config, out, resume=resume, force=force, progress=not quiet)
    except KeyboardInterrupt:
        import sys

        print(f"kldiv: interrupted; {str(out)!r} holds the last checkpoint; continue with --resume", file=sys.stderr)
        raise SystemExit(130) from None
    _print_report(report, out)


def _print_report(report: dict, folder: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"held-out report: {report['method']}", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("student perplexity", f"{report['heldout_perplexity']:.3f}")
    table.add_row("teacher perplexity", f"{report['teacher_perplexity']:.3f}")
    table.add_row("KL(teacher ‖ student) per char", f"{report['kl_to_teacher']:.4f} nats")
    table.add_row("top-1 agreement with teacher", f"{100 * report['agreement']:.1f} %")
    table.add_row("parameters student / teacher", f"{report['student_parameters']:,} / {report['teacher_parameters']:,}")
    if report["teacher_logit_bytes_per_batch"] is not None:
        table.add_row(
            "teacher logits per batch", f"{report['teacher_logit_bytes_per_batch']:,} B (dense {report['dense_teacher_logit_bytes_per_batch']:,} B)"
        )
    console.print(table)
    console.print("sample:")
    console.print(report["samples"][0], markup=False, highlight=False)
    console.print(f"run folder: {folder}")


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
