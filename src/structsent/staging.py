"""Names for temporary files and directories that may outlive their process (kill -9, a power
cut), and the removal of those whose process, on this host, has ended."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from collections.abc import Callable
from pathlib import Path


def staging_name(prefix: str) -> str:
    """``prefix`` and this process's host and id: a directory so named that outlives its process
    (kill -9, a power cut) is found and removed by ``remove_abandoned``."""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-"


def remove_abandoned(directory: Path, prefix: str) -> None:
    """Remove the files and directories named by ``staging_name(prefix)`` in ``directory`` whose
    process, on this host, has ended (an export killed half-way left ~400 MB for StructBERT-base)."""
    _remove_staging(directory, prefix, lambda pid: not _process_alive(pid))


def remove_own(directory: Path, prefix: str) -> None:
    """Remove the files and directories named by ``staging_name(prefix)`` in ``directory`` that are
    this process's: for a process that ends without its own cleanups (``os._exit``)."""
    _remove_staging(directory, prefix, lambda pid: pid == os.getpid())


def abandoned(directory: Path, prefix: str) -> list[Path]:
    """The files and directories named by ``staging_name(prefix)`` in ``directory`` whose process,
    on this host, has ended: for a caller that puts some back rather than removing them."""
    return _staging_of(directory, prefix, lambda pid: not _process_alive(pid))


def remove_staging_path(path: Path) -> None:
    """Remove a staging directory (its files too) or file."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_staging(directory: Path, prefix: str, removable: Callable[[int], bool]) -> None:
    for path in _staging_of(directory, prefix, removable):
        remove_staging_path(path)


def _staging_of(directory: Path, prefix: str, owned: Callable[[int], bool]) -> list[Path]:
    host = socket.gethostname()
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    found = []
    for path in candidates:
        # NAME-HOST-PID-RANDOM; NAME may itself be a staging name (an export into the cache's staging directory).
        owner, _, pid = path.name[len(prefix):].rpartition("-")[0].rpartition("-")
        if (owner == host or owner.endswith("-" + host)) and pid.isdigit() and owned(int(pid)):
            found.append(path)
    return found


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def take_mode_and_group(directory: str | os.PathLike, of: os.stat_result) -> None:
    """Give ``directory`` the permissions and group of a stat result, so that a directory put in
    another's place keeps what was set on it (a shared directory's group and setgid bit); a group
    this user may not give is left as it is."""
    os.chmod(directory, stat.S_IMODE(of.st_mode))
    try:
        os.chown(directory, -1, of.st_gid)
    except OSError:
        pass
