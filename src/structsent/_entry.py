"""The `structsent` command's entry point (``python -m structsent`` and the console script).

The command line's imports take a few tenths of a second (more on a loaded host); a Ctrl-C or a
SIGTERM then ended the command with a KeyboardInterrupt traceback or a death by the signal.
Here they end it as they do later, in one line, with 130 or 143. (What Python and the package
import before this module runs, about 0.2 s, is beyond any handler.)
"""

from __future__ import annotations

import signal
import sys
import threading

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class _TerminatedWhileStarting(KeyboardInterrupt):
    pass


def _raise_terminated(signum, frame) -> None:
    raise _TerminatedWhileStarting


def main() -> int:
    # SIGTERM as the command sees it later; left alone where it is ignored or not the default
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        from .cli import main as run_command
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, _TerminatedWhileStarting)
        print("structsent: terminated" if terminated else "structsent: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return run_command()
