"""``kldiv compare REF OTHER``: llama.cpp's KL-divergence report for two sets of stored logits."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer

from ._errors import CommandError


def _fmt(value: float | None, percent: bool = False, digits: int = 6) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    return f"{100 * value:.{max(digits - 3, 3)}f} %" if percent else f"{value:.{digits}f}"


def _pm(mean: float | None, se: float | None, percent: bool = False) -> str:
    return f"{_fmt(mean, percent)} ± {_fmt(se, percent)}"


def _percentile_name(q: float) -> str:
    return {100.0: "Maximum", 50.0: "Median", 0.0: "Minimum"}.get(q, f"{q:.1f}%")


def report_rows(result: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """The report as (section, [(statistic, value)]) in llama.cpp's order."""
    sections = []
    if result.ppl_reference is not None:
        sections.append(("Perplexity statistics", [
            ("Mean PPL(other)", _pm(result.ppl_other, result.ppl_other_se)),
            ("Mean PPL(reference)", _pm(result.ppl_reference, result.ppl_reference_se)),
            ("Cor(ln PPL(other), ln PPL(reference))", _fmt(result.ln_ppl_correlation, percent=True)),
            ("Mean ln(PPL(other)/PPL(reference))", _pm(result.ln_ppl_ratio, result.ln_ppl_ratio_se)),
            ("Mean PPL(other)/PPL(reference)", _pm(result.ppl_ratio, result.ppl_ratio_se)),
            ("Mean PPL(other)-PPL(reference)", _pm(result.ppl_difference, result.ppl_difference_se)),
        ]))
    kld = [("Mean KLD", _pm(result.kld_mean, result.kld_se))]
    kld += [(f"{_percentile_name(q)} KLD", _fmt(v)) for q, v in result.kld_percentiles.items()]
    kld += [("Mean JS", _pm(result.js_mean, result.js_se)), ("Mean TVD", _pm(result.tvd_mean, result.tvd_se))]
    sections.append((f"KL divergence statistics, {result.direction}, nats", kld))
    tokens = []
    if result.delta_p_mean is not None:
        tokens.append(("Mean Δp", _pm(result.delta_p_mean, result.delta_p_se, percent=True)))
        tokens += [(f"{_percentile_name(q)} Δp", _fmt(v, percent=True)) for q, v in result.delta_p_percentiles.items()]
        tokens.append(("RMS Δp", _pm(result.rms_delta_p, result.rms_delta_p_se, percent=True)))
    tokens.append(("Same top p", _pm(result.same_top_p, result.same_top_p_se, percent=True)))
    tokens += [(f"Top-{k} overlap", _fmt(v, percent=True)) for k, v in result.top_k_overlap.items()]
    sections.append(("Token probability statistics", tokens))
    about = [("Tokens", str(result.n_tokens)),
             ("Percentiles", "exact" if result.percentile_error == 0 else
              f"sketch, relative error ≤ {result.percentile_error:g}")]
    if result.reference_format is not None:
        error, log_error = result.reference_self_kld, result.reference_log_prob_error
        about.append(("Reference format", result.reference_format + (
            "" if error is None else f" (measured error: mean KL(exact ‖ stored) = {max(error, 0.0):.3g} nats"
            + ("" if log_error is None else f", log-probabilities off by {max(log_error, 0.0):.3g} nats on average")
            + ")")))
    for note in result.notes:
        name, _, text = note.partition(": ") if note.startswith("llama.cpp semantics") else ("Note", "", note)
        about.append((name, text))
    sections.append(("About", about))
    return sections


def _weighted_quantile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(counts[order])
    return float(values[order][min(np.searchsorted(cumulative, q * cumulative[-1]), len(values) - 1)])


