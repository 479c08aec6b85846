"""Writers: every input column unchanged and in order, then label, score, one probability per label, error.

Text formats are encoded chunk by chunk into bytes, which the job appends and commits; Parquet
chunks become part files that are merged at the end. Encoding is deterministic, so a resumed
job writes exactly the bytes an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..lines import one_line, why_unprintable
from ..results import LabelResult
from .formats import Format
from .readers import InputRow, arrow_children

_FORMAT_NAMES = {Format.CSV: "CSV", Format.TSV: "TSV", Format.PARQUET: "Parquet"}


def added_columns(labels: Sequence[str], prefix: str = "") -> list[str]:
    return [f"{prefix}label", f"{prefix}score", *(f"{prefix}prob_{label}" for label in labels), f"{prefix}error"]


def check_prefix(prefix: str) -> None:
    """The prefix of the added columns prints as it is, on one line: a line break or another control
    character split the CSV header's line and every summary that names the columns; a tab split a TSV
    header's names, and a character that does not print (a zero-width space, a right-to-left
    override, a line separator) or a prefix of spaces alone made names that look like others."""
    why = why_unprintable(prefix) if prefix else None
    if why is None:
        return
    shown = "".join(c if c.isprintable() or c in "\n\r" else f"\\u{ord(c):04x}" for c in one_line(prefix))
    if why == "is blank":
        raise BadInputError(f"--prefix '{shown}' is blank; the added columns' names would look like the plain ones "
                            "(e.g. --prefix pred_)")
    raise BadInputError(f"--prefix '{shown}' {why}; the added columns' names must print as they are, on one line "
                        "(e.g. --prefix pred_)")


def check_no_collision(input_columns: Sequence[str], extra: Sequence[str], prefix: str) -> None:
    clash = sorted(set(input_columns) & set(extra))
    if clash:
        advice = "another --prefix" if prefix else "--prefix (e.g. --prefix pred_)"
        raise BadInputError(
            f"the input already has column(s) {', '.join(map(repr, clash))}; pass {advice} so the added "
            "columns get other names"
        )


def prediction_types(labels: Sequence[str]) -> list:
    """Arrow types of the added columns (label, score, one probability per label, error)."""
    import pyarrow as pa

    return [pa.string(), pa.float64(), *(pa.float64() for _ in labels), pa.string()]


def prediction_values(result: LabelResult, labels: Sequence[str]) -> list:
    probabilities = [result.scores.get(label) for label in labels]
    score = None if result.score is None else round(result.score, 6)
    return [result.label, score, *(None if p is None else round(p, 6) for p in probabilities), result.error]


class ChunkEncoder:
    """Turns (rows, results) into output bytes or an Arrow table for one output format."""

    def __init__(self, fmt: Format, input_columns: Sequence[str], labels: Sequence[str], prefix: str = "") -> None:
        self.format = fmt
        self.input_columns = list(input_columns)
        self.labels = list(labels)
        self.extra = added_columns(labels, prefix)
        check_no_collision(self.input_columns, self.extra, prefix)
        self.columns = self.input_columns + self.extra
        self._known_columns = frozenset(self.input_columns)
        self._extra_columns = frozenset(self.extra)
        self._prefix_hint = "another --prefix" if prefix else "--prefix (e.g. --prefix pred_)"
        self._arrow_schema: Any = None  # a pyarrow.Schema once the first chunk is written
        # JSON Lines input: columns null in every row so far, typed string until a value says otherwise.
        self._undecided: set[str] = set()

    def header(self) -> bytes:
        """Bytes that open the output file (a CSV header row; nothing for other formats)."""
        if self.format in (Format.CSV, Format.TSV):
            return self._csv_bytes([self.columns])
        return b""

    def encode(self, rows: Sequence[InputRow], results: Sequence[LabelResult]) -> bytes:
        if self.format is Format.JSONL:
            return "".join(self._json_line(r, res) for r, res in zip(rows, results)).encode("utf-8")
        if self.format in (Format.CSV, Format.TSV):
            return self._csv_bytes(self._csv_record(r, res) for r, res in zip(rows, results))
        raise ValueError(f"{self.format} is not a byte format")

    def table(self, rows: Sequence[InputRow], results: Sequence[LabelResult], input_schema=None):
        """An Arrow table of the chunk, with one schema for the whole job."""
        import pyarrow as pa

        records = [self._record(r, res) for r, res in zip(rows, results)]
        where = f"rows {rows[0].number}-{rows[-1].number}" if rows else "no rows"
        if input_schema is None:  # JSON Lines: the chunk's own types, checked against the job's
            numbers = [row.number for row in rows]
            inferred = _inferred_table(records, where, numbers) if records else None  # once per chunk
            if inferred is not None:
                _refuse_booleans_made_numbers(records, inferred, self.input_columns, numbers)
            if self._arrow_schema is None:
                self._arrow_schema = self._schema(input_schema, inferred, where)
                self._undecided = {c for c in self.input_columns
                                   if not _has_values(inferred, c) or _holds_null(self._arrow_schema.field(c).type)}
            if inferred is None:  # an input without rows: the columns, empty
                return self._arrow_schema.empty_table()
            self._decide(inferred, where)
            return _table_of_one_schema(inferred, self._arrow_schema, where, records, numbers)
        if self._arrow_schema is None:
            self._arrow_schema = self._schema(input_schema, None, where)
        try:
            return pa.Table.from_pylist(records, schema=self._arrow_schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise BadInputError(f"{where}: column types changed ({err})") from err

    def use_schema(self, schema, undecided: Sequence[str] = ()) -> None:
        """Tables of this schema from now on (a resumed job: that of the parts already written),
        ``undecided`` the columns that held only nulls so far, or values of a type holding null
        (only empty lists, objects whose fields were all null)."""
        self._arrow_schema = schema.remove_metadata()
        self._undecided = set(undecided)

    def resume_parquet_parts(self, parts: Sequence[Path]) -> None:
        """Go on from the part files a stopped job committed: the last one's schema (a column's type
        is decided by its first value), with the string columns that are null in every part, and
        the columns of a type holding null, undecided."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(parts[-1])
        named = [c for c in self.input_columns if c in schema.names]
        strings = [c for c in named if pa.types.is_string(schema.field(c).type)]
        self.use_schema(schema, [c for c in strings if all(_only_nulls(part, c) for part in parts)]
                        + [c for c in named if _holds_null(schema.field(c).type)])

    def _decide(self, inferred, where: str) -> None:
        """The first values of a column null until now give it its type, and values of a column
        whose type holds null (``[]`` so far: a list of null) fill in that null (``[1.5]``: a list of
        double). The parts written before take that type when they are merged."""
        import pyarrow as pa

        for name in sorted(self._undecided):
            if not _has_values(inferred, name):
                continue
            current = self._arrow_schema.field(name).type  # a string placeholder where only nulls came so far
            kind = _filled_in(current, inferred.field(name).type) if _holds_null(current) else inferred.field(name).type
            field = pa.field(name, kind)
            check_parquet_can_hold([field], where)
            self._arrow_schema = self._arrow_schema.set(self._arrow_schema.get_field_index(name), field)
            if not _holds_null(kind):
                self._undecided.discard(name)

    # -- helpers ------------------------------------------------------------------------------
    def _check_fields(self, row: InputRow, values: dict) -> None:
        """A row (of JSON Lines, whose rows need not share fields) with a field that this output
        would drop: refused, rather than lose the value."""
        if not self._known_columns.issuperset(values):
            dropped = ", ".join(repr(k) for k in values if k not in self._known_columns)
            columns = ", ".join(map(repr, self.input_columns))
            raise BadInputError(
                f"row {row.number}: field(s) {dropped} are not among the output's columns ({columns}), which come "
                f"from the first row; {_FORMAT_NAMES.get(self.format, self.format.value)} output has one set of "
                "columns: write JSON Lines output to keep every field, or keep one with --id-column"
            )

    def _fitted(self, row: InputRow, result: LabelResult) -> tuple[dict, LabelResult]:
        """The row's values, and its result, for this output's columns. A row with a field the
        output has no column for is refused (the value would be lost), unless the reader flagged
        the row already (flag mode): it is written without that field, and its error says so."""
        values = row.values or {}
        if row.error is None or result.error is None or self._known_columns.issuperset(values):
            self._check_fields(row, values)
            return values, result
        dropped = ", ".join(repr(k) for k in values if k not in self._known_columns)
        kept = {k: v for k, v in values.items() if k in self._known_columns}
        return kept, LabelResult.failed(f"{result.error}; its field(s) {dropped} are not among the output's "
                                        "columns and are not written")

    def _record(self, row: InputRow, result: LabelResult) -> dict:
        values, result = self._fitted(row, result)
        record = {c: values.get(c) for c in self.input_columns}
        record.update(zip(self.extra, prediction_values(result, self.labels)))
        return record

    def _json_line(self, row: InputRow, result: LabelResult) -> str:
        record = dict(row.values) if row.values is not None else {}
        if not self._extra_columns.isdisjoint(record):
            clash = ", ".join(repr(k) for k in self.extra if k in record)
            raise BadInputError(f"row {row.number}: field(s) {clash} would be overwritten by the added columns; "
                                f"pass {self._prefix_hint} so the added columns get other names")
        record.update(zip(self.extra, prediction_values(result, self.labels)))
        return json_line(record)

    def _csv_record(self, row: InputRow, result: LabelResult) -> list:
        values, result = self._fitted(row, result)
        cells = [value if type(value) is str else _cell(value) for value in map(values.get, self.input_columns)]
        if result.error is not None or result.score is None or result.label is None:
            return cells + [_cell(v) for v in prediction_values(result, self.labels)]
        # A labelled row, the common case, written directly: the same cells as prediction_values
        # gives through _cell (str of a float is its repr), without the per-value dispatch.
        scores = result.scores
        cells.append(result.label)
        cells.append(repr(round(result.score, 6)))
        cells.extend([repr(round(scores[label], 6)) for label in self.labels])
        cells.append("")
        return cells

    def _csv_bytes(self, records) -> bytes:
        delimiter = "\t" if self.format is Format.TSV else ","
        return csv_text(records, delimiter).encode("utf-8")

    def _schema(self, input_schema, inferred_table, where: str):
        """The job's schema: the input's (Parquet), else the types of the first chunk's table;
        checked that Parquet can hold it."""
        import pyarrow as pa

        if input_schema is not None:
            fields = [input_schema.field(c) for c in self.input_columns]
        else:
            inferred = inferred_table.schema if inferred_table is not None else None
            fields = [
                inferred.field(c) if inferred is not None and c in inferred.names and
                not pa.types.is_null(inferred.field(c).type) else pa.field(c, pa.string())
                for c in self.input_columns
            ]
        check_parquet_can_hold(fields, where)
        fields += [pa.field(name, kind) for name, kind in zip(self.extra, prediction_types(self.labels))]
        return pa.schema(fields)


