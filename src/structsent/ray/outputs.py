"""Files out: the output directory checked, locked and written whole or not at all (written beside it
and renamed into place where it can be; emptied on failure where it cannot), in each output format
as the local job writes it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInputError, OutputWriteError
from ..io.formats import Format
from ..io.lock import DirectoryLock, OutputLock
from ..staging import take_mode_and_group
from .failures import InputTypesDisagreeError, RayJobFailedError, RayJobInterrupted, typed_errors
from .inputs import InputFiles, filesystem_for

if TYPE_CHECKING:
    import pyarrow
    import ray.data


RAY_OUTPUT_FORMATS = (Format.PARQUET, Format.CSV, Format.JSONL)


def write_dataset(ds: "ray.data.Dataset", output: str, fmt: Format) -> None:
    """Write ``ds`` as files of ``fmt`` under the directory ``output``."""
    local = filesystem_for(output)
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

    from ..io.writers import BINARY_NOT_TEXT

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

    from ..io.writers import json_line

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


def make_directory(uri: str) -> None:
    import pyarrow.fs as pa_fs

    filesystem, path = pa_fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path, recursive=True)


def staging_directory(output: str) -> str:
    """Where a local job writes its files before they become ``output``: beside it, hidden, one name
    per output (the output's lock makes it this job's alone; one a killed job left is removed)."""
    return os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.structsent-writing")


def room_beside(output: str) -> bool:
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


def write_then_rename(labelled: "ray.data.Dataset", output: str, output_format: Format, named: str,
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
    write_all_or_nothing(labelled, staging, output_format, named, source)
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


def write_all_or_nothing(labelled: "ray.data.Dataset", output: str, output_format: Format, named: str,
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


def ray_output_format(requested: str) -> Format:
    fmt = Format.PARQUET if requested == "auto" else Format(requested)
    if fmt not in RAY_OUTPUT_FORMATS:
        raise BadInputError(f"--engine ray writes Parquet, CSV or JSONL, not {fmt.value}")
    return fmt