def _plot(path: Path, comparison: Any, result: Any) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogLocator, NullFormatter
    except ImportError:
        raise CommandError("--plot needs matplotlib; install it with: pip install 'kldiv[apps]'") from None
    panels = 3 if result.delta_p_mean is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    values, counts = comparison.distribution("kld")
    positive = values > 0
    zeros = int(counts[~positive].sum())
    if positive.any():
        lo, hi = values[positive].min(), values[positive].max()
        if hi > 10 * lo:  # a log axis, labelled at whole decades only (minor labels overlap on short spans)
            axes[0].hist(values[positive], bins=np.geomspace(lo, hi, 60), weights=counts[positive])
            axes[0].set_xscale("log")
            axes[0].xaxis.set_major_locator(LogLocator(base=10, numticks=8))
            axes[0].xaxis.set_minor_formatter(NullFormatter())
        else:
            axes[0].hist(values[positive], bins=40, weights=counts[positive])
            axes[0].ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    axes[0].set(title=f"per-token {result.direction}" + (f" ({zeros} at 0)" if zeros else ""), xlabel="KLD (nats)",
                ylabel="tokens")
    curve = result.kld_by_position
    if curve.size:
        axes[1].plot(np.arange(curve.size), curve, marker="." if curve.size < 50 else None)
        axes[1].set(title="mean KLD by position", xlabel="position in the sequence", ylabel="mean KLD (nats)")
    else:
        axes[1].text(0.5, 0.5, "no positions:\n(tokens, vocab) input has none;\nsave (batch, sequence, vocab) "
                     "logits for this curve", ha="center", va="center", transform=axes[1].transAxes)
        axes[1].set(title="mean KLD by position", xticks=[], yticks=[])
    if panels == 3:
        values, counts = comparison.distribution("delta_p")
        # Δp is heavy-tailed (most tokens near 0): bins over the central 98 %, the rest gathered in the end bins
        low, high = _weighted_quantile(values, counts, 0.01), _weighted_quantile(values, counts, 0.99)
        if high <= low:
            low, high = values.min() - 1e-12, values.max() + 1e-12
        clipped = np.clip(values, low, high)
        axes[2].hist(100 * clipped, bins=50, weights=counts, range=(100 * low, 100 * high))
        axes[2].set_yscale("log")
        outside = int(counts[(values < low) | (values > high)].sum())
        axes[2].set(title="Δp = p_other(label) - p_reference(label)", xlabel="Δp (percentage points)",
                    ylabel="tokens (log scale)")
        if outside:
            axes[2].annotate(f"{outside} tokens beyond the range sit in the end bins", (0.5, 0.97),
                             xycoords="axes fraction", ha="center", va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(
    reference: Path = typer.Argument(..., help="Reference logits: a .safetensors/.npy file, a llama.cpp "
                                               "--kl-divergence-base file, or a directory of them."),
    other: Path = typer.Argument(..., help="The other model's logits for the same tokens (same forms)."),
    labels: Path | None = typer.Option(None, "--labels", help=".npy file of integer labels, one per token "
                                                              "(default: labels stored with REF, if any)."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON instead of a table."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG: KLD histogram, KLD by position, Δp."),
    reverse: bool = typer.Option(False, "--reverse", help="Report KL(OTHER ‖ REF) instead of KL(REF ‖ OTHER)."),
    vocab_size: int | None = typer.Option(None, "--vocab-size", min=1,
                                          help="Compare only the first N logits of both (for padded vocabularies)."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="Split the tokens over N processes (torch.distributed, gloo on 127.0.0.1) "
                                     "and merge; the report equals the one-process report."),
) -> None:
    """How far OTHER's next-token distributions are from REF's: llama.cpp's KL-divergence report."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..compare import Comparison, compare_files
    from ._io import load_array

    label_array = None
    if labels is not None:
        label_array = load_array(str(labels), "--labels")
        if not np.all(np.isfinite(label_array)) or not np.all(label_array == np.round(label_array)):
            raise CommandError(f"--labels: {labels} must hold integer token ids")
        label_array = label_array.astype(np.int64)
    comparison = Comparison(reverse=reverse, vocab_size=vocab_size)
    progress = Progress(TextColumn("comparing"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                        TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True,
                        disable=not sys.stderr.isatty())
    with progress:
        task = progress.add_task("compare", total=None)
        try:
            result = compare_files(reference, other, labels=label_array, reverse=reverse, vocab_size=vocab_size,
                                   comparison=comparison, workers=workers,
                                   progress=lambda done, total: progress.update(task, completed=done, total=total))
        except ImportError as error:  # --workers without PyTorch
            raise CommandError(f"--workers: {error}") from None
    if plot is not None:
        _plot(plot, comparison, result)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    from rich.table import Table

    console = Console()
    for title, rows in report_rows(result):
        console.print(f"====== {title} ======", style="bold", highlight=False)
        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
    if plot is not None:
        console.print(f"plot written to {plot}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
