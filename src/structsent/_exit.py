"""The command's exit statuses, one table for the entry point and the command line (the only
places that turn an outcome into a number), and SIGTERM as an exception for both."""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILURE = 1  # anything not below: a model that failed, an output that could not be written
EXIT_BAD_INPUT = 2  # a bad input, option or configuration; an output another job holds
EXIT_BAD_MODEL = 3  # no such model, or files that are not one
EXIT_MISSING_EXTRA = 4  # an optional dependency the command needs is not installed
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

STANDARD_OUTPUT = "standard output"  # the name an error writing it gives (OSError.filename)


class Terminated(KeyboardInterrupt):
    """SIGTERM, as an exception: every ``except KeyboardInterrupt`` cleanup runs for it too."""


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler: Terminated, raised where the main thread is."""
    raise Terminated
