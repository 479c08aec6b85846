"""`structsent label INPUT [-o OUTPUT] ...`: flags in, a LabelJob (or the Ray file job) run, a summary out."""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._exit import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, Terminated
from ..io.formats import Format
from ..lines import one_line
from .numbers import integer

if TYPE_CHECKING:
    from ..jobs.label import JobSummary, LabelJobSpec

LABEL_PAD_MULTIPLE = 8
MAX_CHUNK_ROWS = 10_000_000  # rows a chunk may hold (each is in memory while it is labelled)
REPORTED_ENGINE_SETTINGS = ("model", "backend", "device", "precision", "max_length", "long_text")  # in --report's figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .engine_flags import add_engine_arguments

    parser.add_argument("input", help="input file, or - for standard input (JSON Lines when its first "
                                      "non-blank line, within its first MiB, begins with {, else plain lines; "
                                      "--format decides otherwise)")
    parser.add_argument("-o", "--output", default=None, help="output file (default: standard output)")
    parser.add_argument("--format", default="auto", choices=["auto", *(f.value for f in Format)],
                        help="input format (default: from the file name)")
    parser.add_argument("--output-format", default="auto", choices=["auto", *(f.value for f in Format if f is not Format.TXT)])
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--id-column", default=None,
                        help="keep only this column next to the predictions (plain text: the line number)")
    parser.add_argument("--prefix", default="", help="prefix of the added columns, e.g. pred_")
    parser.add_argument("--on-bad-row", choices=["error", "flag"], default="error",
                        help="stop at an undecodable or malformed row (error), or write it flagged (flag)")
    parser.add_argument("--chunk-rows", type=integer, default=2048, help="rows per committed chunk (default %(default)s)")
    parser.add_argument("--tokenizer-processes", type=integer, default=0, metavar="N",
                        help="tokenize in N worker processes, off the job's own interpreter (for a fast "
                             "model, e.g. a GPU: the feed then keeps up; default 0: in-process)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted job")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help="also write an HTML report of the output (see `structsent report`); checked before the "
                             "job: not the input or the output, an existing file only with --overwrite or --resume")
    parser.add_argument("--report-by", default=None, metavar="COLUMN",
                        help="with --report: break the report down by this column (a date column is binned)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: this process; ray: Ray Data actors (INPUT: file, directory or glob; -o: a directory)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to run on, e.g. ray://head:10001 (default: RAY_ADDRESS, else a local Ray)")
    add_engine_arguments(parser)
    # Output bytes must not depend on --chunk-rows: pad each text the same way whatever it is batched
    # with (unless STRUCTSENT_PAD_MULTIPLE already set a default).
    if parser.get_default("pad_multiple") is None:
        parser.set_defaults(pad_multiple=LABEL_PAD_MULTIPLE)


def run(args: argparse.Namespace) -> int:
    _check_job_flags(args)
    _no_padding_with_packed_attention(args)
    if args.engine == "ray":
        return _run_on_ray(args)
    import structsent

    from ..pipeline import freeze_startup_objects
    from .engine_flags import engine_config

    spec = _job_spec(args)
    report_was = _check_report_before_the_job(args, spec)
    classifier = structsent.load(args.model, config=engine_config(args))
    _check_report_by(args.report_by, spec, classifier.labels)  # after the load (the added columns), before the job
    freeze_startup_objects()  # the job's full collections no longer walk the model and the modules
    outcome = _run_job(args, spec, classifier)
    if isinstance(outcome, int):
        return outcome
    summary, signum = outcome
    if summary.already_complete:
        _notice(_finished_output(spec.output))
    elif not args.quiet:
        from ..jobs.label import threads_in_use
        from ..jobs.progress import format_summary

        engine = classifier.info()
        engine["num_threads"] = threads_in_use(engine)  # PyTorch's own count said as a number, as the manifest has it
        print(format_summary(summary, labels=classifier.labels, engine=engine), file=sys.stderr)
    if summary.interrupted:
        print(f"interrupted after {summary.rows:,} rows; {_how_to_finish(spec)}", file=sys.stderr)
        return 128 + signum if signum else EXIT_INTERRUPTED
    if signum is not None:  # the stop came during the last chunk: the output is complete
        return _stopped_after_the_last_chunk(args, spec, summary, signum)
    if args.report is not None:
        from .signals import sigterm_as_interrupt

        with sigterm_as_interrupt():  # the page's temporary file is removed (exit 143)
            _write_report(args, spec, summary, classifier, report_was)
    return EXIT_OK


