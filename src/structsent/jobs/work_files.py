"""The files a label job keeps beside its output, and how it appends to them and checks them.

Every append goes to a file that must hold exactly the bytes the manifest committed, and is
fsynced before the manifest records it. The manifest also keeps a running CRC-32 of each file's
committed bytes (of the Parquet parts, in order), so that a resume can refuse a work file another
program changed while the job was stopped, even one rewritten at the same length. CRC-32 catches
accidental changes (an editor's save, a copy over the file, a disk error), not deliberate forgery.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

from ..errors import BadInputError, JobFilesChangedError
from ..io.lock import lock_holder

BLOCK_BYTES = 1 << 20


class OutputFiles:
    """Where a job's output, its work in progress and its manifest live."""

    def __init__(self, output: str) -> None:
        # Through symbolic links: the job writes (and renames onto) the file a link names, which
        # keeps the link; its work files and lock lie beside that file, so the rename stays in one
        # directory and two links to one file share one lock.
        output = os.path.realpath(output)
        self.final = Path(output)
        self.partial = Path(output + ".partial")
        self.parts = Path(output + PARTS_SUFFIX)
        self.manifest = Path(output + ".manifest.json")
        self.cache = Path(output + ".cache")
        self.ledger = Path(output + ".inputs")
        self.lock = Path(output + ".lock")

    def all(self) -> list[Path]:
        """Every file the job writes (the lock apart)."""
        return [self.final, self.partial, self.manifest, self.cache, self.ledger]

    def touched(self) -> list[Path]:
        """Every file the job writes, creates, replaces or removes: ``all``, the lock, and the
        temporary files its atomic writes rename into place (the part files are inside ``parts``)."""
        return [*self.all(), self.lock, temporary(self.manifest), temporary(self.final)]

    def work(self) -> list[Path]:
        """The files and directory the job keeps beside its output while it runs, the lock included."""
        return [self.partial, self.parts, self.manifest, self.cache, self.ledger, self.lock]

    def remove_work(self, *, keep_manifest: bool = False) -> None:
        """The manifest first: while it exists the job is unfinished and resumable, so every file it
        names must outlive it (a kill between two of these removals leaves no manifest naming a
        missing file). ``keep_manifest``: a new job's, which names no committed byte of them."""
        if not keep_manifest:
            self.manifest.unlink(missing_ok=True)
        self.partial.unlink(missing_ok=True)
        self.cache.unlink(missing_ok=True)
        self.ledger.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)

    def part(self, index: int) -> Path:
        return self.parts / f"part-{index:06d}.parquet"


def refuse_another_jobs_work_file(path: str, what: str) -> None:
    """Refuse to write ``what`` (an output, a report) at ``path`` when it names a work file of a
    label job that is running or unfinished (``out.csv.lock``, ``out.csv.partial``)."""
    owner = _job_owning(path)
    if owner is not None:
        place, _, why = owner
        raise BadInputError(f"{path}: {place} {why}; write the {what} to another path")


def refuse_writing_a_page_over_a_jobs_files(path: str) -> None:
    """Refuse to write a report at ``path`` when it names a work file of a label job that is running
    or unfinished, or that job's output: written there, the page was replaced by the job's output
    at its end, or the job (running, or resumed later) refused to replace it, its labelling done."""
    refuse_another_jobs_work_file(path, "report")
    why = another_jobs(OutputFiles(path))
    if why is not None:
        raise BadInputError(f"{path}: the output of {why}; write the report to another path")


def refuse_reading_another_jobs_files(path: str, *, command: str = "report") -> None:
    """Refuse to read ``path`` (the report's input, or the label job's) when it is a work file of a
    label job that is running or unfinished (``out.csv.partial`` holds the rows committed so far,
    not the output), or the output a running job is writing (``--overwrite`` replaces it). A label
    job read such a file to its end as it then was, exit 0, the rows committed later unread."""
    owner = _job_owning(path)
    if owner is not None:
        place, files, why = owner
        then = ("wait for that job to finish" if lock_holder(files.lock) is not None
                else "resume that job (or start it over with --overwrite)")
        what = "a labelled file" if command == "report" else "a finished file"
        raise BadInputError(f"{path}: {place} {why}, not {what}; {then}, then {command} {files.final}")
    holder = lock_holder(OutputFiles(path).lock)
    if holder is not None:
        who = f"PID {holder}" if holder else "another process"
        raise BadInputError(f"{path}: another structsent label job ({who}) is writing this output; {command} it when "
                            "that job has finished")


def unfinished_job_replacing(path: str) -> str | None:
    """What to say of reading ``path`` while an unfinished (stopped) label job on it is there: the
    file is still the complete output of before, which that job replaces once resumed; or None."""
    files = OutputFiles(path)
    if not files.manifest.exists() or lock_holder(files.lock) is not None:
        return None
    return (f"an unfinished structsent label job on {path} (its manifest {files.manifest} is there) replaces it "
            "once resumed; this describes the file as it is now")


