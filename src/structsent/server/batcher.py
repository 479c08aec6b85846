"""Dynamic micro-batching: concurrent requests merged into token-budgeted model batches.

Worker threads (``workers``, one by default) call the model. Requests enter a bounded queue as
already-encoded texts, each with its own future. A request larger than one batch (its tokens over
the token budget, or its sequences over the cap) is cut into parts that each fit, its texts
sorted by length first so that each part holds texts of like length. A free worker takes small
requests (one part) in arrival order, and parts of large ones, the oldest large request first,
while the batch's tokens stay within the token budget and its sequences within the cap, waiting
at most ``max_wait_s`` after the oldest request arrived for more work. Which of the two goes
first alternates from batch to batch: a small request waits for at most one part of a large one
(never for the whole of it), and large requests finish one after another, in arrival order (with
two workers or more, a later one may finish while the other worker computes an earlier one's last
part). Taking turns part by part, they would all finish at the end: the later ones' clients
waiting no less, the earlier ones' much longer, and a graceful shutdown would cut every one. A
request's future resolves once its last part is computed, its results in its own order. One
worker gathers at a time, so with two the next batch forms while one computes. The engine then
sorts the merged sequences by length and cuts them into padded-cost batches, so one long review
does not pad a whole batch of short ones. With two
workers or more, the model calls run in ``Lanes`` (one thread per worker, callers served in
turn), so that a batch's model calls spread over every lane. A request cancelled before its
first part starts is dropped uncomputed, and one cancelled while still queued (or gathered into
a batch that waits ``max_wait_s`` for more) stops counting against ``max_queue`` at once; a
request whose client leaves once it runs has its parts not yet started dropped, and a batch whose
every request was withdrawn so stops at its next model call.

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


CLIENT_LEFT = "the client left before its request was computed"  # (no one reads it: said for the logs and tests)


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
    abandoned: bool = False  # stopped at a model call because every client of the batch had left


class RequestFuture(concurrent.futures.Future):
    """A request's future. Cancelled before its first part starts, the request is dropped
    uncomputed; once it runs it cannot be, but it is marked ``withdrawn`` (its client left): its
    parts not yet started are dropped (``on_withdrawn``), and a batch whose every request was
    withdrawn stops at its next model call."""

    withdrawn = False
    on_withdrawn: Callable[[], None] | None = None

    def cancel(self) -> bool:
        self.withdrawn = True
        cancelled = super().cancel()
        if not cancelled and not self.done() and self.on_withdrawn is not None:
            self.on_withdrawn()
        return cancelled


@dataclasses.dataclass(eq=False, repr=False, slots=True)
class _Part:
    """Texts of one request that go into one batch together: at most a batch's worth."""

    request: "_Request"
    indices: list[int]  # the texts' positions in the request
    tokens: int
    sequences: int


@dataclasses.dataclass(eq=False, repr=False, slots=True)
class _Request:
    """One submitted request: its texts, its future, its parts not yet gathered, and its results
    as its parts are computed (in any order, by any worker)."""

    encoded: Sequence[EncodedText]
    future: RequestFuture
    arrived: float
    queued: collections.deque[_Part] = dataclasses.field(default_factory=collections.deque)
    results: list[LabelResult | None] = dataclasses.field(default_factory=list)
    unfinished: int = 0  # parts neither computed nor dropped
    started: bool = False  # its future was set running (its first part began)
    dropped: bool = False  # a part was dropped: its client left, or another part failed
    settled: bool = False  # what its future gets is decided (see MicroBatcher._outcome)
    failure: BaseException | None = None

    @classmethod
    def of(cls, encoded: Sequence[EncodedText], token_budget: int, max_batch_size: int) -> "_Request":
        request = cls(encoded=encoded, future=RequestFuture(), arrived=time.monotonic(),
                      results=[None] * len(encoded))
        request.queued.extend(_Part(request, *cut) for cut in _cut(encoded, token_budget, max_batch_size))
        request.unfinished = len(request.queued)
        return request

    @property
    def sequences(self) -> int:
        return sum(part.sequences for part in self.queued)


