"""The Ray Data adapter: label a Dataset's text column with one model per actor.

Each actor of a ``map_batches`` pool loads the model once; every batch it receives goes through
the same Classifier as the local engine (token-budget batch planning included), and comes back
with exactly the columns ``structsent label`` adds: ``label``, ``score``, one ``prob_<label>``
per label, ``error``. Ray is imported only inside this module.

>>> import ray, structsent.ray                                         # doctest: +SKIP
>>> ds = ray.data.read_parquet("s3://bucket/reviews/")                 # doctest: +SKIP
>>> structsent.ray.label_dataset(ds, model="default", concurrency=4).write_parquet("out/")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import math
import numbers
import operator
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import EngineConfig, check_option_names
from .errors import BadInputError, ConfigError, OutputWriteError, StructsentError, require
from .io.formats import Format, detect_format, suffixes_of
from .io.lock import DirectoryLock, OutputLock
from .io.readers import check_unique_columns, only_column_notice, resolve_text_column, text_of_binary
from .io.sniff import check_header
from .io.writers import added_columns, cell_or_null, check_no_collision, check_prefix, prediction_types, prediction_values
from .pipeline import freeze_startup_objects
from .results import LabelResult
from .staging import take_mode_and_group

if TYPE_CHECKING:
    import pyarrow
    import ray.data

RAY_INPUT_FORMATS = (Format.CSV, Format.JSONL, Format.PARQUET)
RAY_OUTPUT_FORMATS = (Format.PARQUET, Format.CSV, Format.JSONL)
DEFAULT_BATCH_SIZE = 1024
PICKLED_OBJECTS = "ray.data.arrow_pickled_object"  # Ray's Arrow type for columns of Python objects


def _ray():
    return require("ray", "ray")


def _ray_data():
    return require("ray.data", "ray")


# -- the callable class -------------------------------------------------------------------------
class DatasetLabeller:
    """A ``map_batches`` callable: one Classifier per actor, loaded once, applied to Arrow batches.

    Ray constructs it in each actor from ``fn_constructor_kwargs``; each call labels the batch's
    ``text_column`` and returns the batch (or only ``keep_columns`` of it) with the prediction
    columns appended. Subclass it to add columns of your own.
    """

    def __init__(self, model: str = "default", *, config: EngineConfig | None = None, text_column: str = "text",
                 prefix: str = "", keep_columns: Sequence[str] | None = None) -> None:
        import structsent

        self.classifier = structsent.load(model, config=config)
        if _in_ray_actor():  # the actor's process is the labeller's: as the label command, stop
            freeze_startup_objects()  # its full collections walking the model (never a user's own process)
        self.labels = list(self.classifier.labels)
        self.text_column = text_column
        self.prefix = prefix
        self.keep_columns = None if keep_columns is None else list(keep_columns)
        self.extra = added_columns(self.labels, prefix)

    def __call__(self, batch: "pyarrow.Table") -> "pyarrow.Table":
        if self.text_column not in batch.column_names:
            raise BadInputError(f"no column {self.text_column!r}; columns are: {', '.join(batch.column_names)}")
        texts, errors = texts_of(batch.column(self.text_column))
        results = self.classifier(texts)
        for index, error in errors.items():  # rows the reader refuses, refused as the local job refuses them
            results[index] = LabelResult.failed(error)
        kept = batch if self.keep_columns is None else batch.select(self.keep_columns)
        check_no_collision(kept.column_names, self.extra, self.prefix)
        return append_predictions(self.written_columns(kept), results, self.labels, self.extra)

    def written_columns(self, table: "pyarrow.Table") -> "pyarrow.Table":
        """The input columns as the output holds them: columns of Python objects as their text, and
        the text column as text in every batch (a batch whose texts are all numbers held them as
        int64, the next one as strings, and the Dataset's batches had no one schema: unreadable)."""
        return text_column_as_text(without_pickled_columns(table), self.text_column)


class _JsonValuesLabeller(DatasetLabeller):
    """The file job's labeller for JSON Lines output: columns of Python objects (JSON values no
    Arrow type holds together) stay objects, and the JSON Lines writer writes them as they were read."""

    def written_columns(self, table: "pyarrow.Table") -> "pyarrow.Table":
        return table


def texts_of(column) -> tuple[list, dict[int, str]]:
    """A column's values for the model, and the rows it cannot read (index -> why): a BINARY
    column (strings written without their UTF8 annotation, as Hive or older Spark write them) is
    read as UTF-8 text, as the local job's Parquet reader reads it (``text_of_binary``)."""
    import pyarrow as pa

    values = column.to_pylist()
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        return values, {}
    texts, errors = [], {}
    for index, value in enumerate(values):
        text, error = text_of_binary(value)
        texts.append(text)
        if error is not None:
            errors[index] = error
    return texts, errors


def _in_ray_actor() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def without_pickled_columns(table: "pyarrow.Table") -> "pyarrow.Table":
    """``table`` with every column Ray holds as pickled Python objects (JSON values of mixed types,
    such as a number among texts) turned into strings as the CSV writer writes them: Parquet
    readers without Ray cannot read pickles, and the CSV and JSON writers refuse them."""
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        if getattr(field.type, "extension_name", None) == PICKLED_OBJECTS:
            strings = pa.array([cell_or_null(value) for value in table.column(index).to_pylist()], type=pa.string())
            table = table.set_column(index, pa.field(field.name, pa.string()), strings)
    return table


def text_column_as_text(table: "pyarrow.Table", name: str) -> "pyarrow.Table":
    """``table`` with its column ``name`` (when it has it) of strings: values of another type as the
    CSV writer writes them, nulls kept. Strings, and bytes the labeller decodes, are left as they are."""
    import pyarrow as pa

    index = table.schema.get_field_index(name)
    if index < 0:
        return table
    kind = table.schema.field(index).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        return table
    strings = pa.array([cell_or_null(value) for value in table.column(index).to_pylist()], type=pa.string())
    return table.set_column(index, pa.field(name, pa.string()), strings)


def append_predictions(table: "pyarrow.Table", results, labels: Sequence[str], names: Sequence[str]) -> "pyarrow.Table":
    """``table`` with the prediction columns ``names`` appended, valued as the local writers value them."""
    import pyarrow as pa

    types = prediction_types(labels)
    rows = [prediction_values(result, labels) for result in results]
    columns = list(zip(*rows)) if rows else [() for _ in names]
    for name, kind, values in zip(names, types, columns):
        table = table.append_column(pa.field(name, kind), pa.array(list(values), type=kind))
    return table


# -- the Dataset API ----------------------------------------------------------------------------
def label_dataset(
    ds: "ray.data.Dataset",
    *,
    model: str | os.PathLike = "default",
    text_column: str = "text",
    prefix: str = "",
    keep_columns: Sequence[str] | None = None,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    ray_remote_args: Mapping[str, Any] | None = None,
    labeller: type[DatasetLabeller] = DatasetLabeller,
    config: EngineConfig | None = None,
    check_model: bool | None = None,
    **engine_options,
) -> "ray.data.Dataset":
    """``ds`` with the columns ``structsent label`` adds, computed by a pool of model actors.

    ``concurrency``: actors in the pool (an int), or ``(min, max)`` for an autoscaling pool.
    ``num_gpus`` / ``num_cpus``: reserved per actor; fractional GPUs pack several small-model
    actors on one device. ``batch_size``: rows handed to one call (the engine then plans its own
    token-budget batches inside it; None: one call per block). ``ray_remote_args``: extra actor options such as
    ``max_restarts`` / ``max_task_retries``. ``engine_options`` are EngineConfig fields. ``check_model``:
    load the model here first, so that a missing or broken one fails here as ModelNotFoundError or
    ModelFormatError (in an actor it is Ray's ActorDiedError); None: unless connected through Ray
    Client, whose driver may not see the model's files (hub ids are left to the actors).
    Lazy, like every Dataset transform: nothing runs until the result is consumed or written.

    >>> out = label_dataset(ray.data.read_parquet("reviews/"), model="default",   # doctest: +SKIP
    ...                     concurrency=4, num_gpus=0.25, batch_size=2048)
    """
    concurrency, batch_size, keep_columns = _pool_options(concurrency, batch_size, keep_columns)
    config = _actor_config(config, engine_options, num_gpus)
    resources = _resources(num_gpus, num_cpus)
    _check_columns(ds, text_column, keep_columns, prefix)
    if check_model or (check_model is None and not _through_ray_client()):
        check_model_here(_model_name(model))
    return ds.map_batches(
        labeller,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=_actor_pool(concurrency),
        fn_constructor_kwargs=dict(model=_model_name(model), config=config, text_column=text_column, prefix=prefix,
                                   keep_columns=None if keep_columns is None else list(keep_columns)),
        **resources,
        **dict(ray_remote_args or {}),
    )


def _model_name(model: str | os.PathLike) -> str:
    """What the actors load: a path as an absolute path (Path("default") is a directory, not the
    bundled model the string names; a relative one is the driver's, not each actor's)."""
    return os.path.abspath(model) if isinstance(model, os.PathLike) else str(model)


def _pool_options(concurrency, batch_size, keep_columns) -> tuple[int | tuple[int, int], int | None, list[str] | None]:
    """The pool's options checked and as plain ints and a list (numpy integers accepted, as
    EngineConfig accepts them), or ConfigError naming the option."""
    sizes = concurrency if isinstance(concurrency, tuple) else (concurrency,)
    counts = [n for n in map(_positive_int, sizes) if n is not None]
    if not 1 <= len(counts) == len(sizes) <= 2 or counts != sorted(counts):
        raise ConfigError(f"concurrency={concurrency!r}: expected a positive int or a (min, max) pair with min <= max")
    batch = None if batch_size is None else _positive_int(batch_size)
    if batch_size is not None and batch is None:
        raise ConfigError(f"batch_size={batch_size!r}: expected a positive int, or None for whole blocks")
    if isinstance(keep_columns, (str, bytes)):
        raise ConfigError(f"keep_columns={keep_columns!r}: expected a list of column names, e.g. [{keep_columns!r}]")
    pool: int | tuple[int, int] = (counts[0], counts[1]) if isinstance(concurrency, tuple) else counts[0]
    return pool, batch, None if keep_columns is None else list(keep_columns)


def _positive_int(value) -> int | None:
    """``value`` as an int when it is a positive integer (an int or a numpy integer, not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if number >= 1 else None


def _actor_config(config: EngineConfig | None, engine_options: dict, num_gpus: float | None) -> EngineConfig:
    """The engine config the actors load with, validated here rather than in every actor."""
    if config is None:
        check_option_names(engine_options)  # (replace() checks its own)
        config = EngineConfig(**engine_options)
    else:
        config = config.replace(**engine_options)
    if not num_gpus and config.device == "auto":
        # An actor that reserved no GPU must not grab one that Ray gave to another actor.
        config = config.replace(device="cpu")
    return config


def _check_columns(ds: "ray.data.Dataset", text_column: str, keep_columns: Sequence[str] | None, prefix: str) -> None:
    """Fail on the driver, before any actor starts, on a missing column or an added one already there.

    The ``prob_<label>`` names need the model's labels, so only the actors can check those.
    """
    check_prefix(prefix)
    try:
        schema = ds.schema(fetch_if_missing=False)  # never runs the pipeline just to check a name
    except (TypeError, ValueError):  # pyarrow's: blocks whose types differ (a number among the texts)
        schema = None
    if schema is None:
        return  # only known after running it (or per block): the actors check the column then
    names = list(schema.names)
    if text_column not in names:
        raise BadInputError(f"no column {text_column!r}; columns are: {', '.join(map(repr, names))}. "
                            "Pass text_column=NAME (--text-column NAME on the command line)")
    missing = [c for c in keep_columns or () if c not in names]
    if missing:
        raise BadInputError(f"no column(s) {', '.join(map(repr, missing))}; columns are: {', '.join(map(repr, names))}")
    kept = names if keep_columns is None else list(keep_columns)
    check_no_collision(kept, [f"{prefix}{name}" for name in ("label", "score", "error")], prefix)


def _actor_pool(concurrency: int | tuple[int, int]):
    pool = _ray_data().ActorPoolStrategy
    if isinstance(concurrency, tuple):
        return pool(min_size=concurrency[0], max_size=concurrency[1])
    return pool(size=concurrency)


def _through_ray_client() -> bool:
    """Whether this driver is connected to its cluster through Ray Client (ray://)."""
    try:
        from ray.util.client import ray as client
    except ImportError:
        return False
    return bool(client.is_connected())


def _resources(num_gpus: float | None, num_cpus: float | None) -> dict:
    """Ray's per-actor reservations, or ConfigError for a value that reserves nothing sensible (Ray
    refused -1 only once the result was used)."""
    for name, value in (("num_gpus", num_gpus), ("num_cpus", num_cpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not math.isfinite(value) or value < 0):
            raise ConfigError(f"{name}={value!r}: expected a number >= 0 (a fraction shares a device), or None")
    resources = {}
    if num_gpus:
        resources["num_gpus"] = num_gpus
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    return resources


# -- files in, files out ------------------------------------------------------------------------
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
    data = _ray_data()
    common = {"file_extensions": source.suffixes, **_filesystem_for(source.paths[0])}
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


def _filesystem_for(path: str) -> dict:
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

    from .io.readers import FAIL, JsonLinesReader

    # A line without the text field is refused, as by the local engine (it became a flagged row, "missing
    # text (None)", with a text field the line never had).
    reader = JsonLinesReader(io.BytesIO(data), start=0, line=0, rows_done=0, total=None, on_bad_row=FAIL,
                             name=name, text_column=text_column)
    try:
        rows = [row.values or {} for row in reader]
    except BadInputError as err:  # flag mode is the local engine's
        raise _with_local_engine_advice(err) from None
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
        check_header(header, ",", path, text_column)
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


def write_dataset(ds: "ray.data.Dataset", output: str, fmt: Format) -> None:
    """Write ``ds`` as files of ``fmt`` under the directory ``output``."""
    local = _filesystem_for(output)
    if fmt is Format.PARQUET:
        ds.write_parquet(output, **local)
    elif fmt is Format.CSV:
        ds.map_batches(binary_columns_as_text, batch_format="pyarrow", batch_size=None).write_csv(output, **local)
    elif fmt is Format.JSONL:
        ds.write_datasink(_json_lines_datasink(output, local))
    else:
        raise BadInputError(f"--engine ray writes Parquet, CSV or JSONL, not {fmt.value}")


def binary_columns_as_text(block: "pyarrow.Table") -> "pyarrow.Table":
    """A block whose BINARY columns are UTF-8 text, for CSV output, refusing as the local job does
    bytes that are not (Arrow's CSV writer failed on them with "ArrowInvalid: Invalid UTF8 payload")."""
    import pyarrow as pa

    from .io.writers import BINARY_NOT_TEXT

    for index, field in enumerate(block.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            try:
                block = block.set_column(index, field.name, block.column(index).cast(pa.large_string()))
            except pa.ArrowInvalid:
                raise BadInputError(BINARY_NOT_TEXT) from None
    return block


def _json_lines_datasink(output: str, options: dict):
    """JSON Lines files written as the local job writes its lines. (Ray's own JSON writer goes
    through pandas, which turns a column of integers with a null among them into floats: an id
    above 2^53 changed.) Files are named ``*.jsonl``."""
    from ray.data.datasource import BlockBasedFileDatasink

    from .io.writers import json_line

    class JsonLinesDatasink(BlockBasedFileDatasink):
        def write_block_to_file(self, block, file) -> None:
            file.write("".join(json_line(row) for row in block.to_arrow().to_pylist()).encode("utf-8"))

    return JsonLinesDatasink(output, file_format="jsonl", **options)


def check_output_apart_from_input(source: InputFiles, output: str | None) -> None:
    """Refuse an output directory that holds input files (``--overwrite`` would delete them) or
    that lies inside an input directory (its files would be read as input)."""
    if output in (None, "-") or "://" in output:
        return
    out = os.path.realpath(output)
    # (a local input's paths are its files: each is checked once)
    for path in dict.fromkeys([*source.files, *source.paths, *([source.directory] if source.directory else [])]):
        real = os.path.realpath(path)
        if _within(real, out):
            raise BadInputError(f"{output}: holds the input {path}; write the output to another directory")
        if os.path.isdir(real) and _within(out, real):
            raise BadInputError(f"{output}: is inside the input directory {path}, whose files are all read; "
                                "write the output elsewhere")


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def check_output_directory(output: str | None, *, overwrite: bool) -> str:
    """The output directory's URI: empty or missing, or (with ``overwrite``) to be emptied once
    everything else has been checked. Nothing is removed here."""
    if output in (None, "-"):
        raise BadInputError("--engine ray writes a directory of files: pass -o OUTPUT_DIR")
    uri = output if "://" in output else os.path.abspath(output)
    if not overwrite and _holds_files(uri, output):
        raise BadInputError(f"{output}: directory is not empty; pass --overwrite (overwrite=True in Python) to replace its contents")
    return uri


def _holds_files(uri: str, output: str) -> bool:
    import pyarrow.fs as pa_fs

    filesystem, path = pa_fs.FileSystem.from_uri(uri)
    info = filesystem.get_file_info(path)
    if info.type == pa_fs.FileType.File:
        raise BadInputError(f"{output}: is a file; --engine ray writes a directory")
    return info.type == pa_fs.FileType.Directory and bool(filesystem.get_file_info(pa_fs.FileSelector(path)))


def prepare_output_directory(output: str | None, *, overwrite: bool) -> str:
    """The output directory, checked empty (or emptied with ``overwrite``): just before the write."""
    uri = check_output_directory(output, overwrite=overwrite)
    if _holds_files(uri, output or ""):
        _empty_directory(uri)
    return uri


# -- `structsent label --engine ray` ------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class RayLabelSpec:
    """A file job on Ray: what to read, how to label it, where to write."""

    input: str  # a file, a directory or a glob
    output: str  # a directory
    model: str = "default"
    config: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    input_format: str = "auto"
    output_format: str = "auto"
    text_column: str = "text"
    id_column: str | None = None
    prefix: str = ""
    batch_rows: int = 2048
    overwrite: bool = False
    ray_address: str | None = None
    quiet: bool = False


def run_label_job(spec: RayLabelSpec) -> None:
    """`structsent label --engine ray`: read, label on a pool of actors, write."""
    if spec.batch_rows < 1:
        raise BadInputError("--chunk-rows must be at least 1")
    check_prefix(spec.prefix)
    source = resolve_input(spec.input, spec.input_format)
    output_format = _ray_output_format(spec.output_format)
    check_output_apart_from_input(source, spec.output)
    if spec.output in (None, "-"):
        raise BadInputError("--engine ray writes a directory of files: pass -o OUTPUT_DIR")
    with output_directory_lock(spec.output):  # first: a job writing there is named, not its files
        _run_locked_label_job(spec, source, output_format)


def output_directory_lock(output: str) -> contextlib.AbstractContextManager:
    """The output directory's lock, held from its checks to the end of the write: two jobs writing
    one directory at once left the rows of both in it (every row twice), and an ``--overwrite`` job
    emptied another's files while it wrote. ``OUT.lock`` beside the directory, as the local job locks
    its output file (so a local job and a Ray job on one name exclude each other too); a remote URI
    is not locked."""
    if "://" in output:
        return contextlib.nullcontext()
    directory = os.path.realpath(output)  # one lock for every name of the directory (links, ./, trailing /)
    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise OutputWriteError(f"{output}: cannot make its parent directory: {err.strerror or err}") from err
    then = "wait for it to finish, or write to another directory"
    if os.path.isdir(directory) and not os.access(parent, os.W_OK):  # no room for OUT.lock: the directory itself
        return DirectoryLock(Path(directory), output, job="structsent label job", then=then)
    return OutputLock(Path(directory + ".lock"), output, job="structsent label job", then=then, writes="directory")


def _run_locked_label_job(spec: "RayLabelSpec", source: "InputFiles", output_format: Format) -> None:
    output = check_output_directory(spec.output, overwrite=spec.overwrite)  # under the lock: no other job writes it
    column = check_input_columns(source, spec.text_column)
    if column is not None and column != spec.text_column:
        print(f"structsent: {only_column_notice(column)}", file=sys.stderr)
    if not (spec.ray_address or "").startswith("ray://"):  # through Ray Client the model may live only on the cluster
        check_model_here(spec.model)
    started = time.perf_counter()
    with connected(spec.ray_address, quiet=spec.quiet) as ray:
        _configure_this_job(quiet=spec.quiet)
        with typed_errors(source):  # the schema is read here: a file that cannot be read fails here
            ds = read_dataset(source, exact_json=output_format is not Format.PARQUET, text_column=spec.text_column)
            if _holds_no_rows(ds):
                _check_columns_of_no_rows(spec, source)
                _write_no_rows(spec, output, started)
                return
            keep = None if spec.id_column is None else [spec.id_column]
            text_column = resolve_text_column(_column_names(ds), spec.text_column, spec.input)
            labelled = label_dataset(ds, model=spec.model, config=spec.config, text_column=text_column,
                                     prefix=spec.prefix, keep_columns=keep, batch_size=spec.batch_rows,
                                     check_model=False,  # checked before Ray started
                                     labeller=_JsonValuesLabeller if output_format is Format.JSONL else DatasetLabeller,
                                     **actor_pool_for(ray, spec.config))
        if "://" in output or not _room_beside(output):  # written in place (a store has no rename), emptied on failure
            prepare_output_directory(spec.output, overwrite=spec.overwrite)  # every check passed: only now
            _write_all_or_nothing(labelled, output, output_format, spec.output, source)
            _make_directory(output)  # Ray writes no file, and so no directory, for a dataset of no rows
        else:
            _write_then_rename(labelled, output, output_format, spec.output, source)
    if not spec.quiet:
        print(f"labelled {len(source.files) or len(source.paths)} file(s) into {output} ({output_format.value}) "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _holds_no_rows(ds: "ray.data.Dataset") -> bool:
    """Whether the input has no rows at all. Ray keeps no columns for such an input (a header-only
    CSV, an empty JSON Lines file), so the text column cannot be looked for: the local job's answer
    to it, an empty output, is given instead of a "no column" error."""
    return not _column_names(ds) and ds.count() == 0


def _check_columns_of_no_rows(spec: "RayLabelSpec", source: "InputFiles") -> None:
    """The text and id columns checked against the header rows of CSV files of no rows, as the local
    job checks them (Ray keeps no columns for such files; a misspelt column passed). JSON Lines
    files of no rows name no column."""
    if source.format is not Format.CSV or not source.files:
        return
    columns = csv_header_names(source.files)
    resolve_text_column(columns, spec.text_column, spec.input)
    if spec.id_column is not None and spec.id_column not in columns:
        raise BadInputError(f"{spec.input}: no column {spec.id_column!r} for --id-column; columns are: "
                            f"{', '.join(map(repr, columns))}")


def _write_no_rows(spec: "RayLabelSpec", output: str, started: float) -> None:
    prepare_output_directory(spec.output, overwrite=spec.overwrite)
    _make_directory(output)
    if not spec.quiet:
        print(f"the input has no rows: no files written to {output} "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _make_directory(uri: str) -> None:
    import pyarrow.fs as pa_fs

    filesystem, path = pa_fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path, recursive=True)


def staging_directory(output: str) -> str:
    """Where a local job writes its files before they become ``output``: beside it, hidden, one name
    per output (the output's lock makes it this job's alone; one a killed job left is removed)."""
    return os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.structsent-writing")


def _room_beside(output: str) -> bool:
    """Whether a staging directory can be made beside the (local) output directory and renamed into
    its place: the parent writable, and an existing output neither a mount point (a container's
    volume: rename fails with EBUSY) nor on another file system than its parent."""
    real = os.path.realpath(output)
    parent = os.path.dirname(real)
    if not os.access(parent, os.W_OK):
        return False
    if os.path.isdir(real):
        return not os.path.ismount(real) and os.stat(real).st_dev == os.stat(parent).st_dev
    return True


def _write_then_rename(labelled: "ray.data.Dataset", output: str, output_format: Format, named: str,
                       source: "InputFiles | None" = None) -> None:
    """Write every file into the staging directory, then put it in the output's place: a job
    stopped at any point, kill -9 included, leaves no part of its output under the output's name
    (a part reads as a whole, smaller dataset), and what --overwrite replaces stays until then.
    Through a symbolic link: the directory it names is replaced, and the link stays."""
    import shutil

    output = os.path.realpath(output)
    staging = staging_directory(output)
    shutil.rmtree(staging, ignore_errors=True)  # a killed job's
    _finish_an_interrupted_swap(output)
    _write_all_or_nothing(labelled, staging, output_format, named, source)
    os.makedirs(staging, exist_ok=True)  # Ray writes no file, and so no directory, for a dataset of no rows
    try:
        _replace_directory(staging, output)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputWriteError(f"{named}: cannot put the written files in place: {err.strerror or err}") from err


def _finish_an_interrupted_swap(output: str) -> None:
    """A job killed between the two renames of ``_replace_directory`` left the old output aside and
    nothing under its name: put it back (killed after them: the old one is only removed)."""
    import shutil

    old = f"{staging_directory(output)}-old"
    if os.path.isdir(old):
        if os.path.lexists(output):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, output)


def _replace_directory(new: str, output: str) -> None:
    """``new`` renamed to ``output``, whose old contents (empty, or replaced by --overwrite) go; the
    new directory takes the old one's permissions and group."""
    import shutil

    if not os.path.isdir(output):
        os.replace(new, output)
        return
    take_mode_and_group(new, os.stat(output))  # a shared directory's group, mode and setgid bit stay
    old = f"{staging_directory(output)}-old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(output, old)
    try:
        os.replace(new, output)
    except BaseException:  # the old output back under its name, as it was
        os.replace(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_all_or_nothing(labelled: "ray.data.Dataset", output: str, output_format: Format, named: str,
                          source: "InputFiles | None" = None) -> None:
    """Write the whole output, or remove what was written: a Ray job cannot be resumed, and the files
    of a job that stopped part way would read as a whole, smaller dataset."""
    try:
        with typed_errors(source):
            write_dataset(labelled, output, output_format)
    except KeyboardInterrupt:
        _remove_written(output)
        raise RayJobInterrupted(f"{named}: the job was interrupted and the files it had written were "
                                "removed (a Ray job cannot be resumed); run it again") from None
    except BaseException as err:
        _remove_written(output)
        if isinstance(err, (RayJobFailedError, InputTypesDisagreeError)):
            raise type(err)(f"{err}; the files it had written were removed") from err.__cause__
        raise


_RAISED = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Invalid)\w*: \S.*")


def _last_line(error: BaseException) -> str:
    """What a Ray error says in the end: its message holds whole remote tracebacks and retry advice,
    so the last "SomeError: message" line of the first error in the chain that has one (else the
    innermost error's last line)."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    for link in chain:
        raised = [line.strip() for line in str(link).splitlines() if _RAISED.fullmatch(line.strip())]
        if raised:
            return raised[-1][:300]
    lines = [line.strip() for line in str(chain[-1]).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(chain[-1]).__name__


class InputTypesDisagreeError(BadInputError):
    """Input files (or blocks) that hold one column in two types, which a Ray dataset cannot."""


class RayJobFailedError(StructsentError):
    """A Ray file job failed in its tasks (a file Arrow cannot parse, an actor that died); its partial output removed."""


class RayJobInterrupted(Exception):
    """A Ray file job stopped by Ctrl-C, its partial output removed."""


def _remove_written(uri: str) -> None:
    """The files a stopped job wrote: a local staging directory goes whole, a remote output is emptied."""
    if "://" in uri:
        _empty_directory(uri)
    else:
        import shutil

        shutil.rmtree(uri, ignore_errors=True)


def _empty_directory(uri: str) -> None:
    import pyarrow.fs as pa_fs

    filesystem, path = pa_fs.FileSystem.from_uri(uri)
    filesystem.delete_dir_contents(path, missing_dir_ok=True)


def _configure_this_job(*, quiet: bool) -> None:
    context = _ray_data().DataContext.get_current()
    context.enable_progress_bars = not quiet
    if hasattr(context, "raise_original_map_exception"):
        # Otherwise a typed error in an actor reaches the driver as text inside UserCodeException.
        context.raise_original_map_exception = True
    import logging

    data_logger = logging.getLogger("ray.data")
    if quiet:  # a failed task is logged with its whole traceback; the command says why in one line
        data_logger.setLevel(logging.CRITICAL)
        return
    # Ray's progress stays on the terminal, its failure records (a task's tracebacks, three of them
    # before the command's one line for a JSON Lines line without the text field) go to its session
    # logs alone: the command says why in one line.
    for handler in data_logger.handlers:
        if getattr(handler, "stream", None) is sys.stderr and _below_error not in handler.filters:
            handler.addFilter(_below_error)


def _below_error(record) -> bool:
    import logging

    return record.levelno < logging.ERROR


def check_model_here(model: str) -> None:
    """Fail before any actor starts when a named model is missing or broken here (an actor that
    fails to load its model reaches the driver only as an untyped ActorDiedError): its files,
    config and weights are checked as a local load checks them. Hub ids are left to the actors."""
    from .models import load_checkpoint
    from .models.hub import looks_like_hub_id

    if str(model) != "default" and looks_like_hub_id(str(model)):
        return
    load_checkpoint(model)


def _ray_output_format(requested: str) -> Format:
    fmt = Format.PARQUET if requested == "auto" else Format(requested)
    if fmt not in RAY_OUTPUT_FORMATS:
        raise BadInputError(f"--engine ray writes Parquet, CSV or JSONL, not {fmt.value}")
    return fmt


def _column_names(ds: "ray.data.Dataset") -> list[str]:
    schema = ds.schema()
    return [] if schema is None else list(schema.names)


def actor_pool_for(ray, config: EngineConfig) -> dict:
    """Actors for the whole cluster: one per GPU, else one per CPU but one (left for reads and writes);
    on a cluster of one CPU, one actor that reserves none (it shares the CPU with the reads)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if config.device.startswith("cuda") and gpus == 0:  # Ray would wait for one for ever
        raise ConfigError(f"--device {config.device}: the Ray cluster has no GPU; use --device cpu (or auto)")
    wants_gpu = config.device.startswith("cuda") or (config.device == "auto" and gpus > 0)
    if wants_gpu:
        return {"concurrency": max(gpus, 1), "num_gpus": 1}
    cpus = int(resources.get("CPU", 1))
    if cpus < 2:  # one actor holding the only CPU would leave none to the reads: the job would wait for ever
        return {"concurrency": 1, "num_cpus": 0}
    return {"concurrency": cpus - 1, "num_cpus": 1}


@contextlib.contextmanager
def _signal_handlers_kept():
    """The SIGTERM handler in place before ``ray.init`` kept after it: Ray's core worker installs a
    failure handler that dumps a native stack and aborts (exit 134), where the command's own
    handler stops the job and removes what it wrote. In the main thread only (where handlers live)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class connected:
    """Connect to ``address`` (None: RAY_ADDRESS if set, else a new local Ray) unless already connected."""

    def __init__(self, address: str | None, *, quiet: bool = False) -> None:
        self.address = address
        self.quiet = quiet
        self.started = False

    def __enter__(self):
        import logging

        ray = _ray()
        if not ray.is_initialized():
            check_reachable(self.address)
            try:
                with _signal_handlers_kept():
                    ray.init(address=self.address, logging_level=logging.WARNING if self.quiet else logging.INFO,
                             log_to_driver=not self.quiet)
            except ConnectionError as err:
                raise ConfigError(f"cannot reach the Ray cluster at {self.address}: {err}") from err
            except ValueError as err:  # "Invalid address format"
                raise ConfigError(f"--ray-address {self.address}: {err} (expected host:port, ray://host:port "
                                  "or auto)") from err
            self.started = True
        return ray

    def __exit__(self, *exc) -> None:
        if self.started:
            _ray().shutdown()


def check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast on a ``host:port`` or ``ray://host:port`` nobody listens on (Ray itself retries for minutes)."""
    import re
    import socket

    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address or "")
    if match is None:
        return  # None, "auto", or a scheme Ray resolves itself
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from err


class typed_errors:
    """Re-raise a structsent error that failed a Ray task as itself, so the CLI maps it to its exit
    code; an input file Arrow could not read (of ``source``) as a BadInputError naming the file, in
    the local reader's words where it has them; any other failure of the job's tasks (an actor
    that died) as a RayJobFailedError saying what it said in the end (Ray's messages hold whole
    remote tracebacks)."""

    def __init__(self, source: "InputFiles | None" = None) -> None:
        self.source = source

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback) -> None:
        cause = _structsent_cause(error)
        if cause is not None and cause is not error:
            said = str(cause).splitlines()
            if len(said) > 1:  # Ray appends its retry advice to the message: not what went wrong
                cause.args = (said[0],)
            raise cause from error
        if isinstance(error, Exception) and cause is None:
            last = _last_line(error)
            disagreement = _types_that_disagree(last)
            if disagreement is not None:  # the input's doing: a bad input (exit 2), as docs/RAY.md says
                raise InputTypesDisagreeError(disagreement) from error
            unreadable = _unreadable_input(self.source, last, error)
            if unreadable is not None:
                raise unreadable from error
            raise RayJobFailedError(f"the Ray job failed: {last}") from error


_INCOMPATIBLE = re.compile(r"Unable to merge: Field (?P<column>.+?) has incompatible types: (?P<a>.+?) vs (?P<b>.+?)$")


def _types_that_disagree(said: str) -> str | None:
    """Ray's "Failed to unify schemas" (input files, or blocks, holding one column in two types) in the
    user's words, else None."""
    found = _INCOMPATIBLE.search(said)
    if found is None:
        return None
    return (f"the Ray job failed: the input holds column {found['column']!r} as {found['a']} in some files and "
            f"{found['b']} in others, and a Ray dataset has one type per column; make the files agree, or "
            "label them with --engine local (one file at a time)")


_FAILED_CSV = re.compile(r"Failed to read CSV file: (?P<path>.+?)\. Please check")


def _unreadable_input(source: "InputFiles | None", said: str, error: BaseException) -> BadInputError | None:
    """An input file Arrow could not read (it says which CSV file, not why; a Parquet file's
    fault, not which file) as a bad input naming the file and why, else None."""
    if source is None:
        return None
    failed_csv = _FAILED_CSV.search(said)
    if failed_csv is not None:
        return _csv_fault(failed_csv["path"])
    if source.format is Format.PARQUET and _arrow_invalid_in(error):
        return _parquet_fault(source.files)
    return None


def _csv_fault(path: str) -> BadInputError:
    """Why Arrow could not read the CSV file ``path``: the first bad row, as the local reader says it."""
    from .io.readers import FAIL, open_reader

    if os.path.isfile(path):
        try:
            header = csv_header_names([path])  # (a column named twice is refused here)
            reader = open_reader(path, Format.CSV, text_column=header[0] if header else "", on_bad_row=FAIL)
            try:
                for _ in reader:
                    pass
            finally:
                reader.close()
        except BadInputError as err:
            return _with_local_engine_advice(err)
    return BadInputError(f"{path}: Arrow could not read it as CSV (a malformed row, or bytes that are not UTF-8); "
                         f"{LOCAL_FLAG_MODE}, whose reader names the row")


LOCAL_FLAG_MODE = "label it with --engine local --on-bad-row flag"  # (flag mode is the local engine's)


def _with_local_engine_advice(err: BadInputError) -> BadInputError:
    """The local reader's refusal, its advice to pass --on-bad-row flag made the local engine's."""
    return BadInputError(str(err).replace("pass --on-bad-row flag", LOCAL_FLAG_MODE))


def _parquet_fault(files: Sequence[str]) -> BadInputError | None:
    """The first of ``files`` whose Parquet footer cannot be read, named with why (None: all can)."""
    import pyarrow.parquet as pq

    for path in files:
        try:
            pq.read_metadata(path)
        except (ValueError, OSError) as err:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
            return BadInputError(f"{path}: not a Parquet file, or a damaged one ({str(err).splitlines()[0][:200]})")
    return None


def _arrow_invalid_in(error: BaseException | None) -> bool:
    """Whether pyarrow's ArrowInvalid is in ``error``'s chain."""
    import pyarrow as pa

    return any(isinstance(link, pa.ArrowInvalid) for link in _causes(error))


def _structsent_cause(error: BaseException | None) -> StructsentError | None:
    """The innermost structsent error in ``error``'s chain (Ray's wrappers may also subclass it)."""
    found = None
    for link in _causes(error):
        if isinstance(link, StructsentError):
            found = link
    return found


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and what caused it, outermost first (a Ray task error's ``cause`` included), each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
