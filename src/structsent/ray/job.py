"""`structsent label --engine ray`: a file job on Ray, from its checks to the files written."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import TYPE_CHECKING

from ..config import EngineConfig
from ..errors import BadInputError
from ..io.formats import Format
from ..io.readers import only_column_notice, resolve_text_column
from ..io.writers import check_prefix
from .cluster import actor_pool_for, configure_this_job, connected
from .failures import typed_errors
from .inputs import InputFiles, check_input_columns, csv_header_names, read_dataset, resolve_input
from .labeller import DatasetLabeller, JsonValuesLabeller, check_model_here, label_dataset
from .outputs import (
    check_output_apart_from_input,
    check_output_directory,
    make_directory,
    output_directory_lock,
    prepare_output_directory,
    ray_output_format,
    room_beside,
    write_all_or_nothing,
    write_then_rename,
)

if TYPE_CHECKING:
    import ray.data


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
    output_format = ray_output_format(spec.output_format)
    check_output_apart_from_input(source, spec.output)
    if spec.output in (None, "-"):
        raise BadInputError("--engine ray writes a directory of files: pass -o OUTPUT_DIR")
    with output_directory_lock(spec.output):  # first: a job writing there is named, not its files
        _run_locked_label_job(spec, source, output_format)


def _run_locked_label_job(spec: "RayLabelSpec", source: "InputFiles", output_format: Format) -> None:
    output = check_output_directory(spec.output, overwrite=spec.overwrite)  # under the lock: no other job writes it
    column = check_input_columns(source, spec.text_column)
    if column is not None and column != spec.text_column:
        print(f"structsent: {only_column_notice(column)}", file=sys.stderr)
    if not (spec.ray_address or "").startswith("ray://"):  # through Ray Client the model may live only on the cluster
        # The settings too on a cluster started here, whose actors run on this host as this check does.
        check_model_here(spec.model, spec.config if _starts_its_own_cluster(spec) else None)
    started = time.perf_counter()
    with connected(spec.ray_address, quiet=spec.quiet) as ray:
        configure_this_job(quiet=spec.quiet)
        with typed_errors(source):  # the schema is read here: a file that cannot be read fails here
            ds = read_dataset(source, exact_json=output_format is not Format.PARQUET, text_column=spec.text_column)
            if _holds_no_rows(ds):
                _check_columns_of_no_rows(spec, source)
                _write_no_rows(spec, output, started)
                return
            keep = None if spec.id_column is None else [spec.id_column]
            text_column = resolve_text_column(column_names(ds), spec.text_column, spec.input)
            labelled = label_dataset(ds, model=spec.model, config=spec.config, text_column=text_column,
                                     prefix=spec.prefix, keep_columns=keep, batch_size=spec.batch_rows,
                                     check_model=False,  # checked before Ray started
                                     labeller=JsonValuesLabeller if output_format is Format.JSONL else DatasetLabeller,
                                     **actor_pool_for(ray, spec.config))
        if "://" in output or not room_beside(output):  # written in place (a store has no rename), emptied on failure
            prepare_output_directory(spec.output, overwrite=spec.overwrite)  # every check passed: only now
            write_all_or_nothing(labelled, output, output_format, spec.output, source)
            make_directory(output)  # Ray writes no file, and so no directory, for a dataset of no rows
        else:
            write_then_rename(labelled, output, output_format, spec.output, source)
    if not spec.quiet:
        print(f"labelled {len(source.files) or len(source.paths)} file(s) into {output} ({output_format.value}) "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _starts_its_own_cluster(spec: "RayLabelSpec") -> bool:
    """Whether the job's actors run on this host: no --ray-address, and no RAY_ADDRESS either (which
    Ray connects to, as to the flag's address)."""
    return spec.ray_address is None and not os.environ.get("RAY_ADDRESS", "").strip()


def _holds_no_rows(ds: "ray.data.Dataset") -> bool:
    """Whether the input has no rows at all. Ray keeps no columns for such an input (a header-only
    CSV, an empty JSON Lines file), so the text column cannot be looked for: the local job's answer
    to it, an empty output, is given instead of a "no column" error."""
    return not column_names(ds) and ds.count() == 0


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
    make_directory(output)
    if not spec.quiet:
        print(f"the input has no rows: no files written to {output} "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def column_names(ds: "ray.data.Dataset") -> list[str]:
    schema = ds.schema()
    return [] if schema is None else list(schema.names)
