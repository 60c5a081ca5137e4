"""``kldiv estimate X Y``: KL(P ‖ Q) from samples of P (X) and Q (Y) — the k-NN estimator with its standard error,
bias estimate and interval, or with ``--discrete`` the plug-in estimator on category counts."""

from __future__ import annotations

import json
import math
import warnings
from typing import Annotated

import typer

from ..estimate import DiscreteSampleWarning, category_counts, knn, plugin
from ._errors import CommandError
from ._io import load_array


def _in_user_terms(message: str) -> str:
    """A library message about x, y and keyword arguments, worded for this command's X, Y and options."""
    for library, command in ((" x ", " X "), ("x has", "X has"), ("y has", "Y has"), ("x row", "X row"),
                             ("y row", "Y row"), ("points of x", "points of X"), ("correction=0.5", "--pseudo-count 0.5"),
                             ("counts_p", "X"), ("counts_q", "Y")):
        message = message.replace(library, command)
    return message


def estimate(
    x: Annotated[str, typer.Argument(help="samples of P: .npy/.csv/.txt/.json file, one row per sample")],
    y: Annotated[str, typer.Argument(help="samples of Q, same number of columns")],
    k: Annotated[int, typer.Option("--k", "-k", help="neighbour order")] = 1,
    adaptive: Annotated[bool, typer.Option("--adaptive", help="bias-reduced adaptive neighbour counts")] = False,
    discrete: Annotated[bool, typer.Option("--discrete", help="samples are outcomes (categories): plug-in estimator "
                                                              "on their counts, Miller–Madow corrected")] = False,
    pseudo_count: Annotated[float | None, typer.Option(help="with --discrete: add this count to every category "
                                                            "instead of the Miller–Madow correction")] = None,
    ci: Annotated[float, typer.Option("--ci", help="confidence level of the interval; 0 for none")] = 0.95,
    resamples: Annotated[int, typer.Option(help="k-NN: fold estimates behind the standard error and bias")] = 20,
    seed: Annotated[int, typer.Option(help="k-NN: seed of the random folds")] = 0,
    base: Annotated[float | None, typer.Option(help="units: 2 for bits; default nats")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Estimate KL(P‖Q) from samples X ~ P and Y ~ Q (k-nearest-neighbour estimator, Wang et al. 2009; --discrete
    for the plug-in estimator)."""
    xs, ys = load_array(x, "X"), load_array(y, "Y")
    for name, array in (("X", xs), ("Y", ys)):
        if array.ndim > 2:
            raise CommandError(f"{name} has shape {array.shape}; give one sample per row (an n x d table)")
    if not 0 <= ci < 1:
        raise CommandError(f"--ci must be a confidence level in (0, 1) such as 0.95, or 0 for none; got {ci}")
    if pseudo_count is not None and not discrete:
        raise CommandError("--pseudo-count applies to the plug-in estimator; add --discrete, or drop --pseudo-count")
    unit = "nats" if base is None else ("bits" if base == 2 else f"log base {base:g}")
    level = ci or None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            if discrete:
                categories, counts_p, counts_q = category_counts(xs, ys)
                correction = "miller-madow" if pseudo_count is None else pseudo_count
                result = plugin(counts_p, counts_q, correction=correction, ci=level, base=base)
            else:
                result = knn(xs, ys, k=k, adaptive=adaptive, ci=level, resamples=resamples, seed=seed, base=base)
        except ValueError as error:
            raise CommandError(_in_user_terms(str(error))) from None
    for warning in caught:
        if issubclass(warning.category, DiscreteSampleWarning):
            raise CommandError(
                f"{_in_user_terms(str(warning.message)).split(':')[0]}: X and Y look discrete, and the k-NN estimator "
                "assumes densities; rerun with --discrete for the plug-in estimator on category counts"
            )
        typer.echo(f"kldiv: warning: {_in_user_terms(str(warning.message))}", err=True)
    if as_json:
        payload = {"kl": result.value, "stderr": result.stderr, "bias": result.bias,
                   "ci": list(result.ci) if result.ci else None, "level": level, "n": result.n, "m": int(len(ys)),
                   "estimator": "plugin" if discrete else "knn", "unit": unit}
        if discrete:
            payload.update(categories=int(len(categories)), correction=correction)
        else:
            payload.update(k=k, adaptive=adaptive, resamples=resamples)
        typer.echo(json.dumps(payload))
        return
    typer.echo(f"KL(P‖Q) ≈ {result.value:.6g} {unit}  ± {result.stderr:.2g} (standard error)")
    if result.bias is not None:
        typer.echo(f"estimated bias of that value: {result.bias:+.2g} {unit} (from estimates on disjoint folds)")
    if result.ci is not None and all(math.isfinite(v) for v in result.ci):
        what = "bias-corrected, with the correction's noise" if result.bias is not None else "normal"
        typer.echo(f"{ci:.0%} interval for KL(P‖Q): [{result.ci[0]:.6g}, {result.ci[1]:.6g}] ({what})")
    if result.bias is not None and abs(result.bias) > 2 * result.stderr:
        typer.echo(
            f"note: the bias is {abs(result.bias) / result.stderr:.0f} standard errors: at n={result.n} in "
            f"{xs.shape[1] if xs.ndim == 2 else 1}-D the k-NN estimate has not converged; trust the interval "
            "(--ci) more than the value"
        )
    if discrete:
        corrected = "Miller–Madow corrected" if pseudo_count is None else f"pseudo-count {pseudo_count:g}"
        typer.echo(f"plug-in estimator ({corrected}), {len(categories)} categories, n={result.n} samples of P, "
                   f"m={len(ys)} samples of Q")
    else:
        method = f"adaptive k-NN (base k={k})" if adaptive else f"k-NN (k={k})"
        typer.echo(f"{method}, n={result.n} samples of P, m={len(ys)} samples of Q")


def register(app: typer.Typer) -> None:
    """Add the ``estimate`` command to the ``kldiv`` app."""
    app.command("estimate")(estimate)
