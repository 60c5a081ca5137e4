"""``kldiv compute P Q``: every measure between two distributions, both directions, with infinities explained."""

from __future__ import annotations

import json
import math
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import kldiv

from ._errors import CommandError
from ._io import load_array

# name -> (function, label, takes base, is directed)
MEASURES = {
    "kl": (kldiv.kl, "KL", True, True),
    "cross_entropy": (kldiv.cross_entropy, "cross-entropy H", True, True),
    "js": (kldiv.js, "Jensen-Shannon", True, False),
    "skew_kl": (kldiv.skew_kl, "skew KL (α=0.1)", True, True),
    "renyi": (lambda p, q, **k: kldiv.renyi(p, q, alpha=2.0, **k), "Rényi (α=2)", True, True),
    "tvd": (kldiv.tvd, "total variation", False, False),
    "hellinger": (kldiv.hellinger, "Hellinger", False, False),
}


def _fmt(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.6g}"


def explain_infinities(p: np.ndarray, q: np.ndarray, *, from_logits: bool, axis: int) -> list[str]:
    """Sentences saying why KL(P‖Q) or KL(Q‖P) is infinite: the first outcome one side gives 0 and the other not."""
    lines = []
    p, q = np.broadcast_arrays(np.moveaxis(p, axis, -1), np.moveaxis(q, axis, -1))
    zero_p = np.isneginf(p) if from_logits else p == 0
    zero_q = np.isneginf(q) if from_logits else q == 0
    shown = {}
    for a, za, zb, na, nb in ((p, zero_p, zero_q, "P", "Q"), (q, zero_q, zero_p, "Q", "P")):
        missing = ~za & zb
        if not missing.any():
            continue
        where = np.argwhere(missing)[0]
        batch, index = tuple(int(i) for i in where[:-1]), int(where[-1])
        if from_logits:
            size = f"the finite logit {a[tuple(where)]:.6g}"
        else:
            size = f"{a[tuple(where)]:.6g}"
        at = f" in distribution {batch}" if batch else ""
        shown[na] = (
            f"{nb} gives 0 to index {index}{at} where {na} gives {size}, so KL({na}‖{nb}) = ∞"
            f" (and cross-entropy H({na},{nb}) = ∞)"
        )
    lines.extend(shown.values())
    return lines


def compute(
    p: Annotated[str, typer.Argument(help="P: inline numbers (0.1,0.9; ';' between rows) or a .npy/.csv/.txt/.json file")],
    q: Annotated[str, typer.Argument(help="Q: same forms as P")],
    from_logits: Annotated[bool, typer.Option("--from-logits", help="P and Q are logits / log-probabilities")] = False,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="divide P and Q by their sums along --axis first (counts or weights)")
    ] = False,
    base: Annotated[float | None, typer.Option(help="units: 2 for bits; default nats")] = None,
    axis: Annotated[int, typer.Option(help="axis holding each distribution")] = -1,
    measure: Annotated[
        list[str] | None, typer.Option("--measure", "-m", help=f"measures to show (repeatable): {', '.join(MEASURES)}")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Every measure between P and Q in both directions, with infinities explained."""
    names = measure or list(MEASURES)
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise CommandError(f"unknown measure {unknown[0]!r}; choose from {', '.join(MEASURES)}")
    if normalize and from_logits:
        raise CommandError("--normalize divides weights by their sum; logits (--from-logits) need no normalising")
    a, b = load_array(p, "P"), load_array(q, "Q")
    if normalize:
        a, b = kldiv.normalize(a, axis=axis), kldiv.normalize(b, axis=axis)
    rows = []
    for name in names:
        function, label, takes_base, directed = MEASURES[name]
        options = {"from_logits": from_logits, "axis": axis} | ({"base": base} if takes_base else {})
        forward = np.asarray(function(a, b, **options), dtype=np.float64)
        backward = np.asarray(function(b, a, **options), dtype=np.float64)
        rows.append((name, label, directed, forward, backward))
    entropies = [np.asarray(kldiv.entropy(x, from_logits=from_logits, axis=axis, base=base)) for x in (a, b)]
    notes = explain_infinities(a, b, from_logits=from_logits, axis=axis)
    unit = "nats" if base is None else ("bits" if base == 2 else f"log base {base:g}")
    if as_json:
        payload = {
            "units": unit,
            "entropy": {"P": entropies[0].tolist(), "Q": entropies[1].tolist()},
            "measures": {n: {"P||Q": _json(f), "Q||P": _json(r)} for n, _, _, f, r in rows},
            "notes": notes,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    console = Console()
    table = Table(title=f"P vs Q ({unit}; TVD and Hellinger are unitless)")
    table.add_column("measure")
    table.add_column("P‖Q" if a.ndim == 1 and b.ndim == 1 else "P‖Q (per distribution)", justify="right")
    table.add_column("Q‖P", justify="right")
    for _, label, directed, forward, backward in rows:
        table.add_row(label, _cell(forward), _cell(backward) if directed else "(symmetric)")
    table.add_row("entropy H(P), H(Q)", _cell(entropies[0]), _cell(entropies[1]))
    console.print(table)
    for note in notes:
        console.print(f"[yellow]•[/] {note}")


def _json(values: np.ndarray):
    as_list = values.tolist()
    fix = lambda v: "inf" if isinstance(v, float) and math.isinf(v) else v  # noqa: E731 - JSON has no inf
    return [fix(v) for v in as_list] if isinstance(as_list, list) else fix(as_list)


def _cell(values: np.ndarray) -> str:
    flat = values.reshape(-1)
    if flat.size == 1:
        return _fmt(float(flat[0]))
    if flat.size <= 6:
        return ", ".join(_fmt(float(v)) for v in flat)
    return f"mean {_fmt(float(np.mean(flat)))} (min {_fmt(float(flat.min()))}, max {_fmt(float(flat.max()))}); --json for all"


def register(app: typer.Typer) -> None:
    # Unknown "options" such as -0.5,1.5 are negative numbers, not typos: let them through as arguments.
    app.command("compute", context_settings={"ignore_unknown_options": True})(compute)
