"""``kldiv demo``: a guided tour of the worked examples, in the terminal."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import kldiv

from .compute import explain_infinities


def _pair_table(title: str, rows: list[tuple[str, float]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, "∞" if math.isinf(value) else f"{value:.4f}")
    return table


def discrete_tour(console: Console) -> None:
    """The discrete worked examples: dice, coins, asymmetry, the entropy identity, infinities, pairwise."""
    console.rule("[bold]1. A fair die against a loaded one")
    fair = np.full(6, 1 / 6)
    loaded = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.5])
    console.print(f"P (fair)   = {np.round(fair, 3).tolist()}\nQ (loaded) = {loaded.tolist()}")
    console.print(
        _pair_table(
            "in bits",
            [
                ("KL(P‖Q): bits lost coding fair rolls with the loaded code", float(kldiv.kl(fair, loaded, base=2))),
                ("KL(Q‖P)", float(kldiv.kl(loaded, fair, base=2))),
                ("JS(P, Q) (≤ 1 bit)", float(kldiv.js(fair, loaded, base=2))),
            ],
        )
    )

    console.rule("[bold]2. The coin: P = (0.1, 0.9), Q = (0.9, 0.1)")
    p, q = np.array([0.1, 0.9]), np.array([0.9, 0.1])
    console.print(
        f"KL(P‖Q) = 0.1·log(0.1/0.9) + 0.9·log(0.9/0.1) = {float(kldiv.kl(p, q)):.4f} nats. "
        "Mirror images, so both directions agree here."
    )

    console.rule("[bold]3. KL is not symmetric")
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    console.print(
        _pair_table(
            "P = (0.5, 0.5), Q = (0.9, 0.1), nats",
            [("KL(P‖Q)", float(kldiv.kl(p, q))), ("KL(Q‖P)", float(kldiv.kl(q, p)))],
        )
    )

    console.rule("[bold]4. KL(P‖Q) = H(P, Q) − H(P)")
    p, q = fair, loaded
    h_pq, h_p = float(kldiv.cross_entropy(p, q)), float(kldiv.entropy(p))
    console.print(
        f"cross-entropy H(P,Q) = {h_pq:.4f}, entropy H(P) = {h_p:.4f}, difference = {h_pq - h_p:.4f}, "
        f"KL(P‖Q) = {float(kldiv.kl(p, q)):.4f} nats"
    )

    console.rule("[bold]5. Zeros: a one-hot distribution and an infinity")
    p, q = np.array([0.0, 1.0, 0.0]), np.array([0.2, 0.5, 0.3])
    console.print(f"P = {p.tolist()} (one-hot), Q = {q.tolist()}")
    console.print(
        _pair_table(
            "nats",
            [
                ("KL(P‖Q) = −log q₁: the terms with p = 0 contribute exactly 0", float(kldiv.kl(p, q))),
                ("KL(Q‖P)", float(kldiv.kl(q, p))),
                ("JS(P, Q): always finite, ≤ log 2", float(kldiv.js(p, q))),
            ],
        )
    )
    for note in explain_infinities(p, q, from_logits=False, axis=-1):
        console.print(f"[yellow]•[/] {note}")

    console.rule("[bold]6. The backward pass: gradients of KL from logits")
    x, y = np.array([2.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0])
    grad_x, grad_y = kldiv.grad.kl(x, y, from_logits=True)
    console.print(
        f"logits x = {x.tolist()}, y = {y.tolist()}\n"
        f"∂KL/∂y = softmax(y) − softmax(x) = {np.round(grad_y, 4).tolist()}\n"
        f"∂KL/∂x = p·(log p − log q − KL)  = {np.round(grad_x, 4).tolist()}"
    )

    console.rule("[bold]7. A pairwise matrix: KL between every pair of word distributions")
    rng = np.random.default_rng(0)
    topics = rng.dirichlet(np.full(8, 0.5), size=4)
    matrix = kldiv.pairwise.kl(topics, topics)
    table = Table(title="KL(row‖column), nats: zero diagonal, not symmetric", title_justify="left")
    table.add_column("")
    for j in range(len(topics)):
        table.add_column(f"Q{j}", justify="right")
    for i, row in enumerate(matrix):
        table.add_row(f"P{i}", *("∞" if math.isinf(v) else f"{v:.3f}" for v in row))
    console.print(table)


def demo(
    quick: bool = typer.Option(False, "--quick", help="train the VAE and distillation runs for a few steps only (CI)"),
    out: Path = typer.Option(Path("kldiv-demo"), help="folder for the runs and report.html / report.md"),
    discrete_only: bool = typer.Option(False, "--discrete-only", help="only the worked examples, no training"),
) -> None:
    """A guided tour of KL divergence: worked examples, then a VAE and a distillation run with a report."""
    console = Console()
    discrete_tour(console)
    if not discrete_only:
        from ..apps.tour import run_tour  # torch and matplotlib load only here

        run_tour(console, out, quick=quick)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
