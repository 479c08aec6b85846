"""Read a file `structsent label` wrote, one LabelledRow at a time.

The label job appends one block of columns after the input's own: ``<prefix>label``,
``<prefix>score``, one ``<prefix>prob_<label>`` per label, ``<prefix>error``. The block is found
from the end of the column list, so an input that had its own ``label`` column (and was
labelled with ``--prefix``) is read right; elsewhere, only when one complete set of them exists.

Every format is read by the label job's own readers (``io/readers.py``): CSV, TSV and JSON
Lines in flag mode (a report describes a file, so a line it cannot read becomes a flagged row
that says why, never a stop, and what an unbalanced quote swallowed is read again), Parquet one
record batch at a time, only the columns the report shows.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import numbers
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import SupportsFloat, SupportsIndex

from ..errors import BadInputError, NoSuchColumnError
from ..io.formats import COMPRESSED_SUFFIXES, Format, detect_format
from ..io.paths import mode_of
from ..io.readers import BYTE_ORDER_MARK, CSV_FIELD_LIMIT, ParquetReader, arrow_reason, open_reader
from ..io.sniff import check_header, check_not_utf16
from ..io.writers import added_columns
from .aggregate import LabelledRow
from .arguments import JOB_FIGURES_DEPTH, nested_deeper_than
from .groups import UNREADABLE_KEY

UNREADABLE = "unreadable in this file"
UTF8_MARK = BYTE_ORDER_MARK.encode()
_SNIFF_LINES = 100  # JSON Lines: the columns come from the first object among these lines


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelColumns:
    """Where the label job's columns are in a labelled file."""

    prefix: str
    labels: tuple[str, ...]  # the model's labels, in the order of their prob_ columns
    input_columns: tuple[str, ...]  # the columns before the added block

    @property
    def label(self) -> str:
        return f"{self.prefix}label"

    @property
    def score(self) -> str:
        return f"{self.prefix}score"

    @property
    def error(self) -> str:
        return f"{self.prefix}error"

    @property
    def probs(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}prob_{label}" for label in self.labels)


def find_label_columns(columns: list[str], name: str, prefix: str | None = None) -> LabelColumns:
    """The added block: at the end of ``columns``, else the one complete set (or, with an explicit
    ``prefix``, wherever it is)."""
    if prefix is None:
        prefix = _added_prefix(columns, name)
    needed = [f"{prefix}label", f"{prefix}score", f"{prefix}error"]
    missing = [c for c in needed if c not in columns]
    # the probabilities follow the score, as the label job writes them: an input column named
    # prob_<something> elsewhere is the input's...
    after_score = columns[columns.index(needed[1]) + 1:] if not missing else []
    probs = list(itertools.takewhile(lambda c: c.startswith(f"{prefix}prob_"), after_score))
    if not probs and not missing:  # ...unless another program reordered them (JSON with sorted keys): by name
        probs = [c for c in columns if c.startswith(f"{prefix}prob_")]
    if missing or not probs:
        absent = ", ".join(map(repr, missing or [f"{prefix}prob_<label>"]))
        raise BadInputError(
            f"{name}: no label columns ({absent} missing); expected a file written by `structsent label` "
            f"(pass --prefix if it was labelled with one)"
        )
    if len(probs) < 2:  # every model has two labels at least, and the job writes one column for each
        elsewhere = [c for c in columns if c.startswith(f"{prefix}prob_") and c not in probs]
        what = (f"the other {prefix}prob_ columns ({', '.join(map(repr, elsewhere))}) are not beside it, where the job "
                "writes them" if elsewhere else f"the file lost a {prefix}prob_ column")
        raise BadInputError(
            f"{name}: one probability column ({probs[0]!r}) after the score, where `structsent label` writes one for "
            f"each of the model's labels (two at least): {what}"
        )
    added = set(needed) | set(probs)
    return LabelColumns(
        prefix=prefix,
        labels=tuple(c[len(f"{prefix}prob_"):] for c in probs),
        input_columns=tuple(c for c in columns if c not in added),
    )