def _job_owning(path: str) -> tuple[str, OutputFiles, str] | None:
    """Where ``path`` lies ("a work file of", "inside DIR, the work directory of"), the output files
    of the job it belongs to, and which job that is, when that job is running or unfinished."""
    resolved = os.path.realpath(path)
    for suffix in WORK_SUFFIXES:
        if resolved.endswith(suffix) and len(resolved) > len(suffix):
            files = OutputFiles(resolved[: -len(suffix)])
            why = another_jobs(files)
            if why is not None:
                return "a work file of", files, why
    for directory in Path(resolved).parents:  # a part file inside a Parquet job's OUT.parts
        if directory.name.endswith(PARTS_SUFFIX) and len(directory.name) > len(PARTS_SUFFIX):
            files = OutputFiles(str(directory)[: -len(PARTS_SUFFIX)])
            why = another_jobs(files)
            if why is not None:
                return f"inside {directory}, the work directory of", files, why
    return None


def another_jobs(files: OutputFiles) -> str | None:
    """Which job is running or unfinished on the output ``files`` names, or None."""
    holder = lock_holder(files.lock)
    if holder is not None:
        who = f"PID {holder}" if holder else "another process"
        return f"the structsent label job ({who}) writing {files.final}"
    if _exists(files.manifest):
        return f"an unfinished structsent label job on {files.final} (its manifest {files.manifest} is there)"
    return None


def _exists(path: Path) -> bool:
    """Whether ``path`` exists: a name past the file system's limits (ENAMETOOLONG) names nothing."""
    try:
        return path.exists()
    except OSError:
        return False


PARTS_SUFFIX = ".parts"
# The names a job's files add to its output's (OutputFiles.work and .touched)
WORK_SUFFIXES = (".partial", ".parts", ".manifest.json", ".manifest.json.tmp", ".cache", ".inputs", ".lock", ".tmp")


def temporary(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed onto ``path``."""
    return path.with_name(path.name + ".tmp")


def truncate_to(path: Path, length: int) -> None:
    """Cut a job's side file back to its committed length (work after the last commit is discarded)."""
    if path.exists():
        with open(path, "r+b") as handle:
            handle.truncate(length)


def append_durably(path: Path, data: bytes, committed: int) -> int:
    """Append ``data`` to ``path`` and sync it; return the new length. ``path`` must hold exactly the
    ``committed`` bytes the manifest records: a file removed, replaced or written to by another program
    while the job ran is refused (appending would commit a file that lacks the earlier chunks)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | (os.O_CREAT if committed == 0 else 0), 0o666)
    except FileNotFoundError:
        raise JobFilesChangedError(_removed_while_running(path, committed)) from None
    with os.fdopen(fd, "ab") as handle:
        size = os.fstat(fd).st_size
        if size != committed:
            raise JobFilesChangedError(f"{path} holds {size:,} bytes, the job had committed {committed:,}: another "
                                       "program replaced or wrote to it while the job ran; start over with --overwrite")
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def _removed_while_running(path: Path, committed: int) -> str:
    """Why a job's file could not be appended to: it was removed, or its whole directory was (moved
    away, it still holds what was committed: put back, the job resumes)."""
    if not path.parent.is_dir():
        return f"{path.parent}, the directory of the job's output, was removed or renamed while the job ran; " \
               + _how_to_go_on_without_the_directory(committed)
    return f"{path} was removed while the job ran (it held {committed:,} committed bytes); start over with --overwrite"


def _how_to_go_on_without_the_directory(committed: int) -> str:
    if committed == 0:
        return "before the job's first commit: start over"
    return "put it back and run the same command with --resume (its files hold the committed chunks), or start over"


# -- checksums of the committed bytes ---------------------------------------------------------
def extend_checksum(checksums: dict[str, int] | None, role: str, data: bytes) -> None:
    """Add ``data``, just committed to the file playing ``role``, to its running CRC-32
    (``checksums`` is None for a job begun by a version that kept none: nothing to extend)."""
    if checksums is not None:
        checksums[role] = zlib.crc32(data, checksums.get(role, 0))


def crc32_of(paths: list[Path], length: int | None = None) -> int:
    """The CRC-32 of the files' bytes one after the other (of the first ``length`` bytes of one file)."""
    crc = 0
    for path in paths:
        remaining = length
        with open(path, "rb") as handle:
            while remaining is None or remaining > 0:
                block = handle.read(BLOCK_BYTES if remaining is None else min(BLOCK_BYTES, remaining))
                if not block:
                    break
                crc = zlib.crc32(block, crc)
                if remaining is not None:
                    remaining -= len(block)
    return crc


def check_unchanged(checksums: dict[str, int] | None, role: str, paths: list[Path], length: int | None = None) -> None:
    """Refuse a resume whose work file (or parts) ``role`` no longer holds the committed bytes. A file
    that is missing or shorter than committed is passed over: the checks that follow name it."""
    if checksums is None or (length == 0 and not checksums.get(role)) or not all(p.exists() for p in paths):
        return
    if length is not None and paths[0].stat().st_size < length:
        return  # short: the check that follows says by how much
    try:
        found = crc32_of(paths, length)
    except OSError as err:
        raise JobFilesChangedError(f"cannot resume: {err.filename or paths[0]} cannot be read ({err.strerror or err}); "
                                   "start over with --overwrite") from err
    if found != checksums.get(role, 0):
        where = paths[0] if len(paths) == 1 else paths[0].parent
        raise JobFilesChangedError(
            f"cannot resume: {where} no longer holds the bytes the job committed (its checksum differs): another "
            "program changed it while the job was stopped; start over with --overwrite")
