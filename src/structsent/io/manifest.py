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
from pathlib import Path

from ..errors import BadInputError

MANIFEST_VERSION = 1


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
    counts: dict = dataclasses.field(default_factory=dict)  # summary counters so far
    version: int = MANIFEST_VERSION

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {data.get('version')}")
            return cls(**data)
        except (OSError, ValueError, TypeError) as err:
            raise BadInputError(f"{path}: unreadable resume manifest ({err}); start over with --overwrite") from err

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(dataclasses.asdict(self), handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)


def input_fingerprint(path: str) -> dict:
    """Size, modification time and a hash of the first MiB: cheap, and changes on any edit."""
    if path == "-":
        return {"path": "-"}
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
    return {
        "path": os.path.abspath(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "head_sha256": digest.hexdigest(),
    }


def model_fingerprint(directory: Path, engine_info: dict) -> str:
    """A hash of the model's files (names, sizes, times, config) and the settings that change outputs."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
    relevant = {k: engine_info.get(k) for k in ("labels", "backend", "precision", "max_length", "long_text")}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    return digest.hexdigest()
