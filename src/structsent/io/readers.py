"""Streaming readers: rows come out one at a time with a resumable position.

Text formats (plain text, CSV/TSV, JSONL) are read as bytes, line by line, so that a bad byte
is reported with its line and byte offset and a job can resume at an exact byte position.
Parquet is read in record batches and resumes at a row index.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import decimal
import hashlib
import io
import json
import math
import os
import re
import shlex
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from ..errors import BadInputError, InputChangedError
from ..lines import one_line
from .formats import Format
from .sniff import HEAD_BYTES, check_header, check_not_utf16

FLAG, FAIL = "flag", "error"


@dataclasses.dataclass(slots=True)
class InputRow:
    """One input record: its columns (None when unreadable), its text, and why it is bad."""

    number: int  # 1-based record number
    values: dict | None
    text: object
    error: str | None = None
    line: int | None = None  # the physical line it was read from (JSON Lines), which its flag names


class RowReader:
    """Base reader. Subclasses yield InputRow and keep ``position`` just after the last one."""

    columns: list[str]
    text_column: str
    total: int | None  # bytes or rows in all, when known (for progress)
    rows_read: int
    resynchronised: int = 0  # malformed multi-line CSV records whose later lines were read again

    def __iter__(self) -> Iterator[InputRow]:
        raise NotImplementedError

    @property
    def position(self) -> int:
        """Byte offset (text formats) or row index (Parquet) just after the last row read."""
        raise NotImplementedError

    @property
    def waiting_for_input(self) -> bool:
        """Whether the reader is blocked until a pipe gives its next line (never for a file)."""
        lines = getattr(self, "lines", None)
        return lines is not None and lines.waiting

    @property
    def reads_a_stream(self) -> bool:
        """Whether a read may wait for ever: a pipe's, a FIFO's, a terminal's (never a file's)."""
        lines = getattr(self, "lines", None)
        return lines is not None and lines.may_wait

    @property
    def line(self) -> int:
        """Physical lines consumed so far (0 for Parquet)."""
        lines = getattr(self, "lines", None)
        return lines.line_number if lines is not None else 0

    @property
    def appended_after_open(self) -> int:
        """Bytes appended to the input file after the job opened it (not read; known once it is read)."""
        lines = getattr(self, "lines", None)
        return lines.appended if lines is not None else 0

    def take_digest(self) -> str | None:
        """Digest of the input bytes consumed since the last call (None for Parquet)."""
        lines = getattr(self, "lines", None)
        return lines.take_digest() if lines is not None else None

    def close(self) -> None:
        lines = getattr(self, "lines", None)
        if lines is not None and lines.stream is not _stdin_head and (_stdin is None or lines.stream is not _stdin[1]):
            lines.stream.close()


BYTE_ORDER_MARK = "\ufeff"
REREAD_BYTES = 1 << 12  # of the first lines and of the last line read, looked at again at the end
MAX_LINE_BYTES = 1 << 27  # a physical line longer than this (128 MiB) is no row of reviews


@dataclasses.dataclass(slots=True)
class _Line:
    """One physical line: its bytes, its text, where it starts, and why it is unreadable."""

    raw: bytes
    text: str
    number: int  # 1-based physical line number
    start: int  # byte offset of its first byte
    error: str | None = None  # undecodable bytes (flag mode)


class _LineSource:
    """Binary lines decoded one at a time.

    Reading and consuming are apart: a reader ``consume``s the lines of each row it yields,
    and only that moves ``offset`` (the resume position), ``line_number`` and the digest of
    the bytes consumed. A CSV reader can so give back lines it has read but not used.
    """

    def __init__(self, stream: BinaryIO, start: int, on_bad_row: str, name: str, line: int = 0,
                 size: int | None = None) -> None:
        self.stream = stream
        self.size = size  # the file's size when opened (None: a stream); it must not shrink while read
        self.offset = start
        self.line_number = line
        self.on_bad_row = on_bad_row
        self.name = name
        self._start = start  # where reading began (the file's start, or a resume's position)
        self._read_offset = start
        self._read_number = line
        self._digest = hashlib.blake2b(digest_size=16)
        self.waiting = False  # inside a read of a stream (a pipe), which may wait for ever
        self.may_wait = not _is_a_file(stream)  # a stream's read may wait for ever
        # A file is read as it was when the job opened it: lines appended while it runs are not its
        # input (a line being written when it opened was labelled as its first part, exit 0).
        self._end = size if size is not None and not self.may_wait else None
        self.appended = 0  # bytes the file had grown by when its input part was read to the end
        # Bytes read first (from ``start``) and the last line read (from its offset), looked at again
        # once the file is read: a file rewritten while the job read it (its bytes replaced, not
        # appended to) gave rows of its old and of its new content.
        self._first_bytes = b""
        self._last_line: tuple[int, bytes] | None = None
        # And every byte read, when the file was written to while the job read it, or just before
        # (within a file system clock tick): a rewrite that kept those bytes gave mixed rows too.
        self._read_digest = hashlib.blake2b(digest_size=16)
        self._opened_ns = time.time_ns()
        self._stamp_at_open = _change_stamp(stream) if self._end is not None else None

    def __iter__(self) -> Iterator[_Line]:
        check_not_utf16(self._head(), self.name)
        for raw in self._raw_lines():
            self._read_number += 1
            start, self._read_offset = self._read_offset, self._read_offset + len(raw)
            if not raw.endswith(b"\n"):  # the file's last line, or one cut short by a file that shrank or grew
                self._check_not_cut()
                self._check_not_continued()
            if len(self._first_bytes) < REREAD_BYTES:  # (past a header line: rows too)
                self._first_bytes += raw[: REREAD_BYTES - len(self._first_bytes)]
            self._last_line = (start, raw)
            self._read_digest.update(raw)
            text, error = self._decoded(raw, start)
            if start == 0 and text.startswith(BYTE_ORDER_MARK):
                text = text[1:]  # a UTF-8 byte-order mark opens the file, not its first value
            yield _Line(raw, text, self._read_number, start, error)
        self._check_not_cut()
        if self._end is not None:
            self._check_not_rewritten()
            self.appended = max(self._size_now() - self._end, 0)

    def _head(self) -> bytes:
        """The input's first bytes, looked at and left unread, for the UTF-16 check before any row (read
        as UTF-8, UTF-16 gave rows of noise): a file's from its start, a resumed job's too; a stream's
        as far as it holds them when first read (b"" where it cannot be looked at)."""
        if not self.may_wait:
            try:
                return os.pread(self.stream.fileno(), HEAD_BYTES, 0)
            except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                return b""
        if self._start:  # (a stream is never resumed)
            return b""
        self.waiting = True  # a pipe's first bytes may not have come yet
        try:
            return _peeked(self.stream, HEAD_BYTES)[:HEAD_BYTES]
        except (OSError, ValueError):
            return b""
        finally:
            self.waiting = False

    def _check_not_rewritten(self) -> None:
        """The bytes read are the file's still: a file rewritten (not appended to) while the job read
        it gave rows of its old and of its new content, exit 0. The first and last bytes read are
        looked at again always, every byte read when the file may have been written since it was
        opened (one more read of the file; a file left alone is not read again)."""
        if self._last_line is None:
            return
        last_start, last = self._last_line
        tail = last[-REREAD_BYTES:]
        for offset, data in ((self._start, self._first_bytes), (last_start + len(last) - len(tail), tail)):
            try:
                now = os.pread(self.stream.fileno(), len(data), offset)
            except (OSError, ValueError, io.UnsupportedOperation):
                return
            if now != data:
                raise self._rewritten(f"its bytes at offset {offset:,} are no longer those read")
        if not self._written_while_read():
            return
        now_read = self._digest_of_read_bytes_now()
        if now_read is not None and now_read != self._read_digest.digest():
            raise self._rewritten(f"its bytes {self._start:,}-{self._read_offset:,} are no longer those read")

    def _rewritten(self, why: str) -> InputChangedError:
        return InputChangedError(f"{self.name}: the file was rewritten while the job read it ({why}), so the rows "
                                 "read are not all of one file")

    def _written_while_read(self) -> bool:
        """Whether the file may have been written since the job opened it: its change stamp moved,
        or it was last written so shortly before it was opened that a write since may have kept the
        stamp (time stamps advance in clock ticks of a few milliseconds)."""
        if self._stamp_at_open is None:
            return False
        return (_change_stamp(self.stream) != self._stamp_at_open
                or self._opened_ns - self._stamp_at_open[0] < _RECENT_WRITE_NS)

    def _digest_of_read_bytes_now(self) -> bytes | None:
        """The digest of the bytes the job read, as the file holds them now (b"" when it holds fewer;
        None when it cannot be read)."""
        digest = hashlib.blake2b(digest_size=16)
        offset = self._start
        try:
            while offset < self._read_offset:
                block = os.pread(self.stream.fileno(), min(_REREAD_BLOCK, self._read_offset - offset), offset)
                if not block:
                    return b""
                digest.update(block)
                offset += len(block)
        except (OSError, ValueError, io.UnsupportedOperation):
            return None
        return digest.digest()

    def _raw_lines(self) -> Iterator[bytes]:
        """The stream's lines, each refused past MAX_LINE_BYTES (an input with no line breaks, such
        as a binary file or /dev/zero, was read into memory until the process ran out of it); a
        file's up to the size it had when opened."""
        while True:
            limit = MAX_LINE_BYTES + 1
            if self._end is not None:
                limit = min(limit, self._end - self._read_offset)
                if limit <= 0:
                    return
            self.waiting = self.may_wait  # a file's read never waits long; a pipe's may wait for ever
            raw = self.stream.readline(limit)
            self.waiting = False
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise BadInputError(
                    f"{self.name}: line {self._read_number + 1} is longer than {MAX_LINE_BYTES >> 20} MiB (no line "
                    "break in it): not a text file of rows?"
                )
            yield raw

    def _check_not_cut(self) -> None:
        """The file ended before the size it had when the job opened it: it was cut (truncated or
        rewritten) while the job read it, and the rest of its rows, and the last one read, are not
        the file's. Nothing read since the last commit is written."""
        if self.size is not None and self._read_offset < self.size:
            now = self._size_now()  # less than where reading ended: cut behind the reader (to 0, say)
            size_now = f" (it is {now:,} bytes now)" if now != self._read_offset else ""
            raise InputChangedError(
                f"{self.name}: the file ended at byte {self._read_offset:,}{size_now}, short of the {self.size:,} bytes it "
                "had when the job opened it: it was cut or rewritten while the job read it, so its last rows are "
                "not the file's"
            )

    def _check_not_continued(self) -> None:
        """A last line without a line break at the size the file had when the job opened it, in a
        file longer now: the line was being written (its rest, appended since, is not read), so
        what was read of it is not the file's row."""
        if self.continued_since_opened():
            raise InputChangedError(
                f"{self.name}: line {self._read_number} had no line break at byte {self._end:,}, the end of "
                "the file when the job opened it, and the file has grown since: the line was being written, "
                "so its row is not the file's"
            )

    def continued_since_opened(self) -> bool:
        """Whether the file was read to the size it had when opened and has grown since."""
        return self._end is not None and self._read_offset == self._end and self._size_now() > self._end

    def _size_now(self) -> int:
        try:
            return os.fstat(self.stream.fileno()).st_size
        except (OSError, ValueError):
            return 0

    def _decoded(self, raw: bytes, start: int) -> tuple[str, str | None]:
        """The line's text, and why it is unreadable (flag mode; fail mode raises)."""
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError as err:
            message = (
                f"invalid UTF-8 at line {self._read_number}, byte offset {start + err.start} "
                f"(byte 0x{raw[err.start]:02x})"
            )
            if self.on_bad_row == FAIL:
                raise BadInputError(f"{self.name}: {message}; fix the file or pass --on-bad-row flag") from err
            return raw.decode("utf-8", "replace"), message

    def consume(self, line: _Line) -> None:
        self.offset = line.start + len(line.raw)
        self.line_number = line.number
        self._digest.update(line.raw)

    def take_digest(self) -> str:
        """Digest of the bytes consumed since the last call."""
        digest, self._digest = self._digest, hashlib.blake2b(digest_size=16)
        return digest.hexdigest()


