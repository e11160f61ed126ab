"""The one exception type for user mistakes (bad preset, bad path, bad size).

The CLI turns a ``UserError`` into one clear line on stderr and exit code 2; any
other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user asked for; the message says what to do instead."""