def _check_job_flags(args: argparse.Namespace) -> None:
    """The flags that exclude or need each other, before anything is opened or loaded."""
    from ..errors import BadInputError, ConfigError

    if not 1 <= args.chunk_rows <= MAX_CHUNK_ROWS:
        raise BadInputError(f"--chunk-rows {args.chunk_rows}: must be 1..{MAX_CHUNK_ROWS:,} (a chunk is held in memory)")
    if args.ray_address is not None and args.engine != "ray":  # (it was ignored: the job ran here)
        raise ConfigError("--ray-address is for --engine ray; add --engine ray to run on that cluster")
    _check_tokenizer_processes(args)
    if args.engine == "ray":
        return  # (the Ray job's own checks follow in _run_on_ray)
    if args.resume and args.overwrite:
        raise BadInputError("--resume and --overwrite exclude each other")
    if args.report is not None and args.output in (None, "-"):
        raise BadInputError("--report needs an output file (-o): the report is made from it")
    if args.report_by is not None and args.report is None:
        raise BadInputError("--report-by needs --report FILE: it breaks that report down by a column")


def _no_padding_with_packed_attention(args: argparse.Namespace) -> None:
    """``--attention packed`` computes no padding: the job's own pad multiple (LABEL_PAD_MULTIPLE)
    steps aside then. One the user set (flag or variable) stays, and the engine refuses the pair."""
    from .engine_flags import SETTING_VARIABLES

    chosen = "pad_multiple" in getattr(args, "_typed", {}) or SETTING_VARIABLES["pad_multiple"] in os.environ
    if args.attention == "packed" and args.pad_multiple == LABEL_PAD_MULTIPLE and not chosen:
        args.pad_multiple = None


def _job_spec(args: argparse.Namespace) -> LabelJobSpec:
    """The local job's LabelJobSpec, its input and output paths checked."""
    from ..io.formats import output_format_for
    from ..jobs.label import LabelJobSpec, check_job_paths

    input_format = _input_format(args)
    spec = LabelJobSpec(
        input=args.input,
        output=args.output,
        input_format=input_format,
        output_format=output_format_for(input_format, args.output, args.output_format),
        text_column=args.text_column,
        id_column=args.id_column,
        on_bad_row=args.on_bad_row,
        chunk_rows=args.chunk_rows,
        tokenizer_processes=args.tokenizer_processes,
        resume=args.resume,
        overwrite=args.overwrite,
        prefix=args.prefix,
    )
    check_job_paths(spec)
    return spec


def _check_report_before_the_job(args: argparse.Namespace, spec: LabelJobSpec) -> dict | None:
    """A --report path that cannot be written would fail only after all the labelling: checked
    first. Returns the identity of the file at that path the command may replace (None: none)."""
    if args.report is None:
        return None
    from ..io.manifest import file_identity
    from ..jobs.label import job_paths
    from ..jobs.work_files import refuse_writing_a_page_over_a_jobs_files
    from ..report import check_report_path

    check_report_path(args.report, keep={**job_paths(spec), **_standard_input_file(spec)},
                      overwrite=args.overwrite or args.resume, flag="--report")
    refuse_writing_a_page_over_a_jobs_files(args.report)
    return file_identity(Path(os.path.realpath(args.report)))


