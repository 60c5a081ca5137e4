"""PNG plots for the run folders (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runs import atomic_write_bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _draw(ax: Any, x: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str,
          references: dict[str, float] | None = None) -> None:
    for label, values in series.items():
        points = [(a, b) for a, b in zip(x, values, strict=False) if b is not None and np.isfinite(b)]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, ms=3, label=label)
    for label, value in (references or {}).items():
        if value is not None and np.isfinite(value):
            ax.axhline(value, color="grey", ls="--", lw=1, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def curves(path: Path, x: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str) -> None:
    """Line plot of several series against ``x`` (missing values skipped)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    _draw(ax, x, series, xlabel=xlabel, ylabel=ylabel, title=title)
    _save(fig, path)


def panels(path: Path, x: Sequence[float], panels: Sequence[dict[str, Any]], *, title: str) -> None:
    """Side-by-side line plots sharing ``x``: each panel a dict with ``series`` (label → values), ``ylabel``,
    ``title`` and optionally ``references`` (label → a horizontal dashed line), ``xlabel`` and ``yscale``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        _draw(ax, x, panel["series"], xlabel=panel.get("xlabel", "step"), ylabel=panel["ylabel"], title=panel["title"],
              references=panel.get("references"))
        if panel.get("yscale") == "log":  # plain numbers on the ticks, not 3×10¹
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def bars(path: Path, values: Sequence[float], *, xlabel: str, ylabel: str, title: str, threshold: float | None = None) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(np.arange(len(values)), values, color="tab:blue")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"{threshold:g}")
        ax.legend()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_xticks(np.arange(len(values)), [str(i + 1) for i in range(len(values))])  # 1-based, as z₁, z₂, …
    _save(fig, path)


def image_grid(path: Path, images: np.ndarray, *, rows: int, title: str) -> None:
    """``images`` of shape (n, h, w), shown in ``rows`` rows, grey scale."""
    plt = _pyplot()
    n = len(images)
    cols = int(np.ceil(n / rows))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray_r", interpolation="nearest")
    fig.suptitle(title)
    _save(fig, path)


def scatter(path: Path, points: np.ndarray, labels: np.ndarray | None, *, title: str, xlabel: str, ylabel: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], color="tab:blue", s=8)
    else:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=8)
        fig.colorbar(sc, ax=ax, label="digit")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    _save(fig, path)
