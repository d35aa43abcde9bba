"""The one error type commands raise: a message for the user and an exit code."""

from __future__ import annotations

USAGE = 2      # the command line itself is wrong (bad value, missing option)
FAILURE = 1    # the command was fine but could not be carried out


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
