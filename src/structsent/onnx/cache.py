"""The export cache: checkpoints exported to ONNX once, reused by every later load.

Exports live under ``$STRUCTSENT_CACHE/onnx/<key>`` (default ``~/.cache/structsent``), keyed by
the model files' contents, the export options and the tool versions, and are written to a
staging folder first and renamed into place, so a concurrent load sees all of one or none. Each
entry records its graph's digest and the key it was written for; one whose graph no longer matches
its digest, or that was written for another key (copied or moved here), is discarded and exported
again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

from ..errors import ConfigError, ModelFormatError, OutputWriteError, require
from ..lines import one_line
from ..models.onnx import DIGEST_FILE, MODEL_FILE, feed_file, file_digest
from ..staging import remove_abandoned, remove_own, staging_name
from .export import EXPORT_FORMAT_VERSION, SCRATCH_PREFIX, ExportOptions, export_checkpoint
from .validate import packaged_sample_texts

CACHE_ENV = "STRUCTSENT_CACHE"
CACHED_VALIDATION_TEXTS = 120  # a load-time export checks itself on the packaged sample reviews
# What an entry was written as: its key and its graph's digest. The digest file beside the graph
# vouches for the bytes, not for which export they are: another entry's graph and digest copied in
# passed as this one.
ENTRY_FILE = "cache_entry.json"

log = logging.getLogger("structsent.onnx")
# A record of what happened, not of something wrong: logged at WARNING so that it shows by default
# (the export takes seconds), and said by the command line without "warning:".
NOTICE = {"notice": True}

# Each $STRUCTSENT_CACHE read, as the absolute directory it named when first read: a relative one was
# taken from the working directory at each use (a program that changed directory between two loads
# exported the model again elsewhere, and an export's staging was looked for in another directory).
_ANCHORED: dict[str, Path] = {}


def cache_root() -> Path:
    """structsent's cache directory: $STRUCTSENT_CACHE, else $XDG_CACHE_HOME/structsent, else ~/.cache/structsent.
    $STRUCTSENT_CACHE set blank is a ConfigError, as an engine variable set blank is (it was taken as
    unset; it is no directory named " " where the command runs either). A relative $STRUCTSENT_CACHE
    is the directory it names from the working directory where this process first read it."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit is not None and not explicit.strip():
        raise ConfigError(f"{CACHE_ENV}={explicit!r}: expected a directory (unset it for the default, "
                          "$XDG_CACHE_HOME/structsent or ~/.cache/structsent)")
    try:
        if explicit is not None:
            return _ANCHORED.setdefault(explicit, Path(explicit).expanduser().absolute())
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError as err:  # "~nosuchuser/...", or no home directory for this user
        # An unwritable cache, as far as the caller can tell: the torch path needs none.
        raise OutputWriteError(f"no cache directory: {err} (reading ${CACHE_ENV} or the home directory); "
                               f"set {CACHE_ENV} to a writable directory") from None
    return Path(base) / "structsent"


def cache_key(directory: Path, options: ExportOptions) -> str:
    """A digest of the files a load of the model reads, the export options and the tool versions."""
    import onnxruntime
    import torch

    from ..models import files_a_load_reads

    digest = hashlib.blake2b(digest_size=12)
    digest.update(
        json.dumps(
            [EXPORT_FORMAT_VERSION, options.precision.value, options.optimize, onnxruntime.__version__,
             torch.__version__]
        ).encode()
    )
    for path in files_a_load_reads(directory):
        digest.update(path.relative_to(directory).as_posix().encode())
        feed_file(digest, path)
    return digest.hexdigest()


# Exports of one process, one at a time: the exporter (torch.onnx tracing) keeps global state and
# fails when two threads trace at once. Processes need no lock: each exports into its own staging
# directory and renames it into place atomically.
_EXPORTING = threading.Lock()


def cached_export(checkpoint, options: ExportOptions) -> Path:
    """The directory of ``checkpoint`` exported with ``options``, exporting it on first use.

    An entry whose graph no longer matches the digest recorded when it was written (truncated,
    corrupt, left half-deleted) is discarded with a warning and exported again, once. A cache that
    cannot be used (an entry this user may not read, a damaged one that cannot be removed, a
    directory that cannot be written) is an OutputWriteError: ``backend='auto'`` runs torch then.
    """
    require("onnxruntime", "onnx")
    require("onnx", "onnx")
    target = cache_root() / "onnx" / cache_key(checkpoint.directory, options)
    with _EXPORTING:  # two threads loading one model: the second waits, then finds the entry
        return _existing_or_exported(target, checkpoint, options)


def _existing_or_exported(target: Path, checkpoint, options: ExportOptions) -> Path:
    problem = entry_problem(target)
    if problem is None:
        return target
    if os.path.lexists(target):  # a dangling link too
        log.warning("the ONNX export cache entry %s is unusable (%s); discarding it and exporting again",
                    one_line(str(target)), problem)
        _discard(target, problem)
    _write_entry(target, checkpoint, options)
    problem = entry_problem(target)
    if problem is None:
        return target
    raise ModelFormatError(f"{target}: the ONNX export just written is unusable ({problem})")


def _write_entry(target: Path, checkpoint, options: ExportOptions) -> None:
    try:
        _export_into(target, checkpoint, options)
    except (OSError, OutputWriteError) as err:
        cause = err if isinstance(err, OSError) else err.__cause__
        reason = _os_reason(cause) if isinstance(cause, OSError) else str(err)
        free = "free space there, " if isinstance(cause, OSError) and cause.errno == errno.ENOSPC else ""
        raise OutputWriteError(f"cannot write the ONNX export cache {target.parent}: {reason}; {free}point "
                               f"{CACHE_ENV} at a writable directory, or use backend torch") from err


