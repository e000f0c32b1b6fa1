"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class TypicalnetsError(ValueError):
    """Bad input: the message names the problem and the fix, in one line."""


class TypicalnetsWarning(UserWarning):
    """A state that typicalnets works around (e.g. a bad kernel cache: the torch engine is used), in one line that
    names the problem and the fix."""