_RECENT_WRITE_NS = 1_000_000_000  # a file written this shortly before it was opened is read again at the end
_REREAD_BLOCK = 1 << 20


def _peeked(stream, size: int) -> bytes:
    """What a buffered stream holds ahead, left unread (b"" for a stream that cannot be looked at)."""
    peek = getattr(stream, "peek", None)
    return peek(size) if peek is not None else b""


def _change_stamp(stream) -> tuple[int, int] | None:
    """The file's modification and status change times, in nanoseconds: a write moves both, and no
    program can set back the status change time (None: no file)."""
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return status.st_mtime_ns, status.st_ctime_ns


def _is_a_file(stream) -> bool:
    """Whether ``stream`` reads a regular file (not a pipe, a terminal, a socket...)."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


class TextLineReader(RowReader):
    """Plain text: one review per line (the line ending is not part of the text)."""

    def __init__(self, stream: BinaryIO, *, start: int, line: int, rows_done: int, total: int | None,
                 on_bad_row: str, name: str, text_column: str = "text") -> None:
        self.lines = _LineSource(stream, start, on_bad_row, name, line, size=total)
        self.columns = [text_column]
        self.text_column = text_column
        self.total = total
        self.rows_read = rows_done

    @property
    def position(self) -> int:
        return self.lines.offset

    def __iter__(self) -> Iterator[InputRow]:
        for line in self.lines:
            self.lines.consume(line)
            if not line.text:
                continue  # a file of only a byte-order mark: as empty as a file without one
            self.rows_read += 1
            text = line.text.rstrip("\r\n")
            error = line.error
            if error is None and "\r" in text:
                error = (f"line {line.number}: a carriage return inside the line (a file with old Mac line endings "
                         "would be read as one review); convert its line endings to LF")
                if self.lines.on_bad_row == FAIL:
                    raise BadInputError(f"{self.lines.name}: {error}, or pass --on-bad-row flag")
            yield InputRow(self.rows_read, {self.text_column: text}, text if error is None else None, error)


class JsonLinesReader(RowReader):
    """JSON Lines: one object per line; its keys are the columns."""

    def __init__(self, stream: BinaryIO, *, start: int, line: int, rows_done: int, total: int | None,
                 on_bad_row: str, name: str, text_column: str, keep_non_finite: bool = False) -> None:
        self.lines = _LineSource(stream, start, on_bad_row, name, line, size=total)
        self.text_column = text_column
        self.keep_non_finite = keep_non_finite
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
            self.lines.consume(line)
            # A mark opening any line, not only the file's (`cat a.jsonl b.jsonl`, b saved with one),
            # is no part of its JSON; its bytes are still the line's, consumed and digested.
            line.text = line.text.removeprefix(BYTE_ORDER_MARK)
            if not line.text.strip(JSON_WHITESPACE):
                continue  # blank lines separate nothing in JSON Lines (U+3000 alone is not blank: not JSON)
            self.rows_read += 1
            values, error = self._parse(line)
            if self.rows_read == 1:
                self._refuse_a_json_array(line, values, error)
            if line.error is not None:  # undecodable bytes: the row keeps what parses (its id, say), unlabelled
                error = line.error if error is None or values is None else f"{line.error}; {error}"
            if error is not None and self.on_bad_row == FAIL:
                raise BadInputError(f"{self.name}: {error}; fix the file or pass --on-bad-row flag")
            text = values.get(self.text_column) if values is not None and error is None and self.text_column else None
            yield InputRow(self.rows_read, values, text, error, line=line.number)

    def _refuse_a_json_array(self, line: _Line, values: dict | None, error: str | None) -> None:
        """A first record that opens a JSON array: an export of one list, on one line or many, holds no
        JSON Lines rows (read line by line it was one bad row, or one per line, and in flag mode its
        records were never labelled). Refused, with the command that converts it. In flag mode a
        whole array on line 1 followed by more rows is a bad row of its own, as any other line."""
        if values is not None or error is None or not line.text.lstrip(JSON_WHITESPACE).startswith("["):
            return
        try:
            whole = isinstance(json.loads(line.text), list)
        except (ValueError, RecursionError):
            whole = False  # an array opened on line 1 and continued on the next ones: pretty-printed
        if whole and self.on_bad_row != FAIL and not self._nothing_after(line):
            return
        raise BadInputError(f"{self.name}: line 1 is a JSON array, not an object: JSON Lines hold one object per "
                            f"line; to label a file of one JSON array, convert it first: {self._conversion()}")

    def _nothing_after(self, line: _Line) -> bool:
        """Whether only white space follows ``line`` in the file (a stream: not known, so False)."""
        end = line.start + len(line.raw)
        left = (self.total or 0) - end
        if self.lines.may_wait or left > NOTHING_AFTER_BYTES:
            return False
        try:
            return not os.pread(self.lines.stream.fileno(), left, end).strip() if left > 0 else True
        except (OSError, ValueError, io.UnsupportedOperation):
            return False

    def _conversion(self) -> str:
        """The command that writes the array's items as JSON Lines, beside the file, never onto it."""
        if self.name == "-":
            return "pipe it through jq -c '.[]'"
        converted = os.path.splitext(self.name)[0] + ".lines.jsonl"
        return f"jq -c '.[]' {shlex.quote(self.name)} > {shlex.quote(converted)}"

    def _parse(self, line: _Line) -> tuple[dict | None, str | None]:
        """(the row's fields, why it is a bad row). A line refused for some of its values (NaN, a
        number a float cannot hold, a key given twice) keeps its other fields, those values null,
        unless the line is bad as a whole (no object, malformed, too deep): then it keeps none."""
        refused: list[str] = []
        first = None
        try:
            try:
                value = (_ROWS_KEEPING_NON_FINITE if self.keep_non_finite else _ROWS).decode(line.text)
            except json.JSONDecodeError:
                raise
            except (NonFiniteNumberError, InexactNumberError, DuplicateKeyError, ValueError) as err:
                # (a plain ValueError: the one other refusal of json.loads, an integer too long to convert)
                first = _value_refusal(line.number, err)
                value, refused = _decode_refusing_values(line.text, keep_non_finite=self.keep_non_finite)
        except json.JSONDecodeError as err:
            return None, f"line {line.number}: invalid JSON ({_json_error_text(err, line.text)})"
        except RecursionError:
            return None, f"line {line.number}: invalid JSON (nested too deeply)"
        values, error = self._checked(line, value)
        if first is not None and values is not None:  # (a line bad as a whole says why, and keeps nothing)
            also = f"; also null in this row: {_first_five(refused[1:])}" if len(refused) > 1 else ""
            error = "; ".join(filter(None, [first + also, error]))
        return values, error

    def _checked(self, line: _Line, value: object) -> tuple[dict | None, str | None]:
        if not isinstance(value, dict):
            return None, f"line {line.number}: expected a JSON object, got {type(value).__name__}"
        if line.raw.count(b"[") + line.raw.count(b"{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
            return None, f"line {line.number}: a value nested more than {MAX_JSON_DEPTH} levels deep"
        if _SURROGATE_ESCAPE.search(line.raw):  # rare: emoji pairs, or a lone half of one
            where = _lone_surrogate_field(value)
            if where is not None:
                try:
                    replaced = _replace_lone_surrogates(value)
                except DuplicateKeyError as err:
                    return None, (f"line {line.number}: keys that differ only in lone UTF-16 surrogate escapes "
                                  f"become one key, {err.key!r}; a row keeps one value per key")
                return replaced, (
                    f"line {line.number}: field '{where}' holds a lone UTF-16 surrogate escape, which is not a "
                    "character")
        if self.text_column and self.text_column not in value:  # (no text column: the rows alone are wanted)
            fields = ", ".join(map(repr, value)) or "none"
            return value, (f"line {line.number}: no {self.text_column!r} field (fields: {fields}); "
                           f"pass --text-column")
        return value, None


class DuplicateKeyError(ValueError):
    """A JSON object with a key that appears twice: json.loads would keep the last value only."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears more than once in one object")
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict, refusing a key that appears twice (json.loads keeps the last value)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return value


JSON_WHITESPACE = " \t\r\n"
NOTHING_AFTER_BYTES = 1 << 16  # past this many bytes after line 1, a file is not one array on its line
MAX_JSON_DEPTH = 500  # deeper values are refused: writing them back would exhaust the interpreter's stack


class InexactNumberError(ValueError):
    """A JSON number a 64-bit float cannot hold (1e400, 1e-400, 17 significant digits and more):
    read as a float it would be written back as another number."""

    def __init__(self, text: str, held: float) -> None:
        super().__init__(f"the number {text} cannot be held exactly")
        self.text, self.held = text, held


def _exact_float(text: str) -> float:
    """``float(text)``, refusing a number that would come back as a different one: the float's
    shortest form must denote the same decimal number (so 0.1 and 1e3 pass; 1e400 does not)."""
    value = float(text)
    if repr(value) == text or (math.isfinite(value) and decimal.Decimal(text) == decimal.Decimal(repr(value))):
        return value
    raise InexactNumberError(text, value)


class NonFiniteNumberError(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, JSON has no such numbers, and a row
    written back would hold null in their place."""

    def __init__(self, literal: str) -> None:
        super().__init__(f"{literal} is not a JSON number")
        self.literal = literal


def _refuse_non_finite(literal: str) -> float:
    raise NonFiniteNumberError(literal)


# The label job's rows: unique keys, and numbers kept exactly or refused (NaN and the infinities too).
_ROWS = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=_exact_float, parse_constant=_refuse_non_finite)
# A labelled file read back by the report: a NaN probability there is a row to flag, not a line to refuse.
_ROWS_KEEPING_NON_FINITE = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=_exact_float)


