"""The resume manifest: what a job has committed, and what it was started with.

A job appends a chunk to its output, flushes it to disk, and only then rewrites the manifest
atomically (temporary file + rename). After a crash at any moment, the manifest therefore
describes a prefix of the output that is complete; whatever lies beyond it is discarded on
resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path
from stat import S_ISREG

from ..config import INT8_RECIPE, Precision
from ..errors import BadInputError

MANIFEST_VERSION = 2


@dataclasses.dataclass
class Manifest:
    input_fingerprint: dict
    model_fingerprint: str
    options: dict
    header: list[str] | None = None
    position: int = 0  # input byte offset (text formats) or row index (Parquet)
    line: int = 0
    rows_done: int = 0
    output_bytes: int = 0  # committed length of the partial output (byte formats)
    parts: int = 0  # committed part files (Parquet)
    cache_bytes: int = 0  # committed length of the job's result cache file
    ledger_bytes: int = 0  # committed length of the job's input ledger (digests of consumed input)
    counts: dict = dataclasses.field(default_factory=dict)  # summary counters so far
    # running CRC-32 of each work file's committed bytes ("output", "parts", "cache", "ledger");
    # None in a manifest written before they were kept: such a job resumes without the check
    checksums: dict | None = None
    # the settings model_fingerprint hashed, so that a refused resume names the one that changed;
    # None in a manifest written before they were kept
    model_settings: dict | None = None
    # settings that change only the last digits of a PyTorch or GPU run's probabilities (threads,
    # batch sizes, chunk rows): a resume that changes them is said, not refused; None where they
    # change nothing (ONNX Runtime on the CPU), or in a manifest written before they were kept
    run_settings: dict | None = None
    # the file at the output's path the job is to replace (--overwrite), as file_identity gives it;
    # None: none, so a file found there at the end was written by another program while the job ran
    replaces: dict | None = None
    # the job's own merged Parquet output, recorded just before it is renamed onto the output's path
    # (a kill right after that rename leaves it there: the job's, not another program's)
    written: dict | None = None
    version: int = MANIFEST_VERSION

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            if data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {data.get('version')}, written by another structsent version")
            _check_field_types(data)
            return cls(**data)
        except (OSError, ValueError, TypeError, RecursionError) as err:
            raise BadInputError(f"{path}: unreadable resume manifest ({err}); start over with --overwrite") from err

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            # ASCII: a name holding bytes that are not UTF-8 (os.fsdecode's U+DC80..U+DCFF) is written as
            # its \udcXX escape, which reads back as the same name (UTF-8 cannot hold it: a traceback)
            json.dump(dataclasses.asdict(self), handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "input_fingerprint": (dict,), "model_fingerprint": (str,), "options": (dict,), "header": (list, type(None)),
    "position": (int,), "line": (int,), "rows_done": (int,), "output_bytes": (int,), "parts": (int,),
    "cache_bytes": (int,), "ledger_bytes": (int,), "counts": (dict,), "version": (int,),
    "checksums": (dict, type(None)), "model_settings": (dict, type(None)), "replaces": (dict, type(None)),
    "run_settings": (dict, type(None)),
    "written": (dict, type(None)),
}


def _check_field_types(data: dict) -> None:
    """Refuse a manifest whose fields are not of the types a job writes (a hand edit, another program)."""
    for name, value in data.items():
        kinds = _FIELD_TYPES.get(name)
        if kinds is None:
            raise ValueError(f"unknown field {name!r}")
        if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, int) and value < 0):
            raise ValueError(f"field {name!r} holds {json.dumps(value)[:40]}")
    if any(not isinstance(name, str) for name in data.get("header") or []):
        raise ValueError("field 'header' holds a name that is not a string")
    for role, crc in (data.get("checksums") or {}).items():
        if isinstance(crc, bool) or not isinstance(crc, int) or not 0 <= crc < 1 << 32:
            raise ValueError(f"field 'checksums' holds {json.dumps(crc)[:40]} for {role!r}")


def file_identity(path: Path) -> dict | None:
    """Which file ``path`` names now (device, inode, size, modification time), or None when none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return {"dev": status.st_dev, "ino": status.st_ino, "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def same_input(saved: dict, fresh: dict) -> bool:
    """Whether a resumed job reads the input its first run read. The modification time counts
    only where a fingerprint holds one (Parquet; jobs begun before text inputs dropped it): a text
    input's consumed bytes are checked against the ledger's digests instead, so a copy of the same
    bytes, or a touch, still resumes; so does the file under another name (moved, or through a link)."""
    if "size" not in saved or "size" not in fresh:  # standard input or a pipe: never the same input again
        return saved == fresh
    # Not the path: the same file moved, or named through a link, is the same input (its bytes say so).
    ignored = {"path"} if "mtime_ns" in fresh else {"path", "mtime_ns"}
    return {k: v for k, v in saved.items() if k not in ignored} == {k: v for k, v in fresh.items() if k not in ignored}


def input_fingerprint(path: str, *, ledger_verified: bool = True) -> dict:
    """Size and a hash of the first MiB: cheap, and changes on most edits; the modification time
    too where no ledger verifies the consumed bytes (``ledger_verified=False``: Parquet)."""
    if path == "-":
        return {"path": "-"}
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    if not S_ISREG(stat.st_mode):
        return {"path": os.path.abspath(path), "stream": True}  # a pipe: reading its head would consume it
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
    fingerprint = {"path": os.path.abspath(path), "size": stat.st_size, "head_sha256": digest.hexdigest()}
    if not ledger_verified:
        fingerprint["mtime_ns"] = stat.st_mtime_ns
    return fingerprint


def model_fingerprint(directory: Path, engine_info: dict, *, chunk_rows: int | None = None) -> str:
    """A hash of the files a load of the model reads (names and contents) and the settings that
    change outputs. Contents, not modification times: the same model copied or installed again
    resumes (hashing costs ~0.1 s for the bundled model's 48 MB, about a second for a BERT-base
    checkpoint); files the load does not read are left out."""
    from ..models import files_a_load_reads

    digest = hashlib.blake2b(digest_size=32)
    for file in files_a_load_reads(Path(directory)):
        digest.update(f"{file.relative_to(directory).as_posix()}:{file.stat().st_size}:".encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    digest.update(json.dumps(model_settings(engine_info, chunk_rows=chunk_rows), sort_keys=True).encode())
    return digest.hexdigest()


def model_settings(engine_info: dict, *, chunk_rows: int | None = None) -> dict:
    """The engine's settings that change a result (and so the model fingerprint); with int8, also
    the job's ``chunk_rows`` (a chunk's texts are what its batches are made of)."""
    relevant = {k: engine_info.get(k) for k in ("labels", "backend", "precision", "max_length", "long_text", "pad_multiple")}
    if engine_info.get("long_text") == "windows":  # where the windows begin changes a long text's result
        relevant["window_stride"] = engine_info.get("window_stride")
    if engine_info.get("attention") == "packed":  # packed and padded fp16 logits differ in the last digits
        relevant["attention"] = "packed"
    if engine_info.get("precision") == Precision.INT8.value:  # int8's numbers are those of its recipe
        relevant["int8_recipe"] = INT8_RECIPE
        # and of its batches (per-batch activation scales): what forms them decides the numbers
        relevant.update({k: engine_info.get(k) for k in INT8_BATCH_SETTINGS})
        if chunk_rows is not None:
            relevant["chunk_rows"] = chunk_rows
    return relevant


INT8_BATCH_SETTINGS = ("token_budget", "max_batch_size", "batch_overhead_tokens", "pad_multiple")


def run_settings(engine_info: dict, *, threads: int | None, chunk_rows: int) -> dict | None:
    """The settings that decide how a PyTorch or GPU run splits its sums (the threads, and what
    forms its batches): the last digit of a probability may differ between two runs that differ
    in them, so a resume that changes them is said. None where they change no bit: ONNX Runtime
    on the CPU (its sums do not depend on them; int8's batch settings are model settings)."""
    if engine_info.get("backend") == "onnx" and not str(engine_info.get("device", "")).startswith("cuda"):
        return None
    batches = {k: engine_info.get(k) for k in ("token_budget", "max_batch_size", "batch_overhead_tokens")}
    return {"num_threads": threads, **batches, "chunk_rows": chunk_rows}


def changed_settings(saved: dict | None, fresh: dict) -> str | None:
    """The settings (the model's, or the job's options) that differ, as flags ("--long-text was
    'truncate', now 'windows'"), or None where none does (or the saved ones are unknown)."""
    if saved is None:
        return None
    differ = [name for name in dict.fromkeys([*saved, *fresh]) if saved.get(name) != fresh.get(name)]
    changed = [f"{_setting(name)} was {_value(name, saved)}, now {_value(name, fresh)}" for name in differ
               if not set(_SET_BY.get(name, ())) & set(differ)]
    return "; ".join(changed) or None


# settings named only when none of those that set them changed too (a stride follows the window;
# int8's recipe and batch settings are saved only with int8)
_SET_BY = {"window_stride": ("long_text", "max_length"), "int8_recipe": ("precision",),
           **{name: ("precision",) for name in (*INT8_BATCH_SETTINGS, "chunk_rows")},
           "pad_multiple": ("precision", "attention")}  # (label's own pad multiple steps aside for packed attention)
# what a setting saved only when set means when it is absent (attention is saved only when packed)
_ABSENT_MEANS = {"attention": "padded"}


def _setting(name: str) -> str:
    return _NOT_FLAGS.get(name) or "--" + name.replace("_", "-")


def _value(name: str, settings: dict) -> str:
    value = settings.get(name, _ABSENT_MEANS.get(name))
    return "not given" if value is None or value == "" else repr(value)  # (--prefix's default is "")


_NOT_FLAGS = {"int8_recipe": "the int8 recipe (another structsent version)", "labels": "the model's labels",
              "input_format": "--format"}  # (the library's name for the input's format)


class InputLedger:
    """What each committed chunk consumed of the input: its end and a digest of its bytes.

    Entries are appended (and fsynced) with every commit, next to the output, so that a
    resumed job can read the prefix it skips once more and refuse if any byte of it changed,
    naming the rows where the change lies. The digests are computed while the input is read,
    at no extra pass; only a resume reads the prefix again.
    """

    RECORD = struct.Struct("<QQQ16s")  # rows done, byte position and line after the chunk; digest

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entry(self, rows_done: int, position: int, line: int, digest: str) -> bytes:
        return self.RECORD.pack(rows_done, position, line, bytes.fromhex(digest))

    def entries(self, length: int) -> list[tuple[int, int, int, bytes]]:
        """The first ``length`` bytes of entries (what the manifest says was committed)."""
        if not length:
            return []
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(length)
        except FileNotFoundError:
            raise BadInputError(f"cannot resume: {self.path} (the input ledger) is missing; start over with "
                                "--overwrite") from None
        if len(data) != length or length % self.RECORD.size:
            raise BadInputError(f"{self.path}: the input ledger is shorter than the manifest says; "
                                "start over with --overwrite")
        return list(self.RECORD.iter_unpack(data))

    def verify(self, input_path: str, length: int) -> None:
        """Raise BadInputError if the input's bytes differ from those the committed chunks consumed."""
        import hashlib

        rows_before, line_before, position = 0, 0, 0
        with open(input_path, "rb") as handle:
            for rows_done, end, line, digest in self.entries(length):
                hasher = hashlib.blake2b(digest_size=16)
                while position < end:
                    block = handle.read(min(1 << 20, end - position))
                    if not block:
                        break
                    hasher.update(block)
                    position += len(block)
                if position != end or hasher.digest() != digest:
                    raise BadInputError(
                        f"cannot resume: {input_path} changed since the job began: rows {rows_before + 1:,}-"
                        f"{rows_done:,} (lines {line_before + 1:,}-{line:,}) differ from what was labelled; "
                        "start over with --overwrite"
                    )
                rows_before, line_before = rows_done, line
