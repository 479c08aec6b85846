"""Overlapped stages for large inputs: a producer thread ahead of the consumer, a writer thread behind it.

Queues are bounded (memory stays bounded, a slow stage holds back the others). An exception in
any stage stops the others and is re-raised in the caller with its cause; nothing hangs. This
module holds no model logic.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import gc
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()
_NOTHING = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless ``stop`` is set; returns False when the consumer has gone away."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class Prefetch(Generic[T]):
    """Iterate ``source`` in a background thread, up to ``depth`` items ahead of the consumer.

    >>> with Prefetch(iter(range(3)), depth=2) as items:
    ...     list(items)
    [0, 1, 2]
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "structsent-prefetch",
                 give_up: Callable[[], bool] | None = None) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        # True: the consumer stops waiting for the next item, which ends the iteration (a source blocked
        # on a pipe that stays open would otherwise hold it until the pipe's next line); asked every 0.1 s.
        self._give_up = give_up
        self.gave_up = False
        self._peeked = _NOTHING  # an item ``at_end`` took from the queue, handed out next
        self._thread = threading.Thread(target=self._produce, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _produce(self, source: Iterable[T]) -> None:
        try:
            for item in source:
                if not _put(self._queue, item, self._stop):
                    return
            _put(self._queue, _DONE, self._stop)
        except BaseException as err:  # handed to the consumer, which re-raises it
            _put(self._queue, _Failure(err), self._stop)
        finally:  # a generator source stopped early runs its cleanup here, not whenever it is collected
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._next()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def at_end(self) -> bool:
        """Whether the source has ended with no item left to take, asked without waiting: a consumer
        that stops early learns whether it had taken everything anyway (False while the producer is
        still reading, or when an item or a failure is next).

        >>> items = Prefetch(iter([1]))
        >>> next(iter(items)), items.at_end() or items._thread.join() or items.at_end()
        (1, True)
        """
        if self._peeked is _NOTHING:
            try:
                self._peeked = self._queue.get_nowait()
            except queue.Empty:
                return False
        return self._peeked is _DONE

    def _next(self):
        if self._peeked is not _NOTHING:
            item, self._peeked = self._peeked, _NOTHING
            return item
        if self._give_up is None:
            return self._queue.get()
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._give_up():
                    self.gave_up = True
                    return _DONE

    def close(self) -> bool:
        """Stop the producer; whether it has ended (False: it is still inside ``source``, e.g. blocked
        on a pipe's next line, and what it reads from must not be closed under it)."""
        self._stop.set()
        self._thread.join(timeout=0.2 if self.gave_up else 2)  # given up: it waits on input, not on us
        return not self._thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the producer to end (after ``close``, once what it
        waited on is gone); whether it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Iterator[T]:
        return iter(self)

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundWorker(Generic[T]):
    """Apply ``work`` to submitted items, in order, in one background thread.

    A failure is re-raised by the next ``submit`` or by ``close``; items after it are skipped.
    """

    def __init__(self, work: Callable[[T], None], depth: int = 2, name: str = "structsent-writer") -> None:
        self._work = work
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._work(item)
                except BaseException as err:
                    self._error = err
                    self._stop.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: T) -> None:
        self._raise_if_failed()
        if not _put(self._queue, item, self._stop):
            self._raise_if_failed()

    def close(self) -> None:
        """Wait for every submitted item to be done; re-raise a failure."""
        self._queue.put(_DONE)
        self._thread.join()
        self._raise_if_failed()


