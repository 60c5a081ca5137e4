"""The one exception type commands raise for a user's mistake (printed as one line, exit status 2); defined with
the applications, which raise it too, so that they never import the command line."""

from ..apps.errors import CommandError

__all__ = ["CommandError"]
