"""Checks on the paths a command writes, shared by the label job and the report."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

from ..errors import BadInputError

_KINDS = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a named pipe",
          stat.S_ISSOCK: "a socket"}


def mode_of(path: Path) -> int | None:
    """The mode of what lies at ``path`` (through links), None where nothing does; a path that cannot
    be looked at (a loop of links, a name through a regular file, no permission) is a BadInputError."""
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as err:
        raise BadInputError(f"{path}: {path_problem(err)}") from err


def path_problem(err: BaseException) -> str:
    """What is wrong with a path, from the error looking at it raised (Path.resolve raises a
    RuntimeError for a loop of links before Python 3.13)."""
    if isinstance(err, RuntimeError) or getattr(err, "errno", None) == errno.ELOOP:
        return "a loop of symbolic links"
    if getattr(err, "errno", None) == errno.ENOTDIR:
        return "a part of the path is a file, not a directory"
    return f"cannot be looked at ({getattr(err, 'strerror', None) or err})"


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, said as a noun ("a named pipe")."""
    if stat.S_ISDIR(mode):
        return "a directory"
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def check_output_is_a_file(path: Path, *, stdout_hint: bool = True) -> None:
    """An existing output must be a regular file (through symbolic links): the finished output is
    renamed onto it, which would delete a device, a named pipe or a socket. ``stdout_hint``: the
    command writes to standard output for ``-o -`` (say so)."""
    mode = mode_of(path)
    if mode is None or stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a directory is refused with its own message
        return
    kind = kind_of(mode)
    hint = " (or -o - for standard output)" if stdout_hint else ""
    raise BadInputError(f"{path}: is {kind}; name a regular file to write{hint}")


def check_work_path(path: Path, *, directory: bool = False) -> None:
    """A file (or, with ``directory``, a directory) a job keeps beside its output must be one where
    something already lies at its name: the job would fail on it half-way, or delete it."""
    mode = mode_of(path)
    if mode is None or (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        return
    kind = "a directory" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode) else next(
        (name for test, name in _KINDS.items() if test(mode)), "not a regular file")
    wanted = "directory" if directory else "file"
    raise BadInputError(f"{path}: is {kind}, where the job keeps a work {wanted} beside its output; "
                        "remove it, or write the output elsewhere")


def read_only_once(path: str) -> bool:
    """Whether the input ``path`` can be read only once: standard input, or a pipe, a device or a
    socket named by a path (``<(zcat in.csv.gz)``, a named pipe). Reading its head to learn its
    columns would take those bytes from the job: such an input is read once, from its start."""
    if path == "-":
        return True
    try:
        return not stat.S_ISREG(Path(path).stat().st_mode)
    except OSError:  # missing, a loop of links: the reader says so
        return False
