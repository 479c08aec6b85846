"""An exclusive lock on a job's output, held for the job's whole life.

Two jobs writing one output would interleave their chunks and manifests and leave a file
that belongs to neither. The lock is ``flock`` on a file beside the output: the kernel
releases it when the holder exits, however it exits (``kill -9`` included), so a stale lock
never blocks a resume. The holder writes its PID into the file, and what it writes (a file, or a
directory: a Ray job), for the refusal message: a job refused by one writing another kind of output
cannot resume that one's work, so it is not told to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from ..errors import JobLockedError, OutputWriteError


class OutputLock:
    """``flock`` on ``path``; ``acquire`` raises JobLockedError naming the PID that holds it.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.csv.lock"
    >>> with OutputLock(path, "out.csv"):
    ...     path.exists()
    True
    >>> path.exists()
    False
    """

    def __init__(self, path: Path, output: str, *, then: str = "wait for it to finish, or stop it and pass --resume",
                 job: str = "structsent label job", writes: str = "file") -> None:
        self.path = Path(path)
        self.output = output
        self.then = then  # what the refused job may do (where the holder writes what it writes)
        self.job = job
        self.writes = writes  # "file" or "directory", recorded for whoever this lock refuses
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as err:  # a full disk (no room for the PID, or no inode for the file), an I/O error
            raise OutputWriteError(f"cannot write {self.path} (the job's lock): {err.strerror or err} "
                                   f"(errno {err.errno}); nothing was written") from err

    def _acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _took_lock(fd):
                holder, writes = _read_holder(fd)
                os.close(fd)
                who = f"PID {holder}" if holder else "another process"
                then = self.then
                if writes not in (None, self.writes):  # a Ray job's directory where this job writes a file:
                    then = f"wait for it to finish, or write to another {self.writes}"  # not its work to resume
                raise JobLockedError(f"{self.output}: another {self.job} ({who}) is writing this output; {then}") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file between our open and flock: take the new one
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{self.writes}\n".encode())
        except OSError:
            self.release()  # held, so the file is ours to remove
            raise

    def release(self) -> None:
        """Remove the lock file while still holding the lock, then let go (a file renamed over it
        since is another's, and stays)."""
        if self._fd is None:
            return
        if _same_file(self._fd, self.path):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: Path) -> int | None:
    """The PID of the process holding the lock file ``path`` (0 where it wrote none), or None when
    no process holds it (or there is no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _took_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_holder(fd)[0] or 0
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _took_lock(fd: int) -> bool:
    """``flock`` the file ``fd`` exclusively, now: False where another holds it (``fd`` stays open);
    any other failure raises (``fd`` closed)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        os.close(fd)
        raise
    return True


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    """The holder's PID and what it writes ("file", "directory"), each None where the file does not say."""
    try:
        lines = os.pread(fd, 64, 0).decode("ascii", "replace").splitlines()
    except OSError:
        return None, None
    pid = int(lines[0]) if lines and lines[0].isdigit() else None
    return pid, (lines[1] if len(lines) > 1 else None)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


class DirectoryLock:
    """``flock`` on a directory itself, for an output directory whose parent has no room for a lock
    file (not writable); it holds no PID, so the refusal names none.

    >>> import tempfile
    >>> with DirectoryLock(Path(tempfile.mkdtemp()), "out", then="wait", job="structsent label job"):
    ...     pass
    """

    def __init__(self, path: Path, output: str, *, then: str, job: str) -> None:
        self.path = Path(path)
        self.output = output
        self.then = then
        self.job = job
        self._fd: int | None = None

    def __enter__(self) -> "DirectoryLock":
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            taken = _took_lock(fd)
        except OSError as err:
            raise OutputWriteError(f"cannot lock {self.path}: {err.strerror or err}") from err
        if not taken:
            os.close(fd)
            raise JobLockedError(f"{self.output}: another {self.job} is writing this output; {self.then}")
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