def _decode_refusing_values(text: str, *, keep_non_finite: bool) -> tuple[object, list[str]]:
    """A line the strict decoder refused for some of its values, decoded with each such value null
    (a key given twice: null, neither value chosen), and those values described in line order."""
    refused: list[str] = []

    def non_finite(literal: str) -> float | None:
        if keep_non_finite:
            return float(literal)
        refused.append(literal)
        return None

    def exact_float(number: str) -> float | None:
        try:
            return _exact_float(number)
        except InexactNumberError:
            refused.append(number[:40])
            return None

    def integer(number: str) -> int | None:
        try:
            return int(number)
        except ValueError:  # more digits than the interpreter converts
            refused.append(f"a {len(number):,}-digit number")
            return None

    def pairs(items: list[tuple[str, object]]) -> dict:
        counts = collections.Counter(key for key, _ in items)
        refused.extend(f"the key {key!r} given twice" for key, count in counts.items() if count > 1)
        return {key: None if counts[key] > 1 else value for key, value in items}

    decoder = json.JSONDecoder(object_pairs_hook=pairs, parse_float=exact_float, parse_int=integer,
                               parse_constant=non_finite)
    return decoder.decode(text), refused


def _value_refusal(number: int, err: ValueError) -> str:
    """Why a line was refused for one of its values."""
    if isinstance(err, NonFiniteNumberError):
        return (f"line {number}: {err.literal} is not a JSON number (JSON has no NaN or infinity; it would be "
                "written back as null); write it as a string to keep it")
    if isinstance(err, InexactNumberError):
        return (f"line {number}: the number {err.text[:40]} cannot be held exactly (it would be written back as "
                f"{err.held}); write it as a string to keep it")
    if isinstance(err, DuplicateKeyError):
        return (f"line {number}: the key {err.key!r} appears more than once in one object; a row keeps one value "
                "per key, so the others would be lost")
    return f"line {number}: a JSON number of more than {sys.get_int_max_str_digits():,} digits, which cannot be read"


