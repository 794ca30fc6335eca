"""What every command-line entry point shares: the one-line error and exit status 2."""

from __future__ import annotations

import sys
from typing import NoReturn

# User-caused conditions (a bad config, missing or unreadable input, a
# checkpoint of another run) are ValueErrors or OSErrors with a message a
# person can act on; bugs keep their traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def fail(message: str) -> NoReturn:
    """Print `error: message` to stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def error_text(error: BaseException) -> str:
    """`Type: message` for an exception, as `fail` shows it."""
    return f"{type(error).__name__}: {error}"
