"""Dynamic micro-batching: concurrent requests merged into token-budgeted model batches.

Worker threads (``workers``, one by default) call the model. Requests enter a bounded queue as
already-encoded texts, each with its own future. A free worker takes the oldest request, then keeps
taking requests, in arrival order, while the batch's tokens stay within the token budget and its
sequences within the cap, waiting at most ``max_wait_s`` after the oldest request arrived for more
work; one worker gathers at a time, so with two the next batch forms while one computes. The
engine then sorts the merged sequences by length and cuts them into padded-cost batches, so
one long review does not pad a whole batch of short ones. With two workers or more, the
model calls run in ``Lanes`` (one thread per worker, callers served in turn), so that a lone
large request's batches spread over every lane. A request cancelled before its batch starts is
dropped uncomputed, and one cancelled while still queued (or gathered into a batch that waits
``max_wait_s`` for more) stops counting against ``max_queue`` at once; a batch whose every
request was cancelled while it ran stops at its next model call.

No web framework here: the HTTP app and the tests drive it with plain futures.

>>> import structsent
>>> clf = structsent.load("default")                                       # doctest: +SKIP
>>> batcher = MicroBatcher(clf, max_wait_s=0.005, max_queue=1024)         # doctest: +SKIP
>>> batcher.start()                                                        # doctest: +SKIP
>>> batcher.submit(clf.encode(["味道不错"])).result()                       # doctest: +SKIP
[LabelResult(label='正面', ...)]
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import OverloadedError, StructsentError, WorkAbandonedError
from ..pipeline import Lanes
from ..results import LabelResult
from ..tokenize import EncodedText

log = logging.getLogger("structsent.server")


class BatchFailedError(StructsentError):
    """The model raised on a batch; every request of that batch gets this error."""


class WorkerStoppedError(StructsentError):
    """The model worker is not running (stopped, or died on an unexpected error)."""


class QueueFullError(OverloadedError):
    """A request's texts do not fit in the queue (HTTP 429); ``limit`` names the setting."""

    limit = "max_queue"

    def __init__(self, message: str, *, limit_value: int) -> None:
        super().__init__(message)
        self.limit_value = limit_value


@dataclasses.dataclass(frozen=True)
class BatchReport:
    """What one model batch held and cost: for metrics and logs."""

    requests: int
    texts: int
    sequences: int
    model_batches: int
    padded_tokens: int
    seconds: float
    failed: bool


class RequestFuture(concurrent.futures.Future):
    """A request's future. Cancelled before its batch starts, the request is dropped uncomputed;
    once its batch runs it cannot be, but it is marked ``withdrawn`` (its client left): a batch
    whose every request was withdrawn stops at its next model call."""

    withdrawn = False

    def cancel(self) -> bool:
        self.withdrawn = True
        return super().cancel()


@dataclasses.dataclass(eq=False)
class _Pending:
    encoded: Sequence[EncodedText]
    future: RequestFuture
    tokens: int
    sequences: int
    arrived: float

    @classmethod
    def of(cls, encoded: Sequence[EncodedText]) -> "_Pending":
        lengths = [len(s) for e in encoded for s in e.sequences]
        return cls(
            encoded=encoded,
            future=RequestFuture(),
            tokens=sum(lengths),
            sequences=len(lengths),
            arrived=time.monotonic(),
        )


