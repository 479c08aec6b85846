"""`structsent report`: one self-contained HTML page describing a file `structsent label` wrote.

Reads files only (never the model): ``source`` streams the rows, ``aggregate`` counts them with
bounded state, ``render`` writes the page.

>>> from structsent.report import write_report
>>> write_report("labelled.csv", "report.html", by="date")     # doctest: +SKIP
ReportSummary(rows=1000, flagged=3, labels={'负面': 412, '正面': 585})
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import BadInputError, OutputWriteError
from ..io.manifest import file_identity
from ..io.paths import check_output_is_a_file, kind_of, mode_of, path_problem
from .aggregate import Period, Report, ReportAggregator, ReportOptions
from .arguments import (
    FORMATS,
    PERIODS,
    as_path,
    check_choice,
    check_counts,
    check_job_figures,
    check_names,
    check_overwrite,
)
from .source import a_json_line_has_field

__all__ = ["ReportSummary", "a_json_line_has_field", "build_report", "job_summary_path", "write_report"]


@dataclasses.dataclass(frozen=True)
class ReportSummary:
    rows: int
    flagged: int
    labels: dict[str, int]


LABELLED = "the labelled file (or the directory of a Ray job's files)"


def job_summary_path(labelled: str) -> str:
    """Where the label job's figures sit next to its output, when it wrote them."""
    return labelled + ".summary.json"


def build_report(path_in: str | os.PathLike[str], *, fmt: str = "auto", prefix: str | None = None,
                 text_column: str | None = None, by: str | None = None, by_period: str = "auto",
                 negative: str | None = None, least_certain: int = 200, flagged_sample: int = 200,
                 max_groups: int = 20, labels: Sequence[str] | None = None) -> tuple[Report, str | None]:
    """Read ``path_in`` once and return its Report and the text column it showed. ``labels``: the
    model's, where known (a JSON Lines file of no rows names none)."""
    report, text_column, _ = _built_report(path_in, fmt=fmt, prefix=prefix, text_column=text_column, by=by,
                                           by_period=by_period, negative=negative, least_certain=least_certain,
                                           flagged_sample=flagged_sample, max_groups=max_groups, labels=labels)
    return report, text_column


def _built_report(path_in: str | os.PathLike[str], *, fmt: str, prefix: str | None, text_column: str | None,
                  by: str | None, by_period: str, negative: str | None, least_certain: int, flagged_sample: int,
                  max_groups: int, labels: Sequence[str] | None) -> tuple[Report, str | None, str]:
    """build_report's work, and how the page names what it read (a file, or a directory of parts)."""
    from .source import open_labelled_parts

    path = as_path("path_in", path_in, names=LABELLED)
    _check_options(fmt=fmt, by_period=by_period, least_certain=least_certain, flagged_sample=flagged_sample,
                   max_groups=max_groups, names={"prefix": prefix, "text_column": text_column, "by": by,
                                                 "negative": negative})
    labelled = open_labelled_parts(path, fmt=fmt, prefix=prefix, text_column=text_column, by=by, labels=labels)
    options = ReportOptions(labels=labelled.labels, negative=negative, by=by, by_period=Period(by_period),
                            least_certain=least_certain, flagged_sample=flagged_sample, max_groups=max_groups)
    aggregator = ReportAggregator(options)
    read_first = _identities(labelled)
    for row in labelled.rows():
        aggregator.add(row)
    if aggregator.needs_recount():  # more distinct --by values than tracked: the largest, counted exactly
        aggregator.recount(labelled.rows())
        if _identities(labelled) != read_first:
            raise BadInputError(f"{path}: changed while the report read it (another file put in its place, or "
                                "written to): make the report once nothing writes it")
    return aggregator.result(), labelled.text_column, labelled.describe()


def _identities(labelled) -> list:
    """Which files the labelled output's paths name now: a second read must read the same ones."""
    from ..io.manifest import file_identity

    return [file_identity(Path(file.path)) for file in labelled.files]