def _run_job(args: argparse.Namespace, spec: LabelJobSpec, classifier) -> tuple[JobSummary, int | None] | int:
    """Run the job, a signal stopping it after a chunk: (its summary, the signal that stopped it or
    None), or the exit status where it ended early (a second signal, its tokenizer processes ended)."""
    from ..errors import OutputWriteError, WorkerProcessError
    from ..jobs.label import LabelJob
    from ..jobs.progress import ProgressBar

    progress = None if args.quiet or not sys.stderr.isatty() else ProgressBar(device=classifier.runner.device)
    stop = threading.Event()
    job = LabelJob(spec, classifier, progress=progress, stop=stop, notify=_notice)
    with _stop_after_chunk_on_interrupt(stop, at_once=lambda: job.opening_input) as interrupt:
        try:
            summary = job.run()
        except OutputWriteError as err:
            raise OutputWriteError(f"{err}; once the cause is fixed, {_how_to_finish(spec)}") from err
        except WorkerProcessError as err:
            if interrupt.signum is not None:  # the signal that stops the job ended its tokenizer processes
                print(f"interrupted; {_how_to_finish(spec)}", file=sys.stderr)  # (kill -TERM of the process group)
                return 128 + interrupt.signum
            raise WorkerProcessError(f"{err}; {_how_to_finish(spec)}") from err
        except KeyboardInterrupt as err:  # a second signal (or the first while the input opened): at once
            return _stopped_at_once(spec, terminated=isinstance(err, Terminated))
        finally:
            if progress is not None:
                progress.close()
    return summary, interrupt.signum


def _stopped_after_the_last_chunk(args, spec, summary, signum: int) -> int:
    """A stop asked while the last chunk was labelled: the job finished (its output is complete,
    nothing is left to resume). The report, work the stop came before, is not started."""
    said = "the stop came during the last chunk: the job is complete"
    if args.report is None:
        _notice(said)
        return EXIT_OK
    command = _report_command(spec.output, args.report, by=args.report_by, fmt=spec.output_format.value,
                              prefix=spec.prefix, text_column=_report_text_column(spec, summary))
    _notice(f"{said}; the report was not written: {command} makes it")  # (--report needs a named output)
    return 128 + signum


def _report_text_column(spec, summary) -> str | None:
    """The column the job labelled, as its reader resolved it (a one-column file's only column); with
    --id-column the output holds the id alone, and the report shows it."""
    return summary.text_column if spec.id_column is None else None


def _standard_input_file(spec) -> dict[str, str]:
    """The file standard input is redirected from, kept from the report as a named input is
    (`label - --report in.csv --overwrite < in.csv` wrote the page over the input)."""
    from ..jobs.label import standard_input_file

    given = standard_input_file() if spec.input == "-" else None
    return {given: "the job's input (standard input's file)"} if given else {}


def _check_tokenizer_processes(args: argparse.Namespace) -> None:
    """Its range first (0, the default, tokenizes in-process), then its engine: -1 with --engine ray
    was told it is for --engine local, as if it were a number of processes to start."""
    from ..errors import BadInputError, ConfigError
    from ..runtime import usable_cores

    if args.tokenizer_processes < 0:
        raise BadInputError("--tokenizer-processes must be at least 0")
    cores = usable_cores()
    if args.tokenizer_processes > cores:
        raise BadInputError(f"--tokenizer-processes {args.tokenizer_processes}: this job may use {cores} CPU cores, "
                            "and more processes than cores cannot tokenize faster (each holds a tokenizer in memory)")
    if args.engine == "ray" and args.tokenizer_processes > 0:
        raise ConfigError("--tokenizer-processes is for --engine local (Ray actors tokenize in their own processes)")