def _first_five(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5:,} more" if len(items) > 5 else "")


def _depth(value: object) -> int:
    """How deeply lists and objects nest in ``value`` (without recursion: it may be deep)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


# A request's JSON: unique keys, and no NaN or infinity anywhere (Python's json reads them; JSON has none).
_OBJECTS_WITH_UNIQUE_KEYS = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_refuse_non_finite)


def json_with_unique_keys(text: str):
    """``json.loads(text)``, raising DuplicateKeyError for an object with a key that appears twice and
    NonFiniteNumberError for NaN, Infinity or -Infinity (json.loads took them, in any field)."""
    return _OBJECTS_WITH_UNIQUE_KEYS.decode(text)

# A JSON escape of a UTF-16 surrogate (\\ud800-\\udfff). Paired, json.loads joins them into one
# character; a lone one stays in the string as a surrogate, which no UTF-8 output can hold.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate_field(value: object, name: str = "") -> str | None:
    """The name of the first field whose text holds a lone surrogate (None: there is none)."""
    if isinstance(value, str):
        return name if _SURROGATE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _SURROGATE.search(key):
            shown = _SURROGATE.sub("\ufffd", key)
            return f"{name}.{shown}" if name else shown
        found = _lone_surrogate_field(item, f"{name}.{key}" if name else str(key))
        if found is not None:
            return found
    return None


def _replace_lone_surrogates(value):
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        replaced = {_replace_lone_surrogates(k): _replace_lone_surrogates(v) for k, v in value.items()}
        if len(replaced) != len(value):  # two keys that differ only in their lone surrogates
            raise DuplicateKeyError(next(k for k in replaced if "\ufffd" in k))
        return replaced
    if isinstance(value, list):
        return [_replace_lone_surrogates(v) for v in value]
    return value


class CsvReader(RowReader):
    """CSV or TSV with a header row. Records may span lines (quoted newlines).

    A malformed record (a broken quote, a wrong number of fields) is, in flag mode, flagged on
    its first line alone, and reading goes on at the line after it: an unbalanced quote that
    swallowed the lines after it gives them back, so nothing that can be read is lost. A
    well-formed record with undecodable bytes is one flagged row that keeps its fields (the
    bytes replaced by U+FFFD), its text unlabelled.
    """

    def __init__(self, stream: BinaryIO, *, start: int, line: int, rows_done: int, total: int | None,
                 on_bad_row: str, name: str, text_column: str, delimiter: str, header: list[str] | None) -> None:
        _allow_long_fields()
        self.lines = _LineSource(stream, start, on_bad_row, name, line, size=total)
        self.name = name
        self.on_bad_row = on_bad_row
        self.total = total
        self.rows_read = rows_done
        self.resynchronised = 0  # malformed multi-line records whose later lines were read again
        self._delimiter = delimiter
        self._text_column = text_column
        self._unread = iter(self.lines)
        self._given_back: collections.deque[_Line] = collections.deque()
        self._record_lines: list[_Line] = []
        self._records = self._parser()
        self.columns = header if header is not None else self._read_header()
        self.text_column = resolve_text_column(self.columns, text_column, name)

    @property
    def position(self) -> int:
        return self.lines.offset

    def _parser(self) -> Iterator[list[str]]:
        return csv.reader(self._feed(), delimiter=self._delimiter, strict=True)

    def _feed(self) -> Iterator[str]:
        """Lines for the csv parser: given-back lines first, then the file's."""
        while True:
            line = self._given_back.popleft() if self._given_back else next(self._unread, None)
            if line is None:
                return
            self._record_lines.append(line)
            yield line.text

    def _next_record(self) -> tuple[list[str] | None, list[_Line], str | None]:
        """(fields, the lines they came from, a parse error); fields None at the end of the file."""
        self._record_lines = []
        try:
            fields = next(self._records)
        except StopIteration:
            return None, [], None
        except csv.Error as err:
            if str(err).startswith("unexpected end of data") and self.lines.continued_since_opened():
                first = self._record_lines[0].number if self._record_lines else self.lines.line_number + 1
                raise InputChangedError(
                    f"{self.name}: the record that begins on line {first} was still open (a quoted field) at the "
                    "end of the file when the job opened it, and the file has grown since: the record was being "
                    "written, so its row is not the file's") from None
            self._records = self._parser()  # a fresh parser: no state of the broken record survives
            return [], self._record_lines, f"malformed CSV ({_csv_error_text(err)})"
        return fields, self._record_lines, None

    def _read_header(self) -> list[str]:
        header, lines, error = self._next_record()
        if header is None:
            raise BadInputError(f"{self.name}: empty file (no header row)")
        if not header and error is None:  # a blank first line, or only a byte-order mark
            raise BadInputError(f"{self.name}: no header row (line 1 is empty)")
        bad = error or next((line.error for line in lines if line.error), None)
        if bad is not None:
            raise BadInputError(f"{self.name}: line 1: malformed header: {bad}")
        check_header(header, self._delimiter, self.name, self._text_column)
        for line in lines:
            self.lines.consume(line)
        check_unique_columns(header, f"{self.name}: line 1")
        return header

    def __iter__(self) -> Iterator[InputRow]:
        width = len(self.columns)
        while True:
            fields, lines, error = self._next_record()
            if fields is None:
                return
            if error is None and not fields:
                if width != 1:
                    self._consume(lines)
                    continue  # a blank line between records of several columns holds no record
                fields = [""]  # one column: a blank line is an empty text, flagged downstream
            if error is None and len(fields) != width:
                error = f"expected {width} fields, got {len(fields)}"
            if error is not None:
                yield self._flag(lines, error)
                continue
            self._consume(lines)
            self.rows_read += 1
            values = dict(zip(self.columns, fields))
            undecodable = next((line.error for line in lines if line.error), None)
            if undecodable is not None:  # a whole record: its fields are kept (the id, say), its text not labelled
                yield InputRow(self.rows_read, values, None, f"line {lines[0].number}: {undecodable}")
                continue
            yield InputRow(self.rows_read, values, values[self.text_column])

    def _consume(self, lines: list[_Line]) -> None:
        for line in lines:
            self.lines.consume(line)

    def _flag(self, lines: list[_Line], error: str) -> InputRow:
        """A flagged row for the record's first line; its other lines are read again."""
        first = lines[0]
        where = f"line {first.number}: {error}"
        if len(lines) > 1:
            where += f" (the record ran on to line {lines[-1].number}: an unbalanced quote?)"
        if self.on_bad_row == FAIL:
            raise BadInputError(f"{self.name}: {where}; fix the file or pass --on-bad-row flag")
        if len(lines) > 1:
            self.resynchronised += 1
            self._given_back.extendleft(reversed(lines[1:]))
            self._records = self._parser()
            where += f"; reading went on at line {first.number + 1}"
        self.lines.consume(first)
        self.rows_read += 1
        return InputRow(self.rows_read, None, None, where)