def _added_prefix(columns: list[str], name: str) -> str:
    """The prefix of the added columns: that of the block at the end, as the label job writes it,
    else that of the one complete set of them (label, score, error, a prob_) wherever it is. Two
    complete sets elsewhere (an input with its own, then a column appended or the keys sorted) are
    refused: the report cannot tell which one the job wrote."""
    at_end = _block_at_end(columns)
    if at_end is not None:
        return at_end
    complete = _complete_prefixes(columns)
    if len(complete) > 1:
        named = " and ".join(map(repr, complete))
        raise BadInputError(f"{name}: the label columns could be those of prefixes {named} (each has label, score, "
                            "prob_ and error columns); pass --prefix (prefix=... in Python) to say which")
    if complete:
        return complete[0]
    last = columns[-1] if columns else ""
    return last[: -len("error")] if last.endswith("error") else ""  # its missing columns are then named


def _block_at_end(columns: list[str]) -> str | None:
    """The prefix P of the last columns when they are P+label, P+score, P+prob_..., P+error."""
    last = columns[-1] if columns else ""
    if not last.endswith("error"):
        return None
    prefix = last[: -len("error")]
    head = list(itertools.dropwhile(lambda c: c.startswith(f"{prefix}prob_"), reversed(columns[:-1])))
    probs = len(columns) - 1 - len(head)
    return prefix if probs and head[:2] == [f"{prefix}score", f"{prefix}label"] else None


