"""The one exception type commands raise for a user's mistake (printed as one line, exit status 2); defined with
the applications, which raise it too, so that they never import the command line. Also the translation of the
library's messages (written for Python callers) into the command line's words."""

from __future__ import annotations

import re

from ..apps.errors import CommandError

# The library speaks of keyword arguments and functions; the command line has options for the same things.
_WORDS = (
    (re.compile(r"from_logits=True"), "--from-logits"),
    (re.compile(r"normalise it with kldiv\.normalize\(\w+\)"), "pass --normalize to divide it by its sum"),
    (re.compile(r"base must be"), "--base must be"),
    (re.compile(r"\baxis (-?\d+) is out of range"), r"--axis \1 is out of range"),
    # the arrays are P and Q (X and Y for samples) on the command line
    (re.compile(r"\b([pqxy])(?=\[| does | has | sums | is | must | gives | and |,)"), lambda m: m[1].upper()),
)


def in_cli_words(message: str) -> str:
    """``message`` with the library's argument names replaced by the command line's options and names."""
    for pattern, replacement in _WORDS:
        message = pattern.sub(replacement, message)
    return message


__all__ = ["CommandError", "in_cli_words"]
