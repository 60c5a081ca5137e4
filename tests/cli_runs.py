"""Running the command line in-process for the CLI and run-folder tests: exit status, stdout, stderr."""

from __future__ import annotations


def run(argv, capsys):
    """``kldiv ARGV`` in this process: (exit status, stdout, stderr); status 0 where it returns normally."""
    from kldiv.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