SCHEMA_ADVICE = ("Parquet output has one type per column, taken from the first chunk that holds a value of it: "
                 "write JSON Lines or CSV output, give the column one type throughout, or a larger --chunk-rows so "
                 "that the first chunk sees more kinds of value")


PARQUET_MAX_DEPTH = 100  # schema levels Arrow's Parquet reader reads back, the root included


def check_parquet_can_hold(fields, where: str) -> None:
    """Refuse, before a part is written, the column types a Parquet file cannot hold or cannot be
    read back with: an object without fields (``{}``: Arrow cannot write it) and nesting deeper
    than the reader's limit (the part was written, then "no longer reads" at the next check).
    ``fields``: a schema, or the fields a schema gains."""
    for field in fields:
        if _holds_a_struct_without_fields(field.type):
            raise BadInputError(f"{where}: column {field.name!r} holds an object without fields ({{}}), which "
                                "Parquet cannot hold; write JSON Lines or CSV output")
        depth = 1 + _parquet_levels(field.type)
        if depth > PARQUET_MAX_DEPTH:
            raise BadInputError(f"{where}: column {field.name!r} nests {depth} levels deep as Parquet, and Parquet "
                                f"readers read at most {PARQUET_MAX_DEPTH}; write JSON Lines or CSV output")


