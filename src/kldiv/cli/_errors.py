"""The one exception type commands raise for a user's mistake (printed as one line, exit status 2)."""


class CommandError(Exception):
    pass
