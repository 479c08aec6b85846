"""Checks on the paths a command writes, shared by the label job and the report."""

from __future__ import annotations

import stat
from pathlib import Path

from ..errors import BadInputError

_KINDS = {stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device", stat.S_ISFIFO: "a named pipe",
          stat.S_ISSOCK: "a socket"}


def check_output_is_a_file(path: Path, *, stdout_hint: bool = True) -> None:
    """An existing output must be a regular file (through symbolic links): the finished output is
    renamed onto it, which would delete a device, a named pipe or a socket. ``stdout_hint``: the
    command writes to standard output for ``-o -`` (say so)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a directory is refused with its own message
        return
    kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
    hint = " (or -o - for standard output)" if stdout_hint else ""
    raise BadInputError(f"{path}: is {kind}; name a regular file to write{hint}")


def check_work_path(path: Path, *, directory: bool = False) -> None:
    """A file (or, with ``directory``, a directory) a job keeps beside its output must be one where
    something already lies at its name: the job would fail on it half-way, or delete it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode):
        return
    kind = "a directory" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode) else next(
        (name for test, name in _KINDS.items() if test(mode)), "not a regular file")
    wanted = "directory" if directory else "file"
    raise BadInputError(f"{path}: is {kind}, where the job keeps a work {wanted} beside its output; "
                        "remove it, or write the output elsewhere")