def _run_on_ray(args: argparse.Namespace) -> int:
    from ..errors import BadInputError
    from ..ray import RayJobInterrupted, RayLabelSpec, run_label_job
    from .engine_flags import engine_config

    if args.resume:
        raise BadInputError("--resume works with --engine local only; Ray retries failed tasks itself. "
                            "Rerun with --overwrite to start over")
    if args.on_bad_row != "error":
        raise BadInputError("--on-bad-row flag works with --engine local only")
    report_was = _check_ray_report_path(args)
    from .signals import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # as Ctrl-C: the files written are removed (Ray's own handler aborts)
            run_label_job(RayLabelSpec(
                input=args.input, output=args.output, model=args.model, config=engine_config(args),
                input_format=args.format, output_format=args.output_format, text_column=args.text_column,
                id_column=args.id_column, prefix=args.prefix, batch_rows=args.chunk_rows, overwrite=args.overwrite,
                ray_address=args.ray_address, quiet=args.quiet,
            ))
    except RayJobInterrupted as err:
        print(f"structsent: interrupted: {err}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err.__context__, Terminated) else EXIT_INTERRUPTED
    if args.report is not None:
        with sigterm_as_interrupt():  # the page's temporary file is removed (exit 143)
            # The directory's files, read as one output (the report's own format detection per file).
            labels = _labels_of_an_empty_ray_output(args)
            if labels is not None and args.report_by is not None:
                _check_report_by_of_no_rows(args, labels)
            _report_written_output(args, args.output, report_was, prefix=args.prefix,
                                   text_column=args.text_column if args.id_column is None else None,
                                   labels=labels)
    return EXIT_OK


def _check_report_by_of_no_rows(args: argparse.Namespace, labels: tuple[str, ...]) -> None:
    """A Ray job's output of no rows has no file to find a --report-by column in: the column is
    checked against the input's header as the local job checks it (a column the output would not
    have made a page with an empty section, where the local job refuses it)."""
    import types

    from ..errors import BadInputError
    from ..ray import resolve_input

    source = resolve_input(args.input, args.format)
    if not source.files:  # a remote URI: its files are Ray's to list
        return
    as_local = types.SimpleNamespace(input=source.files[0], input_format=source.format, text_column=args.text_column,
                                     id_column=args.id_column, prefix=args.prefix, resume=False)
    try:
        _check_report_by(args.report_by, as_local, labels)
    except BadInputError as err:
        raise BadInputError(f"{args.output} is written (no rows), but not the report: {err}") from err


def _labels_of_an_empty_ray_output(args: argparse.Namespace) -> tuple[str, ...] | None:
    """An input of no rows leaves the Ray job's directory empty, which names no labels: the report
    then takes the model's, read from its files here (as the local job's report of no rows has
    them), unless the model lives on a remote cluster only."""
    names = [name for name in os.listdir(args.output) if not name.startswith((".", "_"))]
    if names or (args.ray_address or "").startswith("ray://"):
        return None
    from ..models import load_checkpoint

    return load_checkpoint(args.model).labels


def _check_ray_report_path(args) -> dict | None:
    """--report with --engine ray: its path checked before the job (not inside the output directory,
    not onto another job's files); the file there the command may replace, or None."""
    from ..errors import BadInputError

    if args.report is None:
        if args.report_by is not None:
            raise BadInputError("--report-by needs --report FILE: it breaks that report down by a column")
        return None
    from ..io.manifest import file_identity
    from ..jobs.work_files import refuse_writing_a_page_over_a_jobs_files
    from ..ray import resolve_input
    from ..report import check_report_path

    if args.output in (None, "-"):
        raise BadInputError("--report needs an output directory (-o): the report is made from it")
    source = resolve_input(args.input, args.format)  # the files read: never replaced by the page
    keep = {path: "the job's input" for path in [*source.files, *([source.directory] if source.directory else [])]}
    keep[args.output] = "the job's output directory"
    check_report_path(args.report, keep=keep, overwrite=args.overwrite, flag="--report")
    refuse_writing_a_page_over_a_jobs_files(args.report)
    return file_identity(Path(os.path.realpath(args.report)))


def _check_report_by(column: str | None, spec, labels) -> None:
    """A --report-by column the output will not have, refused before the job (not after all the
    labelling). Where the columns are known from the input's header (CSV, TSV and Parquet files),
    or from its lines (a JSON Lines file, one read: a field of any line is kept)."""
    from ..errors import BadInputError
    from ..io.paths import read_only_once
    from ..io.readers import open_reader
    from ..io.writers import added_columns
    from ..report import a_json_line_has_field

    if column is None or read_only_once(spec.input) or column in added_columns(labels, spec.prefix):
        return  # a pipe's header is read by the job alone: reading it here took those bytes from the job
    if spec.input_format is Format.JSONL and spec.id_column is None:
        if spec.resume:  # the run that began the job checked it; a second pass over a large input is not needed
            return
        if not a_json_line_has_field(spec.input, column):
            raise BadInputError(f"--report-by {column}: no line of {spec.input} has such a field, so neither "
                                "will the output")
        return
    if spec.input_format not in (Format.CSV, Format.TSV, Format.PARQUET, Format.JSONL):
        return
    reader = open_reader(spec.input, spec.input_format, text_column=spec.text_column, on_bad_row="flag")
    try:
        kept = reader.columns if spec.id_column is None else [spec.id_column]
    finally:
        reader.close()
    if column not in kept:
        raise BadInputError(f"--report-by {column}: the output will have no such column; it keeps "
                            f"{', '.join(map(repr, kept))}")


def _write_report(args, spec, summary, classifier, report_was: dict | None) -> None:
    info = classifier.info()
    figures = None if summary.already_complete else {  # an output finished before: no figures of this run
        **summary.counters(), "rows_this_run": summary.rows_this_run,
        "rows_per_second": round(summary.rows_per_second, 1),  # of this run's rows (a resumed job's are fewer)
        "padding_fraction": round(summary.padding_fraction, 4),
        **{name: info[name] for name in REPORTED_ENGINE_SETTINGS}}
    _report_written_output(args, spec.output, report_was, fmt=spec.output_format.value, prefix=spec.prefix,
                           text_column=_report_text_column(spec, summary), job_figures=figures,
                           labels=classifier.labels)


def _report_written_output(args, output: str, report_was: dict | None, **options) -> None:
    """The report of the output a job has just written (a file, or a Ray job's directory): any
    failure is one line that says the output is written and how to make the report."""
    from ..errors import BadInputError, NoSuchColumnError, OutputWriteError
    from ..io.manifest import file_identity
    from ..report import write_report

    then = f"`{_report_command(output, 'REPORT.html', by=args.report_by, **options)}` makes one"
    if file_identity(Path(os.path.realpath(args.report))) not in (None, report_was):
        raise BadInputError(f"{output} is written, but not the report: {args.report} was written by another "
                            f"program since the job began; {then}")
    try:
        write_report(output, args.report, by=args.report_by, overwrite=True, **options)
    except OutputWriteError as err:  # a full disk: the machine's fault, exit 1
        raise OutputWriteError(f"{output} is written, but not the report: {err}; {then}") from err
    except BadInputError as err:  # (a --report-by column a pipe's header lacked: known only now)
        reason = str(err)
        if isinstance(err, NoSuchColumnError):  # this command's flags for the report's options
            reason = err.naming({"by": "--report-by"}.get(err.option, "--text-column"))
        raise BadInputError(f"{output} is written, but not the report: {reason}; {then}") from err
    if not args.quiet:
        print(one_line(f"report: {args.report}"), file=sys.stderr)


def _report_command(output: str, report: str, *, by: str | None = None, fmt: str | None = None,
                    prefix: str | None = None, text_column: str | None = None, **unused) -> str:
    """The `structsent report` command that makes the page `label --report` makes of ``output``
    (its --report-by as --by, and the format, prefix and text column where report would not find them)."""
    from ..errors import BadInputError
    from ..io.formats import detect_format

    words = ["structsent", "report", output, "-o", report]
    try:
        found = detect_format(output).value
    except BadInputError:  # a suffix that names no format
        found = None
    if fmt is not None and fmt != found:
        words += ["--format", fmt]
    for flag, value in (("--by", by), ("--text-column", text_column), ("--prefix", prefix)):
        if value:
            words += [flag, value]
    return " ".join(map(shell_quoted, words))


def _input_format(args) -> Format:
    from ..io.formats import detect_format
    from ..io.readers import stdin_format

    if args.input == "-" and args.format == "auto":
        return stdin_format()
    if os.path.isdir(args.input):  # said first: "cannot tell the format" led to --format, then to this
        from ..jobs.label import check_input_path

        check_input_path(args.input)
    return detect_format(args.input, args.format)


def _notice(message: str) -> None:
    print(f"structsent: {one_line(message)}", file=sys.stderr)


def _finished_output(output) -> str:
    """What --resume found: an output and no job beside it. Its time says which run wrote it:
    a job started with --overwrite and stopped before its first commit (while the model loaded)
    leaves the output it was to replace as it was, and no trace."""
    try:
        written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.stat(output).st_mtime))
    except OSError:
        written = "at an unknown time"
    # (Whether it is this input's complete output, nothing beside it can tell.)
    return (f"{output} exists (written {written}) and no unfinished job is beside it: nothing to resume; "
            "to label the input into it again, run with --overwrite")


