"""The one exception type the applications and commands raise for a user's mistake: the command line prints it
as one line and exits with status 2."""


class CommandError(Exception):
    """A user's mistake (a bad option, a missing or damaged file), worded for the person at the terminal."""
