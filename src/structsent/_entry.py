"""The `structsent` command's entry point (``python -m structsent`` and the console script).

The command line's imports take a few tenths of a second (more on a loaded host); a Ctrl-C or a
SIGTERM then ended the command with a KeyboardInterrupt traceback or a death by the signal.
Here they end it as they do later, in one line, with 130 or 143. (What Python and the package
import before this module runs, about 0.2 s, is beyond any handler.)
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
from collections.abc import Iterator

from ._exit import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    STANDARD_OUTPUT,
    Terminated,
    raise_terminated,
)


class _DiagnosticsThatCannotFail(io.TextIOWrapper):
    """Standard error for the command's messages: a message that cannot be written (``2>/dev/full``,
    a terminal gone) is dropped; the exit status still says how the command ended. (A job that
    finished was said to fail, exit 1, when its summary could not be printed.)"""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError:
            return len(text)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            pass


class _OutputThatNamesItself(io.TextIOWrapper):
    """Standard output whose failures say it failed: a full disk behind ``>`` (ENOSPC) was said as
    "structsent: error: No space left on device", read as the command's own files failing. A reader
    that left (BrokenPipeError) stays what it is: the command then ends quietly."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OSError(err.errno, err.strerror, STANDARD_OUTPUT) from None

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OSError(err.errno, err.strerror, STANDARD_OUTPUT) from None



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
        sys.stderr = _DiagnosticsThatCannotFail(open(2, "wb", closefd=False), encoding="utf-8",  # noqa: SIM115
                                                errors="backslashreplace", line_buffering=True)
    elif isinstance(sys.stderr, io.TextIOWrapper):  # its buffer stays referenced by sys.__stderr__
        sys.stderr.flush()
        sys.stderr = _DiagnosticsThatCannotFail(sys.stderr.buffer, encoding=sys.stderr.encoding,
                                                errors=sys.stderr.errors, line_buffering=True)
    if type(sys.stdout) is io.TextIOWrapper:  # (None when closed; a test's capture is left alone)
        sys.stdout.flush()
        sys.stdout = _OutputThatNamesItself(sys.stdout.buffer, encoding=sys.stdout.encoding, errors=sys.stdout.errors,
                                            line_buffering=sys.stdout.line_buffering,
                                            write_through=sys.stdout.write_through)


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
    except OSError as err:
        _drop_standard_output()
        if isinstance(err, BrokenPipeError) or status != EXIT_OK:
            return status
        print(f"structsent: error: cannot write {STANDARD_OUTPUT}: {err.strerror or err}", file=sys.stderr)
        return EXIT_FAILURE
    return status


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
    a stop during it ends the command once the import is done, in one line, as at any other moment."""

    def __init__(self, names) -> None:
        self.names = set(names)

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        self.names.discard(name)
        if not self.names:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _LoaderHoldingStops(spec.loader)
        return spec


class _LoaderHoldingStops(importlib.abc.Loader):
    """A module's own loader, its execution run with the stop signals held; anything else asked of
    it (its files, its resources) answered by the loader it wraps."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with stop_signals_held():
            self._loader.exec_module(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


def hold_stops_while_importing(names=NATIVE_IMPORTS) -> None:
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