def _check_options(*, fmt: object, by_period: object, least_certain: object, flagged_sample: object,
                   max_groups: object, names: dict[str, object]) -> None:
    """The options' values, checked before any file is opened (the command line's flags by the same rules)."""
    check_choice("fmt", fmt, FORMATS)
    check_choice("by_period", by_period, PERIODS)
    check_counts(least_certain=least_certain, flagged_sample=flagged_sample, max_groups=max_groups)
    check_names(**names)


def write_report(path_in: str | os.PathLike[str], path_out: str | os.PathLike[str], *, by: str | None = None,
                 by_period: str = "auto", fmt: str = "auto", prefix: str | None = None,
                 text_column: str | None = None, negative: str | None = None, least_certain: int = 200,
                 flagged_sample: int = 200, max_groups: int = 20, job_figures: Mapping | None = None,
                 job_summary: str | os.PathLike[str] | None = None, overwrite: bool = False,
                 labels: Sequence[str] | None = None) -> ReportSummary:
    """Write the HTML report of the labelled file ``path_in`` to ``path_out``; ``path_in`` may also be
    the directory a `label --engine ray` job wrote (its files read in name order as one output).
    ``labels``: the model's, where the caller knows them; an output of no rows (an empty JSON Lines
    file, a Ray job's empty directory) names none, and is then a page of 0 rows with these labels.

    Paths are str or os.PathLike; an option out of its range (the command line's) is a ConfigError.
    The label job's figures come from ``job_figures`` (a mapping, e.g. the job's counters), else
    from the JSON file ``job_summary``, else from ``<path_in>.summary.json`` when it exists;
    without any, the page has no job section. The page is written to a temporary file, synced,
    then renamed over ``path_out``: a reader never sees half a report.
    """
    from .render import render_html
    from .source import input_files, read_job_figures

    path_in, path_out = as_path("path_in", path_in, names=LABELLED), as_path("path_out", path_out)
    job_summary = None if job_summary is None else as_path("job_summary", job_summary, names="the job's summary")
    _check_options(fmt=fmt, by_period=by_period, least_certain=least_certain, flagged_sample=flagged_sample,
                   max_groups=max_groups, names={"prefix": prefix, "text_column": text_column, "by": by,
                                                 "negative": negative})
    check_overwrite(overwrite)
    if job_figures is not None:
        check_job_figures(job_figures)
    # What is wrong with a file read is said first, not that the output would lie inside a directory read.
    input_files(path_in, empty_ok=bool(labels))
    if job_figures is None and job_summary is not None:
        _check_job_summary_file(job_summary)
    _check_output(path_in, path_out, overwrite, job_summary)
    target = Path(os.path.realpath(path_out))  # through links: the page replaces the file a link names
    replaces = file_identity(target)  # None, or the file overwrite allows to replace
    if job_figures is None:
        job_figures = read_job_figures(job_summary or job_summary_path(path_in))
    report, shown_text, source = _built_report(path_in, fmt=fmt, prefix=prefix, text_column=text_column, by=by,
                                               by_period=by_period, negative=negative, least_certain=least_certain,
                                               flagged_sample=flagged_sample, max_groups=max_groups, labels=labels)
    page = render_html(report, source=source, text_column=shown_text, figures=job_figures)
    if file_identity(target) not in (None, replaces):
        raise BadInputError(f"{path_out} was written by another program while the report was made; it is not "
                            "replaced (write the report to another path)")
    _write_atomically(target, page.encode("utf-8"))
    total = report.overall
    return ReportSummary(rows=total.rows, flagged=total.flagged,
                         labels={label: total.labels.get(label, 0) for label in report.labels})


def _check_job_summary_file(path: str) -> None:
    """The summary named: a regular file (a device or a directory is not "no such file")."""
    mode = mode_of(Path(path))
    if mode is None:
        raise BadInputError(f"{path}: no such file")
    if not stat.S_ISREG(mode):
        raise BadInputError(f"{path}: is {kind_of(mode)}, not a regular file; name the JSON file of the job's figures")


