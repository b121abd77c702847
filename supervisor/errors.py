"""The one exception type that the CLI turns into a one-line message and an exit code."""

from __future__ import annotations


class CliError(Exception):
    """A failure to report on one line of stderr; ``code`` is the exit status (1 or 2)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
