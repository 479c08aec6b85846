"""Tokenization in worker processes gives what in-process encode gives, in order, and its
workers never outlive the job or fail silently."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from structsent.config import LongTextPolicy
from structsent.errors import WorkerProcessError
from structsent.tokenize import Tokenizer
from structsent.tokenize_processes import EncodingBatch, EncodingOptions, TokenizerProcesses

from .conftest import VOCAB, children_of, is_running
from .test_tokenize import EDGE_TEXTS, committed_texts, random_mixtures

OPTIONS = EncodingOptions(max_length=64, long_text=LongTextPolicy.WINDOWS, window_stride=20)
BAD_VALUES = [None, "", "   ", 7, "好" * 700]


def encode(tokenizer, texts, options=OPTIONS):
    return tokenizer.encode(texts, max_length=options.max_length, long_text=options.long_text,
                            window_stride=options.window_stride)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_vocab(VOCAB, do_lower_case=True)


@pytest.mark.parametrize("vectorised", [True, False])
@pytest.mark.parametrize("long_text", [LongTextPolicy.WINDOWS, LongTextPolicy.TRUNCATE])
def test_an_encoding_batch_unpacks_to_what_it_packed(vectorised, long_text):
    tok = Tokenizer.from_vocab(VOCAB, do_lower_case=True)
    if not vectorised:
        tok.char_table = None  # tuples from the Rust path
    options = EncodingOptions(max_length=64, long_text=long_text, window_stride=20)
    texts = committed_texts()[:800] + random_mixtures(100) + EDGE_TEXTS + BAD_VALUES
    encoded = encode(tok, texts, options)
    assert EncodingBatch.pack(encoded).unpack() == encoded
    assert EncodingBatch.pack([]).unpack() == []


def _workers_of(pid: int) -> list[int]:
    return children_of(pid, running="spawn_main")  # multiprocessing's spawn entry point


def test_processes_encode_as_in_process_and_in_submission_order(tokenizer):
    texts = committed_texts()[:3000] + BAD_VALUES
    chunks = [texts[i : i + 257] for i in range(0, len(texts), 257)]
    with TokenizerProcesses(tokenizer, OPTIONS, processes=2) as pool:
        futures = [pool.submit(chunk) for chunk in chunks]
        got = [pool.result(future) for future in futures]
        assert len(_workers_of(os.getpid())) == 2
    assert got == [encode(tokenizer, chunk) for chunk in chunks]
    assert sum(map(len, got)) == len(texts)
    assert _workers_of(os.getpid()) == []  # closed: none left behind


def test_workers_ignore_ctrl_c_which_the_job_handles(tokenizer):
    """A terminal's Ctrl-C reaches every process of the group; the job stops after its chunk and
    closes the pool itself, so a worker must survive the signal (else the pool breaks first)."""
    with TokenizerProcesses(tokenizer, OPTIONS, processes=2) as pool:
        pool.result(pool.submit(["好评"]))
        workers = _workers_of(os.getpid())
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(map(is_running, workers))
        assert pool.result(pool.submit(["差评"])) == encode(tokenizer, ["差评"])


def _blocked_signals(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)


def test_workers_are_born_with_ctrl_c_blocked_and_the_job_keeps_its_mask(tokenizer):
    """Between its start and its initializer a worker imports for a second or more; a Ctrl-C
    then must not kill it (the pool would break instead of the job stopping after its chunk)."""
    sigint = 1 << (signal.SIGINT - 1)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with TokenizerProcesses(tokenizer, OPTIONS, processes=2) as pool:
        future = pool.submit(["好评"])
        workers = _workers_of(os.getpid())
        assert workers and all(_blocked_signals(pid) & sigint for pid in workers)
        assert pool.result(future) == encode(tokenizer, ["好评"])
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
    assert signal.SIGINT not in before


def test_an_error_inside_a_worker_is_one_typed_line(tokenizer):
    with TokenizerProcesses(tokenizer, OPTIONS, processes=1) as pool:
        with pytest.raises(WorkerProcessError, match=r"tokenizing in a worker process failed \(.*pickle"):
            pool.result(pool.submit(["好评", lambda: None]))  # cannot be sent to the worker
        assert pool.result(pool.submit(["差评"])) == encode(tokenizer, ["差评"])  # the pool still serves


def test_a_worker_that_dies_fails_the_next_result_with_a_typed_error(tokenizer):
    with TokenizerProcesses(tokenizer, OPTIONS, processes=2) as pool:
        pool.result(pool.submit(["好评"]))
        for pid in _workers_of(os.getpid()):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerProcessError, match="tokenizer process stopped unexpectedly.*committed is kept"):
            for _ in range(50):  # the pool notices the death on its own thread
                pool.result(pool.submit(["差评"]))
                time.sleep(0.1)


def test_workers_exit_when_their_parent_is_killed():
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from structsent.config import LongTextPolicy
        from structsent.tokenize import Tokenizer
        from structsent.tokenize_processes import EncodingOptions, TokenizerProcesses
        from tests.conftest import VOCAB
        pool = TokenizerProcesses(Tokenizer.from_vocab(VOCAB), EncodingOptions(64, LongTextPolicy.TRUNCATE, 31),
                                  processes=2)
        pool.result(pool.submit(["好评"]))
        print("ready", flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        workers = _workers_of(parent.pid)
        assert workers, "the pool started no worker"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(map(is_running, workers)):
        time.sleep(0.1)
    alive = [pid for pid in workers if is_running(pid)]
    for pid in alive:  # never leave one behind, even when the assertion below fails
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "tokenizer workers outlived their killed parent"



def test_a_worker_that_dies_in_the_middle_of_sending_a_result_stops_the_wait(tokenizer):
    """The pool's manager thread, having read the start of a result message, waits for its rest;
    a worker killed there left the job waiting for ever (this process holds the pipe's other end)."""
    import struct

    with TokenizerProcesses(tokenizer, OPTIONS, processes=1) as pool:
        assert pool.result(pool.submit(["好评"])) == encode(tokenizer, ["好评"])  # the worker runs
        (worker,) = _workers_of(os.getpid())
        # what a worker killed mid-send leaves in the pipe: a header announcing more than follows
        pool._pool._result_queue._writer._send(struct.pack("!i", 1 << 20) + b"\x80")
        os.kill(worker, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(WorkerProcessError, match="a tokenizer process stopped unexpectedly"):
            pool.result(pool.submit(["差评"]))
        assert time.monotonic() - started < 30


def test_ending_the_pool_at_once_ends_its_manager_even_mid_message(tokenizer):
    """A worker stopped (SIGSTOP) in the middle of sending a result, then a stop at once (a second
    Ctrl-C): the workers were killed, but the pool's manager thread went on waiting for the rest of
    the message (this process held the pipe's other end), and the interpreter joined it for ever as
    the job exited, after its resume line (a rare hang of the label job's stop test)."""
    import struct

    pool = TokenizerProcesses(tokenizer, OPTIONS, processes=1)
    assert pool.result(pool.submit(["好评"])) == encode(tokenizer, ["好评"])
    (worker,) = _workers_of(os.getpid())
    manager = pool._pool._executor_manager_thread
    pool._pool._result_queue._writer._send(struct.pack("!i", 1 << 20) + b"\x80")  # a message begun, never ended
    os.kill(worker, signal.SIGSTOP)
    try:
        time.sleep(0.2)  # the manager reads the header and waits for the rest
        pool.end_now()
        manager.join(15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)
    assert not manager.is_alive(), "the pool's manager thread still waits: the job would hang as it exits"
    pool.close()


def test_a_worker_killed_as_it_starts_fails_the_job_instead_of_hanging_it(tokenizer):
    """The tokenizer went to each worker in its spawn data, which the launcher writes into a pipe
    whose reading end the parent holds until the write ends: a worker killed as it started left a
    6 MB write blocked for ever. Now the spawn data names a file; the write is a few hundred bytes."""
    import threading

    outcome: list[BaseException | None] = []

    def job() -> None:
        try:
            with TokenizerProcesses(tokenizer, OPTIONS, processes=1) as pool:
                for _ in range(50):
                    pool.result(pool.submit(["差评"]))
                    time.sleep(0.05)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - reported below
            outcome.append(err)

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (workers := _workers_of(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert workers, "no worker started"
    os.kill(workers[0], signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive(), "the pool waited for ever on a worker killed as it started"
    assert outcome and isinstance(outcome[0], WorkerProcessError)


def test_the_state_file_goes_with_the_pool_and_one_a_killed_job_left_with_the_next(tokenizer, tmp_path, monkeypatch):
    import tempfile

    from structsent.tokenize_processes import STATE_PREFIX

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    import socket

    left = tmp_path / f"{STATE_PREFIX}{socket.gethostname()}-{dead}-abc.pickle"
    left.write_bytes(b"\0" * 100)
    with TokenizerProcesses(tokenizer, OPTIONS, processes=1) as pool:
        assert pool.result(pool.submit(["好评"]))[0].error is None
        assert not left.exists() and len(list(tmp_path.glob(STATE_PREFIX + "*"))) == 1
    assert list(tmp_path.glob(STATE_PREFIX + "*")) == []


def test_closing_the_pool_kills_a_worker_that_does_not_finish_its_chunk(tokenizer, monkeypatch):
    """A stopped (SIGSTOP) or hung worker held the pool's close for ever: it waited for the chunk,
    and a stopped label job hung after its resume line. Now it waits CLOSE_WAIT_S, then kills."""
    import threading

    from structsent import tokenize_processes

    monkeypatch.setattr(tokenize_processes, "CLOSE_WAIT_S", 0.5)
    pool = TokenizerProcesses(tokenizer, OPTIONS, processes=1)
    assert pool.result(pool.submit(["好评"])) == encode(tokenizer, ["好评"])
    (worker,) = _workers_of(os.getpid())
    os.kill(worker, signal.SIGSTOP)
    try:
        pool.submit(["差评"] * 50)
        closing = threading.Thread(target=pool.close, daemon=True)
        started = time.monotonic()
        closing.start()
        closing.join(30)
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):  # (killed and reaped: the fix at work)
            os.kill(worker, signal.SIGCONT)
    assert not closing.is_alive(), "the pool's close waited for ever on a stopped worker"
    assert 0.5 <= took < 10
    deadline = time.monotonic() + 10
    while is_running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(worker)
