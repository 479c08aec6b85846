"""Stage 1 in worker processes: tokenization off the interpreter that runs everything else.

A label job's feed (read, plan, postprocess, write) and its tokenizer share one interpreter and
so one GIL; on a GPU host the feed, not the model, then sets the pace. ``TokenizerProcesses``
runs ``Tokenizer.encode`` in spawned processes, chunk by chunk, and hands each chunk's result
back as a few flat arrays (``EncodingBatch``): one pickle per chunk, not one per token or per
text. The parent rebuilds the same ``EncodedText`` objects (sequences as int64 views), so every
consumer sees what an in-process ``encode`` would have given (tested on every committed text).

Results come back in submission order (the caller waits on futures in order); a worker that
dies fails the next result with ``WorkerProcessError`` instead of hanging the job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from .config import LongTextPolicy
from .errors import WorkerProcessError
from .pipeline import when_parent_ends
from .staging import remove_abandoned, staging_name
from .tokenize import EncodedText, Tokenizer


@dataclasses.dataclass(frozen=True)
class EncodingOptions:
    """The truncation policy ``Tokenizer.encode`` applies (the engine's plan holds the values)."""

    max_length: int
    long_text: LongTextPolicy
    window_stride: int
    keep_end: bool = False  # truncation keeps a text's last tokens, not its first (TEI's "Left")


@dataclasses.dataclass(frozen=True)
class EncodingBatch:
    """Many EncodedTexts as flat arrays: cheap to send between processes."""

    ids: np.ndarray  # int64: every sequence of every text, one after another
    sequence_lengths: np.ndarray  # int64: tokens of each sequence
    sequences_per_text: np.ndarray  # int64: 0 for a flagged text, >1 for windows
    truncated: np.ndarray  # bool per text
    errors: dict[int, str]  # text index -> why it has no sequences

    @classmethod
    def pack(cls, encoded: Sequence[EncodedText]) -> "EncodingBatch":
        sequences = [seq for e in encoded for seq in e.sequences]
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        ids = np.concatenate([np.asarray(seq, dtype=np.int64) for seq in sequences]) if sequences else \
            np.zeros(0, dtype=np.int64)
        return cls(
            ids=ids,
            sequence_lengths=lengths,
            sequences_per_text=np.fromiter((len(e.sequences) for e in encoded), dtype=np.int64, count=len(encoded)),
            truncated=np.fromiter((e.truncated for e in encoded), dtype=bool, count=len(encoded)),
            errors={i: e.error for i, e in enumerate(encoded) if e.error is not None},
        )

    def unpack(self) -> list[EncodedText]:
        ends = np.cumsum(self.sequence_lengths).tolist()
        starts = [0, *ends[:-1]]
        views = [self.ids[a:b] for a, b in zip(starts, ends)]
        out: list[EncodedText] = []
        first = 0
        for i, (count, truncated) in enumerate(zip(self.sequences_per_text.tolist(), self.truncated.tolist())):
            error = self.errors.get(i)
            if error is not None:
                out.append(EncodedText(error=error))
            else:
                out.append(EncodedText(sequences=tuple(views[first : first + count]), truncated=truncated))
            first += count
        return out


# -- the worker side ---------------------------------------------------------------------------
_worker_tokenizer: Tokenizer | None = None
_worker_options: EncodingOptions | None = None


def _start_worker(state_file: str) -> None:
    global _worker_tokenizer, _worker_options
    with open(state_file, "rb") as handle:
        _worker_tokenizer, _worker_options = pickle.load(handle)
    # Ctrl-C in a terminal reaches the whole process group: the job stops after its chunk and
    # shuts the workers down itself, so a worker must not die of it first (a broken pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()


def _exit_with_parent() -> None:
    """End this worker when the job's process ends, however it ends (kill -9 included): a
    worker holds both ends of its task queue's pipe, so it would never see the parent go."""
    when_parent_ends(lambda: os._exit(1))


def _encode_in_worker(texts: list[object]) -> EncodingBatch:
    assert _worker_tokenizer is not None and _worker_options is not None  # set by _start_worker
    options = _worker_options
    encoded = _worker_tokenizer.encode(texts, max_length=options.max_length, long_text=options.long_text,
                                       window_stride=options.window_stride, keep_end=options.keep_end)
    return EncodingBatch.pack(encoded)


# -- the parent side ---------------------------------------------------------------------------
WORKER_CHECK_S = 1.0  # how often a wait for a result checks that the workers live
CLOSE_WAIT_S = 5.0  # how long a close waits for the workers to finish their chunks before it kills them


class TokenizerProcesses:
    """``processes`` spawned workers, each with its own copy of ``tokenizer``.

    >>> # with TokenizerProcesses(tokenizer, options, processes=2) as pool:   # doctest: +SKIP
    >>> #     encoded = pool.submit(texts).result()
    """

    def __init__(self, tokenizer: Tokenizer, options: EncodingOptions, *, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes={processes}: at least 1")
        self.processes = processes
        self._state_file = _write_worker_state(tokenizer, options)
        # The result pipe's descriptors are closed from the job's thread, its reading thread and a stop,
        # maybe at once: closed twice, a descriptor number the process had reused meanwhile went too
        # (the interpreter's exit then wrote into a closed pipe: "Bad file descriptor").
        self._pipe_lock = threading.Lock()
        # spawn, not fork: the parent runs threads (reader, writer, the Rust tokenizer's pool),
        # and a forked child of a threaded process can inherit a lock held by a thread it lacks.
        self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(str(self._state_file),))
        # The pool drops its references to both as it shuts down; ending the workers after that needs them.
        self._workers: dict[int, multiprocessing.process.BaseProcess] = {}
        self._call_queue = getattr(self._pool, "_call_queue", None)
        self.waiting = False  # True while a caller waits in result() for a chunk not yet tokenized

    def submit(self, texts: list[object]) -> "Future[EncodingBatch]":
        try:
            with _sigint_blocked():  # workers start here and inherit the mask until they ignore SIGINT
                future = self._pool.submit(_encode_in_worker, list(texts))
        except BrokenProcessPool as err:
            raise _died(err) from err
        self._workers.update(getattr(self._pool, "_processes", None) or {})
        return future

    def result(self, future: "Future[EncodingBatch]") -> list[EncodedText]:
        """Wait for one submitted chunk; its EncodedTexts, as ``Tokenizer.encode`` gives them."""
        self.waiting = True
        try:
            batch = self._wait(future)
        except BrokenProcessPool as err:
            raise _died(err) from err
        except Exception as err:  # raised inside a worker: one line, not a remote traceback
            raise WorkerProcessError(f"tokenizing in a worker process failed ({type(err).__name__}: {err}); "
                                     "what was committed is kept") from err
        finally:
            self.waiting = False
        return batch.unpack()

    def _wait(self, future: "Future[EncodingBatch]") -> EncodingBatch:
        """``future.result()``, also when a worker died in the middle of sending a result: the
        pool's manager thread then waits for the rest of that message, which never comes (this
        process holds the result pipe's other end, so no end of file either), and would leave
        the job waiting for ever. A dead worker found while waiting closes that end, so that the
        manager reads an end of file and breaks the pool (BrokenProcessPool) as for any death."""
        deadline_after_death: float | None = None
        while True:
            try:
                return future.result(timeout=WORKER_CHECK_S)
            except FuturesTimeoutError:
                if deadline_after_death is None and self._a_worker_died():
                    self._close_result_pipe()
                    deadline_after_death = time.monotonic() + WORKER_CHECK_S * 5
                elif deadline_after_death is not None and time.monotonic() > deadline_after_death:
                    raise BrokenProcessPool("a worker died and the pool did not notice") from None

    def _a_worker_died(self) -> bool:
        return any(process.exitcode is not None for process in list(self._workers.values()))

    def _close_result_pipe(self) -> None:
        queue = getattr(self._pool, "_result_queue", None)
        with self._pipe_lock, contextlib.suppress(AttributeError, OSError):
            queue._writer.close()  # type: ignore[union-attr]

    def end_now(self) -> None:
        """Kill the workers (SIGKILL: the one signal a stopped or hung process cannot hold up) and
        drop the chunks not yet begun; results still awaited fail as from a worker that died, a result
        half sent too. Safe from any thread, more than once, and after ``close`` has begun. The
        workers' state file goes too (a job stopped on a pipe leaves its reading thread, and so
        ``close``, waiting on the pipe)."""
        for process in list(self._workers.values()):
            with contextlib.suppress(OSError, ValueError):
                process.kill()
        # A worker stopped in the middle of sending a result left the pool's manager thread waiting for
        # the rest, which the killed worker will never send, and this process holds the pipe's other
        # end: no end of file either. Closed, the manager reads one and ends; else the interpreter
        # joined it for ever as the job exited (after its resume line).
        self._close_result_pipe()
        # The pool's feeder thread may be blocked writing the next chunk into a pipe that no worker
        # reads now; the pool joins it as it breaks, and the interpreter joins the pool as it exits.
        with contextlib.suppress(AttributeError, OSError):
            self._call_queue.cancel_join_thread()  # type: ignore[union-attr]
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._state_file.unlink(missing_ok=True)

    def close(self) -> None:
        """Shut the pool down: the chunks not begun are dropped, and the workers get
        ``CLOSE_WAIT_S`` to finish theirs and exit. One that does not (stopped by SIGSTOP, hung) is
        killed: the interpreter joins the pool as it exits, and would wait for it for ever."""
        manager = getattr(self._pool, "_executor_manager_thread", None)
        results = getattr(self._pool, "_result_queue", None)
        try:
            self._pool.shutdown(wait=False, cancel_futures=True)
            if self._workers_ended(manager) and results is not None:
                with self._pipe_lock:
                    results.close()  # as a waiting shutdown does: its pipe's descriptors go now
        finally:
            self._state_file.unlink(missing_ok=True)

    def _workers_ended(self, manager: threading.Thread | None) -> bool:
        """Whether the pool's manager thread, which joins the workers, has ended: given
        ``CLOSE_WAIT_S``, then as long again once the workers are killed."""
        if manager is None:
            return True
        manager.join(CLOSE_WAIT_S)
        if manager.is_alive():
            self.end_now()
            manager.join(CLOSE_WAIT_S)
        return not manager.is_alive()

    def __enter__(self) -> "TokenizerProcesses":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


STATE_PREFIX = "structsent-tokenizer-"


def _write_worker_state(tokenizer: Tokenizer, options: EncodingOptions) -> Path:
    """The tokenizer and options, pickled into a file that each worker reads at its start.

    Not in the spawn data: the launcher writes that into a pipe whose reading end the parent holds
    until the write is done, so a worker killed as it starts left a 6 MB write (the character
    table) blocked for ever. A file so named that a kill -9 of this process leaves is removed by
    the next job's pool."""
    directory = Path(tempfile.gettempdir())
    remove_abandoned(directory, STATE_PREFIX)
    with tempfile.NamedTemporaryFile(prefix=staging_name(STATE_PREFIX), suffix=".pickle", dir=directory,
                                     delete=False) as handle:
        pickle.dump((tokenizer, options), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(handle.name)


def _died(err: BaseException) -> WorkerProcessError:
    return WorkerProcessError(f"a tokenizer process stopped unexpectedly ({err}); what was committed is kept")


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread (a process it starts inherits the mask): Ctrl-C at a
    terminal reaches the whole process group, and a worker still importing, before its
    initializer ignores SIGINT, would die of it and break the pool. A SIGINT that arrives
    meanwhile is delivered to another thread of the job, or here once unblocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
