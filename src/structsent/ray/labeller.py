"""The Dataset API: ``label_dataset`` and its ``map_batches`` callable, ``DatasetLabeller``: one
Classifier per actor, the columns ``structsent label`` adds appended to each Arrow batch."""

from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import EngineConfig, check_option_names
from ..errors import BadInputError, ConfigError
from ..io.readers import text_of_binary
from ..io.writers import added_columns, cell_or_null, check_no_collision, check_prefix, prediction_types, prediction_values
from ..pipeline import freeze_startup_objects
from ..results import LabelResult
from .cluster import import_ray_data

if TYPE_CHECKING:
    import pyarrow
    import ray.data


DEFAULT_BATCH_SIZE = 1024
PICKLED_OBJECTS = "ray.data.arrow_pickled_object"  # Ray's Arrow type for columns of Python objects


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


class JsonValuesLabeller(DatasetLabeller):
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
    if batch_size is None and "num_gpus" in resources:  # (Ray's own ValueError said so, untyped)
        raise ConfigError("batch_size=None (whole blocks) with num_gpus: Ray needs a batch size for actors that "
                          "reserve GPUs; give batch_size (e.g. 2048)")
    _check_columns(ds, text_column, keep_columns, prefix)
    if check_model or (check_model is None and not _through_ray_client()):
        # The settings too where the actors run on CPUs (as here); on GPUs, the actors' hosts decide.
        check_model_here(_model_name(model), config if config.device == "cpu" else None)
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
    kept = None if keep_columns is None else list(keep_columns)
    twice = next((name for i, name in enumerate(kept) if name in kept[:i]), None) if kept else None
    if twice is not None:  # (it failed inside the actors: Arrow's 'Field exists 2 times in schema', retried)
        raise ConfigError(f"keep_columns={kept!r}: {twice!r} is named twice; name each column once")
    pool: int | tuple[int, int] = (counts[0], counts[1]) if isinstance(concurrency, tuple) else counts[0]
    return pool, batch, kept


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
    pool = import_ray_data().ActorPoolStrategy
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


def check_model_here(model: str, config: EngineConfig | None = None) -> None:
    """Fail before any actor starts when a named model is missing or broken here (an actor that
    fails to load its model reaches the driver only as an untyped ActorDiedError): its files,
    config and weights are checked as a local load checks them. Hub ids are left to the actors.
    With ``config``, the settings are checked against the model as an actor's load checks them
    (a token budget below its length, packed attention on ONNX...), without exporting: a
    ConfigError here, not one per actor after the cluster started."""
    from ..runtime import check_model_and_settings

    check_model_and_settings(model, config)
