"""The `structsent` command's entry point (``python -m structsent`` and the console script).

The command line's imports take a few tenths of a second (more on a loaded host); a Ctrl-C or a
SIGTERM then ended the command with a KeyboardInterrupt traceback or a death by the signal.
Here they end it as they do later, in one line, with 130 or 143. (What Python and the package
import before this module runs, about 0.2 s, is beyond any handler.) The same stops are held
during the first import of torch and onnxruntime, whose native code a raised exception aborted.
Closed standard streams are held by /dev/null; standard output's failures name it, and it is
flushed before the interpreter's own flush at exit, which no handler covers.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import io
import os
import signal
import sys
import threading
import types
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from ._exit import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    STANDARD_OUTPUT,
    Terminated,
    raise_terminated,
)


class _StandingIn:
    """A text stream standing in for ``stream``, which it keeps (a new wrapper over the same buffer
    left the one it replaced unreferenced where that was not ``sys.__stdout__``, as a launcher's own
    wrapper: its finaliser closed the shared buffer, and every later write failed). Its ``write``
    and ``flush`` say what a failure means for this stream; the rest is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        if name == "_stream":  # (a copy, or an unpickled one, before __init__ ran)
            raise AttributeError(name)
        return getattr(self._stream, name)


class _DiagnosticsThatCannotFail(_StandingIn):
    """Standard error for the command's messages: a message that cannot be written (``2>/dev/full``,
    a terminal gone) is dropped; the exit status still says how the command ended. (A job that
    finished was said to fail, exit 1, when its summary could not be printed.)"""

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            pass


class _OutputThatNamesItself(_StandingIn):
    """Standard output whose failures say it failed: a full disk behind ``>`` (ENOSPC) was said as
    "structsent: error: No space left on device", read as the command's own files failing. A reader
    that left (BrokenPipeError) stays what it is: the command then ends quietly. The last failure
    is kept (``failure``): argparse drops the one of ``--help`` and ``--version`` (exit 0, nothing
    said), and the end of the command says it."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._named(err) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._named(err) from None

    def _named(self, err: OSError) -> OSError:
        self.failure = OSError(err.errno, err.strerror, STANDARD_OUTPUT)
        return self.failure


def guard_standard_streams() -> None:
    """A command started with a standard stream closed (``2>&-``, ``>&-``, a bare daemon): the next
    file it opened took that descriptor number, so a C library's diagnostics (fd 2) could land in
    the output file; and with ``sys.stderr`` None, ``print(file=sys.stderr)`` writes to standard
    output, into the labelled data. Each closed descriptor is now held by /dev/null. ``sys.stdin``
    and ``sys.stdout`` stay None (reading or writing ``-`` is refused in one line); the messages go
    to /dev/null (there is nowhere to say them; the exit status still does)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        sys.stderr = _DiagnosticsThatCannotFail(io.TextIOWrapper(open(2, "wb", closefd=False), encoding="utf-8",  # noqa: SIM115
                                                                 errors="backslashreplace", line_buffering=True))
    elif isinstance(sys.stderr, io.TextIOWrapper):
        sys.stderr = _DiagnosticsThatCannotFail(sys.stderr)
    if isinstance(sys.stdout, io.TextIOWrapper):  # (None when closed)
        sys.stdout = _OutputThatNamesItself(sys.stdout)


def standard_output_flushed(status: int) -> int:
    """``status``, once what the command left in standard output's buffer is written. The interpreter
    flushed it at exit, past every handler: a reader that had left, or a full disk, ended the
    command with exit 120 and Python's two-line "Exception ignored" message. Now a reader that left
    keeps the command's status; an output that cannot be written is said in one line (exit 1, unless
    the command already failed). Either way standard output is then /dev/null, so that the
    interpreter's own flush at exit has nothing to fail on."""
    if sys.stdout is None:
        return status
    try:
        sys.stdout.flush()
        failure = getattr(sys.stdout, "failure", None)  # one a caller dropped (argparse's --help)
    except OSError as err:
        _drop_standard_output()
        failure = None if isinstance(err, BrokenPipeError) else err
    if failure is None or status != EXIT_OK:
        return status
    print(f"structsent: error: cannot write {STANDARD_OUTPUT}: {failure.strerror or failure}", file=sys.stderr)
    return EXIT_FAILURE


def _drop_standard_output() -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError):  # (no descriptor: nothing will be flushed to one either)
        pass
    finally:
        os.close(null)


# Native libraries whose import calls back into Python from C++ (pybind11): an exception a stop
# signal's handler raises there cannot unwind through their code, and the process aborted
# (std::terminate: exit 134 and a native stack dump, for a SIGTERM during torch's import).
NATIVE_IMPORTS = ("torch", "onnxruntime")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM received within are acted on when it ends, by the handler in place before
    it (in the main thread only, where handlers run; handlers that are not Python functions are
    left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    held = {signum: handler for signum, handler in handlers.items() if callable(handler)}
    for signum in held:
        signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
        if received:
            first = signal.Signals(received[0])
            held[first](first, None)  # as it would have then: most often, raised here


class _HeldStopsWhileImporting(importlib.abc.MetaPathFinder):
    """The first import of each of ``names`` runs with the stop signals held (``stop_signals_held``):
    a stop during it ends the command once the module's code has run, in one line, as at any other
    moment. (The stop then fails that import, which the command no longer needs.) The module is
    found by the finders after this one, as it would be without it; this finder stays in
    ``sys.meta_path`` (removing it while the import system loops over the list skipped the next)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names:
            return None
        self.names.discard(name)
        for finder in [f for f in sys.meta_path if f is not self]:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _LoaderHoldingStops(spec.loader)
                return spec
        return None


class _LoaderHoldingStops(importlib.abc.Loader):
    """A module's own loader, its execution run with the stop signals held; anything else asked of
    it (its files, its resources) answered by the loader it wraps."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        with stop_signals_held():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        if name == "_loader":  # (a copy, or an unpickled one, before __init__ ran)
            raise AttributeError(name)
        return getattr(self._loader, name)


def hold_stops_while_importing(names: Iterable[str] = NATIVE_IMPORTS) -> None:
    """Hold the stop signals during the first import of each of ``names`` not imported yet."""
    pending = [name for name in names if name not in sys.modules]
    if pending:
        sys.meta_path.insert(0, _HeldStopsWhileImporting(pending))


def main() -> int:
    guard_standard_streams()
    hold_stops_while_importing()
    # SIGTERM as the command sees it later; left alone where it is ignored or not the default
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        from .cli import main as run_command
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print("structsent: terminated" if terminated else "structsent: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        status = run_command()
    except SystemExit as done:  # argparse's --help, --version and usage errors end with it
        status = done.code if isinstance(done.code, int) else EXIT_OK if done.code is None else EXIT_FAILURE
    return standard_output_flushed(status)
