"""Streaming readers: rows come out one at a time with a resumable position.

Text formats (plain text, CSV/TSV, JSONL) are read as bytes, line by line, so that a bad byte
is reported with its line and byte offset and a job can resume at an exact byte position.
Parquet is read in record batches and resumes at a row index.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import BadInputError
from .formats import Format

FLAG, FAIL = "flag", "error"


@dataclasses.dataclass(slots=True)
class InputRow:
    """One input record: its columns (None when unreadable), its text, and why it is bad."""

    number: int  # 1-based record number
    values: dict | None
    text: object
    error: str | None = None


class RowReader:
    """Base reader. Subclasses yield InputRow and keep ``position`` just after the last one."""

    columns: list[str]
    text_column: str
    position: int  # byte offset (text formats) or row index (Parquet) after the last row read
    total: int | None  # bytes or rows in all, when known (for progress)
    rows_read: int

    def __iter__(self) -> Iterator[InputRow]:
        raise NotImplementedError

    @property
    def line(self) -> int:
        """Physical lines consumed so far (0 for Parquet)."""
        lines = getattr(self, "lines", None)
        return lines.line_number if lines is not None else 0

    def close(self) -> None:
        lines = getattr(self, "lines", None)
        if lines is not None and lines.stream is not sys.stdin.buffer:
            lines.stream.close()


class _LineSource:
    """Binary lines with their numbers and byte offsets, decoded as UTF-8 one line at a time."""

    def __init__(self, stream: BinaryIO, start: int, on_bad_row: str, name: str, line: int = 0) -> None:
        self.stream = stream
        self.offset = start
        self.line_number = line
        self.on_bad_row = on_bad_row
        self.name = name
        self.bad_line: str | None = None  # error of the last line, in flag mode

    def __iter__(self) -> Iterator[str]:
        for raw in iter(self.stream.readline, b""):
            self.line_number += 1
            start = self.offset
            self.offset += len(raw)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                message = (
                    f"invalid UTF-8 at line {self.line_number}, byte offset {start + err.start} "
                    f"(byte 0x{raw[err.start]:02x})"
                )
                if self.on_bad_row == FAIL:
                    raise BadInputError(
                        f"{self.name}: {message}; fix the file or pass --on-bad-row flag"
                    ) from err
                self.bad_line = message
                yield raw.decode("utf-8", "replace")


class TextLineReader(RowReader):
    """Plain text: one review per line (the line ending is not part of the text)."""

    def __init__(self, stream: BinaryIO, *, start: int, line: int, rows_done: int, total: int | None,
                 on_bad_row: str, name: str, text_column: str = "text") -> None:
        self.lines = _LineSource(stream, start, on_bad_row, name, line)
        self.columns = [text_column]
        self.text_column = text_column
        self.total = total
        self.rows_read = rows_done

    @property
    def position(self) -> int:
        return self.lines.offset

    def __iter__(self) -> Iterator[InputRow]:
        for line in self.lines:
            self.rows_read += 1
            text = line.rstrip("\r\n")
            error, self.lines.bad_line = self.lines.bad_line, None
            yield InputRow(self.rows_read, {self.text_column: text}, text if error is None else None, error)


class JsonLinesReader(RowReader):
    """JSON Lines: one object per line; its keys are the columns."""

    def __init__(self, stream: BinaryIO, *, start: int, line: int, rows_done: int, total: int | None,
                 on_bad_row: str, name: str, text_column: str) -> None:
        self.lines = _LineSource(stream, start, on_bad_row, name, line)
        self.text_column = text_column
        self.total = total
        self.rows_read = rows_done
        self.on_bad_row = on_bad_row
        self.name = name
        self.columns = []

    @property
    def position(self) -> int:
        return self.lines.offset

    def __iter__(self) -> Iterator[InputRow]:
        for line in self.lines:
            if not line.strip():
                continue  # blank lines separate nothing in JSON Lines
            self.rows_read += 1
            error, self.lines.bad_line = self.lines.bad_line, None
            values = None
            if error is None:
                values, error = self._parse(line)
            if values is not None and self.text_column not in values:
                raise BadInputError(
                    f"{self.name}: line {self.lines.line_number} has no {self.text_column!r} field "
                    f"(fields: {', '.join(values) or 'none'}); pass --text-column"
                )
            if error is not None and self.on_bad_row == FAIL:
                raise BadInputError(f"{self.name}: {error}; fix the file or pass --on-bad-row flag")
            text = values.get(self.text_column) if values is not None else None
            yield InputRow(self.rows_read, values, text, error)

    def _parse(self, line: str) -> tuple[dict | None, str | None]:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            return None, f"line {self.lines.line_number}: invalid JSON ({err.msg} at column {err.colno})"
        if not isinstance(value, dict):
            return None, f"line {self.lines.line_number}: expected a JSON object, got {type(value).__name__}"
        return value, None


class CsvReader(RowReader):
    """CSV or TSV with a header row. Records may span lines (quoted newlines)."""

    def __init__(self, stream: BinaryIO, *, start: int, line: int, rows_done: int, total: int | None,
                 on_bad_row: str, name: str, text_column: str, delimiter: str, header: list[str] | None) -> None:
        self.lines = _LineSource(stream, start, on_bad_row, name, line)
        self.name = name
        self.on_bad_row = on_bad_row
        self.total = total
        self.rows_read = rows_done
        self._records = csv.reader(iter(self.lines), delimiter=delimiter, strict=True)
        self.columns = header if header is not None else self._read_header()
        self.text_column = resolve_text_column(self.columns, text_column, name)

    @property
    def position(self) -> int:
        return self.lines.offset

    def _read_header(self) -> list[str]:
        try:
            header = next(self._records)
        except StopIteration:
            raise BadInputError(f"{self.name}: empty file (no header row)") from None
        except csv.Error as err:
            raise BadInputError(f"{self.name}: line 1: malformed header ({err})") from err
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]  # a UTF-8 byte-order mark is not part of the name
        return header

    def __iter__(self) -> Iterator[InputRow]:
        width = len(self.columns)
        while True:
            first_line = self.lines.line_number + 1
            try:
                fields = next(self._records)
            except StopIteration:
                return
            except csv.Error as err:
                yield from self._bad(f"line {first_line}: malformed CSV ({err}; an unbalanced quote?)")
                return  # the parser cannot resynchronise after a broken quote
            if not fields:
                if width != 1:
                    continue  # a blank line between records of several columns holds no record
                fields = [""]  # one column: a blank line is an empty text, flagged downstream
            error, self.lines.bad_line = self.lines.bad_line, None
            if error is None and len(fields) != width:
                error = f"line {first_line}: expected {width} fields, got {len(fields)}"
                if self.lines.line_number > first_line:
                    error += f" (the record runs to line {self.lines.line_number}: an unbalanced quote?)"
            if error is not None:
                yield from self._bad(error)
                continue
            self.rows_read += 1
            values = dict(zip(self.columns, fields))
            yield InputRow(self.rows_read, values, values[self.text_column])

    def _bad(self, error: str) -> Iterator[InputRow]:
        if self.on_bad_row == FAIL:
            raise BadInputError(f"{self.name}: {error}; fix the file or pass --on-bad-row flag")
        self.rows_read += 1
        yield InputRow(self.rows_read, None, None, error)


class ParquetReader(RowReader):
    """Parquet, read one record batch at a time."""

    def __init__(self, path: str, *, rows_done: int, text_column: str, batch_size: int = 8192) -> None:
        from ..errors import require

        pq = require("pyarrow.parquet", "io")
        try:
            self.file = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises ArrowInvalid and OSError subclasses
            raise BadInputError(f"{path}: not a readable Parquet file ({err})") from err
        self.columns = list(self.file.schema_arrow.names)
        self.text_column = resolve_text_column(self.columns, text_column, path)
        self.total = self.file.metadata.num_rows
        self.rows_read = rows_done
        self.position = rows_done
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[InputRow]:
        skip = self.rows_read
        for batch in self.file.iter_batches(batch_size=self.batch_size):
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            for values in batch.slice(skip).to_pylist():
                skip = 0
                self.rows_read += 1
                self.position = self.rows_read
                yield InputRow(self.rows_read, values, values.get(self.text_column))
            skip = 0


def resolve_text_column(columns: list[str], requested: str, name: str) -> str:
    """The text column: the requested one if present, else the only column there is."""
    if requested in columns:
        return requested
    if requested == "text" and len(columns) == 1:
        return columns[0]
    raise BadInputError(
        f"{name}: no column {requested!r}; columns are: {', '.join(map(repr, columns))}. Pass --text-column NAME"
    )


def open_reader(path: str, fmt: Format, *, text_column: str, on_bad_row: str, position: int = 0,
                line: int = 0, rows_done: int = 0, header: list[str] | None = None) -> RowReader:
    """Open ``path`` ('-' for stdin) at a resume ``position`` (after ``line`` lines, ``rows_done`` rows)."""
    if fmt is Format.PARQUET:
        return ParquetReader(path, rows_done=rows_done, text_column=text_column)
    stream, total = _open_binary(path)
    if position:
        stream.seek(position)
    common = dict(start=position, line=line, rows_done=rows_done, total=total, on_bad_row=on_bad_row, name=path)
    if fmt is Format.TXT:
        return TextLineReader(stream, **common, text_column=text_column)
    if fmt is Format.JSONL:
        return JsonLinesReader(stream, **common, text_column=text_column)
    delimiter = "\t" if fmt is Format.TSV else ","
    return CsvReader(stream, **common, text_column=text_column, delimiter=delimiter, header=header)


def _open_binary(path: str) -> tuple[BinaryIO, int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed with the reader's file object
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInputError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise BadInputError(f"{path}: cannot open ({err.strerror})") from None
    import os

    return stream, os.fstat(stream.fileno()).st_size
