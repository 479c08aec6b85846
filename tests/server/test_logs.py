"""The log rate limit: a flood of one message becomes a few lines and a count."""

from __future__ import annotations

import logging

from structsent.server.logs import RepeatedMessageFilter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args, name: str = "uvicorn.error", level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_flood_of_one_message_passes_per_second_and_is_counted():
    clock = Clock()
    limit = RepeatedMessageFilter(per_second=3, clock=clock)
    passed = [limit.filter(record("refused %s", f"client {i}")) for i in range(1000)]
    assert passed == [True] * 3 + [False] * 997  # the arguments differ, the kind is the same
    clock.now += 1.0
    next_one = record("refused %s", "client 1000")
    assert limit.filter(next_one)
    assert next_one.getMessage() == "refused client 1000 [997 more like this suppressed before]"


def test_other_kinds_are_counted_apart():
    clock = Clock()
    limit = RepeatedMessageFilter(per_second=1, clock=clock)
    assert limit.filter(record("refused %s", "a"))
    assert not limit.filter(record("refused %s", "b"))
    assert limit.filter(record("accept failed"))  # another message
    assert limit.filter(record("refused %s", "c", name="structsent.server"))  # another logger
    assert limit.filter(record("refused %s", "d", level=logging.ERROR))  # another level


def test_a_record_seen_by_two_handlers_gets_one_verdict():
    clock = Clock()
    limit = RepeatedMessageFilter(per_second=1, clock=clock)
    first, second = record("x"), record("x")
    assert limit.filter(first) and limit.filter(first)  # the second handler: same verdict, no double count
    assert not limit.filter(second) and not limit.filter(second)


def test_the_filter_keeps_a_bounded_memory_of_kinds():
    clock = Clock()
    limit = RepeatedMessageFilter(per_second=1, clock=clock)
    for i in range(5000):
        clock.now += 0.01
        limit.filter(record(f"pre-formatted message {i}"))
    assert len(limit._windows) <= RepeatedMessageFilter.MAX_KINDS + 100


def test_requests_cut_by_the_graceful_timeout_are_a_warning_not_an_error():
    """uvicorn logged them as an ERROR: a stop on time, as the operator asked, read as a failure."""
    from structsent.server.logs import GracefulTimeoutAsWarning

    cut = record("Cancel %s running task(s), timeout graceful shutdown exceeded", 3, level=logging.ERROR)
    other = record("Exception in ASGI application", level=logging.ERROR)
    assert GracefulTimeoutAsWarning().filter(cut) and GracefulTimeoutAsWarning().filter(other)
    assert (cut.levelno, cut.levelname, cut.getMessage()) == (
        logging.WARNING, "WARNING", "Cancel 3 running task(s), timeout graceful shutdown exceeded")
    assert (other.levelno, other.levelname) == (logging.ERROR, "ERROR")
