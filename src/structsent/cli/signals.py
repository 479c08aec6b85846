"""SIGTERM (what `timeout`, `docker stop` and service managers send) for commands without a
handler of their own: raised where the command is, as Ctrl-C is, so that its cleanups run (an
export's staging directory is removed), and the process exits 143 (128 + SIGTERM).

`label` (stops after the chunk in hand) and `serve` (a graceful shutdown) handle it themselves.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from .._exit import Terminated, raise_terminated

__all__ = ["Terminated", "sigterm_as_interrupt"]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises Terminated in the main thread (elsewhere, or where the process was
    started ignoring it, as a launcher may: left as it is)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