class Lanes:
    """Threads that run model calls side by side, taking their callers' tasks in turn.

    Each calling thread has a queue of its own, and a free lane takes the next task of the next
    caller in a round, so that one caller's hundred tasks do not hold back another caller's one
    behind them. A task's future resolves as an Executor's would; ``close`` lets the lanes end
    once their queues are empty.

    >>> lanes = Lanes(2)
    >>> [f.result() for f in [lanes.submit(pow, 2, n) for n in range(4)]]
    [1, 2, 4, 8]
    >>> lanes.close()
    """

    def __init__(self, count: int, name: str = "structsent-lane") -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError("count must be an int >= 1")
        self.count = count
        self._queues: dict[int, collections.deque] = {}  # caller's thread id -> its tasks, in order
        self._callers: collections.deque[int] = collections.deque()  # the round: callers with tasks
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True) for n in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        caller = threading.get_ident()
        with self._cond:
            if self._closed:
                raise RuntimeError("the lanes are closed")
            tasks = self._queues.setdefault(caller, collections.deque())
            if not tasks:
                self._callers.append(caller)
            tasks.append((future, fn, args))
            self._cond.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """No more tasks; wait (each lane up to ``timeout``) for the queued ones to run. From a
        task of its own, the lane running it is not waited for (it ends after the task)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _next_task(self):
        """The next caller's oldest task (that caller goes to the end of the round); None once closed and empty."""
        with self._cond:
            while not self._callers:
                if self._closed:
                    return None
                self._cond.wait()
            caller = self._callers.popleft()
            tasks = self._queues[caller]
            task = tasks.popleft()
            if tasks:
                self._callers.append(caller)
            else:
                del self._queues[caller]
            return task

    def _serve(self) -> None:
        while (task := self._next_task()) is not None:
            future, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # the caller's to handle, as an Executor gives it
                future.set_exception(err)


def when_parent_ends(action: Callable[[], None], name: str = "structsent-parent-watch") -> bool:
    """Call ``action`` in a daemon thread once the process that started this one (with
    multiprocessing: spawned tokenizer processes, uvicorn's server workers) has ended, however it
    ended (kill -9 included): the kernel does not end a dead parent's children. Returns whether
    there is such a parent to watch."""
    import multiprocessing
    import multiprocessing.connection

    parent = multiprocessing.parent_process()
    if parent is None:
        return False

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        action()

    threading.Thread(target=watch, name=name, daemon=True).start()
    return True


def freeze_startup_objects() -> int:
    """Take every object alive now out of the cyclic garbage collector's walks (``gc.freeze``).

    For a process that loads a model once and then loops for long (a label job, a server):
    the imported modules, the model and the tokenizer's tables are never garbage, yet each
    full collection walks all of them again. Measured with an instant stand-in model, those
    walks took 12-17% of a label job's wall time, and ~29% of a server's event-loop time.
    Frozen objects are still freed by reference counting; only a cycle among them would no
    longer be reclaimed. Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


# -- the GIL's hand-over when the model runs on a GPU --------------------------------------------
# The thread that launches the model's kernels lets the GIL go at every wait on the device, and
# must then get it back from a feed thread (reading, tokenizing, writing) that runs pure Python:
# CPython makes the holder hand it over only after the switch interval, 5 ms by default, against
# ~30 ms for a batch of the base model on a recent GPU, so the device idles while it waits.
# Measured (H200, 100,000-row CSV job against the model alone on the same texts, one run): 5 ms
# 0.855 of the model's rate, 0.5 ms 0.886, 0.1 ms 0.956.
DEVICE_SWITCH_INTERVAL = 0.0001  # seconds
_handoff_lock = threading.Lock()
_handoff_users = 0
_handoff_saved = 0.0


def quick_gil_handoff_begin(device: str) -> bool:
    """On a GPU (``device`` cuda...), lower the interpreter's switch interval to at most
    DEVICE_SWITCH_INTERVAL until the matching ``quick_gil_handoff_end``; several users may
    overlap (the first saves the interval, the last restores it). Returns whether it did."""
    global _handoff_users, _handoff_saved
    if not str(device).startswith("cuda"):
        return False
    with _handoff_lock:
        if _handoff_users == 0:
            _handoff_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_handoff_saved, DEVICE_SWITCH_INTERVAL))
        _handoff_users += 1
    return True


def quick_gil_handoff_end() -> None:
    global _handoff_users
    with _handoff_lock:
        _handoff_users -= 1
        if _handoff_users == 0:
            sys.setswitchinterval(_handoff_saved)


@contextlib.contextmanager
def quick_gil_handoff(device: str) -> Iterator[None]:
    """``quick_gil_handoff_begin`` for the duration of a ``with`` block."""
    began = quick_gil_handoff_begin(device)
    try:
        yield
    finally:
        if began:
            quick_gil_handoff_end()