def _json_error_text(err: json.JSONDecodeError, text: str) -> str:
    """json's reason ("Invalid control character at" already ends in "at") and its column within the
    line's content: a line cut short was "at column 1", counted past its own line ending. Where the
    content holds a carriage return, the likely cause too: lines ended by CR alone (old Mac line
    endings) are one line here. (A CRLF line's own ending is not content.)"""
    content = text.rstrip("\r\n")
    reason = f"{err.msg.removesuffix(' at')} at column {min(err.pos, len(content)) + 1}"
    if "\r" in content:
        reason += "; the line holds a carriage return: convert old Mac line endings (CR alone) to LF"
    return reason


def _csv_error_text(err: csv.Error) -> str:
    """The csv module's reason, without its advice to Python programmers (universal-newline mode)."""
    text = str(err)
    if text.startswith("new-line character seen in unquoted field"):
        return ("a lone carriage return inside an unquoted field; quote the field or remove it (a file with old "
                "Mac line endings, CR alone: convert them to LF)")
    return text


# Records longer than the csv module's default field limit (131,072 characters) are real
# reviews, not errors: texts are truncated or windowed later. The limit still bounds what an
# unbalanced quote can swallow before the record is flagged.
CSV_FIELD_LIMIT = 1 << 25


def _allow_long_fields() -> None:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


