"""The one exception type for mistakes a user can fix.

Launchers catch `UserError`, print its message on one line and exit non-zero
without a traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input (config, data, checkpoint, command line) with a fix in the message."""
