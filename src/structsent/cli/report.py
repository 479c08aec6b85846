"""`structsent report LABELLED -o report.html`: flags in, write_report, one line out."""

from __future__ import annotations

import argparse
import sys

from ..lines import one_line
from ..report.arguments import FORMATS, MAX_COUNT, PERIODS
from .numbers import integer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a file `structsent label` wrote (CSV, TSV, JSONL or Parquet), or the directory "
                                      "a `label --engine ray` job wrote (its files read in name order as one output)")
    parser.add_argument("-o", "--output", required=True, help="the HTML file to write")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="input format (default: from the file name)")
    parser.add_argument("--by", default=None, metavar="COLUMN",
                        help="also break the numbers down by this column (by period when its values are ISO dates)")
    # No default here (auto in run): a --by-period given without --by is refused, not ignored.
    parser.add_argument("--by-period", default=None, choices=PERIODS,
                        help="with --by: bins of a date column (default auto: day when the middle 98%% of the dates "
                             "spans up to ~3 months, week up to 2 years, else month)")
    parser.add_argument("--text-column", default=None, help="column shown as the text (default: text, else the first input column)")
    parser.add_argument("--prefix", default=None, help="prefix the label job was given (default: found from the columns)")
    parser.add_argument("--negative", default=None, metavar="LABEL",
                        help="label whose share the group charts show (default: 负面/negative, else the first label)")
    parser.add_argument("--least-certain", type=integer, default=200, metavar="N",
                        help=f"rows in the least-certain table (0-{MAX_COUNT}; default %(default)s)")
    parser.add_argument("--flagged-sample", type=integer, default=200, metavar="N",
                        help=f"flagged rows listed (0-{MAX_COUNT}; default %(default)s)")
    parser.add_argument("--max-groups", type=integer, default=20, metavar="N", help=f"groups shown (1-{MAX_COUNT}); the rest are 'other'")
    parser.add_argument("--job-summary", default=None, metavar="FILE",
                        help="the label job's figures, JSON (default: INPUT.summary.json when it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def run(args: argparse.Namespace) -> int:
    from ..jobs.work_files import (
        refuse_reading_another_jobs_files,
        refuse_writing_a_page_over_a_jobs_files,
        unfinished_job_replacing,
    )
    from ..report import write_report
    from .signals import sigterm_as_interrupt

    _check_by_period_has_by(args)
    # The label job's files are this command's to refuse: the report (an adapter) knows no job.
    for read in (args.input, args.job_summary):
        if read is not None:
            refuse_reading_another_jobs_files(read)
    refuse_writing_a_page_over_a_jobs_files(args.output)
    notice = unfinished_job_replacing(args.input)
    with sigterm_as_interrupt():  # a half-written page is removed as on Ctrl-C
        summary = write_report(
            args.input, args.output, by=args.by, by_period=args.by_period or "auto", fmt=args.format, prefix=args.prefix,
            text_column=args.text_column, negative=args.negative, least_certain=args.least_certain,
            flagged_sample=args.flagged_sample, max_groups=args.max_groups, job_summary=args.job_summary,
            overwrite=args.overwrite,
        )
    if notice is not None:  # even with --quiet: the page may not describe the output the user expects
        print(one_line(f"structsent: {args.input}: {notice}"), file=sys.stderr)
    if not args.quiet:
        labels = ", ".join(f"{label} {count:,}" for label, count in summary.labels.items())
        from ..lines import rows_in_words

        print(one_line(f"{args.output}: {rows_in_words(summary.rows)} ({labels}; {summary.flagged:,} flagged)"),
              file=sys.stderr)
    return 0


def _check_by_period_has_by(args: argparse.Namespace) -> None:
    """--by-period bins the dates of the --by column: without one it was accepted and ignored."""
    if args.by_period is not None and args.by is None:
        from ..errors import BadInputError

        raise BadInputError("--by-period needs --by COLUMN: it bins the dates of that column")
