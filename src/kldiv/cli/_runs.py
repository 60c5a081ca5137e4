"""The options of a training command: what the user typed, and on ``--resume`` the run's saved options for the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def given(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user gave (on the command line or through the environment), not defaults."""
    return {name for name in ctx.params if (source := ctx.get_parameter_source(name)) is not None
            and source.name not in ("DEFAULT", "DEFAULT_MAP")}


def run_options(ctx: typer.Context, fields: tuple[str, ...], out: Path, resume: bool) -> dict[str, Any]:
    """The values of ``fields`` for the run: with ``--resume``, the saved config's value for every option not
    given on the command line (the applications then refuse a given one that differs from the saved one, except
    those a resumed run may change), never the command's default in place of the saved value."""
    from ..apps import runs

    values = {name: str(v) if isinstance(v, Path) else v for name, v in ctx.params.items() if name in fields}
    saved = runs.saved_config(out) if resume else None
    if saved is not None and not (Path(out) / "checkpoint.pt").is_file():
        typer.echo(f"kldiv: note: {str(out)!r} has no checkpoint yet (the run stopped before its first one); starting "
                   "it again from the beginning with its saved options", err=True)
    if saved:
        typed = given(ctx)
        values = {**values, **{k: v for k, v in saved.items() if k in fields and k not in typed}}
    return values
