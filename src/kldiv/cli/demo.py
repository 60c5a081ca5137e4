"""``kldiv demo``: a guided tour of KL divergence: the worked examples in the terminal, then the runs and the report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..apps.tour import print_example, worked_examples


def discrete_tour(console: Console) -> int:
    """Print the worked examples (fair and loaded dice, the coin, asymmetry, the entropy identity, an
    infinity, gradients, a pairwise matrix); return how many there were."""
    examples = worked_examples()
    for number, example in enumerate(examples, 1):
        print_example(console, number, example)
    return len(examples)


def demo(
    quick: bool = typer.Option(False, "--quick", help="train the VAE and distillation runs for a few steps only (CI)"),
    out: Path = typer.Option(Path("kldiv-demo"), help="folder for the runs and report.html / report.md"),
    discrete_only: bool = typer.Option(False, "--discrete-only", help="only the worked examples, no training"),
    force: bool = typer.Option(
        False, "--force", help="write into a non-empty --out that kldiv demo did not make (its run folders still refused)"
    ),
) -> None:
    """A guided tour of KL divergence: worked examples, then a VAE and a distillation run with a report (1–3 min on 2 cores)."""
    console = Console()
    if not discrete_only:
        from ..apps.tour import prepare_output

        prepare_output(out, force=force)  # refuse a folder it must not write into before anything runs
    shown = discrete_tour(console)
    if not discrete_only:
        from ..apps.tour import run_tour  # torch and matplotlib load only inside

        run_tour(console, out, quick=quick, force=force, first_section=shown + 1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