class ParquetReader(RowReader):
    """Parquet, read one record batch at a time."""

    def __init__(self, path: str, *, rows_done: int, text_column: str, batch_size: int = 8192,
                 only: Sequence[str] | None = None) -> None:
        from ..errors import require

        pq = require("pyarrow.parquet", "io")
        if path == "-":
            raise BadInputError("Parquet cannot be read from standard input (its index is at the end of the "
                                "file): give the file's path")
        try:
            self.file = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises ArrowInvalid and OSError subclasses
            raise BadInputError(f"{path}: not a readable Parquet file ({arrow_reason(err)})") from err
        self.name = path
        self.columns = list(self.file.schema_arrow.names)
        check_unique_columns(self.columns, path)
        self.text_column = resolve_text_column(self.columns, text_column, path)
        self.total = self.file.metadata.num_rows
        self.rows_read = rows_done
        self.batch_size = batch_size
        self.only = None if only is None else list(only)  # the columns to read (None: all)
        self.nanosecond_times = [field.name for field in self.file.schema_arrow  # checked in every batch
                                 if _holds_nanosecond_times(field.type)]

    @property
    def position(self) -> int:
        return self.rows_read

    def __iter__(self) -> Iterator[InputRow]:
        for first, batch in self._batches(from_row=self.rows_read):
            skip = self.rows_read - first  # a resumed job's rows done, in the first batch read
            if skip >= batch.num_rows:
                continue
            for values in self._values(batch.slice(max(skip, 0)), first_row=self.rows_read + 1):
                self.rows_read += 1
                yield self._row(values)

    def _batches(self, *, from_row: int) -> Iterator[tuple[int, Any]]:  # (a pyarrow RecordBatch)
        """(index of its first row, batch), one row group at a time from the group holding row
        ``from_row`` (a resumed job skips whole groups unread), so that a corrupt page names the
        rows of its group (pyarrow reads ahead: the rows yielded before the error say little)."""
        metadata = self.file.metadata
        span: list[int] = []  # small row groups are read together (one read per group was slow)
        span_start = span_rows = group_start = 0
        for group in range(metadata.num_row_groups):
            group_rows = metadata.row_group(group).num_rows
            if group_start + group_rows > from_row:
                if not span:
                    span_start = group_start
                span.append(group)
                span_rows += group_rows
                if span_rows >= PARQUET_SPAN_ROWS:
                    yield from self._span_batches(span, span_start, span_rows)
                    span, span_rows = [], 0
            group_start += group_rows
        if span:
            yield from self._span_batches(span, span_start, span_rows)

    def _span_batches(self, groups: list[int], span_start: int, span_rows: int) -> Iterator[tuple[int, Any]]:
        batches = self.file.iter_batches(batch_size=self.batch_size, columns=self.only, row_groups=groups)
        first = span_start
        while True:
            try:
                batch = next(batches, None)
            except _PARQUET_READ_ERRORS as err:  # corrupt pages behind an intact footer
                which = f" {groups[0] + 1:,}" if len(groups) == 1 else f"s {groups[0] + 1:,}-{groups[-1] + 1:,}"
                raise BadInputError(
                    f"{self.name}: rows {first + 1:,}-{span_start + span_rows:,} (row group{which} of "
                    f"{self.file.metadata.num_row_groups:,}): not a readable Parquet file ({arrow_reason(err)})"
                ) from err
            if batch is None:
                return
            yield first, batch
            first += batch.num_rows

    def _values(self, batch, *, first_row: int) -> list[dict]:
        self._check_times_keep_their_nanoseconds(batch, first_row=first_row)
        try:
            return batch.to_pylist()
        except _PARQUET_READ_ERRORS as err:  # e.g. a timestamp beyond the year 9999 ("never expires")
            last = first_row + batch.num_rows - 1
            raise BadInputError(f"{self.name}: rows {first_row}-{last}: a value Python cannot hold ({arrow_reason(err)}); "
                                "convert that column (to a string, say) and try again") from err

    def _check_times_keep_their_nanoseconds(self, batch, *, first_row: int) -> None:
        """A time of day in nanoseconds (``time64[ns]``, in a column or inside one) becomes a Python
        time in microseconds: its last three digits were dropped without a word (in every output
        format). Refused where they are not zero, as another value Python cannot hold."""
        import pyarrow as pa

        for name in self.nanosecond_times:
            if batch.schema.get_field_index(name) < 0:  # not among the columns read
                continue
            for times in _times_in_nanoseconds(batch.column(name)):
                if (times.cast(pa.int64()).fill_null(0).to_numpy() % 1000).any():
                    last = first_row + batch.num_rows - 1
                    raise BadInputError(f"{self.name}: rows {first_row}-{last}: column {name!r} holds a time "
                                        "of day in nanoseconds, which Python holds to the microsecond only; convert "
                                        "that column (to a string, say) and try again")

    def _row(self, values: dict) -> InputRow:
        text, error = text_of_binary(values.get(self.text_column))
        return InputRow(self.rows_read, values, text, error)