class MicroBatcher:
    """Feeds one classifier from a bounded queue of requests, with ``workers`` model calls at once
    at most (the classifier must allow concurrent calls: the engine does), one future each."""

    def __init__(
        self,
        classifier,
        *,
        max_wait_s: float,
        max_queue: int,
        token_budget: int | None = None,
        max_batch_size: int | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        workers: int = 1,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError("workers must be an int >= 1")
        if not (math.isfinite(max_wait_s) and max_wait_s >= 0):
            raise ValueError("max_wait_s must be finite and >= 0")
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.classifier = classifier
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.token_budget = token_budget or classifier.token_budget
        self.max_batch_size = max_batch_size or classifier.max_batch_size
        self._on_batch = on_batch  # called from the worker threads, as many at once as there are workers
        self.workers = workers
        self._queue: collections.deque[_Pending] = collections.deque()
        self._waiting_texts = 0  # admitted, not yet computing: what max_queue bounds
        self._gathering: list[_Pending] | None = None  # the batch a worker is filling (under _cond)
        self._gathering_turn = threading.Lock()  # held by the one worker that gathers
        self._cond = threading.Condition()
        self._stopping = False
        self._abandoning = False  # stopping, and no one waits for the answers: compute nothing more
        self._threads: list[threading.Thread] = []
        self._lanes: Lanes | None = None  # with two workers or more: the threads their model calls run on
        self.failure: BaseException | None = None

    # -- the caller's side --------------------------------------------------------------------
    @property
    def waiting_texts(self) -> int:
        """Texts admitted and not yet in a running batch (the queue depth)."""
        return self._waiting_texts

    @property
    def alive(self) -> bool:
        """Started, and every worker running (a worker that died stops the others)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads) and self.failure is None

    def has_room(self, texts: int) -> bool:
        return self._waiting_texts + texts <= self.max_queue

    def submit(self, encoded: Sequence[EncodedText]) -> concurrent.futures.Future:
        """Queue one request; its future resolves to its LabelResults in input order.

        Raises QueueFullError (an OverloadedError), without queueing anything, when the request does not fit in
        the queue, and WorkerStoppedError once the batcher stops accepting work.
        """
        pending = _Pending.of(encoded)
        if pending.sequences == 0:  # nothing for the model: every text was flagged
            pending.future.set_running_or_notify_cancel()
            pending.future.set_result(self.classifier.label_encoded(encoded)[0])
            return pending.future
        with self._cond:
            if self._stopping or not self.alive:
                raise WorkerStoppedError("the model worker is not accepting work") from self.failure
            if not self.has_room(len(encoded)):
                raise QueueFullError(
                    f"queue full: {self._waiting_texts} texts waiting, {len(encoded)} more would exceed "
                    f"max_queue={self.max_queue}",
                    limit_value=self.max_queue,
                )
            self._queue.append(pending)
            self._waiting_texts += len(encoded)
            self._cond.notify()
        pending.future.add_done_callback(lambda future: self._forget_if_cancelled(pending))
        return pending.future

    def _forget_if_cancelled(self, pending: _Pending) -> None:
        """A request cancelled while queued, or while the worker waits out ``max_wait_s`` for more
        work to merge with it, leaves at once, so that the texts of clients that went away never
        hold back live ones (429) while the worker is busy elsewhere or waiting."""
        if not pending.future.cancelled():
            return
        with self._cond:
            if _remove(self._queue, pending) or (self._gathering is not None and _remove(self._gathering, pending)):
                self._waiting_texts -= len(pending.encoded)
            # else: already in a running batch, whose accounting covers it

    def start(self) -> None:
        # Model calls in lanes: a lone large request's batches spread over every core-share, where
        # a worker's own thread would run them one after the other on its share alone.
        self._lanes = Lanes(self.workers, name="structsent-model-lane") if self.workers > 1 else None
        self._threads = [
            threading.Thread(target=self._serve_forever, name=f"structsent-model-{n}", daemon=True)
            for n in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None, *, abandon: bool = False) -> bool:
        """Stop accepting work, finish what is queued, and end the workers; False on timeout.

        ``abandon``: no one waits for the answers any more (the server's connections are closed):
        the work in hand stops at its next model call and what is queued is not computed; each of
        its requests fails with WorkerStoppedError. (The worker could not be left computing: an
        interpreter that exits under a model call aborts.)"""
        with self._cond:
            self._stopping = True
            self._abandoning = self._abandoning or abandon
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        ended = not any(thread.is_alive() for thread in self._threads)
        if ended and self._lanes is not None:
            self._lanes.close()
        return ended

    # -- the worker's side --------------------------------------------------------------------
    def _serve_forever(self) -> None:
        batch: list[_Pending] = []
        try:
            while True:
                batch = []
                with self._gathering_turn:
                    if not self._gather(batch):
                        return
                # Cancelled requests leave here, before any computing.
                self._run([p for p in batch if p.future.set_running_or_notify_cancel()])
        except BaseException as err:  # a bug in the loop itself: say so, fail everyone waiting
            self.failure = err
            log.critical("the model worker died; the server is unhealthy", exc_info=err)
            self._fail_everything(batch, WorkerStoppedError(f"the model worker died: {err!r}"), err)

    def _gather(self, batch: list[_Pending]) -> bool:
        """Block for work and fill ``batch``; False once stopping with nothing left."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return False
                self._cond.wait()
            deadline = self._queue[0].arrived + self.max_wait_s
            self._gathering = batch
            try:
                while True:
                    full = self._take_fitting(batch)
                    remaining = deadline - time.monotonic()
                    if full or self._stopping or remaining <= 0:
                        return True
                    self._cond.wait(remaining)
            finally:
                self._gathering = None
                self._waiting_texts -= sum(len(p.encoded) for p in batch)

    def _take_fitting(self, batch: list[_Pending]) -> bool:
        """Move queued requests into ``batch`` while they fit; True when the batch is full."""
        tokens = sum(p.tokens for p in batch)
        count = sum(p.sequences for p in batch)
        while self._queue:
            head = self._queue[0]
            if head.future.cancelled():
                self._queue.popleft()
                self._waiting_texts -= len(head.encoded)
                continue
            fits = tokens + head.tokens <= self.token_budget and count + head.sequences <= self.max_batch_size
            if batch and not fits:
                return True
            batch.append(self._queue.popleft())
            tokens, count = tokens + head.tokens, count + head.sequences
        return tokens >= self.token_budget or count >= self.max_batch_size

    def _run(self, batch: list[_Pending]) -> None:
        """Label one batch and resolve its futures; a failure reaches every one of them."""
        if not batch:
            return
        encoded = [e for p in batch for e in p.encoded]
        started = time.perf_counter()
        try:
            results, stats = self.classifier.label_encoded(
                encoded, abandon=lambda: self._abandoning or all(p.future.withdrawn for p in batch), lanes=self._lanes)
        except WorkAbandonedError as err:
            if not self._abandoning:  # every client of the batch left: no one reads these
                for pending in batch:
                    pending.future.set_exception(WorkAbandonedError("every client of this batch left before it "
                                                                    "was computed"))
                return
            for pending in batch:
                pending.future.set_exception(WorkerStoppedError(f"the server stopped before this request was "
                                                                f"computed ({err})"))
            self._report(batch, encoded, None, started, failed=True)
            return
        except Exception as err:
            log.error("a batch of %d requests (%d texts) failed", len(batch), len(encoded), exc_info=err)
            failure = BatchFailedError(f"the model failed on a batch of {len(encoded)} texts: {err!r}")
            failure.__cause__ = err
            for pending in batch:
                pending.future.set_exception(failure)
            self._report(batch, encoded, None, started, failed=True)
            return
        for pending, part in zip(batch, _split(results, [len(p.encoded) for p in batch])):
            pending.future.set_result(part)
        self._report(batch, encoded, stats, started, failed=False)

    def _report(self, batch, encoded, stats, started: float, *, failed: bool) -> None:
        if self._on_batch is None:
            return
        report = BatchReport(
            requests=len(batch),
            texts=len(encoded),
            sequences=sum(p.sequences for p in batch),
            model_batches=stats.batches if stats else 0,
            padded_tokens=stats.padded_tokens if stats else 0,
            seconds=time.perf_counter() - started,
            failed=failed,
        )
        try:
            self._on_batch(report)
        except Exception:  # metrics must never take the model worker down
            log.exception("the batch observer raised")

    def _fail_everything(self, running: list[_Pending], error: StructsentError, cause: BaseException) -> None:
        """Resolve every unresolved future, running or queued, with ``error``."""
        error.__cause__ = cause
        for pending in running:
            if not pending.future.done():
                pending.future.set_exception(error)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()  # the other workers, waiting for work, end too
            while self._queue:
                pending = self._queue.popleft()
                if pending.future.set_running_or_notify_cancel():
                    pending.future.set_exception(error)
            self._waiting_texts = 0


def _remove(pendings: "collections.deque[_Pending] | list[_Pending]", pending: _Pending) -> bool:
    """Remove ``pending`` (by identity: _Pending has eq=False) from ``pendings``; whether it was there."""
    try:
        pendings.remove(pending)
    except ValueError:
        return False
    return True


def _split(results: list[LabelResult], sizes: list[int]) -> list[list[LabelResult]]:
    parts, start = [], 0
    for size in sizes:
        parts.append(results[start : start + size])
        start += size
    return parts
