"""Log rate limiting: a flood of one message (a refused connection, an accept() failing on a full
file table...) must not fill the disk or drown the server's other messages. And no traceback for
a forced quit, which the user asked for.

>>> import logging
>>> handler = logging.StreamHandler()
>>> handler.addFilter(RepeatedMessageFilter(per_second=5))
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

MESSAGES_PER_SECOND = 5
SERVER_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")  # "": the root logger (asyncio...)
_DECIDED = "_structsent_rate_limited"  # the verdict, kept on the record for a second handler


class RepeatedMessageFilter(logging.Filter):
    """Lets through at most ``per_second`` records of one kind per one-second window, a kind being
    (logger, level, message template). The first record of a kind let through after some were
    suppressed says how many were."""

    MAX_KINDS = 1024  # windows kept at most: messages logged pre-formatted each make a kind

    def __init__(self, per_second: int = MESSAGES_PER_SECOND, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple, list] = {}  # kind -> [window start, passed, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, _DECIDED, None)
        if verdict is None:
            verdict = self._decide(record)
            setattr(record, _DECIDED, verdict)
        return verdict

    def _decide(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            suppressed = 0
            if window is None or now - window[0] >= 1.0:
                suppressed = window[2] if window else 0
                if window is None and len(self._windows) >= self.MAX_KINDS:
                    self._forget_before(now - 1.0)
                window = self._windows[kind] = [now, 0, 0]
            if window[1] >= self.per_second:
                window[2] += 1
                return False
            window[1] += 1
        if suppressed:
            record.msg = f"{record.getMessage()} [{suppressed} more like this suppressed before]"
            record.args = ()
        return True

    def _forget_before(self, moment: float) -> None:
        for kind in [k for k, w in self._windows.items() if w[0] < moment]:
            del self._windows[kind]


class ForcedQuitTracebackFilter(logging.Filter):
    """Drops the traceback uvicorn logs as an error when a forced quit (a second Ctrl-C during the
    graceful shutdown) cancels the ASGI lifespan: Starlette reports the cancellation as a failed
    shutdown whose message is the CancelledError's traceback. The quit was asked for, and the
    command says so in one line ("structsent: interrupted")."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Traceback") and text.rstrip().endswith("CancelledError"))


class GracefulTimeoutAsWarning(logging.Filter):
    """uvicorn logs the requests a ``--graceful-timeout`` cuts short as an ERROR ("Cancel N running
    task(s), timeout graceful shutdown exceeded"): the operator asked for that timeout, and each
    request cut gets its 503 (docs/SERVER.md). Logged as a WARNING, so that a stop on time does
    not read as a failure where errors raise alerts."""

    MESSAGE = "Cancel %s running task(s), timeout graceful shutdown exceeded"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.msg == self.MESSAGE:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def limit_server_logs(per_second: int = MESSAGES_PER_SECOND) -> RepeatedMessageFilter:
    """Put one RepeatedMessageFilter on every handler of the server's loggers, and a
    ForcedQuitTracebackFilter and a GracefulTimeoutAsWarning on uvicorn's error logger (after
    uvicorn has configured logging); returns the first."""
    error_logger = logging.getLogger("uvicorn.error")
    for kind in (ForcedQuitTracebackFilter, GracefulTimeoutAsWarning):
        if not any(isinstance(f, kind) for f in error_logger.filters):
            error_logger.addFilter(kind())
    shared = RepeatedMessageFilter(per_second)
    for name in SERVER_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RepeatedMessageFilter) for f in handler.filters):
                handler.addFilter(shared)
    return shared