def _complete_prefixes(columns: list[str]) -> list[str]:
    """Every prefix P with P+label, P+score, P+error and at least one P+prob_ column, in column order."""
    names = set(columns)
    prefixes = [c[: -len("error")] for c in columns if c.endswith("error")]
    return [p for p in dict.fromkeys(prefixes) if {f"{p}label", f"{p}score"} <= names
            and any(c.startswith(f"{p}prob_") for c in columns)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelledFile:
    """An opened labelled file: its format, its columns, and the columns the report reads."""

    path: str
    format: Format
    columns: LabelColumns
    text_column: str | None
    by: str | None

    @property
    def wanted(self) -> tuple[str | None, ...]:
        """The columns a row is made of, in to_row's order (None: not shown); the probabilities last."""
        cols = self.columns
        return (cols.label, cols.score, cols.error, self.text_column, self.by, *cols.probs)

    def rows(self) -> Iterator[LabelledRow]:
        if self.format is Format.PARQUET:
            return _parquet_rows(self)
        return _text_rows(self)


def open_labelled(path: str, *, fmt: str = "auto", prefix: str | None = None, text_column: str | None = None,
                  by: str | None = None, labels: Sequence[str] | None = None) -> LabelledFile:
    """Check ``path`` is a labelled file and resolve its columns; rows are read later, streamed.
    ``labels``: the model's, where the caller knows them (`label --report`): a JSON Lines file of no
    rows, which names no column, then has the columns the job would have written."""
    if fmt == "auto" and Path(path).suffix.lower() in COMPRESSED_SUFFIXES:  # (label's advice is to stream it)
        raise BadInputError(f"{path}: a compressed file is not read; decompress it first (the report reads its input "
                            "more than once)")
    try:
        format_ = detect_format(path, fmt)
    except BadInputError:  # its message offers plain text, which has no label columns
        raise BadInputError(f"{path}: cannot tell the format from the name; pass --format "
                            "(csv, tsv, jsonl, parquet)") from None
    if format_ is Format.TXT:
        raise BadInputError(f"{path}: plain text has no label columns; `structsent label` writes JSONL for it")
    check_input_file(path)
    columns = _header(path, format_)
    if not columns and labels:
        columns = added_columns(list(labels), prefix or "")
    elif not columns:
        raise BadInputError(f"{path}: no rows, and so no label columns to tell the labels by; nothing to report")
    label_columns = find_label_columns(columns, path, prefix)
    if format_ is Format.JSONL:  # fields only later rows have (a first row the job flagged may lack them)
        later = tuple(name for name in _later_jsonl_fields(path) if name not in columns)
        label_columns = dataclasses.replace(label_columns, input_columns=label_columns.input_columns + later)
        columns = [*columns, *later]
    # JSON Lines: a first row the label job could not read has only the added columns, and then
    # the input's columns are unknown here; elsewhere a misspelt column is a clear error.
    known = bool(label_columns.input_columns)
    if text_column is None:
        text_column = "text" if "text" in columns or not known else label_columns.input_columns[0]
    for option, column in (("text_column", text_column), ("by", by)):
        if known and column is not None and column not in columns and not (
                format_ is Format.JSONL and a_json_line_has_field(path, column)):  # a field of later rows only
            raise NoSuchColumnError(path, column, columns, option=option, flag="--" + option.replace("_", "-"))
    return LabelledFile(path=path, format=format_, columns=label_columns, text_column=text_column, by=by)


@dataclasses.dataclass(frozen=True)
class LabelledParts:
    """The files of one labelled output, read as one: a file, or the files of a directory that
    `label --engine ray` wrote, in name order, their rows numbered on from file to file."""

    path: str
    files: tuple[LabelledFile, ...]  # those holding rows (a part of no rows adds none), else the first;
    # none for a directory of no files whose labels the caller knew (a Ray job that labelled no rows)
    file_count: int  # files read, those of no rows included
    labels_known: tuple[str, ...] = ()  # the caller's labels, what an empty directory has

    @property
    def labels(self) -> tuple[str, ...]:
        return self.files[0].columns.labels if self.files else self.labels_known

    @property
    def text_column(self) -> str | None:
        return self.files[0].text_column if self.files else None

    def rows(self) -> Iterator[LabelledRow]:
        before = 0
        for file in self.files:
            last = 0
            for row in file.rows():
                last = row.number
                yield row if not before else dataclasses.replace(row, number=before + row.number)
            before += last

    def describe(self) -> str:
        """How the page names its source: the file, or the directory and how many files it read."""
        name = Path(self.path).name or self.path
        if not self.file_count:
            return f"{name}/ (no files: the job labelled no rows)"
        if self.file_count == 1 and self.files[0].path == self.path:
            return name
        count = self.file_count
        return f"{name}/ ({count} file{'' if count == 1 else 's'} in name order, rows numbered across them)"


def open_labelled_parts(path: str, *, fmt: str = "auto", prefix: str | None = None, text_column: str | None = None,
                        by: str | None = None, labels: Sequence[str] | None = None) -> LabelledParts:
    """``open_labelled`` for a file, or for each file of a directory (a Ray job's output), which
    must be parts of one output: one format, the same labels and the same label columns. A
    directory of no files is an output of no rows when the caller knows the ``labels``."""
    paths = input_files(path, empty_ok=bool(labels))
    if not paths:
        return LabelledParts(path=path, files=(), file_count=0, labels_known=tuple(labels or ()))
    with_rows = [part for part in paths if _names_columns(part, fmt)] or paths[:1]  # (none: the first says why)
    opened = [open_labelled(part, fmt=fmt, prefix=prefix, text_column=text_column, by=by, labels=labels)
              for part in with_rows]
    first = opened[0]
    for other in opened[1:]:
        if (other.format, other.columns.labels, other.columns.label) != (first.format, first.columns.labels,
                                                                           first.columns.label):
            raise BadInputError(f"{path}: {Path(other.path).name} is not part of the same output as "
                                f"{Path(first.path).name} (another format, other labels or other label columns)")
    return LabelledParts(path=path, files=tuple(opened), file_count=len(paths))


def _names_columns(path: str, fmt: str) -> bool:
    """Whether a part names its columns: a header, a Parquet schema, a JSON Lines row. A part of a
    Ray job's output that holds no rows (an empty file) adds none and tells nothing."""
    try:
        return bool(_header(path, detect_format(path, fmt)))
    except BadInputError:
        return True  # opened with the others, which says what is wrong with it


def input_files(path: str, *, empty_ok: bool = False) -> list[str]:
    """The files to read for ``path``: itself, or a directory's visible regular files in name order
    (what `label --engine ray` writes there; names beginning with '.' or '_' are not its output).
    ``empty_ok``: a directory of no such files is no files (a Ray job's output of no rows), not an error."""
    mode = mode_of(Path(path))
    if mode is None or not stat.S_ISDIR(mode):
        check_input_file(path)
        return [path]
    names = sorted(name for name in _directory_names(path) if not name.startswith((".", "_")))
    if not names and not empty_ok:
        raise BadInputError(f"{path}: a directory with no labelled files in it; name a file `structsent label` "
                            "wrote, or the directory a `--engine ray` job wrote")
    for name in names:
        if not stat.S_ISREG(mode_of(Path(path) / name) or 0):  # (a loop of links: mode_of says so)
            raise BadInputError(f"{path}: {name} is not a regular file; a directory the report reads holds the "
                                "files of one output only")
    return [str(Path(path) / name) for name in names]


def _directory_names(path: str) -> list[str]:
    try:
        return [entry.name for entry in Path(path).iterdir()]
    except OSError as err:
        raise BadInputError(f"{path}: cannot list the directory ({err.strerror or err})") from err


def check_input_file(path: str) -> None:
    """A regular file: the report reads its input more than once (its header, then its rows), so a
    pipe would lose its head to the first read (or block on a named pipe no one writes)."""
    mode = mode_of(Path(path))
    if mode is None and path == "-":  # (label reads standard input as "-")
        raise BadInputError("-: the report reads a file, not standard input (it reads its input more than once): "
                            "save it to a file first")
    if mode is None:
        raise BadInputError(f"{path}: no such file")
    if stat.S_ISDIR(mode):
        raise BadInputError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise BadInputError(f"{path}: is not a regular file (a pipe or a device); the report reads its input "
                            "more than once: save it to a file first")


def _header(path: str, fmt: Format) -> list[str]:
    try:
        if fmt is Format.PARQUET:
            return _parquet_columns(path)
        _check_text_bytes(path, fmt)
        if fmt is Format.JSONL:
            return _jsonl_columns(path)  # [] for a file of no rows
        _allow_long_fields()
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:  # a BOM is not a name
            header = next(csv.reader(handle, delimiter=_delimiter(fmt)), None)
    except OSError as err:
        raise BadInputError(f"{path}: cannot open ({err.strerror or err})") from err
    except csv.Error as err:
        raise BadInputError(f"{path}: line 1: malformed header ({err})") from err
    if not header:
        raise BadInputError(f"{path}: empty file (no header row)")
    check_header(header, _delimiter(fmt), path)
    return header


def _check_text_bytes(path: str, fmt: Format) -> None:
    """CSV, TSV and JSON Lines are UTF-8 text: a Parquet file or UTF-16 text (Excel's "Unicode
    text") read as one would be "no label columns", its header decoded into noise."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if head.startswith(b"PAR1"):
        raise BadInputError(f"{path}: a Parquet file (it starts with PAR1), not {fmt.value.upper()}; "
                            "pass --format parquet")
    check_not_utf16(head, path)


def _jsonl_columns(path: str) -> list[str]:
    """The fields of the first JSON object among the first lines, in its order; none for a file
    of no rows (blank lines at most)."""
    first = next(_jsonl_objects(path), None)
    if first is None:
        with open(path, "rb") as handle:
            if not any(line.removeprefix(UTF8_MARK).strip() for line in handle):
                return []
        raise BadInputError(f"{path}: no JSON object in the first {_SNIFF_LINES} lines")
    return list(first)


def a_json_line_has_field(path: str, name: str) -> bool:
    """Whether any line of the JSON Lines file ``path`` is an object with the field ``name`` (the
    columns come from its first lines; a field only later rows have is one too). One read of the file."""
    key = json.dumps(name, ensure_ascii=False).encode()
    escaped = json.dumps(name).encode()
    with open(path, "rb") as handle:
        for line in handle:
            if key in line or escaped in line or b"\\" in line:  # a key may be written with escapes ("\u0073hop")
                try:
                    value = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(value, dict) and name in value:
                    return True
    return False


def _later_jsonl_fields(path: str) -> list[str]:
    """The fields of the other objects among the first lines, in the order they first appear."""
    objects = _jsonl_objects(path)
    next(objects, None)
    return list(dict.fromkeys(name for value in objects for name in value))


def _jsonl_objects(path: str) -> Iterator[dict]:
    """The JSON objects among the first lines. A line that is not UTF-8 before the first object is
    refused: its field names decoded with replacement characters were noise (a GBK file's prob_
    columns all one name, every row flagged, exit 0); after it, it is a row the reader flags."""
    found, offset = False, 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(itertools.islice(handle, _SNIFF_LINES), start=1):
            start, offset = offset, offset + len(raw)
            try:
                line = raw.decode("utf-8").removeprefix(BYTE_ORDER_MARK)  # at any line's start (`cat a b`)
            except UnicodeDecodeError as err:
                if not found and raw.strip():
                    raise BadInputError(f"{path}: line {number}: invalid UTF-8 at byte offset "
                                        f"{start + err.start} (byte 0x{raw[err.start]:02x}); the columns are read "
                                        "from it: save the file as UTF-8") from err
                continue
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):  # invalid JSON, a number too long to read, deep nesting
                continue
            if isinstance(value, dict):
                found = True
                yield value


def _parquet_columns(path: str) -> list[str]:
    from ..errors import require

    pq = require("pyarrow.parquet", "io")
    try:
        return list(pq.read_schema(path).names)
    except Exception as err:  # pyarrow raises ArrowInvalid and OSError subclasses
        raise BadInputError(f"{path}: not a readable Parquet file ({arrow_reason(err)})") from err


def _allow_long_fields() -> None:
    """Read the texts the label job reads (up to CSV_FIELD_LIMIT), not only csv's default 131,072
    characters: a long review it labelled is a labelled row here too. Texts the page keeps are cut."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


def _delimiter(fmt: Format) -> str:
    return "\t" if fmt is Format.TSV else ","


# -- rows ---------------------------------------------------------------------------------------
def to_row(number: int, label: object, score: object, error: object, text: object, group: object,
           probs: Sequence[object], labels: tuple[str, ...]) -> LabelledRow:
    """One record's values -> a LabelledRow; a label, score or probability that cannot be right is a flag."""
    text = "" if text is None else text if isinstance(text, str) else _shown(text)
    if isinstance(group, bytes):
        group = _shown(group)
    reason = _error_text(error)
    if reason is not None:
        return LabelledRow(number, None, None, reason, text, group)
    checked = _checked_label(label, score, probs, labels)
    if isinstance(checked, str):
        return LabelledRow(number, None, None, f"{UNREADABLE}: {checked}", text, group)
    return LabelledRow(number, *checked, None, text, group)


NO_ERROR_TEXTS = frozenset({"", "false"})  # compared in lower case: "False", "FALSE"; and texts of zero


def _error_text(error: object) -> str | None:
    """Why a row was flagged, or None. The label job writes a reason or nothing (an empty cell, a
    JSON null); another tool's false or zero says "no error" too, in every format: a JSON or
    Parquet false or 0, and the texts CSV holds for them ("0", "0.0", "False" in any case)."""
    if isinstance(error, bytes):
        error = _shown(error)
    if error is None or (isinstance(error, numbers.Number) and error == 0):  # False is the int 0; Decimal("0.0")
        return None
    if isinstance(error, str):
        # ("0", "0.0", "-0", "0.00", "+0": read by the score's rule, which takes ASCII digits only)
        return None if error.strip().lower() in NO_ERROR_TEXTS or _number(error) == 0 else error
    return _shown(error)


def _shown(value: object) -> str:
    """A value that is not a string as the page shows it: a Parquet BINARY value as its UTF-8 text
    (as `structsent label` writes it to CSV), anything else as JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _checked_label(label: object, score: object, probs: Sequence[object],
                   labels: tuple[str, ...]) -> tuple[str, float] | str:
    """(label, score) when they and the probabilities can be right, else what is wrong with them."""
    if label in (None, ""):
        return "no label and no error"
    if str(label) not in labels:
        return "a label with no prob_ column"
    value = _number(score)
    if value is None:
        return "the score is not a number"
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        return "the score is not a finite number between zero and one"
    if value < 1.0 / len(labels) - SCORE_SLACK:
        return "the score is below one over the number of labels, which the top probability never is"
    probabilities = _probabilities(probs)
    if probabilities is None:
        return "a probability is not a finite number between zero and one"
    return _disagreement(str(label), value, probabilities, labels) or (str(label), value)


SCORE_SLACK = 1e-6  # the label job writes scores with 6 decimals
# Rounding another tool may have done (to 3 decimals, say); the label job's own rows agree to 1e-6.
AGREEMENT_SLACK = 1e-3


def _disagreement(label: str, score: float, probabilities: list[float], labels: tuple[str, ...]) -> str | None:
    """What makes a row's label, score and probabilities disagree (each was counted as a labelled row
    in a file another tool wrote), or None: they add up to one, the score is its label's
    probability, and no label is more probable than it."""
    total = sum(probabilities)
    if abs(total - 1.0) > AGREEMENT_SLACK:
        return f"the probabilities add up to {total:.6g}, not one"
    own = probabilities[labels.index(label)]
    if abs(score - own) > AGREEMENT_SLACK:
        return f"the score {score:.6g} is not the probability of its label {label!r} ({own:.6g})"
    if max(probabilities) - own > AGREEMENT_SLACK:
        return f"the label {label!r} is not the most probable one"
    return None


def _probabilities(values: Sequence[object]) -> list[float] | None:
    """The values as numbers when every one reads as a number in [0, 1], by the score's rule
    (``_number``: a JSON true is not the probability 1, and "０.１" or "0.0_5" is no number as
    written; NaN compares false), else None."""
    numbers = [_number(value) for value in values]
    if any(number is None or not 0.0 <= number <= 1.0 for number in numbers):
        return None
    return [number for number in numbers if number is not None]


def _number(value: object) -> float | None:
    """float(value), or None where float() refuses it (or where it is a JSON true or false)."""
    if isinstance(value, bool) or not isinstance(value, (str, bytes, SupportsFloat, SupportsIndex)):
        return None
    if isinstance(value, str) and (not value.isascii() or "_" in value):  # "０.９", "0.9_9": not as written
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _unreadable(number: int, why: str, group: object = UNREADABLE_KEY) -> LabelledRow:
    """A record that could not be read: flagged, in its --by group where its fields were read (a
    record with undecodable bytes), else in the group of such records (its value is not known)."""
    return LabelledRow(number, None, None, f"{UNREADABLE}: {why}", "", group)


def _text_rows(file: LabelledFile) -> Iterator[LabelledRow]:
    """CSV, TSV or JSON Lines through the label job's own readers in flag mode: a malformed record
    is one flagged row that says why (the lines an unbalanced quote swallowed are read again, so
    they still count), and no line stops the report."""
    # JSON Lines: no field is required of a row (a row without the label field is "no label and no
    # error" below, not the reader's missing-text-field flag with its --text-column advice)
    wanted = "" if file.format is Format.JSONL else file.columns.label
    reader = open_reader(file.path, file.format, text_column=wanted, on_bad_row="flag", keep_non_finite=True)
    labels = file.columns.labels
    try:
        for row in reader:
            if row.values is None:
                yield _unreadable(row.number, row.error or "malformed record")
                continue
            if row.error is not None:  # fields read, bytes replaced (undecodable): its group is known
                yield _unreadable(row.number, row.error, row.values.get(file.by))
                continue
            label, score, error, text, group, *probs = map(row.values.get, file.wanted)
            yield to_row(row.number, label, score, error, text, group, probs, labels)
    finally:
        reader.close()


def _parquet_rows(file: LabelledFile) -> Iterator[LabelledRow]:
    """Parquet through the label job's reader, only the columns the report shows."""
    read = [name for name in dict.fromkeys(file.wanted) if name is not None]
    reader = ParquetReader(file.path, rows_done=0, text_column=file.columns.label, only=read)
    for row in reader:
        label, score, error, text, group, *probs = map((row.values or {}).get, file.wanted)
        yield to_row(row.number, label, score, error, text, group, probs, file.columns.labels)


def read_job_figures(path: str) -> dict | None:
    """The label job's figures from a JSON sidecar, or None when there is no such file."""
    file = Path(path)
    if not file.is_file():
        return None
    if file.stat().st_size > 1 << 20:
        raise BadInputError(f"{path}: over 1 MiB, too large for a job summary")
    try:
        figures = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, a number too long to read, deep nesting
        raise BadInputError(f"{path}: not a JSON job summary ({type(err).__name__}: {err})") from err
    if not isinstance(figures, dict):
        raise BadInputError(f"{path}: a job summary must be a JSON object")
    if nested_deeper_than(figures, JOB_FIGURES_DEPTH):
        raise BadInputError(f"{path}: a job summary nested more than {JOB_FIGURES_DEPTH} objects deep")
    return figures