def arrow_children(kind) -> list:
    """The types an Arrow type holds (a struct's fields, a list's values, a map's keys and items)."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return [kind.field(i).type for i in range(kind.num_fields)]
    if pa.types.is_map(kind):
        return [kind.key_type, kind.item_type]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [kind.value_type]
    return []


def _is_nanosecond_time(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_time64(kind) and kind.unit == "ns"


def _holds_nanosecond_times(kind) -> bool:
    return _is_nanosecond_time(kind) or any(_holds_nanosecond_times(child) for child in arrow_children(kind))


def _times_in_nanoseconds(array) -> Iterator:
    """The ``time64[ns]`` arrays in ``array``: itself, or those in its struct fields, list values or map entries."""
    import pyarrow as pa

    kind = array.type
    if _is_nanosecond_time(kind):
        yield array
    elif pa.types.is_struct(kind):
        for index in range(kind.num_fields):
            yield from _times_in_nanoseconds(array.field(index))
    elif pa.types.is_map(kind):
        yield from _times_in_nanoseconds(array.keys)
        yield from _times_in_nanoseconds(array.items)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        yield from _times_in_nanoseconds(array.flatten())


def text_of_binary(value: object) -> tuple[object, str | None]:
    """A text value as the model reads it, and why it cannot be read: a BINARY value (a string
    written without its UTF8 annotation, as Hive or older Spark write them) is its UTF-8 text;
    bytes that are not UTF-8 are no text. Anything else is returned as it is."""
    if not isinstance(value, bytes):
        return value, None
    try:
        return value.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "the text is bytes that are not UTF-8"


# What pyarrow raises on data it cannot read or convert: ArrowInvalid and friends are ValueErrors,
# ArrowIOError an OSError, a date beyond Python's an OverflowError.
PARQUET_SPAN_ROWS = 1000  # row groups smaller than this are read together, up to this many rows


def arrow_reason(err: BaseException) -> str:
    """pyarrow's message on one line (some span several: "Invalid data\nDeserializing page header failed.")."""
    return " ".join(str(err).split())


_PARQUET_READ_ERRORS = (ValueError, OSError, OverflowError, TypeError, NotImplementedError)


def check_unique_columns(columns: list[str], where: str) -> None:
    """Refuse columns that share a name: a row keeps one value per name, so the others would be lost."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise BadInputError(f"{where}: column name(s) {', '.join(map(repr, repeated))} appear more than once; "
                            "give every column its own name")


def resolve_text_column(columns: list[str], requested: str, name: str) -> str:
    """The text column: the requested one if present, else the only column there is."""
    if requested in columns:
        return requested
    if requested == "text" and len(columns) == 1:
        return columns[0]
    raise BadInputError(
        f"{name}: no column {requested!r}; columns are: {', '.join(map(repr, columns))}. Pass --text-column NAME"
    )


def only_column_notice(column: str) -> str:
    """What a job says where a CSV or TSV file's only column, not named as --text-column, is labelled:
    its line 1 is read as the column's name, and a file of bare reviews has no such line."""
    name = one_line(column)
    name = name if len(name) <= 40 else name[:40] + "..."
    return (f"labelling the only column, '{name}': line 1 is read as its name (a file of texts without a "
            "header line: label it with --format txt)")


