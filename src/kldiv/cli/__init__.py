"""The ``kldiv`` command: thin commands over the library, one module per command group.

Every error a user can cause ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from ._errors import CommandError

# Typer vendors its own click; its usage errors derive from the base class of typer.BadParameter.
_USAGE_ERROR = typer.BadParameter.__mro__[1]

app = typer.Typer(
    name="kldiv",
    help="KL divergence and its relatives: exact values, gradients, closed forms and estimates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """KL divergence and its relatives: exact values, gradients, closed forms and estimates."""


_GROUPS = ("compute", "demo", "estimate", "train", "distill", "compare")


def _register() -> None:
    import importlib

    for name in _GROUPS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name == f"{__name__}.{name}":
                continue  # that command group is not built yet
            raise
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kldiv`` script."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as done:  # --help, or a command that ended early on purpose
        raise SystemExit(done.exit_code) from None
    except _USAGE_ERROR as error:
        command = error.ctx.command_path if error.ctx else "kldiv"
        print(f"kldiv: error: {error.format_message()} (see '{command} --help')", file=sys.stderr)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, typer.Abort):
        print("kldiv: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (CommandError, ValueError, TypeError, OSError, NotImplementedError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"kldiv: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
