"""``kldiv estimate X Y``: the k-NN estimate of KL(P ‖ Q) from samples of P (X) and Q (Y), with an interval."""

from __future__ import annotations

import json
import math
import warnings
from typing import Annotated

import typer

from ..estimate import knn
from ._errors import CommandError
from ._io import load_array


def estimate(
    x: Annotated[str, typer.Argument(help="samples of P: .npy/.csv/.txt/.json file, one row per sample")],
    y: Annotated[str, typer.Argument(help="samples of Q, same number of columns")],
    k: Annotated[int, typer.Option("--k", "-k", help="neighbour order")] = 1,
    adaptive: Annotated[bool, typer.Option("--adaptive", help="bias-reduced adaptive neighbour counts")] = False,
    ci: Annotated[float, typer.Option("--ci", help="confidence level of the subsampling interval; 0 for none")] = 0.95,
    resamples: Annotated[int, typer.Option(help="subsamples for the interval")] = 100,
    seed: Annotated[int, typer.Option(help="seed of the subsampling")] = 0,
    base: Annotated[float | None, typer.Option(help="units: 2 for bits; default nats")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Estimate KL(P‖Q) from samples X ~ P and Y ~ Q (k-nearest-neighbour estimator, Wang et al. 2009)."""
    xs, ys = load_array(x, "X"), load_array(y, "Y")
    for name, array in (("X", xs), ("Y", ys)):
        if array.ndim > 2:
            raise CommandError(f"{name} has shape {array.shape}; give one sample per row (an n x d table)")
    if not 0 <= ci < 1:
        raise CommandError(f"--ci must be a confidence level in (0, 1) such as 0.95, or 0 for none; got {ci}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            result = knn(xs, ys, k=k, adaptive=adaptive, ci=ci or None, resamples=resamples, seed=seed, base=base)
        except ValueError as error:
            raise CommandError(str(error).replace(" x ", " X ").replace("x has", "X has").replace("y has", "Y has")
                               .replace("x row", "X row").replace("y row", "Y row")) from None
    for warning in caught:
        typer.echo(f"kldiv: warning: {warning.message}", err=True)
    unit = "nats" if base is None else ("bits" if base == 2 else f"log base {base:g}")
    if as_json:
        payload = {"kl": result.value, "stderr": result.stderr, "ci": list(result.ci) if result.ci else None,
                   "level": ci or None, "n": result.n, "m": int(len(ys)), "k": k, "adaptive": adaptive, "unit": unit}
        typer.echo(json.dumps(payload))
        return
    method = f"adaptive k-NN (base k={k})" if adaptive else f"k-NN (k={k})"
    typer.echo(f"KL(P‖Q) ≈ {result.value:.6g} {unit}  ± {result.stderr:.2g} (standard error)")
    if result.ci is not None and all(math.isfinite(v) for v in result.ci):
        typer.echo(f"{ci:.0%} interval: [{result.ci[0]:.6g}, {result.ci[1]:.6g}] ({resamples} half-size subsamples)")
    typer.echo(f"{method}, n={result.n} samples of P, m={len(ys)} samples of Q")


def register(app: typer.Typer) -> None:
    """Add the ``estimate`` command to the ``kldiv`` app."""
    app.command("estimate")(estimate)
