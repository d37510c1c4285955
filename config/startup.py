"""What every entry point does with a failure it can explain: one line on stderr and a sysexits code.

A configuration mistake or an unreachable service is the user's to fix, so it gets a sentence, not a
traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_USAGE = 64  # sysexits EX_USAGE: bad command line
EXIT_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE: Redis, Discord or the model cannot be reached
EXIT_CONFIG = 78  # sysexits EX_CONFIG: a setting is missing or invalid


class StartupError(Exception):
    """A process cannot start for a reason the user can fix; `str()` is one line saying which and how."""

    def __init__(self, message: str, exit_code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: object, exit_code: int) -> int:
    """Print `message` as one `error:` line on stderr and return `exit_code` for `sys.exit`."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()
    return exit_code