def _stopped_at_once(spec, *, terminated: bool) -> int:
    """A job stopped mid-chunk says so as the first signal's stop does, with how to finish when its
    work files remain (a resume takes up its committed rows); it said "interrupted" alone."""
    from ..jobs.work_files import OutputFiles

    said = "terminated" if terminated else "interrupted"
    if spec.output not in (None, "-") and OutputFiles(spec.output).manifest.exists():
        said += f"; {_how_to_finish(spec)}"
    print(f"structsent: {said}", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _how_to_finish(spec) -> str:
    from ..io.paths import read_only_once

    if spec.output in (None, "-"):
        return "a job writing to standard output cannot be resumed: run it again"
    if read_only_once(spec.input):
        what = "standard input" if spec.input == "-" else "a pipe"
        return f"a job reading {what} cannot be resumed: run it again with --overwrite"
    return f"to finish, run: {_resume_command()}"


def _resume_command() -> str:
    """The command that finishes this job: its own words without --overwrite and --resume (in any
    abbreviation argparse took: `--overw` stayed in, and the command was refused), then --resume;
    after the STRUCTSENT_* variables that chose the model and its settings, as they were (a resume
    from another shell found "the model's settings changed")."""
    argv = sys.argv[1:]
    options, operands = (argv[: argv.index("--")], argv[argv.index("--"):]) if "--" in argv else (argv, [])
    # (after "--" every word is a name, kept as it is: a file named --ov; and --resume goes before it)
    kept = [a for a in options if not _abbreviates(a, ("--resume", "--overwrite"))]
    return " ".join([*_setting_variables(), "structsent", *map(shell_quoted, [*kept, "--resume", *operands])])


def _abbreviates(arg: str, flags: tuple[str, ...]) -> bool:
    """Whether ``arg`` is one of ``flags`` or a prefix argparse reads as one (an ambiguous prefix never
    gets this far: argparse refuses it)."""
    return arg.startswith("--") and len(arg) > 2 and any(flag.startswith(arg) for flag in flags)


def _setting_variables() -> list[str]:
    """``NAME=value`` for each STRUCTSENT_* variable set that chooses the model or an engine setting."""
    from .engine_flags import MODEL_ENV, SETTING_VARIABLES

    names = [MODEL_ENV, *SETTING_VARIABLES.values()]
    return [f"{name}={shell_quoted(os.environ[name])}" for name in names if name in os.environ]


def shell_quoted(arg: str) -> str:
    """``arg`` as a shell word: shlex's quoting, or bash's $'...' for a name holding a line break,
    a tab or another control character (which shlex would leave raw, splitting the message's line)."""
    if arg.isprintable():
        return shlex.quote(arg)
    escaped = "".join(_c_escape(c) if _needs_escape(c) else c for c in arg)
    return f"$'{escaped}'"


def _needs_escape(char: str) -> bool:
    """Control characters, line breaks and undecodable bytes: written as escapes (of bytes: bash's
    \\u escapes need a UTF-8 locale). Other characters (U+3000, a no-break space) stay as they are."""
    code = ord(char)
    return (char in "\\'" or code < 0x20 or 0x7F <= code < 0xA0 or char in "\u2028\u2029"
            or 0xD800 <= code <= 0xDFFF)


def _c_escape(char: str) -> str:
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}
    if char in named:
        return named[char]
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a name that is not UTF-8 (Python's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))  # UTF-8 bytes: any locale


class _stop_after_chunk_on_interrupt:
    """First Ctrl-C (or SIGTERM, as a service manager or `docker stop` sends; either one only where
    the job was not started ignoring it): finish the current
    chunk, commit it, stop, exit 128 + the signal's number. A second one: stop at once. So does the
    first while ``at_once()`` (the input is being opened: a FIFO without a writer, a pipe's CSV
    header not yet sent; nothing is committed then, and the job would wait for the producer).
    Two sent together during one long model call count as two (``_Deliveries``)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop: threading.Event, at_once: Callable[[], bool] = lambda: False) -> None:
        self.stop = stop
        self.at_once = at_once
        self.signum: int | None = None
        self.previous: dict[int, signal.Handlers | Callable[[int, FrameType | None], Any] | int | None] = {}
        self.deliveries: _Deliveries | None = None

    def _handle(self, signum, frame) -> None:
        delivered = self.deliveries.take(signum) if self.deliveries is not None else 1
        if self.at_once() or self.stop.is_set() or delivered > 1:
            # the second signal: SIGTERM ends as SIGTERM does (143), Ctrl-C as Ctrl-C
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.signum = signum
        self.stop.set()
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        print(f"\nstopping after the current chunk ({again} to stop at once)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # A signal the job was started ignoring (`label ... &` in a script: SIGINT; nohup-like
            # launchers) stays ignored, as the shell meant.
            self.deliveries = _Deliveries.counting()
            self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS
                             if signal.getsignal(signum) != signal.SIG_IGN}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        if self.deliveries is not None:
            self.deliveries.close()


class _Deliveries:
    """How often each signal was delivered since it was last asked. CPython runs a Python handler
    once for the deliveries of one signal that come while the main thread is inside one native
    call (a model call of seconds), so a second Ctrl-C sent then was taken for the first and the
    job finished its chunk; but the C handler writes each delivery's number to the wakeup file
    descriptor, which this reads. (Main thread only; not where something else set a wakeup fd.)"""

    def __init__(self, read_end: int, write_end: int) -> None:
        self._read_end, self._write_end = read_end, write_end
        self._pending: collections.Counter[int] = collections.Counter()

    @classmethod
    def counting(cls) -> _Deliveries | None:
        read_end, write_end = os.pipe()
        for end in (read_end, write_end):
            os.set_blocking(end, False)
        theirs = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        if theirs != -1:  # set by whoever embeds the job: left to them
            signal.set_wakeup_fd(theirs)
            os.close(read_end)
            os.close(write_end)
            return None
        return cls(read_end, write_end)

    def take(self, signum: int) -> int:
        """Deliveries of ``signum`` since the last call for it (at least 1: the handler runs)."""
        while True:
            try:
                data = os.read(self._read_end, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            self._pending.update(data)
        return max(self._pending.pop(signum, 0), 1)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self._read_end)
        os.close(self._write_end)
