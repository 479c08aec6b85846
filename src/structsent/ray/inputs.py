"""Files in: what `structsent label --engine ray` reads (a file, a directory, a glob, a remote URI),
checked before Ray starts as the local job checks each file, and read into a Dataset with values
kept as the local reader keeps them (CSV columns as strings, JSON Lines through the local reader)."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import BadInputError
from ..io.formats import Format, detect_format, suffixes_of
from ..io.readers import check_unique_columns, resolve_text_column
from ..io.sniff import check_header
from ..io.writers import cell_or_null
from .cluster import import_ray_data

if TYPE_CHECKING:
    import pyarrow
    import ray.data


RAY_INPUT_FORMATS = (Format.CSV, Format.JSONL, Format.PARQUET)
SUFFIXES = {fmt: suffixes_of(fmt) for fmt in (Format.PARQUET, Format.JSONL, Format.CSV)}


@dataclasses.dataclass(frozen=True)
class InputFiles:
    """What `structsent label --engine ray` reads.

    ``paths`` go to Ray as they are: a remote URI as given (Ray lists it, keeping files with
    ``suffixes``); a local file, directory or glob as the files found here (``files``), the
    ones whose format and CSV headers were checked. (A directory handed to Ray whole was listed
    by Ray's own rules: it read a ``sub/_part.csv`` this listing skips, with its columns' types
    guessed, and skipped ``.hidden/a.csv``, whose rows were then missing.)
    """

    paths: list[str]
    files: list[str]
    format: Format
    directory: str | None = None  # a local directory given as the input (an output inside it is refused)

    @property
    def suffixes(self) -> list[str] | None:
        """The suffixes Ray should keep, or None when some file has none of them (--format given) or
        Ray is given the files themselves (already chosen here)."""
        if self.files and self.paths == self.files:
            return None
        known = SUFFIXES[self.format]
        named = all(any(f.lower().endswith("." + s) for s in known) for f in self.files)
        return known if named else None


def resolve_input(pattern: str, requested_format: str = "auto") -> InputFiles:
    """A file, a directory (searched recursively) or a glob, as files of one format.

    Remote URIs (``s3://...``) are passed to Ray as they are; their format comes from the suffix
    or ``requested_format``.
    """
    if pattern == "-":
        raise BadInputError("--engine ray reads files, not standard input; pass a file, a directory or a glob")
    if "://" in pattern:
        return InputFiles([pattern], [], _ray_input_format(_format_of(pattern, requested_format)))
    files = _local_files(pattern)
    if requested_format != "auto":
        fmt = _ray_input_format(Format(requested_format))
    else:
        fmt = _one_format(pattern, files)
        files = [f for f in files if _suffix_format(f) is fmt]
    if fmt is not Format.JSONL:  # an empty JSON Lines file is zero rows; an empty CSV or Parquet is no file
        empty = next((f for f in files if os.path.getsize(f) == 0), None)
        if empty is not None:
            raise BadInputError(f"{empty}: empty file (no {'header row' if fmt is Format.CSV else 'Parquet footer'}); "
                                "remove it from the input")
    directory = os.path.abspath(pattern) if os.path.isdir(pattern) else None
    return InputFiles(files, files, fmt, directory)


def _local_files(pattern: str) -> list[str]:
    """The files a path names: a file or directory that exists is taken as named (a "?" or "[1]" in
    its name is not a pattern), anything else with *, ? or [ as a glob."""
    is_glob = glob.has_magic(pattern) and not os.path.exists(pattern)
    if is_glob:
        files = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
    elif os.path.isdir(pattern):
        files = _data_files_under(pattern)
    elif os.path.isfile(pattern):
        files = [pattern]
    else:
        raise BadInputError(f"{pattern}: no such file or directory")
    if not files:
        reason = "no file matches" if is_glob else "no files to read"
        raise BadInputError(f"{pattern}: {reason}")
    return sorted(os.path.abspath(p) for p in files)


def _data_files_under(directory: str) -> list[str]:
    """The files under ``directory``, recursively, but for names (of files or of directories) that
    begin with "." or "_": _SUCCESS, .crc, _temporary/ and .staging/ are not data."""
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        files += [os.path.join(root, name) for name in names if not name.startswith((".", "_"))]
    return files


def _one_format(pattern: str, files: list[str]) -> Format:
    formats = {fmt for fmt in map(_suffix_format, files) if fmt is not None}
    if len(formats) != 1:
        found = ", ".join(sorted(f.value for f in formats)) or "none recognised"
        raise BadInputError(f"{pattern}: expected files of one format (found: {found}); "
                            "narrow the glob or pass --format")
    return _ray_input_format(formats.pop())


def _suffix_format(path: str) -> Format | None:
    try:
        return detect_format(path)
    except BadInputError:
        return None


def _format_of(path: str, requested: str) -> Format:
    if requested == "auto" and _suffix_format(path) is None:
        raise BadInputError(f"{path}: cannot tell the format from the name; pass --format")
    return detect_format(path, requested)


def _ray_input_format(fmt: Format) -> Format:
    if fmt not in RAY_INPUT_FORMATS:
        raise BadInputError(f"--engine ray reads CSV, JSONL and Parquet, not {fmt.value}; use --engine local")
    return fmt


def read_dataset(source: InputFiles, *, exact_json: bool = True, text_column: str = "text") -> "ray.data.Dataset":
    """Read ``source`` with Ray Data; CSV columns stay strings, as the local engine reads them.
    ``exact_json``: JSON Lines values are held as they are (see ``json_lines_table``); False, for
    Parquet output, lets Arrow widen them to one type (integers among floats become floats), and
    refuses other columns than ``text_column`` whose values no one type holds."""
    data = import_ray_data()
    common = {"file_extensions": source.suffixes, **filesystem_for(source.paths[0])}
    if source.format is Format.PARQUET:
        ds = data.read_parquet(source.paths, **common)
        return ds.map_batches(without_pandas_metadata, batch_format="pyarrow", batch_size=None)
    if source.format is Format.JSONL:
        return data.read_datasource(_json_lines_datasource(source.paths, common, exact=exact_json,
                                                           text_column=text_column))
    # Remote inputs have no local file list: Arrow infers their column types.
    strings = _csv_as_strings(source.files) if source.files else None
    return data.read_csv(source.paths, **common, convert_options=strings, parse_options=_csv_parse_options())


def without_pandas_metadata(block: "pyarrow.Table") -> "pyarrow.Table":
    """A block without the pandas schema metadata a Parquet file pandas wrote gives it. With it, Ray
    merges blocks that disagree on a column through pandas, and an integer column with a null among
    its rows became floats (2**53 + 1 read as 2**53)."""
    return block.replace_schema_metadata(None) if block.schema.metadata else block


def filesystem_for(path: str) -> dict:
    """Ray's reading and writing arguments for ``path``: a local path goes with the local filesystem,
    so that Ray takes it as a path, not as a URI (where "?" starts a query: a directory named "in?"
    had no files)."""
    if "://" in path:
        return {}
    import pyarrow.fs as pa_fs

    return {"filesystem": pa_fs.LocalFileSystem()}


def _json_lines_datasource(paths, options: dict, *, exact: bool, text_column: str = "text"):
    """JSON Lines files read as the local job reads them, by its own reader: values as they are
    (Ray's reader went through pandas, which turned "007" into 7, "2024-03-05" into a timestamp and
    1.0000000000000002 into 1.0), and what it refuses refused here too (a key twice, a lone surrogate
    escape, a number a float cannot hold exactly), naming the file and line."""
    from ray.data.datasource import FileBasedDatasource

    class JsonLinesDatasource(FileBasedDatasource):
        def _read_stream(self, f, path: str):
            yield json_lines_table(f.read_buffer().to_pybytes(), path, exact=exact, text_column=text_column)

    return JsonLinesDatasource(paths, **options)


def _python_objects(values: list):
    """Ray's column of Python objects (its extension type); where this Ray has none, their text."""
    import pyarrow as pa

    try:
        from ray.data._internal.object_extensions.arrow import ArrowPythonObjectArray
    except ImportError:
        return pa.array([cell_or_null(value) for value in values], type=pa.string())
    return ArrowPythonObjectArray.from_objects(values)


def json_lines_table(data: bytes, name: str, *, exact: bool = True, text_column: str = "text") -> "pyarrow.Table":
    """The rows of one JSON Lines file as an Arrow table. A column whose values no Arrow type
    holds exactly (a number among texts, integers among floats, an integer beyond 64 bits, objects
    and lists) is a column of Python objects: the labeller flags its non-texts, the JSON Lines
    writer writes the values as they were, the CSV and Parquet writers their JSON text. With
    ``exact`` False (Parquet output), Arrow chooses one type where it can (a struct, a double)."""
    import io

    import pyarrow as pa

    from ..io.readers import FAIL, JsonLinesReader

    # A line without the text field is refused, as by the local engine (it became a flagged row, "missing
    # text (None)", with a text field the line never had).
    reader = JsonLinesReader(io.BytesIO(data), start=0, line=0, rows_done=0, total=None, on_bad_row=FAIL,
                             name=name, text_column=text_column)
    try:
        rows = [row.values or {} for row in reader]
    except BadInputError as err:  # flag mode is the local engine's
        raise with_local_engine_advice(err) from None
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = {}
    for column in names:
        values = [row.get(column) for row in rows]
        if column == text_column:
            # Its non-texts are flagged rows, written as their JSON text, in every output. Python objects
            # in every file, texts only or not: a file of numbers there (int64) beside one of texts
            # (string) was refused as files that disagree on a column's type.
            columns[column] = _python_objects(values)
        elif exact:
            columns[column] = _arrow_column(values, exact)
        else:
            columns[column] = _parquet_column(values, name, column)
    return pa.table(columns) if names else pa.table({})


def _arrow_column(values: list, exact: bool):
    import pyarrow as pa

    if exact and not _one_arrow_type(values):
        return _python_objects(values)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return _python_objects(values)


def _parquet_column(values: list, name: str, column: str):
    """A column for Parquet output: the one Arrow type of its values, or, for values of kinds no one
    type holds (a number and an object), a refusal naming the column, as the local job refuses them
    (they became a column of their JSON text, and the doubles of the files that agreed with it too)."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as err:
        kinds = ", ".join(sorted({_json_kind(value) for value in values if value is not None}))
        raise BadInputError(f"{name}: column {column!r} holds values no one Parquet type holds ({kinds}: "
                            f"{str(err).splitlines()[0][:120]}); write CSV or JSON Lines output, which keep each "
                            "value as it is, or give the column one type") from None


def _json_kind(value: object) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "list"}
    return kind.get(type(value), type(value).__name__)


def _one_arrow_type(values: list) -> bool:
    """Whether an Arrow type holds these JSON values exactly: all strings, all booleans, all
    integers of 64 bits, or all floats (nulls anywhere). Integers among floats would become floats
    (3 -> 3.0), and objects an Arrow struct with every key of every row (a key a row lacks, null)."""
    kinds = {type(value) for value in values if value is not None}
    if len(kinds) > 1 or kinds & {dict, list}:
        return False
    if kinds == {int}:
        return all(-(1 << 63) <= value < (1 << 63) for value in values if value is not None)
    return True


def _csv_parse_options():
    """Quoted fields may hold line breaks (Arrow assumes they do not, and refused a file of a few MB
    of multi-line reviews once a block boundary fell inside one)."""
    import pyarrow.csv as pa_csv

    return pa_csv.ParseOptions(newlines_in_values=True)


def _csv_as_strings(paths: Sequence[str]):
    """Arrow CSV options that keep every column of every file a string ("007" stays "007")."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    return pa_csv.ConvertOptions(column_types={name: pa.string() for name in csv_header_names(paths)})


def csv_header_names(paths: Sequence[str]) -> list[str]:
    """The columns the header rows of the CSV files ``paths`` name, in order (files may differ in their
    columns: a column only later files have too)."""
    names: dict[str, None] = {}
    for path in paths:
        header = _csv_header(path)
        check_unique_columns(header, path)  # (Arrow's KeyError, exit 1, said "exists 2 times in schema")
        names.update(dict.fromkeys(header))
    return list(names)


def _csv_header(path: str) -> list[str]:
    import csv

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle), [])