def _os_reason(err: OSError) -> str:
    return f"{err.strerror or err} (errno {err.errno})"


def _discard(target: Path, problem: str) -> None:
    """Remove the unusable entry ``target``: a directory, or a file or link left in its place."""
    try:
        if target.is_symlink() or not target.is_dir():
            target.unlink()
        else:
            shutil.rmtree(target)
    except FileNotFoundError:
        pass  # another process discarded it first
    except OSError as err:  # a read-only cache, another user's entry: the cache's fault, not the model's
        raise OutputWriteError(f"the ONNX export cache entry {target} is damaged ({problem}) and cannot be removed: "
                               f"{_os_reason(err)}; remove it, point {CACHE_ENV} at a writable directory, "
                               "or use backend torch") from err


def entry_problem(target: Path) -> str | None:
    """Why the cache entry ``target`` cannot be used, or None when it is complete and intact.

    An entry this user may not read (another user's, with a private mode) is an OutputWriteError
    that says so: it is neither damaged nor a cache that cannot be written.
    """
    try:
        return _damage(target)
    except PermissionError as err:
        raise OutputWriteError(f"cannot read the ONNX export cache entry {target}: {_os_reason(err)}; make it "
                               f"readable to this user (chmod -R a+rX), remove it, point {CACHE_ENV} at another "
                               "directory, or use backend torch") from err


def _damage(target: Path) -> str | None:
    if not target.exists():
        return "a link to a missing path" if target.is_symlink() else "absent"
    for name in ("config.json", MODEL_FILE, DIGEST_FILE, ENTRY_FILE):
        if not (target / name).is_file():
            return f"{name} is not a regular file" if os.path.lexists(target / name) else f"no {name}"
    try:
        recorded = (target / DIGEST_FILE).read_text(encoding="ascii").strip()
        entry = _entry_record(target / ENTRY_FILE)
        actual = file_digest(target / MODEL_FILE)
    except PermissionError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        return f"unreadable: {err}"
    if entry is None:
        return f"{ENTRY_FILE} is not what an export writes"
    if entry["key"] != target.name:
        return f"written for another export (key {entry['key'][:40]!r}): copied or moved here"
    if actual != recorded:
        return f"{MODEL_FILE} does not match the digest recorded when it was exported: truncated or corrupt"
    if actual != entry["graph"]:
        return f"{MODEL_FILE} is not the graph exported here (another export's, copied in)"
    return None


def _entry_record(path: Path) -> dict[str, str] | None:
    """The key and graph digest an entry records, or None when the file is not such a record."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    fields = ("key", "graph")
    if not isinstance(record, dict) or not all(isinstance(record.get(name), str) for name in fields):
        return None
    return {name: record[name] for name in fields}


STAGING_PREFIX = ".export-"


def _export_into(target: Path, checkpoint, options: ExportOptions) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    for prefix in (STAGING_PREFIX, "." + STAGING_PREFIX):  # staging directories, and the export's own beside them
        remove_abandoned(target.parent, prefix)
    staging = _new_staging(target.parent)
    try:
        texts, source = packaged_sample_texts()
        report = export_checkpoint(checkpoint, staging, options, validation_texts=texts[:CACHED_VALIDATION_TEXTS],
                                   validation_source=source)
        # The export recorded its graph's digest beside it: read, not hashed again.
        record = {"key": target.name, "graph": (staging / DIGEST_FILE).read_text(encoding="ascii").strip()}
        (staging / ENTRY_FILE).write_text(json.dumps(record), encoding="utf-8")
        accuracy = report.accuracy.summary() if report.accuracy is not None else "not validated"
        first = f"first use of {one_line(str(checkpoint.directory))} on ONNX Runtime: exported it ({options.describe()})"
        try:
            staging.rename(target)  # atomic: a concurrent load sees all of it or none of it
        except OSError:
            if not (target / MODEL_FILE).is_file():
                raise
            # Another load renamed its export into place first: that one is used (and checked by the caller).
            log.warning("%s in %.1fs, but another process's export reached %s first and is used; %s", first,
                        report.seconds, one_line(str(target)), accuracy, extra=NOTICE)
        else:
            log.warning("%s to %s in %.1fs; later loads reuse it; %s", first, one_line(str(target)), report.seconds,
                        accuracy, extra=NOTICE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_own_staging() -> None:
    """Remove what this process's exports into the cache are writing (their staging directories in
    the cache, their scratch in the temporary directory): for a process that ends at once, with an
    export still running in another thread whose own cleanups will not run."""
    with contextlib.suppress(OutputWriteError):  # no cache directory: no staging in it either
        remove_own(cache_root() / "onnx", STAGING_PREFIX)  # an export's own staging is inside it
    remove_own(Path(tempfile.gettempdir()), SCRATCH_PREFIX)


def _new_staging(directory: Path) -> Path:
    """A new staging directory in ``directory``, made as a plain mkdir makes one (the umask's mode:
    mkdtemp's 0700 kept every other user out of an entry once renamed into place)."""
    while True:
        staging = directory / (staging_name(STAGING_PREFIX) + secrets.token_hex(4))
        try:
            staging.mkdir()
            return staging
        except FileExistsError:
            continue
