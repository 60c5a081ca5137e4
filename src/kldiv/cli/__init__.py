"""The ``kldiv`` command: thin commands over the library, one module per command group.

Every error a user can cause ends as one line on stderr and exit status 2, never a traceback; Ctrl-C is exit
status 130; ``kldiv`` or ``kldiv train`` alone prints the help (exit 0).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._errors import CommandError, in_cli_words

# Typer vendors its own click; its usage errors derive from the base class of typer.BadParameter.
_USAGE_ERROR = typer.BadParameter.__mro__[1]

app = typer.Typer(
    name="kldiv",
    help="KL divergence and its relatives: exact values, gradients, closed forms and estimates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: Rich markup would swallow text in brackets (such as "[default: ...]") and show flags as <bool>.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"kldiv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Show kldiv's version and exit.")
    ] = False,
) -> None:
    """KL divergence and its relatives: exact values, gradients, closed forms and estimates."""


_GROUPS = ("compute", "demo", "estimate", "train", "distill", "compare")


_registered: list[str] = []


def _register() -> None:
    """Add the command groups once (``main`` may run many times in one process, as in the tests)."""
    import importlib

    if _registered:
        return
    _registered.append("done")
    for name in _GROUPS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name == f"{__name__}.{name}":
                continue  # that command group is not built yet
            raise
        module.register(app)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kldiv`` script."""
    _register()
    try:
        app(args=argv, prog_name="kldiv", standalone_mode=False)
    except typer.Exit as done:  # --help, --version, or a command that ended early on purpose
        raise SystemExit(done.exit_code) from None
    except _USAGE_ERROR as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # `kldiv` or `kldiv train` alone: the help, not an error
            help_text = error.format_message()
            if help_text:
                typer.echo(help_text)
            raise SystemExit(0) from None
        command = error.ctx.command_path if error.ctx else "kldiv"
        message = error.format_message().strip().splitlines()
        print(f"kldiv: error: {message[0] if message else 'bad usage'} (see '{command} --help')", file=sys.stderr)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, typer.Abort) as error:
        if isinstance(error.__cause__ or error.__context__, EOFError):  # click turns EOFError into Abort
            print("kldiv: error: an input ended unexpectedly (end of file)", file=sys.stderr)
            raise SystemExit(2) from None
        print("kldiv: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except CommandError as error:
        print(f"kldiv: error: {_one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ValueError, TypeError, OSError, NotImplementedError, RecursionError, EOFError) as error:
        print(f"kldiv: error: {in_cli_words(_one_line(error))}", file=sys.stderr)
        raise SystemExit(2) from None
    except MemoryError:
        print("kldiv: error: out of memory; give smaller inputs or sizes", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as error:  # noqa: BLE001 - one line even for a bug; exit 1 says it is not the user's mistake
        if isinstance(error, RuntimeError) and "alloc" in str(error).lower():
            print(f"kldiv: error: out of memory ({_one_line(error)[:120]}); give smaller inputs or sizes", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"kldiv: internal error: {type(error).__name__}: {_one_line(error)[:300]} (a bug in kldiv; please "
              "report it with the command that caused it)", file=sys.stderr)
        raise SystemExit(1) from None