def _cut(encoded: Sequence[EncodedText], token_budget: int, max_batch_size: int) -> list[tuple[list[int], int, int]]:
    """The parts of a request: (text positions, tokens, sequences) each. A request that fits one
    batch is one part, its texts in their order; a larger one is cut greedily over its texts
    sorted by length (longest first), a text that alone exceeds the budget being a part of its own
    (the engine plans its windows into several model calls)."""
    lengths = [[len(s) for s in e.sequences] for e in encoded]
    tokens = [sum(text) for text in lengths]
    total_tokens, total_sequences = sum(tokens), sum(map(len, lengths))
    if total_tokens <= token_budget and total_sequences <= max_batch_size:
        return [(list(range(len(encoded))), total_tokens, total_sequences)]
    parts: list[tuple[list[int], int, int]] = []
    indices: list[int] = []
    part_tokens = part_sequences = 0
    for i in sorted(range(len(encoded)), key=lambda i: -tokens[i]):
        fits = part_tokens + tokens[i] <= token_budget and part_sequences + len(lengths[i]) <= max_batch_size
        if indices and not fits:
            parts.append((indices, part_tokens, part_sequences))
            indices, part_tokens, part_sequences = [], 0, 0
        indices.append(i)
        part_tokens += tokens[i]
        part_sequences += len(lengths[i])
    parts.append((indices, part_tokens, part_sequences))
    return parts


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
        # Requests with parts not yet gathered, in arrival order: those of one part (small), and those
        # cut into several (large, served one after another); batches alternate which goes first.
        self._small: collections.deque[_Request] = collections.deque()
        self._large: collections.deque[_Request] = collections.deque()
        self._large_first = False
        self._waiting_texts = 0  # admitted, not yet computing: what max_queue bounds
        self._gathering: list[_Part] | None = None  # the batch a worker is filling (under _cond)
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
        request = _Request.of(encoded, self.token_budget, self.max_batch_size)
        if request.sequences == 0:  # nothing for the model: every text was flagged
            request.future.set_running_or_notify_cancel()
            request.future.set_result(self.classifier.label_encoded(encoded)[0])
            return request.future
        request.future.on_withdrawn = lambda: self._withdraw(request)
        with self._cond:
            if self._stopping or not self.alive:
                raise WorkerStoppedError("the model worker is not accepting work") from self.failure
            if not self.has_room(len(encoded)):
                raise QueueFullError(
                    f"queue full: {self._waiting_texts} texts waiting, {len(encoded)} more would exceed "
                    f"max_queue={self.max_queue}",
                    limit_value=self.max_queue,
                )
            (self._large if len(request.queued) > 1 else self._small).append(request)
            self._waiting_texts += len(encoded)
            self._cond.notify()
        request.future.add_done_callback(lambda future: self._forget_if_cancelled(request))
        return request.future

    def _forget_if_cancelled(self, request: _Request) -> None:
        """A request cancelled while queued, or while the worker waits out ``max_wait_s`` for more
        work to merge with it, leaves at once, so that the texts of clients that went away never
        hold back live ones (429) while the worker is busy elsewhere or waiting."""
        if request.future.cancelled():
            with self._cond:
                self._drop_unstarted_parts(request)

    def _withdraw(self, request: _Request) -> None:
        """A running request whose client left: its parts not yet started are not computed, and
        stop counting against ``max_queue`` at once."""
        with self._cond:
            self._drop_unstarted_parts(request)
            outcome = self._outcome(request)
        _settle([outcome])

    def _drop_unstarted_parts(self, request: _Request) -> None:
        """(Under ``_cond``.) Take ``request``'s parts out of the queue and of a batch being gathered."""
        _remove(self._small, request) or _remove(self._large, request)
        dropped = list(request.queued)
        request.queued.clear()
        if self._gathering is not None:
            gathered = [part for part in self._gathering if part.request is request]
            for part in gathered:
                _remove(self._gathering, part)
            dropped += gathered
        self._waiting_texts -= sum(len(part.indices) for part in dropped)
        request.unfinished -= len(dropped)
        request.dropped = request.dropped or bool(dropped)

    @staticmethod
    def _outcome(request: _Request) -> "_Outcome | None":
        """(Under ``_cond``.) What ``request``'s future is to be settled with, decided once: a
        failure at once, else its results once no part is left; None while undecided. The caller
        settles it after releasing the lock (the future's callbacks run in the settling thread)."""
        if request.settled:
            return None
        if request.failure is not None:
            outcome = _Outcome(request.future, None, request.failure)
        elif request.unfinished > 0:
            return None
        elif request.dropped:
            outcome = _Outcome(request.future, None, WorkAbandonedError(CLIENT_LEFT))
        else:
            outcome = _Outcome(request.future, request.results, None)
        request.settled = True
        return outcome

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
        batch: list[_Part] = []
        try:
            while True:
                batch = []
                with self._gathering_turn:
                    if not self._gather(batch):
                        return
                    # Parts of requests cancelled, withdrawn or failed meanwhile leave here, before any computing.
                    batch = self._begin(batch)
                self._run(batch)
        except BaseException as err:  # a bug in the loop itself: say so, fail everyone waiting
            self.failure = err
            log.critical("the model worker died; the server is unhealthy", exc_info=err)
            self._fail_everything(batch, WorkerStoppedError(f"the model worker died: {err!r}"), err)

    def _gather(self, batch: list[_Part]) -> bool:
        """Block for work and fill ``batch``; False once stopping with nothing left."""
        with self._cond:
            while not (self._small or self._large):
                if self._stopping:
                    return False
                self._cond.wait()
            deadline = min(queue[0].arrived for queue in (self._small, self._large) if queue) + self.max_wait_s
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
                self._waiting_texts -= sum(len(part.indices) for part in batch)
                self._large_first = not self._large_first

    def _take_fitting(self, batch: list[_Part]) -> bool:
        """Move queued parts into ``batch`` while they fit; True when the batch is full. Small
        requests go in arrival order, large ones one part at a time, the oldest first; which of
        the two goes first alternates from batch to batch (see ``_gather``), so a small request
        waits for at most one part of a large one, and large requests are taken one after another."""
        tokens = sum(part.tokens for part in batch)
        count = sum(part.sequences for part in batch)
        for queue in (self._large, self._small) if self._large_first else (self._small, self._large):
            while queue:
                request = queue[0]
                if request.future.cancelled():
                    self._drop_unstarted_parts(request)
                    continue
                part = request.queued[0]
                if batch and not (tokens + part.tokens <= self.token_budget
                                  and count + part.sequences <= self.max_batch_size):
                    return True
                batch.append(request.queued.popleft())
                if not request.queued:
                    queue.popleft()
                tokens, count = tokens + part.tokens, count + part.sequences
        return tokens >= self.token_budget or count >= self.max_batch_size

    def _begin(self, batch: list[_Part]) -> list[_Part]:
        """The parts of ``batch`` to compute: a request's first part sets its future running (and is
        dropped if it was cancelled); a later one runs unless the request failed or its client left."""
        running, outcomes = [], []
        with self._cond:
            for part in batch:
                request = part.request
                if not request.started:
                    request.started = True
                    if request.future.set_running_or_notify_cancel():
                        running.append(part)
                        continue
                elif not _unwanted(request):
                    running.append(part)
                    continue
                request.unfinished -= 1
                request.dropped = True
                outcomes.append(self._outcome(request))
        _settle(outcomes)
        return running

    def _run(self, batch: list[_Part]) -> None:
        """Label one batch and settle its parts; a failure reaches every one of their requests."""
        if not batch:
            return
        encoded = [part.request.encoded[i] for part in batch for i in part.indices]
        started = time.perf_counter()
        try:
            results, stats = self.classifier.label_encoded(
                encoded, abandon=lambda: self._abandoning or all(_unwanted(part.request) for part in batch),
                lanes=self._lanes)
        except WorkAbandonedError as err:
            if not self._abandoning:  # every client of the batch left: no one reads these
                self._finish(batch, failure=WorkAbandonedError(CLIENT_LEFT))
                self._report(batch, encoded, None, started, failed=False, abandoned=True)
                return
            self._finish(batch, failure=WorkerStoppedError(f"the server stopped before this request was "
                                                           f"computed ({err})"))
            self._report(batch, encoded, None, started, failed=True)
            return
        except Exception as err:
            log.error("a batch of %d requests (%d texts) failed", len(batch), len(encoded), exc_info=err)
            failure = BatchFailedError(f"the model failed on a batch of {len(encoded)} texts: {err!r}")
            failure.__cause__ = err
            self._finish(batch, failure=failure)
            self._report(batch, encoded, None, started, failed=True)
            return
        self._finish(batch, results=results)
        self._report(batch, encoded, stats, started, failed=False)

    def _finish(self, batch: list[_Part], *, results: list[LabelResult] | None = None,
                failure: BaseException | None = None) -> None:
        """Record each part's results in its request (or the failure, which drops the request's
        parts not yet started), and settle the requests that are complete."""
        outcomes = []
        with self._cond:
            start = 0
            for part in batch:
                request = part.request
                request.unfinished -= 1
                if results is None:
                    request.failure = request.failure or failure
                    self._drop_unstarted_parts(request)
                else:
                    for index, result in zip(part.indices, results[start : start + len(part.indices)]):
                        request.results[index] = result
                    start += len(part.indices)
                outcomes.append(self._outcome(request))
        _settle(outcomes)

    def _report(self, batch: list[_Part], encoded, stats, started: float, *, failed: bool,
                abandoned: bool = False) -> None:
        if self._on_batch is None:
            return
        report = BatchReport(
            requests=len({id(part.request) for part in batch}),
            texts=len(encoded),
            sequences=sum(part.sequences for part in batch),
            model_batches=stats.batches if stats else 0,
            padded_tokens=stats.padded_tokens if stats else 0,
            seconds=time.perf_counter() - started,
            failed=failed,
            abandoned=abandoned,
        )
        try:
            self._on_batch(report)
        except Exception:  # metrics must never take the model worker down
            log.exception("the batch observer raised")

    def _fail_everything(self, running: list[_Part], error: StructsentError, cause: BaseException) -> None:
        """Resolve every unresolved future, running or queued, with ``error``."""
        error.__cause__ = cause
        outcomes = []
        with self._cond:
            self._stopping = True
            self._cond.notify_all()  # the other workers, waiting for work, end too
            requests = [part.request for part in running] + list(self._small) + list(self._large)
            self._small.clear()
            self._large.clear()
            self._waiting_texts = 0
            for request in requests:
                request.queued.clear()
                if request.started or request.future.set_running_or_notify_cancel():
                    request.failure = request.failure or error
                    outcomes.append(self._outcome(request))
        _settle(outcomes)


def _unwanted(request: _Request) -> bool:
    """No one will read what is computed for ``request``: its client left, or another of its parts
    failed (its future holds that failure)."""
    return request.future.withdrawn or request.failure is not None


@dataclasses.dataclass(frozen=True)
class _Outcome:
    future: RequestFuture
    results: list[LabelResult | None] | None
    error: BaseException | None


def _settle(outcomes: list[_Outcome | None]) -> None:
    """Settle futures outside the batcher's lock. One already settled (by a dying worker, which fails
    every request at once) or cancelled keeps its state."""
    for outcome in outcomes:
        if outcome is None:
            continue
        try:
            if outcome.error is not None:
                outcome.future.set_exception(outcome.error)
            else:
                outcome.future.set_result(outcome.results)
        except concurrent.futures.InvalidStateError:
            pass


def _remove(items: "collections.deque | list", item: object) -> bool:
    """Remove ``item`` (by identity) from ``items``; whether it was there. Not ``items.remove``: a
    deque names a missing item by its repr, and a request's repr formats all its token ids (a
    request of 240 long texts: ~0.1 s, under the batcher's lock, each time a client left)."""
    for index, candidate in enumerate(items):
        if candidate is item:
            del items[index]
            return True
    return False