def check_input_columns(source: "InputFiles", text_column: str) -> str | None:
    """The columns of local CSV and Parquet files checked before Ray starts, as the local engine
    checks each file: a CSV header read with the wrong delimiter (one column holding semicolons or
    tabs, Excel's ``sep=;`` line) had every line labelled as one text, exit 0; a file without the
    text column had every row flagged "missing text (None)", exit 0; a Parquet column named twice
    failed inside Ray ("the Ray job failed: ArrowInvalid ...", exit 1). Every file must give its
    texts in the same column. JSON Lines lines are checked as they are read (``json_lines_table``).
    The CSV files' text column is returned (None for other formats)."""
    if source.format is Format.PARQUET:
        for path in source.files:
            _check_parquet_columns(path)
        return None
    if source.format is not Format.CSV:
        return None
    first: tuple[str, str] | None = None  # (file, its text column)
    for path in source.files:
        header = _csv_header(path)
        if not header:  # a blank first line (empty files are refused before): Arrow took line 2 for the
            # header and guessed every column's type ("007" became 7), exit 0
            raise BadInputError(f"{path}: no header row (line 1 is empty)")
        check_unique_columns(header, path)
        try:
            check_header(header, ",", path, text_column)
        except BadInputError as err:
            raise with_tsv_advice_for_ray(err) from None
        column = resolve_text_column(header, text_column, path)
        if first is not None and column != first[1]:
            def held(name: str) -> str:
                return f"{name!r}" + (" (its only column)" if name != text_column else "")

            raise BadInputError(f"{path}: its texts are in column {held(column)}, {first[0]}'s in {held(first[1])}; "
                                "pass --text-column NAME, a column every file has")
        first = first or (path, column)
    return first[1] if first is not None else None


def _check_parquet_columns(path: str) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (ValueError, OSError):  # not Parquet, or damaged: said where Ray fails to read it
        return
    check_unique_columns(names, path)


LOCAL_FLAG_MODE = "label it with --engine local --on-bad-row flag"  # (flag mode is the local engine's)


def with_tsv_advice_for_ray(err: BadInputError) -> BadInputError:
    """The local reader's advice to read a file as TSV, made the local engine's: --engine ray reads no
    TSV (it was told to pass --format tsv, which it then refused)."""
    said = str(err).replace("(or with tabs and pass --format tsv)", "(or with tabs, and label it with --engine local "
                            "--format tsv)")
    return BadInputError(said.replace("pass --format tsv", "label it with --engine local --format tsv, or save it "
                                      "with commas"))


def with_local_engine_advice(err: BadInputError) -> BadInputError:
    """The local reader's refusal, its advice to pass --on-bad-row flag made the local engine's."""
    return BadInputError(str(err).replace("pass --on-bad-row flag", LOCAL_FLAG_MODE))