def _parquet_levels(kind) -> int:
    """Levels of the Parquet schema a column of Arrow type ``kind`` takes: a value 1, a struct one
    more than its deepest field, a list or a map two more (their group and repeated group)."""
    import pyarrow as pa

    children = arrow_children(kind)
    if not children:
        return 1
    own = 1 if pa.types.is_struct(kind) else 2
    return own + max(_parquet_levels(child) for child in children)


def _holds(kind, predicate: Callable[[Any], bool]) -> bool:
    """Whether Arrow type ``kind``, or a type it holds at any depth, satisfies ``predicate``."""
    return predicate(kind) or any(_holds(child, predicate) for child in arrow_children(kind))


def _holds_a_struct_without_fields(kind) -> bool:
    import pyarrow as pa

    return _holds(kind, lambda t: pa.types.is_struct(t) and t.num_fields == 0)


def _holds_null(kind) -> bool:
    """Whether Arrow type ``kind`` is or holds the null type (``[]`` is a list of null, ``{"a": null}``
    a struct of a null field): what values of it say of the column's type is not all."""
    import pyarrow as pa

    return _holds(kind, pa.types.is_null)


def _filled_in(current, later):
    """``current`` with the nulls it holds replaced by what ``later`` has in their place, where
    ``later`` has the same shape (lists in lists, the fields of structs by name); anything else of
    ``current`` as it is (``_table_of_one_schema`` then refuses values that do not fit)."""
    import pyarrow as pa

    if pa.types.is_null(current):
        return later
    if pa.types.is_list(current) and pa.types.is_list(later):
        return pa.list_(_filled_in(current.value_type, later.value_type))
    if pa.types.is_struct(current) and pa.types.is_struct(later):
        theirs = {field.name: field.type for field in later}
        return pa.struct([pa.field(field.name, _filled_in(field.type, theirs[field.name]) if field.name in theirs
                                   else field.type) for field in current])
    return current