def _check_output(path_in: str, path_out: str, overwrite: bool, job_summary: str | None) -> None:
    figures = "the job's figures it reads"
    keep = {path_in: "its own input", job_summary_path(path_in): figures}
    if job_summary is not None:  # named explicitly: as protected as the default one
        keep.setdefault(job_summary, figures)
    check_report_path(path_out, keep=keep, overwrite=overwrite)


def check_report_path(path_out: str, *, keep: dict[str, str], overwrite: bool, flag: str = "-o") -> None:
    """The report may be written at ``path_out``: not onto a file of ``keep`` ({path: what it is},
    also through links, also one not written yet), not onto an existing file unless ``overwrite``,
    into a directory that exists. Checked before anything runs (``label --report`` too: ``flag``,
    the option that named the path, is the one its messages suggest)."""
    if not path_out.strip():
        raise BadInputError(f"the report's path is empty: name the HTML file to write ({flag} report.html)")
    if path_out == "-":
        raise BadInputError(f"{flag} -: the report is a file, not standard output: name the HTML file "
                            f"({flag} report.html)")
    if path_out.endswith(("/", os.sep)) or os.path.basename(path_out) in (".", ".."):
        raise BadInputError(f"{path_out}: names a directory; name the HTML file to write in it "
                           f"({os.path.join(path_out, 'report.html')})")
    for path in keep:
        _resolved(path)  # a kept path that cannot be looked at is named as itself, not as the report
    _resolved(path_out)
    try:
        _check_report_target(path_out, keep, overwrite)
    except (OSError, RuntimeError) as err:  # a loop of links, a name through a regular file
        raise BadInputError(f"{path_out}: {path_problem(err)}") from err


def _resolved(path: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as err:
        raise BadInputError(f"{path}: {path_problem(err)}") from err


def _check_report_target(path_out: str, keep: dict[str, str], overwrite: bool) -> None:
    target = Path(path_out)
    for path, what in keep.items():
        if path == "-":
            continue
        same = (target.exists() and Path(path).exists() and os.path.samefile(path, path_out)) or \
            target.resolve() == Path(path).resolve()
        if same:
            raise BadInputError(f"{path_out}: the report would overwrite {what}")
        if Path(path).resolve() in target.resolve().parents:  # inside the job's work directory (OUT.parts)
            fate = ", which the job removes" if "work" in what else " (a report is kept apart from what it reads)"
            raise BadInputError(f"{path_out}: the report would be written inside {what} {path}{fate}")
    if target.is_dir():
        raise BadInputError(f"{path_out}: is a directory")
    check_output_is_a_file(target, stdout_hint=False)  # the report is a file: there is no -o -
    if target.exists() and not overwrite:
        raise BadInputError(f"{path_out} exists; pass --overwrite (overwrite=True in Python) to replace it")
    directory = target.resolve().parent
    if not directory.is_dir():
        raise BadInputError(f"{path_out}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):  # found here, not after the whole label job
        raise BadInputError(f"{path_out}: directory {directory} is not writable")


def _write_atomically(target: Path, data: bytes) -> None:
    tmp: Path | None = None
    try:
        # A name of its own, short whatever the report's (a name near the 255-byte limit has no room
        # for more); created as open() creates files, with the permissions the umask gives.
        tmp = target.with_name(f".report-{os.getpid()}-{secrets.token_hex(4)}.tmp")
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException as err:  # Ctrl-C and SIGTERM too: no half-written page is left beside the report
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(err, OSError):
            # A full disk or a failing one is the machine's (exit 1, as the label job's); the rest
            # (permission, a read-only file system) the path's (exit 2).
            kind = OutputWriteError if err.errno in _DISK_FAULTS else BadInputError
            raise kind(f"{target}: cannot write ({err.strerror or err})") from err
        raise


_DISK_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG)
