"""File formats and how they are recognised."""

from __future__ import annotations

import enum
from pathlib import Path

from ..errors import BadInputError


class Format(str, enum.Enum):
    TXT = "txt"
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"
    PARQUET = "parquet"


_SUFFIXES = {
    ".txt": Format.TXT,
    ".text": Format.TXT,
    ".csv": Format.CSV,
    ".tsv": Format.TSV,
    ".tab": Format.TSV,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".json": Format.JSONL,
    ".parquet": Format.PARQUET,
    ".pq": Format.PARQUET,
}


def suffixes_of(fmt: Format) -> list[str]:
    """The file-name suffixes (without the dot) that name ``fmt``.

    >>> suffixes_of(Format.JSONL)
    ['jsonl', 'ndjson', 'json']
    """
    return [suffix[1:] for suffix, known in _SUFFIXES.items() if known is fmt]


def detect_format(path: str, requested: str = "auto") -> Format:
    """The explicit format, else the one the file name's suffix implies."""
    if requested != "auto":
        return Format(requested)
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix in COMPRESSED_SUFFIXES:
        raise BadInputError(_compressed_input(path, suffix))
    raise BadInputError(
        f"{path}: cannot tell the format from the name; pass --format "
        f"({', '.join(f.value for f in Format)})"
    )


COMPRESSED_SUFFIXES = frozenset({".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".zst", ".zstd", ".zip", ".lz4",
                                 ".br", ".lzma", ".z", ".7z", ".tar", ".rar", ".sz", ".snappy"})


# What writes a compressed file's text to standard output, by suffix (archives: none, extract them).
_DECOMPRESSORS = {".gz": "zcat", ".z": "zcat", ".bz2": "bzcat", ".xz": "xzcat", ".lzma": "xzcat", ".zst": "zstdcat",
                  ".zstd": "zstdcat", ".lz4": "lz4cat", ".br": "brotli -dc", ".sz": "snzip -dc", ".snappy": "snzip -dc"}


def _compressed_input(path: str, suffix: str) -> str:
    """Why a compressed input is not read, and the command that streams it to the job (an archive:
    extract it)."""
    tool = _DECOMPRESSORS.get(suffix)
    inner_suffix = Path(Path(path).stem).suffix.lower()
    if tool is None or inner_suffix == ".tar":
        return f"{path}: an archive ({suffix}) is not read; extract its files and label them"
    inner = _SUFFIXES.get(inner_suffix)
    named = f" --format {inner.value}" if inner is not None else ""
    return (f"{path}: a compressed file ({suffix}) is not read; decompress it first, or stream it to `structsent "
            f"label -{named}` (e.g. {tool} {Path(path).name} | structsent label -{named})")


def output_format_for(input_format: Format, output: str | None, requested: str = "auto") -> Format:
    """Output format: explicit, else the output name's suffix, else the input's (text -> JSONL)."""
    if output and Path(output).suffix.lower() in COMPRESSED_SUFFIXES:
        inner = _SUFFIXES.get(Path(Path(output).stem).suffix.lower())
        named = inner.value if inner is not None and inner is not Format.TXT else (
            requested if requested != "auto" else output_format_for(input_format, None).value)
        if named == Format.PARQUET.value:
            raise BadInputError(f"{output}: Parquet output compresses its own columns; name it "
                                f"{Path(output).stem} (compressed output files are not written)")
        raise BadInputError(
            f"{output}: compressed output is not written (the file would hold plain text under a compressed "
            f"name); write to standard output and compress it: -o - --output-format {named} | gzip > {output}"
        )
    named = _SUFFIXES.get(Path(output).suffix.lower()) if output and output != "-" else None
    if named is Format.TXT and requested == "auto":  # (JSON Lines went out under that name)
        stem = Path(output).stem  # type: ignore[arg-type]
        raise BadInputError(f"{output}: plain text has no room for the added columns; name the output {stem}.jsonl "
                            f"(JSON Lines) or {stem}.csv")
    if requested != "auto":
        fmt = Format(requested)
        if named is not None and named is not fmt:  # (the file then held another format than its name said)
            either = "" if named is Format.TXT else ", or leave --output-format out"
            raise BadInputError(f"{output}: the name says {named.value}, --output-format says {fmt.value}; name the "
                                f"output {Path(output).stem}.{fmt.value}{either}")  # type: ignore[arg-type]
    else:
        fmt = named or input_format
    if fmt is Format.TXT:
        return Format.JSONL  # plain text has no room for label columns
    return fmt