def _has_values(table, column: str) -> bool:
    """Whether ``table`` (a chunk's inferred table, or None) holds a value other than null in ``column``."""
    import pyarrow as pa

    return table is not None and column in table.column_names and not pa.types.is_null(table.schema.field(column).type)


def _only_nulls(part: Path, column: str) -> bool:
    import pyarrow.parquet as pq

    values = pq.read_table(part, columns=[column]).column(column)
    return values.null_count == len(values)


def _inferred_table(records: list[dict], where: str, numbers: Sequence[int]):
    """The chunk as an Arrow table of the types its values give (``numbers``: its rows' numbers,
    to name the first row of a column Arrow cannot make one type of)."""
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(records)
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        column = _column_arrow_refuses(records)
        named = ""
        if column is not None:
            values = [record.get(column) for record in records]
            where = _first_row_where(values, numbers, _one_arrow_type, where)
            named = f"column {column!r} holds "
        raise BadInputError(f"{where}: {named}a value Parquet cannot hold ({err}); write JSON Lines or CSV output") from err


def _one_arrow_type(values: list) -> bool:
    """Whether Arrow makes one column of ``values``."""
    import pyarrow as pa

    try:
        pa.array(values)
    except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def _first_row_where(values: list, numbers: Sequence[int], holds: Callable[[list], bool], otherwise: str) -> str:
    """"row N": the first row at which the values from the chunk's start no longer satisfy
    ``holds`` (a property the values lose for good once they lose it: one Arrow type, one the
    job's type holds), found by halving; ``otherwise`` where no prefix fails."""
    if holds(values):
        return otherwise
    good, bad = 0, len(values)  # values[:good] holds, values[:bad] does not
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if holds(values[:middle]) else (good, middle)
    return f"row {numbers[bad - 1]}"


def _refuse_booleans_made_numbers(records: list[dict], inferred, columns: Sequence[str], numbers: Sequence[int]) -> None:
    """Arrow makes one column of true/false and floats by turning true/false into 1.0/0.0 (at any
    depth: ``[1.5]`` then ``[true]`` was ``[1.0]``); refused, naming the first row that holds one.
    (Other mixtures of kinds it refuses itself.) ``columns``: the input's (the added ones are ours)."""
    import pyarrow as pa

    for name in columns:
        kind = inferred.schema.field(name).type if name in inferred.column_names else pa.null()
        if not _holds(kind, pa.types.is_floating):
            continue
        for number, record in zip(numbers, records):
            if _boolean_among_floats(record.get(name), kind, pa.types):
                raise BadInputError(
                    f"row {number}: column {name!r} holds true or false where other values hold numbers, and one "
                    "Parquet column would hold them as 1.0 or 0.0; write JSON Lines or CSV output, or give the "
                    "column one type throughout")