def open_reader(path: str, fmt: Format, *, text_column: str, on_bad_row: str, position: int = 0,
                line: int = 0, rows_done: int = 0, keep_non_finite: bool = False) -> RowReader:
    """Open ``path`` ('-' for stdin) at a resume ``position`` (after ``line`` lines, ``rows_done`` rows).
    JSON Lines NaN and infinities are bad rows unless ``keep_non_finite`` (reading a labelled file back)."""
    if fmt is Format.PARQUET:
        return ParquetReader(path, rows_done=rows_done, text_column=text_column)
    header = _csv_header(path, fmt, text_column) if position and fmt in (Format.CSV, Format.TSV) else None
    stream, total = _open_binary(path)
    if position:
        stream.seek(position)
    if fmt is Format.TXT:
        return TextLineReader(stream, start=position, line=line, rows_done=rows_done, total=total,
                              on_bad_row=on_bad_row, name=path, text_column=text_column)
    if fmt is Format.JSONL:
        return JsonLinesReader(stream, start=position, line=line, rows_done=rows_done, total=total,
                               on_bad_row=on_bad_row, name=path, text_column=text_column,
                               keep_non_finite=keep_non_finite)
    return CsvReader(stream, start=position, line=line, rows_done=rows_done, total=total, on_bad_row=on_bad_row,
                     name=path, text_column=text_column, delimiter="\t" if fmt is Format.TSV else ",", header=header)


def _csv_header(path: str, fmt: Format, text_column: str) -> list[str]:
    """The header row of a CSV/TSV file, for a reader that starts further on (a resumed job)."""
    reader = open_reader(path, fmt, text_column=text_column, on_bad_row=FAIL)
    try:
        return list(reader.columns)
    finally:
        reader.close()


def first_json_fields(path: str, text_column: str) -> list[str] | None:
    """The fields of the first JSON Lines row of ``path`` read without error, else of the first that has
    any (read in flag mode), or None."""
    reader = open_reader(path, Format.JSONL, text_column=text_column, on_bad_row="flag")
    first = None
    try:
        for row in reader:
            if row.values and row.error is None:
                return list(row.values)
            first = first or (list(row.values) if row.values else None)
        return first
    finally:
        reader.close()


class _StdinWithHead:
    """Standard input with the lines read to tell its format put back in front of it."""

    def __init__(self, head: list[bytes]) -> None:
        self._head = collections.deque(head)

    def readline(self, size: int = -1) -> bytes:
        return self._head.popleft() if self._head else _stdin_bytes().readline(size)

    def fileno(self) -> int:
        return _stdin_bytes().fileno()

    def peek(self, size: int = 1) -> bytes:
        """The lines put back, else what standard input holds (without waiting for more, where lines were put back)."""
        put_back = b"".join(self._head)
        if put_back:
            return put_back
        return _peeked(_stdin_bytes(), size)  # (sys.stdin.buffer where descriptor 0 has no reader of its own)


_stdin_head: _StdinWithHead | None = None
_SNIFF_BYTES = 1 << 20  # blank lines read at most before a plain-text guess


def stdin_format() -> Format:
    """JSON Lines when standard input's first non-blank line (after a byte-order mark) begins with
    ``{``, else plain text. The lines read to tell are given back to the reader of '-', so the
    answer does not depend on how quickly the producer writes (what is buffered at one moment)."""
    global _stdin_head
    stdin = _stdin_bytes()
    head: list[bytes] = []
    size, first = 0, b""
    while size < _SNIFF_BYTES:
        line = stdin.readline()
        if not line:
            break
        head.append(line)
        size += len(line)
        first = line.removeprefix(BYTE_ORDER_MARK.encode())  # at any line's start (`cat a.jsonl b.jsonl`)
        if first.strip():
            break
    _stdin_head = _StdinWithHead(head)
    return Format.JSONL if first.lstrip().startswith(b"{") else Format.TXT


_stdin: tuple[object, BinaryIO] | None = None  # (the sys.stdin it reads, its bytes)
# Standard input's size when it is a regular file read from its start (`label - < in.csv`), taken
# when first read: read as a file is, to that size (a line being appended was labelled as a row).
_stdin_file_size: int | None = None


def _stdin_bytes() -> BinaryIO:
    """Standard input's bytes, through a buffered reader of its own on descriptor 0 that is never
    closed. A job stopped while its reader thread waited on a pipe's next line ends with that thread
    still waiting; had it been waiting in ``sys.stdin.buffer``, the interpreter's exit (which closes
    ``sys.stdin``) could not take that buffer's lock and aborted the process."""
    global _stdin, _stdin_file_size
    if sys.stdin is None:  # started with its standard input closed
        raise BadInputError("-: standard input is closed; give the input as a file, or pipe it in")
    if _stdin is None or _stdin[0] is not sys.stdin:
        try:
            stream: BinaryIO = io.BufferedReader(io.FileIO(sys.stdin.fileno(), "rb", closefd=False))
        except (OSError, ValueError, io.UnsupportedOperation):  # a standard input with no descriptor
            stream = sys.stdin.buffer
        _stdin = (sys.stdin, stream)
        _stdin_file_size = _size_of_a_file_read_from_its_start(stream)
    return _stdin[1]


def _size_of_a_file_read_from_its_start(stream) -> int | None:
    """The size of the regular file ``stream`` reads, when nothing of it was read before (None: a
    pipe, a terminal, or a file a shell had partly read: its offsets would not be the file's)."""
    try:
        fd = stream.fileno()
        status = os.fstat(fd)
        at_start = stat.S_ISREG(status.st_mode) and os.lseek(fd, 0, os.SEEK_CUR) == 0
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return status.st_size if at_start else None


def _open_binary(path: str) -> tuple[BinaryIO, int | None]:
    if path == "-":
        stream = _stdin_bytes()
        return (_stdin_head or stream), _stdin_file_size  # type: ignore[return-value]
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed with the reader's file object
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInputError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise BadInputError(f"{path}: cannot open ({err.strerror})") from None
    return stream, os.fstat(stream.fileno()).st_size
