"""Failures of a Ray job in the user's words: a structsent error raised in a task re-raised as itself,
an input Arrow could not read named with why, anything else one line of what Ray said in the end."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..errors import BadInputError, StructsentError
from ..io.formats import Format
from .inputs import LOCAL_FLAG_MODE, InputFiles, csv_header_names, with_local_engine_advice

if TYPE_CHECKING:
    pass


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
    from ..io.readers import FAIL, open_reader

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
            return with_local_engine_advice(err)
    return BadInputError(f"{path}: Arrow could not read it as CSV (a malformed row, or bytes that are not UTF-8); "
                         f"{LOCAL_FLAG_MODE}, whose reader names the row")


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