def _boolean_among_floats(value, kind, types) -> bool:
    """Whether ``value`` (a JSON value) holds a bool where ``kind`` (its column's inferred type) has a
    float. ``types``: ``pyarrow.types``."""
    if value is None:
        return False
    if types.is_floating(kind):
        return isinstance(value, bool)
    if types.is_struct(kind) and isinstance(value, dict):
        return any(_boolean_among_floats(value.get(field.name), field.type, types) for field in kind)
    if types.is_list(kind) and isinstance(value, list):
        return any(_boolean_among_floats(item, kind.value_type, types) for item in value)
    return False


def _column_arrow_refuses(records: list[dict]) -> str | None:
    """The first column whose values Arrow cannot make one column of (values of kinds no one type
    holds, an integer beyond 64 bits), to name it: Arrow's error did not."""
    import pyarrow as pa

    for name in dict.fromkeys(key for record in records for key in record):
        try:
            pa.array([record.get(name) for record in records])
        except (OverflowError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return name
    return None


def _table_of_one_schema(inferred, schema, where: str, records: list[dict], numbers: Sequence[int]):
    """The chunk (``inferred``: its table, of its own types) as a table of ``schema``, refusing
    (rather than converting) any value the job's column types cannot hold exactly: Arrow's own
    conversion truncated 10.75 to 10 in an integer column and dropped an object's keys a struct
    column did not list. ``records`` and ``numbers`` (the chunk's values and row numbers): to name
    the first row of a value of another type."""
    import pyarrow as pa

    columns = []
    for field in schema:
        column = inferred.column(field.name)
        if not _fits(column.type, field.type):
            values = [record.get(field.name) for record in records]
            where = _first_row_where(values, numbers, lambda some: _fits(pa.array(some).type, field.type), where)
            raise BadInputError(f"{where}: column {field.name!r} holds {column.type} values, and its type is "
                                f"{field.type}; {SCHEMA_ADVICE}")
        try:
            columns.append(column.cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            raise BadInputError(f"{where}: column {field.name!r} ({field.type}) cannot hold a value ({err}); "
                                f"{SCHEMA_ADVICE}") from err
    return pa.Table.from_arrays(columns, schema=schema)


def _fits(kind, target) -> bool:
    """Whether values of Arrow type ``kind`` convert to ``target`` with nothing dropped or reinterpreted
    (the cast itself then refuses lost precision: 2**53 + 1 as a float)."""
    import pyarrow as pa

    if pa.types.is_null(kind) or kind == target:
        return True
    if pa.types.is_integer(kind) and pa.types.is_floating(target):
        return True
    if pa.types.is_struct(kind) and pa.types.is_struct(target):
        wanted = {target.field(i).name: target.field(i).type for i in range(target.num_fields)}
        return all(kind.field(i).name in wanted and _fits(kind.field(i).type, wanted[kind.field(i).name])
                   for i in range(kind.num_fields))
    if pa.types.is_list(kind) and pa.types.is_list(target):
        return _fits(kind.value_type, target.value_type)
    return False


def csv_text(records, delimiter: str) -> str:
    """Rows of text cells as CSV: what ``csv.writer(lineterminator="\\n")`` writes (minimal quoting,
    quotes doubled) with one difference: a cell holding a lone "\\r" is quoted too. Most rows are
    joined here directly (their cells scanned by str methods: ~4x less time than the csv module's
    per-character loop on Chinese text); a row with a cell that is not a string, or a single cell,
    goes through the csv module (tests compare the two on random rows)."""
    lines = []
    for record in records:
        if len(record) > 1 and all(type(cell) is str for cell in record):
            lines.append(delimiter.join([_quoted(cell) if _needs_quotes(cell, delimiter) else cell for cell in record]))
            lines.append("\n")
        else:
            lines.append(_csv_text_quoting_carriage_returns([record], delimiter))
    return "".join(lines)


def _needs_quotes(cell: str, delimiter: str) -> bool:
    return delimiter in cell or '"' in cell or "\n" in cell or "\r" in cell


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def _csv_text_quoting_carriage_returns(records: list, delimiter: str) -> str:
    """The CSV writer quotes a field holding a character of its line terminator, and ours is
    "\n": a lone "\r" went out bare, and every CSV reader (ours too) splits the row there. Rows
    holding one are written by a writer whose terminator is "\r\n" (it quotes fields holding
    either), and that terminator, outside every quoted field, becomes "\n" again."""
    plain, buffer = io.StringIO(), io.StringIO()
    writer = csv.writer(plain, delimiter=delimiter, lineterminator="\n")
    careful = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    lines = []
    for record in records:
        out, target = (buffer, careful) if any("\r" in cell for cell in record if isinstance(cell, str)) else (plain, writer)
        out.seek(0)
        out.truncate()
        target.writerow(record)
        line = out.getvalue()
        lines.append(line[:-2] + "\n" if target is careful else line)
    return "".join(lines)


def json_line(record: dict) -> str:
    """One output row as a JSON Lines line: UTF-8 text as it is, integers as integers, NaN and the
    infinities (which JSON cannot hold) as null, a Parquet BINARY value as its text."""
    try:
        return json.dumps(record, ensure_ascii=False, default=_json_value, allow_nan=False) + "\n"
    except ValueError:  # NaN or an infinity (a Parquet float, a JSON Lines NaN literal): not JSON
        return json.dumps(_finite_or_null(record), ensure_ascii=False, default=_json_value) + "\n"


def _finite_or_null(value):
    """``value`` with every NaN and infinity, which JSON cannot hold, as null (what pandas writes)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def cell_or_null(value) -> str | None:
    """A value as the CSV writer writes it (JSON for lists and objects), with null left null: for a
    column whose values are of mixed types, which no Arrow type holds."""
    return None if value is None else _cell(value)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # as JSON writes it, at the top level as inside a list or an object
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=_json_value)
    if isinstance(value, bytes):
        return _text_of_bytes(value)
    return str(value)


def _json_value(value) -> str:
    """What JSON output holds for a value JSON has no type for: a Parquet BINARY value's UTF-8 text, else str()."""
    return _text_of_bytes(value) if isinstance(value, bytes) else str(value)


def _text_of_bytes(value: bytes) -> str:
    """A BINARY value (a string written without its UTF8 annotation) as text; bytes that are not
    UTF-8 cannot be written to a text format without changing them."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(BINARY_NOT_TEXT) from None


BINARY_NOT_TEXT = ("a BINARY column holds bytes that are not UTF-8 text, which CSV, TSV and JSON Lines cannot hold "
                   "unchanged; write Parquet output (-o OUT.parquet)")


def write_parquet_part(table, path: Path) -> None:
    """Write one chunk's table atomically (temporary name, then rename)."""
    import pyarrow.parquet as pq

    with _renamed_into_place(path) as tmp:
        pq.write_table(table, tmp)


def merge_parquet_parts(parts: Sequence[Path], target: Path,
                        before_rename: Callable[[Path], None] | None = None) -> None:
    """Concatenate part files, in order, into one Parquet file (one row group per part), of the
    last part's schema: a column of only nulls in earlier parts takes the type it was given later.
    ``before_rename`` is called with the written, synced file just before it is renamed onto ``target``."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(parts[-1]).remove_metadata() if parts else None
    with _renamed_into_place(target, before_rename) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                writer.write_table(_as_schema(pq.read_table(part), schema, part))


def _as_schema(table, schema, part: Path):
    """``table`` with the types of ``schema``, where the columns that differ hold only nulls, or are
    of a type whose nulls ``schema`` fills in (a list of null written before the first number)."""
    import pyarrow as pa

    table = table.replace_schema_metadata(None)
    if table.schema.equals(schema):
        return table
    columns = []
    for field, column in zip(schema, table.columns):
        if column.type != field.type and _holds_null(column.type) and _fits(column.type, field.type):
            column = column.cast(field.type, safe=True)
        if column.type != field.type:
            if column.null_count != len(column):
                raise BadInputError(f"{part}: column {field.name!r} is {column.type} here and {field.type} in the "
                                    "last part; start the job over with --overwrite")
            column = pa.nulls(len(column), field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


@contextlib.contextmanager
def _renamed_into_place(path: Path, before_rename: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A temporary name beside ``path`` to write; on success it is synced and renamed onto ``path``,
    on failure (a full disk) removed, so that no half-written file is left beside the output."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        if before_rename is not None:
            before_rename(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    import os

    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
